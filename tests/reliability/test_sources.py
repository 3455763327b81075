"""Sources that misbehave are survived and counted: a live stream that drops, stalls or sends
corrupt frames; a real HTTP stream that goes silent; a video with an undecodable frame; a folder
with a corrupt image. Fake captures stand in for cameras (sources take a capture factory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.sources import Frame, LiveSource, as_bgr, iter_frames, open_source
from tests.runtime.test_http_stream import MjpegServer

GOOD = np.full((4, 6, 3), 7, np.uint8)


class ScriptedCapture:
    """A capture that plays a script: ``"ok"`` a good frame, ``"fail"`` a failed read,
    ``"hang"`` a read that blocks until :meth:`unblock`, or any other object is returned as
    the frame (corrupt frames). After the script it repeats the last step (a steady stream
    of good frames, or a dead one)."""

    def __init__(self, script: list[object]) -> None:
        self.script, self.step = script, 0
        self.released = False
        self.hanging = threading.Event()
        self._unblock = threading.Event()

    def read(self) -> tuple[bool, object]:
        time.sleep(0.002)  # a camera has a frame rate; don't spin a core
        item = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        if isinstance(item, str) and item == "ok":
            return True, GOOD.copy()
        if isinstance(item, str) and item == "fail":
            return False, None
        if isinstance(item, str) and item == "hang":
            self.hanging.set()
            self._unblock.wait(30)
            return False, None
        return True, item

    def unblock(self) -> None:
        self._unblock.set()

    def release(self) -> None:
        self.released = True


def opener(*captures: ScriptedCapture | None) -> Callable[[], ScriptedCapture | None]:
    """A capture factory handing out ``captures`` in order, then ``None`` (cannot open)."""
    it: Iterator[ScriptedCapture | None] = iter(captures)
    return lambda: next(it, None)


def read_frames(src: LiveSource, n: int, seconds: float = 20.0) -> list[Frame]:
    frames: list[Frame] = []
    end = time.monotonic() + seconds
    while len(frames) < n and time.monotonic() < end:
        f = src.read()
        if f is not None:
            frames.append(f)
    assert len(frames) == n, f"got {len(frames)} of {n} frames in {seconds} s"
    return frames


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_dropped_stream_reconnects_and_counts() -> None:
    first = ScriptedCapture(["ok", "ok", "fail"])
    second = ScriptedCapture(["ok"])
    src = LiveSource(opener(first, None, second), "cam", backoff_s=0.01, reconnect_timeout_s=20)
    try:
        wait_until(lambda: second.step > 0)
        read_frames(src, 3)
        assert (src.reconnects, src.stalls, src.corrupt) == (1, 0, 0)
        assert first.released
    finally:
        src.close()


def test_stalled_read_is_abandoned_and_reconnected() -> None:
    """A read that never returns (a frozen camera, a silent socket) is a stall: after
    ``stall_timeout_s`` a fresh capture takes over; the stuck one is released when it returns."""
    stuck = ScriptedCapture(["ok", "hang"])
    fresh = ScriptedCapture(["ok"])
    src = LiveSource(
        opener(stuck, fresh), "cam", backoff_s=0.01, reconnect_timeout_s=20, stall_timeout_s=0.3
    )
    try:
        read_frames(src, 1)
        assert stuck.hanging.wait(10)
        frames = read_frames(src, 3)  # only possible through the fresh capture
        assert (src.stalls, src.reconnects) == (1, 1)
        assert frames[-1].index > frames[0].index  # indices keep counting
    finally:
        src.close()
        stuck.unblock()
    wait_until(lambda: stuck.released)


def test_corrupt_frames_are_discarded_and_counted() -> None:
    bad = [None, np.zeros((0, 6, 3), np.uint8), np.zeros((4, 6, 2), np.uint8), GOOD * 0.5]
    cap = ScriptedCapture([*bad, "ok"])
    src = LiveSource(opener(cap), "cam", stall_timeout_s=30)
    try:
        frame = read_frames(src, 1)[0]
        assert frame.image.shape == (4, 6, 3) and frame.image.dtype == np.uint8
        assert frame.index == 0  # corrupt frames never get an index
        assert (src.corrupt, src.reconnects, src.stalls) == (4, 0, 0)
    finally:
        src.close()


def test_only_corrupt_frames_is_a_stall() -> None:
    garbage = ScriptedCapture(["ok", None])  # one frame, then corrupt ones forever
    fresh = ScriptedCapture(["ok"])
    src = LiveSource(opener(garbage, fresh), "cam", backoff_s=0.01, stall_timeout_s=0.2)
    try:
        read_frames(src, 1)
        wait_until(lambda: fresh.step > 0)
        read_frames(src, 2)
        assert src.stalls == 1 and src.reconnects == 1 and src.corrupt > 0
        assert garbage.released
    finally:
        src.close()


def test_capture_that_raises_ends_the_read_with_a_message() -> None:
    class Broken(ScriptedCapture):
        def read(self):
            raise ValueError("driver bug")

    src = LiveSource(opener(Broken([])), "cam")
    try:
        with pytest.raises(RuntimeFailure, match=r"source cam: capture failed \(ValueError"):
            src.read()
    finally:
        src.close()


def test_dead_stream_gives_up_after_the_timeout() -> None:
    src = LiveSource(opener(ScriptedCapture(["fail"])), "rtsp://cam", backoff_s=0.01,
                     reconnect_timeout_s=0.2)  # fmt: skip
    try:
        with pytest.raises(RuntimeFailure, match=r"rtsp://cam: stream lost, gave up after 0\.2 s"):
            while True:
                src.read()
    finally:
        src.close()
    assert src.reconnects == 1


@pytest.mark.parametrize(
    ("image", "shape"),
    [
        (np.zeros((4, 6), np.uint8), (4, 6, 3)),  # grey
        (np.zeros((4, 6, 1), np.uint8), (4, 6, 3)),
        (np.zeros((4, 6, 4), np.uint8), (4, 6, 3)),  # BGRA
        (np.zeros((4, 6, 3), np.uint8), (4, 6, 3)),
        (None, None),
        (np.zeros((0, 0, 3), np.uint8), None),
        (np.zeros((4, 6, 3), np.float32), None),
        (np.zeros((4, 6, 3, 1), np.uint8), None),
        ("not an image", None),
    ],
)
def test_as_bgr(image, shape) -> None:
    out = as_bgr(image)
    assert (None if out is None else out.shape) == shape


def test_pipeline_runs_through_drops_stalls_and_corrupt_frames(art) -> None:
    """The whole run survives a flaky camera: every fault is absorbed by the source."""
    from edge_mtl.runtime.engine import Engine
    from edge_mtl.runtime.pipeline import Pipeline

    caps = [
        ScriptedCapture(["ok", None, "ok", np.zeros((4, 6, 2), np.uint8), "ok", "fail"]),
        ScriptedCapture(["ok", "ok", "hang"]),
        ScriptedCapture(["ok"]),
    ]
    src = LiveSource(opener(*caps), "flaky cam", backoff_s=0.01, stall_timeout_s=0.3)
    summary = Pipeline(Engine(art["model"], "cpu"), src, max_frames=12).run()
    caps[1].unblock()
    assert summary.frames == 12
    assert summary.reconnects == src.reconnects == 2
    assert (src.stalls, src.corrupt) == (1, 2)


# ---- a real HTTP stream that goes silent ------------------------------------------------


def test_silent_http_stream_is_a_stall_and_recovers() -> None:
    server = MjpegServer(frames=3)
    src = open_source(server.url, reconnect_timeout_s=1.0)  # stall timeout = 1 s
    try:
        assert isinstance(src, LiveSource)
        read_frames(src, 1)
        wait_until(lambda: src.reconnects >= 1)  # FFmpeg's read timeout or our watchdog
        read_frames(src, 1)  # the next connection delivers again
    finally:
        src.close()
        server.stop()


# ---- files --------------------------------------------------------------------------------


def test_video_with_an_undecodable_frame_is_read_past_it(art) -> None:
    src = open_source(art["damaged_avi"])
    frames = list(iter_frames(src))
    src.close()
    assert 20 <= len(frames) < 30 and 1 <= src.corrupt <= 30 - len(frames)
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and indices[-1] >= len(frames)  # a gap where it was


def test_folder_with_a_corrupt_image_skips_it(art) -> None:
    src = open_source(art["mixed_images"])
    names = [f.name for f in iter_frames(src)]
    assert names == ["0.png", "1.png", "2.png"] and src.corrupt == 1


def test_folder_of_only_corrupt_images_is_an_error(art) -> None:
    src = open_source(art["bad_images"])
    with pytest.raises(InputError, match="none of its 2 images can be decoded"):
        list(iter_frames(src))
