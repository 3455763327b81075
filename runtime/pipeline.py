"""Capture -> preprocess -> inference -> postprocess + sinks, overlapped on threads.

A file source delivers every frame: each stage runs on its own thread joined by small bounded
queues, so while the model runs on frame k, frame k+1 is being letterboxed and frame k+2
decoded; end-to-end FPS approaches bare ``session.run`` FPS. A live source is pulled: its own
capture thread keeps the newest frame, and the inference thread takes it, preprocesses it and
runs the model on it right away (holding back only while two results wait for the main
thread), so no frame waits in a hand-off and a result is at most one camera interval plus one
pass of preprocess + inference + postprocess old. Postprocess and the sinks run on the calling
(main) thread, where GUI windows must live and where Ctrl-C arrives.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_mtl.runtime import plumbing
from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.plumbing import END
from edge_mtl.runtime.sinks import Sink, StageTimes
from edge_mtl.runtime.sources import FrameSource

log = logging.getLogger("edge_mtl.runtime")


@dataclass
class RunSummary:
    """What a run did. Latencies in milliseconds from capture (as the capture thread saw it) to
    the result ready: each frame's age at its result. ``live``: a camera or stream; a file's
    frames are read ahead of the model, so their age counts from the read and includes the
    queue (FPS is a file run's figure)."""

    frames: int = 0
    seconds: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p90_ms: float = 0.0
    latency_p99_ms: float = 0.0
    stage_mean_ms: dict[str, float] = field(default_factory=dict)
    drops: int = 0
    reconnects: int = 0
    stalls: int = 0
    corrupt: int = 0
    interrupted: bool = False
    live: bool = True

    @property
    def fps(self) -> float:
        """Frames per second over the run (0.0 for an empty run)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of ``edge-mtl run``."""
        stages = " / ".join(f"{k} {v:.1f}" for k, v in self.stage_mean_ms.items())
        end = " (interrupted)" if self.interrupted else ""
        ages = (self.latency_p50_ms, self.latency_p90_ms, self.latency_p99_ms)
        return (
            f"{self.frames} frames in {self.seconds:.2f} s, {self.fps:.1f} FPS, "
            f"{plumbing.age_words(self.live, *ages)} (mean ms: {stages}), "
            f"drops {self.drops}, reconnects {self.reconnects}"
            + (f", stalls {self.stalls}" if self.stalls else "")
            + (f", corrupt frames {self.corrupt}" if self.corrupt else "")
            + end
        )


class Pipeline:
    """Runs ``engine`` over ``source`` into ``sinks`` until the source ends, ``max_frames``
    frames are done, a sink asks to stop (``stop_requested``), or Ctrl-C.

    ``queue_size``: frames each stage may hold ahead (file sources; default 2).

    ``on_result(frame, result, times)`` is called on the main thread after the sinks (tests and
    callers that want results in memory).
    """

    def __init__(
        self,
        engine: Engine,
        source: FrameSource,
        sinks: Sequence[Sink] = (),
        max_frames: int | None = None,
        queue_size: int | None = None,
        on_result: Callable[..., None] | None = None,
    ) -> None:
        self.engine, self.source, self.sinks = engine, source, list(sinks)
        self.pull = source.live
        self.max_frames = max_frames
        self.on_result = on_result
        size = queue_size or 2
        self._q_pre: queue.Queue[Any] = queue.Queue(size)
        self._q_inf: queue.Queue[Any] = queue.Queue(size)
        self._q_post: queue.Queue[Any] = queue.Queue(size)
        self._slot = threading.Semaphore(plumbing.PULL_IN_FLIGHT)  # pull: results in flight
        self._taken = 0  # frames taken from the source (for max_frames)
        self._stop = threading.Event()
        self._interrupted = False
        self._error: BaseException | None = None

    # ---- queue helpers that give up when the pipeline stops -------------------------------

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        return plumbing.put(q, item, self._stop)

    def _get(self, q: queue.Queue[Any]) -> Any:
        return plumbing.get(q, self._stop)

    def _keep_error(self, e: BaseException) -> None:
        self._error = e  # re-raised on the main thread by run()

    # ---- stages -------------------------------------------------------------------------

    def _take(self) -> Any:
        """Next frame from the source, or ``END`` (source ended, stopped, max_frames reached)."""
        if self._stop.is_set() or (self.max_frames is not None and self._taken >= self.max_frames):
            return END
        frame = self.source.read()
        if frame is None:
            return END
        self._taken += 1
        return frame

    def _capture(self) -> None:
        while (frame := self._take()) is not END:
            if not self._put(self._q_pre, frame):
                return

    def _preprocess(self) -> None:
        while (frame := self._get(self._q_pre)) is not END:
            t0 = time.perf_counter()
            x, lbs = self.engine.preprocess([frame.image])
            if not self._put(self._q_inf, (frame, x, lbs, time.perf_counter() - t0)):
                return

    def _inference(self) -> None:
        while (item := self._get(self._q_inf)) is not END:
            frame, x, lbs, t_pre = item
            t0 = time.perf_counter()
            outputs = self.engine.run(x)
            if not self._put(self._q_post, (frame, outputs, lbs, t_pre, time.perf_counter() - t0)):
                return

    def _pull(self) -> None:
        """Live source: unless results pile up before the main thread, take the newest frame and
        preprocess and run it on this one thread (no frame waits in a hand-off)."""
        while plumbing.acquire(self._slot, self._stop) and (frame := self._take()) is not END:
            t0 = time.perf_counter()
            x, lbs = self.engine.preprocess([frame.image])
            t1 = time.perf_counter()
            outputs = self.engine.run(x)
            t_inf = time.perf_counter() - t1
            if not self._put(self._q_post, (frame, outputs, lbs, t1 - t0, t_inf)):
                return

    def _stages(self) -> list[threading.Thread]:
        """The stage threads: capture, preprocess, inference for a file; one for a live source
        (its own capture thread keeps the newest frame)."""
        stages = [
            ("capture", self._capture, self._q_pre),
            ("preprocess", self._preprocess, self._q_inf),
            ("inference", self._inference, self._q_post),
        ]
        if self.pull:
            stages = [("inference", self._pull, self._q_post)]
        return [
            plumbing.stage_thread(name, body, out, self._stop, self._keep_error)
            for name, body, out in stages
        ]

    def run(self) -> RunSummary:
        """Run to the end; returns the summary. Sinks and source are closed on every exit path;
        an error from any stage is re-raised here after cleanup. Ctrl-C ends the run normally
        with ``interrupted=True``."""
        threads = self._stages()
        restore_sigint = plumbing.stop_on_sigint(self._on_sigint)
        summary = RunSummary(live=self.pull)
        totals: list[float] = []
        sums = np.zeros(3)
        t_start = time.perf_counter()
        try:
            for t in threads:
                t.start()
            while (item := self._get(self._q_post)) is not END:
                if self.pull:
                    self._slot.release()  # the next frame may be taken now
                frame, outputs, lbs, t_pre, t_inf = item
                t0 = time.perf_counter()
                result = self.engine.postprocess(outputs, lbs)[0]
                t1 = time.perf_counter()
                times = StageTimes(
                    t_pre * 1e3, t_inf * 1e3, (t1 - t0) * 1e3, (t1 - frame.t_capture) * 1e3
                )
                totals.append(times.total)
                sums += (times.preprocess, times.inference, times.postprocess)
                for sink in self.sinks:
                    sink.write(frame, result, times)
                if self.on_result is not None:
                    self.on_result(frame, result, times)
                if self._interrupted or plumbing.stop_requested(self.sinks):
                    break
        except KeyboardInterrupt:
            self._interrupted = True
        finally:
            summary.seconds = time.perf_counter() - t_start
            restore_sigint()
            self._shutdown(threads)
        summary.interrupted = self._interrupted
        if self._error is not None:
            raise self._error
        n = len(totals)
        summary.frames = n
        if n:
            p50, p90, p99 = plumbing.latency_percentiles(totals)
            summary.latency_p50_ms, summary.latency_p90_ms, summary.latency_p99_ms = p50, p90, p99
            means = sums / n
            summary.stage_mean_ms = dict(zip(("preprocess", "inference", "postprocess"), means))
        summary.drops = self.source.drops
        summary.reconnects = self.source.reconnects
        summary.stalls = self.source.stalls
        summary.corrupt = self.source.corrupt
        return summary

    def _on_sigint(self) -> None:
        """First Ctrl-C: finish the frame in hand, then stop; a second one raises as usual."""
        self._interrupted = True
        self._stop.set()

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        # A live source's read() may be waiting on a stream; closing it first wakes the reader.
        # A file source is closed only after its reader thread has left read().
        if self.source.live:
            self.source.close()
        for t in threads:
            if t.ident is not None:
                t.join(timeout=10.0)
        if not self.source.live:
            self.source.close()
        failed = plumbing.close_all(self.sinks)
        if failed is not None and self._error is None:
            self._error = failed
