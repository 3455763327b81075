"""End to end: the real pipeline on a source at batch 1, against bare ``engine.run`` calls on the
same engine, and N copies of the source batched through one engine (``--streams``). Rounds of
each take turns, so a change in the machine's load hits every figure alike and their ratios stay
side-by-side figures.

A model with pixel tasks gets a ``segment`` stage beside ``postprocess``: what a run's sinks do
with the class maps (the JSON-lines RLE and summary, the overlay's translucent layer), timed on
frames of the pass after it ends, so the pipeline's own figures stay those of a run without
sinks. ``postprocess`` keeps the decoders' work (for pixel tasks a crop of the padding, plus the
argmax of models exported with ``--seg-logits``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_mtl.bench.timing import time_calls
from edge_mtl.runtime.engine import Engine, FrameResult
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.multistream import (
    MultiStream,
    MultiStreamConfig,
    MultiStreamSummary,
    StreamState,
)
from edge_mtl.runtime.overlay import draw_segmentations
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.plumbing import latency_percentiles
from edge_mtl.runtime.segment import segment_records
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame, FrameSource, open_source

E2E_ROUNDS = 3  # e2e passes and bare runs take turns this many times (see E2ERounds)
STREAM_ROUNDS = 3  # stream counts take turns this many times, so drifting load hits all alike
SEG_SAMPLES = 10  # frames per round whose segmentation post-processing is timed after the pass


@dataclass
class StreamsE2E:
    """``streams`` copies of the e2e source through one engine, the newest frame of each stream
    batched into one inference call. ``frames`` over all streams and rounds; ``seconds`` start
    to last result, summed over the rounds; ``fps`` aggregate frames/s; ``stream_fps`` each
    stream's frames/s; ``mean_batch`` frames per inference call; ``inference_ms`` mean ms per
    call; ``speedup`` = ``fps`` / the 1-stream ``fps`` measured in the same rounds;
    ``latency_*_ms`` each frame's age from capture to result, over all streams and rounds."""

    streams: int
    frames: int
    seconds: float
    fps: float
    stream_fps: list[float]
    mean_batch: float
    inference_ms: float
    speedup: float
    latency_p50_ms: float = 0.0
    latency_p90_ms: float = 0.0
    latency_p99_ms: float = 0.0


@dataclass
class E2E:
    """The real pipeline on a source at batch 1, over :data:`E2E_ROUNDS` rounds. ``stage_ms``:
    mean milliseconds per frame for decode, preprocess, inference, postprocess, and for a model
    with pixel tasks ``segment`` (:func:`segment_post_ms`); ``fps`` frames/s
    from first frame taken to last result, summed over the rounds; ``bare_fps`` bare
    ``session.run`` calls/s on the same engine, measured in turns with the pipeline passes;
    ``ratio`` = fps / bare_fps; ``latency_*_ms`` each frame's age from capture (as the capture
    thread saw it) to result: on a live source the age of what the model reports, on a file
    the read-ahead queue included; ``streams`` one :class:`StreamsE2E` dict per stream count
    (``None`` without ``e2e_streams``)."""

    source: str
    frames: int
    seconds: float
    fps: float
    bare_fps: float
    ratio: float
    stage_ms: dict[str, float]
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    streams: list[dict[str, Any]] | None = None


class TimedSource:
    """Wraps a frame source and records how long each ``read()`` took (milliseconds): the
    decode time for files; for live sources, the wait for the next frame."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.name, self.live, self.fps = inner.name, inner.live, inner.fps
        self.read_ms: list[float] = []

    @property
    def drops(self) -> int:
        return int(self.inner.drops)

    @property
    def reconnects(self) -> int:
        return int(self.inner.reconnects)

    @property
    def stalls(self) -> int:
        return int(self.inner.stalls)

    @property
    def corrupt(self) -> int:
        return int(self.inner.corrupt)

    def read(self) -> Frame | None:
        t0 = time.perf_counter_ns()
        frame = self.inner.read()
        if frame is not None:
            self.read_ms.append((time.perf_counter_ns() - t0) / 1e6)
        return frame

    def close(self) -> None:
        self.inner.close()


def segment_post_ms(image: np.ndarray, result: FrameResult) -> float:
    """Milliseconds of what a run's sinks do with one frame's class maps: the JSON-lines
    answers (COCO RLE and summary per pixel task, serialised) and the overlay's translucent
    layer, drawn on a copy of ``image`` (uint8 BGR HWC; the copy is not counted)."""
    canvas = image.copy()
    t0 = time.perf_counter_ns()
    json.dumps(segment_records(result.segmentations), separators=(",", ":"))
    draw_segmentations(canvas, result.segmentations)
    return (time.perf_counter_ns() - t0) / 1e6


class E2ERounds:
    """End-to-end rounds of one engine on a source, against bare ``engine.run(x)`` calls (``x``
    the preprocessed (1, 3, H, W) timed input). Each :meth:`round` times as many bare calls as
    the round has frames, then runs one pass of ``max_frames / E2E_ROUNDS`` frames (at least 1)
    through the real pipeline (no sinks) on a freshly opened source. :meth:`result` sums all
    rounds: ``fps`` and ``bare_fps`` each over all of them, so a change in the machine's load
    hits both alike and their ratio stays a side-by-side figure."""

    def __init__(self, engine: Engine, source_spec: str, max_frames: int, x: np.ndarray) -> None:
        self.engine, self.source_spec, self.x = engine, source_spec, x
        self.per_round = max(1, max_frames // E2E_ROUNDS)
        self.totals: list[float] = []
        self.sums = np.zeros(3)
        self.decode_ms: list[float] = []
        self.segment_ms: list[float] = []  # segment_post_ms of up to SEG_SAMPLES frames a round
        self._held: list[tuple[np.ndarray, FrameResult]] = []  # those frames, until timed
        self.seconds = self.bare_s = 0.0
        self.bare_calls = 0

    def _on_result(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        self.totals.append(times.total)
        self.sums[:] += (times.preprocess, times.inference, times.postprocess)
        if result.segmentations and len(self._held) < SEG_SAMPLES:
            self._held.append((frame.image, result))

    def round(self) -> None:
        """One round: bare calls, then one pipeline pass (InputError on a source with no
        frames; KeyboardInterrupt when the pass was interrupted)."""
        ms = time_calls(lambda: self.engine.run(self.x), self.per_round, None, 0)
        self.bare_s += sum(ms) / 1e3
        self.bare_calls += len(ms)
        source = TimedSource(open_source(self.source_spec))
        pipe = Pipeline(self.engine, source, max_frames=self.per_round, on_result=self._on_result)
        summary = pipe.run()
        if summary.interrupted:
            raise KeyboardInterrupt
        if summary.frames == 0:
            raise InputError(f"--e2e {self.source_spec}: the source gave no frames")
        self.seconds += summary.seconds
        self.decode_ms += source.read_ms
        self.segment_ms += [segment_post_ms(image, result) for image, result in self._held]
        self._held.clear()

    def result(self) -> E2E:
        """All rounds so far (at least one: :meth:`round` refuses a source without frames)."""
        frames = len(self.totals)
        fps = frames / self.seconds if self.seconds > 0 else 0.0
        bare_fps = self.bare_calls / self.bare_s if self.bare_s > 0 else 0.0
        stages = {"decode": float(np.mean(self.decode_ms)) if self.decode_ms else 0.0}
        means = (self.sums / frames).tolist()
        stages.update(zip(("preprocess", "inference", "postprocess"), means))
        if self.segment_ms:
            stages["segment"] = float(np.mean(self.segment_ms))
        p50, p90, p99 = latency_percentiles(self.totals)
        return E2E(
            source=self.source_spec, frames=frames, seconds=self.seconds, fps=fps,
            bare_fps=bare_fps, ratio=fps / bare_fps if bare_fps > 0 else 0.0, stage_ms=stages,
            latency_p50_ms=p50, latency_p90_ms=p90, latency_p99_ms=p99,
        )  # fmt: skip


def run_e2e(engine: Engine, source_spec: str, max_frames: int, x: np.ndarray) -> E2E:
    """:data:`E2E_ROUNDS` rounds of :class:`E2ERounds` of one engine, one after another."""
    rounds = E2ERounds(engine, source_spec, max_frames, x)
    for _ in range(E2E_ROUNDS):
        rounds.round()
    return rounds.result()


def run_streams(
    engine: Engine, source_spec: str, counts: Sequence[int], max_frames: int
) -> list[StreamsE2E]:
    """Open ``source_spec`` N times for each N in ``counts`` (and 1, the baseline) and run the
    copies through :class:`~edge_mtl.runtime.multistream.MultiStream` (no sinks). The counts
    take turns over :data:`STREAM_ROUNDS` rounds of ``max_frames / STREAM_ROUNDS`` frames per
    stream (at least 1), each round reopening the source; one result per N, ascending, over all
    rounds."""
    order = sorted({1, *counts})
    per_round = max(1, max_frames // STREAM_ROUNDS)
    runs: dict[int, list[MultiStreamSummary]] = {n: [] for n in order}
    ages: dict[int, list[float]] = {n: [] for n in order}
    for _ in range(STREAM_ROUNDS):
        for n in order:
            runs[n].append(_run_copies(engine, source_spec, n, per_round, ages[n]))
    out = [_combine(n, runs[n], ages[n]) for n in order]
    base = out[0].fps  # the 1-stream run
    for r in out:
        r.speedup = r.fps / base if base > 0 else 0.0
    return out


def _combine(n: int, summaries: Sequence[MultiStreamSummary], ages: list[float]) -> StreamsE2E:
    """One :class:`StreamsE2E` over the rounds of ``n`` streams (frames and seconds summed;
    ``ages`` every frame's capture-to-result ms)."""
    frames = sum(s.frames for s in summaries)
    seconds = sum(s.seconds for s in summaries)
    batches = sum(s.batches for s in summaries)
    per_stream = []
    for i in range(n):
        f = sum(s.streams[i].frames for s in summaries)
        sec = sum(s.streams[i].seconds for s in summaries)
        per_stream.append(f / sec if sec > 0 else 0.0)
    inference_ms = sum(s.inference_mean_ms * s.batches for s in summaries) / batches
    fps = frames / seconds if seconds > 0 else 0.0
    out = StreamsE2E(n, frames, seconds, fps, per_stream, frames / batches, inference_ms, 0.0)
    out.latency_p50_ms, out.latency_p90_ms, out.latency_p99_ms = latency_percentiles(ages)
    return out


def _run_copies(
    engine: Engine, source_spec: str, n: int, max_frames: int, ages: list[float]
) -> MultiStreamSummary:
    """One multi-stream run of ``n`` copies of the source (InputError when a stream fails);
    each frame's capture-to-result ms is appended to ``ages``."""
    sources: list[FrameSource] = []
    try:
        for _ in range(n):
            sources.append(open_source(source_spec))
    except BaseException:
        for src in sources:
            src.close()
        raise

    def on_result(index: int, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        ages.append(times.total)

    config = MultiStreamConfig(max_frames=max_frames)
    summary = MultiStream(engine, sources, config=config, on_result=on_result).run()
    if summary.interrupted:
        raise KeyboardInterrupt
    bad = next((s for s in summary.streams if s.state is not StreamState.ENDED), None)
    if bad is not None or summary.frames == 0:
        why = f"stream {bad.index} {bad.state.value}: {bad.error}" if bad else "no frames"
        raise InputError(f"--e2e {source_spec} x{n}: {why}")
    return summary
