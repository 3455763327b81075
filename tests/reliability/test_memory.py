"""A long run keeps memory flat: the engine and the threaded pipeline (with a JSON-lines sink)
over a few thousand small frames, resident memory measured after warm-up and at the end."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.sinks import JsonlSink
from edge_mtl.runtime.sources import Frame
from tests.runtime.conftest import make_frames

WARMUP, FRAMES = 200, 3000
ALLOWED_GROWTH_MB = 30.0


def rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux /proc)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class RepeatingFrames:
    """A file-like (non-live) source handing out ``n`` frames cycled from a small list."""

    live = False
    fps: float | None = None
    drops = reconnects = stalls = corrupt = 0

    def __init__(self, images: list[np.ndarray], n: int) -> None:
        self.name, self._images, self._n, self._i = "memory", images, n, 0

    def read(self) -> Frame | None:
        if self._i >= self._n:
            return None
        image = self._images[self._i % len(self._images)]
        self._i += 1
        return Frame(image, self._i - 1, time.perf_counter(), time.time())

    def close(self) -> None:
        self._i = self._n


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_memory_stays_flat_over_thousands_of_frames(art, tmp_path) -> None:
    images = make_frames(8) + make_frames(4, h=90, w=160, seed=3) + make_frames(4, h=31, w=17)
    engine = Engine(art["model"], "cpu", EngineConfig(intra_op_threads=1))
    marks: dict[str, float] = {}

    def on_result(frame: Frame, result, times) -> None:
        if frame.index == WARMUP:
            marks["warm"] = rss_mb()

    sink = JsonlSink(tmp_path / "out.jsonl")
    summary = Pipeline(engine, RepeatingFrames(images, FRAMES), [sink], on_result=on_result).run()
    marks["end"] = rss_mb()
    assert summary.frames == FRAMES
    assert sink.frames == FRAMES
    growth = marks["end"] - marks["warm"]
    assert growth < ALLOWED_GROWTH_MB, (
        f"RSS grew {growth:.1f} MB from frame {WARMUP} ({marks['warm']:.0f} MB) to frame "
        f"{FRAMES} ({marks['end']:.0f} MB)"
    )
