"""Sources: files deliver every frame; live capture keeps only the newest and reconnects."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.sources import LiveSource, check_source, iter_frames, open_source


def test_image_folder_glob_and_single_image(tmp_path, kit) -> None:
    frames = kit.make_frames(3)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"img_{i}.png"), f)
    (tmp_path / "notes.txt").write_text("not an image")
    got = list(iter_frames(open_source(str(tmp_path))))
    assert [f.name for f in got] == ["img_0.png", "img_1.png", "img_2.png"]
    assert [f.index for f in got] == [0, 1, 2]
    for f, want in zip(got, frames):
        np.testing.assert_array_equal(f.image, want)  # PNG is lossless
    assert len(list(iter_frames(open_source(str(tmp_path / "img_[12].png"))))) == 2
    single = open_source(str(tmp_path / "img_0.png"))
    assert single.live is False and len(list(iter_frames(single))) == 1


def test_video_file_delivers_every_frame(tmp_path, kit) -> None:
    path = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(9), fps=12.0)
    src = open_source(str(path))
    got = list(iter_frames(src))
    src.close()
    assert src.live is False
    assert [f.index for f in got] == list(range(9))
    assert got[0].image.shape == (48, 64, 3) and got[0].image.dtype == np.uint8
    assert src.fps == pytest.approx(12.0, rel=0.01)
    assert src.drops == 0


@pytest.mark.parametrize("spec", ["missing.mp4", "no/such/dir/*.png", "rubbish.mp4", "empty_dir"])
def test_unopenable_sources(tmp_path, monkeypatch, spec) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rubbish.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="source "):
        open_source(spec)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("missing.mp4", "source missing.mp4: no such file, folder, camera index or URL"),
        ("no/such/dir/*.png", "source no/such/dir/\\*.png: no image files found"),
    ],
)
def test_check_source_names_what_open_source_would(tmp_path, monkeypatch, spec, error) -> None:
    monkeypatch.chdir(tmp_path)
    for check in (check_source, open_source):
        with pytest.raises(InputError, match=f"^{error}$"):
            check(spec)


def test_check_source_passes_what_it_cannot_judge_without_opening(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(b"")  # decoding is open_source's and read's job
    for spec in ("0", "rtsp://127.0.0.1:8554/cam", "HTTP://127.0.0.1/x", "a.png", ".", "*.png"):
        check_source(spec)


def test_live_source_keeps_only_newest_frame(kit) -> None:
    """A consumer slower than the camera gets fresh frames and a drop count, not a backlog."""
    cam = kit.FakeCapture()
    src = LiveSource(lambda: cam, "fake camera")
    try:
        indices = []
        for _ in range(4):
            frame = src.read()
            indices.append(frame.index)
            assert frame.image[0, 0, 0] == (frame.index + 1) % 256
            cam.wait_for(cam.produced + 5)  # the "slow model": 5 more frames arrive meanwhile
        # The newest frame may still be in the capture thread's hands when the wait ends.
        assert all(b - a >= 4 for a, b in itertools.pairwise(indices)), indices
        assert src.drops >= 3 * 3
        assert src.reconnects == 0
    finally:
        src.close()
    assert cam.released


def test_live_source_reconnects_after_drop(kit) -> None:
    first, second = kit.FakeCapture(fail_after=3), kit.FakeCapture()
    opens = iter([first, None, None, second])
    src = LiveSource(lambda: next(opens), "flaky stream", backoff_s=0.01, reconnect_timeout_s=30)
    try:
        seen = []
        while src.reconnects == 0 or not seen or second.produced == 0:
            seen.append(src.read())
        frame = src.read()
        assert src.reconnects == 1
        assert first.released
        assert frame is not None and frame.index >= 3  # indices keep counting across reconnects
    finally:
        src.close()


def test_live_source_gives_up_with_clear_message(kit) -> None:
    attempts = iter([kit.FakeCapture(fail_after=2)])
    src = LiveSource(
        lambda: next(attempts, None), "dead stream", backoff_s=0.01, reconnect_timeout_s=0.2
    )
    try:
        with pytest.raises(RuntimeFailure, match=r"dead stream: stream lost, gave up after 0.2 s"):
            while True:
                src.read()
    finally:
        src.close()
    assert src.reconnects == 1


def test_live_source_unopenable() -> None:
    with pytest.raises(InputError, match="cannot open"):
        LiveSource(lambda: None, "camera 9")
