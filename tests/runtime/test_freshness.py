"""Live sources are pulled: inference always starts on the newest frame the camera has made, one
stream or several; every JSON line carries the frame's capture time and its age at the result.

The camera here makes frames only when the test lets it (while a slow inference stand-in runs),
so "the newest frame" is exact and nothing depends on the machine's speed.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.multistream import MultiStream, MultiStreamConfig, StreamState
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.sinks import JsonlSink
from edge_mtl.runtime.sources import Frame, LiveSource

WAIT_S = 30.0  # generous bound on any wait: a healthy test takes well under a second


class GatedCamera:
    """A camera that makes a frame only when :meth:`shoot` lets it: frame n (1-based) is a grey
    image of value ``offset + n``. ``shoot`` returns once the source has published them (and,
    with ``reader``, once the consumer has read the newest and asks for the next)."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.cond = threading.Condition()
        self.allowed = self.produced = 0
        self.in_read = False  # the capture thread waits here: every frame made is published
        self.reader_has = 0  # value of the newest frame the consumer holds while it asks again
        self.released = False

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self.cond:
            self.in_read = True
            self.cond.notify_all()
            ok = self.cond.wait_for(lambda: self.allowed > self.produced or self.released, WAIT_S)
            self.in_read = False
            if self.released or not ok:
                return False, None
            self.produced += 1
            return True, np.full((4, 6, 3), self.offset + self.produced, np.uint8)

    def shoot(self, n: int, reader: bool = False) -> None:
        with self.cond:
            self.allowed += n
            self.cond.notify_all()

            def done() -> bool:
                published = self.produced == self.allowed and self.in_read
                return published and (not reader or self.reader_has == self.offset + self.produced)

            assert self.cond.wait_for(done, WAIT_S), "frames made but not read"

    def release(self) -> None:
        with self.cond:
            self.released = True
            self.cond.notify_all()


class GatedSource(LiveSource):
    """A live source on a :class:`GatedCamera`; closing it opens the gate, so the capture
    thread leaves its read at once."""

    def __init__(self, cam: GatedCamera, name: str) -> None:
        self.cam = cam
        self.last = 0  # value of the last frame handed out
        super().__init__(lambda: cam, name)

    def read(self) -> Frame | None:
        with self.cam.cond:  # asking again: the frame before is where the consumer keeps it
            self.cam.reader_has = self.last
            self.cam.cond.notify_all()
        frame = super().read()
        if frame is not None:
            self.last = int(frame.image[0, 0, 0])
        return frame

    def close(self) -> None:
        self._stop.set()  # first, so the capture thread takes the open gate for the end
        self.cam.release()
        super().close()


def frame_values(engine: Engine, x: np.ndarray) -> list[int]:
    """The grey value of each frame in the model input ``x`` (N, 3, H, W), from its centre."""
    mean, std = engine.meta.mean[0], engine.meta.std[0]
    h, w = x.shape[2] // 2, x.shape[3] // 2
    return [round(float(x[k, 0, h, w] * std + mean) * 255) for k in range(len(x))]


class ShootingModel:
    """The real engine, slow: while each of the first ``runs`` inferences runs, every camera
    makes ``per_run`` frames (``reader``: see :meth:`GatedCamera.shoot`). ``starts`` records,
    at each start, (frame value run, the newest value its camera made)."""

    def __init__(
        self, engine: Engine, cams: list[GatedCamera], per_run: int, runs: int, reader: bool
    ) -> None:
        self.engine, self.cams, self.per_run = engine, cams, per_run
        self.runs, self.reader = runs, reader
        self.preprocess, self.postprocess = engine.preprocess, engine.postprocess
        self.starts: list[tuple[int, int]] = []

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        for v in frame_values(self.engine, x):
            cam = max((c for c in self.cams if c.offset < v), key=lambda c: c.offset)
            self.starts.append((v, cam.offset + cam.produced))
        if len(self.starts) <= self.runs * len(self.cams):
            for n in (1, self.per_run - 1):  # one frame early in the run (push took it), then more
                for cam in self.cams:
                    cam.shoot(n, self.reader)
        return self.engine.run(x)


def test_slow_inference_always_starts_on_the_newest_frame(models) -> None:
    """Three frames arrive during every inference; the next one runs on the last of them (a
    frame younger than one camera interval), never on one that waited in a hand-off."""
    cam = GatedCamera()
    source = GatedSource(cam, "gated camera")
    cam.shoot(1)
    model = ShootingModel(Engine(models["dense"], "cpu"), [cam], 3, runs=5, reader=False)
    seen: list[int] = []
    summary = Pipeline(
        model, source, max_frames=6, on_result=lambda f, r, t: seen.append(f.index)
    ).run()
    assert summary.frames == 6
    assert model.starts == [(v, v) for v in (1, 4, 7, 10, 13, 16)]
    assert seen == [0, 3, 6, 9, 12, 15]  # source indices: the two frames between were dropped
    assert summary.drops == 5 * 2  # every frame not run, none queued


def test_several_live_streams_batch_their_newest_frames(models) -> None:
    """Multi-stream: every batch runs on each camera's newest frame, the others dropped."""
    cams = [GatedCamera(offset=0), GatedCamera(offset=100)]
    sources = [GatedSource(c, f"gated camera {i}") for i, c in enumerate(cams)]
    for cam in cams:
        cam.shoot(1)
    model = ShootingModel(Engine(models["dense"], "cpu"), cams, 2, runs=4, reader=True)
    config = MultiStreamConfig(max_wait_ms=WAIT_S * 1e3, max_frames=5, stall_timeout_s=None)
    summary = MultiStream(model, sources, config=config).run()
    assert [s.state for s in summary.streams] == [StreamState.ENDED] * 2
    assert [s.frames for s in summary.streams] == [5, 5]
    assert summary.batches == 5 and summary.mean_batch == 2
    want = [(o + v, o + v) for v in (1, 3, 5, 7, 9) for o in (0, 100)]
    assert sorted(model.starts) == sorted(want)
    assert [s.drops for s in summary.streams] == [4, 4]  # every frame not run, none queued


class AgedSource:
    """A live source whose frames were captured ``age_s`` before ``read`` hands them out, at
    known wall-clock times ``T0 + index``; ``read_at`` records when each was handed out."""

    live = True
    fps = None
    T0 = 1_700_000_000.25

    def __init__(self, frames: int, age_s: float) -> None:
        self.name, self.frames, self.age_s = "aged", frames, age_s
        self.drops = self.reconnects = self.stalls = self.corrupt = 0
        self.read_at: list[float] = []

    def read(self) -> Frame | None:
        i = len(self.read_at)
        if i == self.frames:
            return None
        self.read_at.append(time.perf_counter())
        image = np.full((8, 8, 3), 50, np.uint8)
        return Frame(image, i, self.read_at[-1] - self.age_s, self.T0 + i)

    def close(self) -> None:
        pass


def test_jsonl_records_capture_time_and_age(tmp_path, models) -> None:
    """Age = result time - capture time: at least the age the frame had when read, at most
    that plus the time from the read to the result."""
    source = AgedSource(frames=4, age_s=0.25)
    done_at: list[float] = []
    path = tmp_path / "out.jsonl"
    summary = Pipeline(
        Engine(models["dense"], "cpu"),
        source,
        [JsonlSink(path)],
        on_result=lambda f, r, t: done_at.append(time.perf_counter()),
    ).run()
    records = [json.loads(line) for line in path.read_text().splitlines()][1:]  # after the header
    assert [r["wall_time"] for r in records] == [AgedSource.T0 + i for i in range(4)]
    for rec, read, done in zip(records, source.read_at, done_at):
        assert 250.0 <= rec["age_ms"] <= 250.0 + (done - read) * 1e3
        assert rec["age_ms"] == rec["latency_ms"]["total"]
    ages = sorted(r["age_ms"] for r in records)
    assert summary.latency_p50_ms == pytest.approx(np.percentile(ages, 50), abs=1e-3)
    assert 250.0 <= summary.latency_p50_ms <= summary.latency_p90_ms <= summary.latency_p99_ms
    assert "capture to result p50 " in summary.line()
