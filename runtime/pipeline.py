"""Capture -> preprocess -> inference -> postprocess + sinks, overlapped on threads.

Each stage runs on its own thread joined by small bounded queues, so while the model runs on
frame k, frame k+1 is being letterboxed and frame k+2 decoded; end-to-end FPS approaches bare
``session.run`` FPS. Postprocess and the sinks run on the calling (main) thread, where GUI
windows must live and where Ctrl-C arrives. Queues block (no frames lost here): a file source is
read by a capture thread throttled to the model's pace; a live source already has its own
latest-frame capture thread, so the preprocess thread takes the newest frame straight from it
and hands it on through a one-slot queue: a frame never waits behind stale ones.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.sinks import Sink, StageTimes
from edge_mtl.runtime.sources import FrameSource

log = logging.getLogger("edge_mtl.runtime")

_END = object()  # end-of-stream marker passed down the queues


@dataclass
class RunSummary:
    """What a run did. Latencies in milliseconds, ``total`` = capture to result ready."""

    frames: int = 0
    seconds: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    stage_mean_ms: dict[str, float] = field(default_factory=dict)
    drops: int = 0
    reconnects: int = 0
    stalls: int = 0
    corrupt: int = 0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of ``edge-mtl run``."""
        stages = " / ".join(f"{k} {v:.1f}" for k, v in self.stage_mean_ms.items())
        end = " (interrupted)" if self.interrupted else ""
        return (
            f"{self.frames} frames in {self.seconds:.2f} s, {self.fps:.1f} FPS, latency p50 "
            f"{self.latency_p50_ms:.1f} ms p99 {self.latency_p99_ms:.1f} ms (mean ms: {stages}), "
            f"drops {self.drops}, reconnects {self.reconnects}"
            + (f", stalls {self.stalls}" if self.stalls else "")
            + (f", corrupt frames {self.corrupt}" if self.corrupt else "")
            + end
        )


class Pipeline:
    """Runs ``engine`` over ``source`` into ``sinks`` until the source ends, ``max_frames``
    frames are done, a sink asks to stop (``stop_requested``), or Ctrl-C.

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
        self.max_frames = max_frames
        self.on_result = on_result
        size = queue_size or (1 if source.live else 2)
        self._q_pre: queue.Queue[Any] = queue.Queue(size)
        self._q_inf: queue.Queue[Any] = queue.Queue(size)
        self._q_post: queue.Queue[Any] = queue.Queue(size)
        self._taken = 0  # frames taken from the source (for max_frames)
        self._stop = threading.Event()
        self._interrupted = False
        self._error: BaseException | None = None

    # ---- queue helpers that give up when the pipeline stops -------------------------------

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _worker(self, body: Callable[[], None], out: queue.Queue[Any]) -> Callable[[], None]:
        """Wrap a stage: any error is kept for the main thread and ends the stream downstream."""

        def run() -> None:
            try:
                body()
            except Exception as e:  # re-raised on the main thread by run()
                self._error = e
            finally:
                self._put(out, _END)

        return run

    # ---- stages -------------------------------------------------------------------------

    def _take(self) -> Any:
        """Next frame from the source, or ``_END`` (source ended, stopped, max_frames reached)."""
        if self._stop.is_set() or (self.max_frames is not None and self._taken >= self.max_frames):
            return _END
        frame = self.source.read()
        if frame is None:
            return _END
        self._taken += 1
        return frame

    def _capture(self) -> None:
        while (frame := self._take()) is not _END:
            if not self._put(self._q_pre, frame):
                return

    def _preprocess(self) -> None:
        live = self.source.live
        while (frame := self._take() if live else self._get(self._q_pre)) is not _END:
            t0 = time.perf_counter()
            x, lbs = self.engine.preprocess([frame.image])
            if not self._put(self._q_inf, (frame, x, lbs, time.perf_counter() - t0)):
                return

    def _inference(self) -> None:
        while (item := self._get(self._q_inf)) is not _END:
            frame, x, lbs, t_pre = item
            t0 = time.perf_counter()
            outputs = self.engine.run(x)
            if not self._put(self._q_post, (frame, outputs, lbs, t_pre, time.perf_counter() - t0)):
                return

    def run(self) -> RunSummary:
        """Run to the end; returns the summary. Sinks and source are closed on every exit path;
        an error from any stage is re-raised here after cleanup. Ctrl-C ends the run normally
        with ``interrupted=True``."""
        stages = [
            ("capture", self._capture, self._q_pre),
            ("preprocess", self._preprocess, self._q_inf),
            ("inference", self._inference, self._q_post),
        ]
        threads = [
            threading.Thread(target=self._worker(body, out), name=f"edge-mtl-{name}", daemon=True)
            for name, body, out in stages[1 if self.source.live else 0 :]
        ]
        restore_sigint = self._catch_sigint()
        summary = RunSummary()
        totals: list[float] = []
        sums = np.zeros(3)
        t_start = time.perf_counter()
        try:
            for t in threads:
                t.start()
            while (item := self._get(self._q_post)) is not _END:
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
                if self._interrupted or any(
                    getattr(s, "stop_requested", False) for s in self.sinks
                ):
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
            p50, p99 = np.percentile(totals, [50, 99])
            summary.latency_p50_ms, summary.latency_p99_ms = float(p50), float(p99)
            means = sums / n
            summary.stage_mean_ms = dict(zip(("preprocess", "inference", "postprocess"), means))
        summary.drops = self.source.drops
        summary.reconnects = self.source.reconnects
        summary.stalls = self.source.stalls
        summary.corrupt = self.source.corrupt
        return summary

    def _catch_sigint(self) -> Callable[[], None]:
        """First Ctrl-C: finish the frame in hand, then stop (every sink gets whole frames).
        A second Ctrl-C raises KeyboardInterrupt as usual. Returns the undo function."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupted = True
            self._stop.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, on_sigint)
        return lambda: signal.signal(signal.SIGINT, previous)

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
        errors = []
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # close every sink, report the first failure
                errors.append(e)
        if errors and self._error is None:
            self._error = errors[0]
