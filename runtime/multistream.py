"""Several sources through one engine: the newest frame of each stream batched into one
``session.run``, each result routed back to its own stream's sinks.

Threads::

    reader (one per stream)   file: source.read() -> letterbox + normalise -> the buffer
                              live: source.read() -> the buffer's one slot (newest frame wins)
    batcher                   one frame from each stream that has one -> letterbox + normalise
                              the live ones -> (N, 3, H, W) -> run
    main (the caller)         postprocess, the stream's sinks, Ctrl-C

A file stream's buffer holds ``queue_size`` preprocessed frames and its reader waits while it is
full (back-pressure: every frame, in order). A live stream is pulled: its buffer holds the
newest raw frame, replaced (and counted in ``drops``) whenever a newer one arrives, and the
batcher takes and preprocesses it only when the batch is about to run (and holds back while two
batches wait for postprocessing); so a result is at most one camera interval plus one pass of
preprocess + batched inference + postprocess old. The batcher waits for the first ready frame
of any stream, then at most ``max_wait_ms`` (the only deliberate wait) for the streams still
running that have nothing ready, so one slow stream costs the others a few milliseconds per
batch, never a stall. A stream whose source ends, raises, or
blocks in ``read()`` longer than ``stall_timeout_s`` is removed and reported; the others go on.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_mtl.runtime import plumbing
from edge_mtl.runtime.engine import Engine, FrameResult
from edge_mtl.runtime.errors import EdgeMTLError
from edge_mtl.runtime.plumbing import END
from edge_mtl.runtime.preprocess import Letterbox
from edge_mtl.runtime.sinks import Sink, StageTimes
from edge_mtl.runtime.sources import Frame, FrameSource

log = logging.getLogger("edge_mtl.runtime")


class StreamState(enum.Enum):
    """Where a stream stands. Every state but ``RUNNING`` is final."""

    RUNNING = "running"
    ENDED = "ended"  # the source ended or max_frames was reached
    FAILED = "failed"  # read() or preprocessing raised; ``error`` says what
    STALLED = "stalled"  # read() blocked longer than stall_timeout_s; the reader was abandoned
    STOPPED = "stopped"  # the run was stopped (Ctrl-C, a window's q, stop()) before it ended


@dataclass(frozen=True)
class MultiStreamConfig:
    """How streams are batched. ``max_wait_ms``: after the first frame of a batch is ready, how
    long to wait for the other running streams; ``max_batch``: frames per batch (``None``: one
    per stream); ``queue_size``: frames a file stream may read ahead (live streams: 1);
    ``stall_timeout_s``: a ``read()`` blocked this long removes the stream (``None``: never);
    ``max_frames``: frames per stream."""

    max_wait_ms: float = 3.0
    max_batch: int | None = None
    queue_size: int = 2
    stall_timeout_s: float | None = 30.0
    max_frames: int | None = None


@dataclass
class StreamSummary:
    """One stream's share of a run. ``seconds`` runs from the start of the run to the stream's
    last result; latencies (milliseconds) from capture to result ready, each frame's age at its
    result (``live`` False: a file's, counted from the read, the read-ahead queue included)."""

    index: int
    name: str
    state: StreamState
    frames: int = 0
    seconds: float = 0.0
    drops: int = 0
    reconnects: int = 0
    error: str | None = None
    latency_p50_ms: float = 0.0
    latency_p90_ms: float = 0.0
    latency_p99_ms: float = 0.0
    live: bool = True

    @property
    def fps(self) -> float:
        """This stream's frames per second (0.0 when it delivered none)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for the run summary: frames, FPS, capture (or read) to result p50/p90/p99
        ms, drops, state."""
        state = self.state.value + (f": {self.error}" if self.error else "")
        ages = (self.latency_p50_ms, self.latency_p90_ms, self.latency_p99_ms)
        return (
            f"stream {self.index} {self.name}: {self.frames} frames, {self.fps:.1f} FPS, "
            f"{plumbing.age_words(self.live, *ages)}, drops {self.drops}, "
            f"reconnects {self.reconnects}, {state}"
        )


@dataclass
class MultiStreamSummary:
    """What a multi-stream run did: one :class:`StreamSummary` per stream (in source order),
    ``batches`` session runs holding ``batched_frames`` frames, ``inference_mean_ms`` per run."""

    streams: list[StreamSummary] = field(default_factory=list)
    seconds: float = 0.0
    batches: int = 0
    batched_frames: int = 0
    inference_mean_ms: float = 0.0
    interrupted: bool = False

    @property
    def frames(self) -> int:
        """Frames delivered over all streams."""
        return sum(s.frames for s in self.streams)

    @property
    def fps(self) -> float:
        """Aggregate frames per second over all streams."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        """Frames per ``session.run`` on average."""
        return self.batched_frames / self.batches if self.batches else 0.0

    @property
    def lost(self) -> list[StreamSummary]:
        """The streams that failed or stalled, in source order."""
        return [s for s in self.streams if s.state in (StreamState.FAILED, StreamState.STALLED)]

    def line(self) -> str:
        """The aggregate line; ``lines()`` adds one line per stream before it."""
        lost = f", {len(self.lost)} failed or stalled" if self.lost else ""
        end = " (interrupted)" if self.interrupted else ""
        return (
            f"all {len(self.streams)} streams: {self.frames} frames in {self.seconds:.2f} s, "
            f"{self.fps:.1f} FPS, {self.batches} batches of {self.mean_batch:.1f} frames on "
            f"average, inference {self.inference_mean_ms:.1f} ms per batch{lost}{end}"
        )

    def lines(self) -> list[str]:
        """One :meth:`StreamSummary.line` per stream, then the aggregate :meth:`line`."""
        return [s.line() for s in self.streams] + [self.line()]


@dataclass
class _Item:
    """A captured frame, preprocessed: ``x`` (1, 3, H, W) in the model's input dtype (``None``
    with ``letterbox`` until the batcher preprocesses a pulled live frame)."""

    stream: _Stream
    frame: Frame
    x: np.ndarray | None = None
    letterbox: Letterbox | None = None
    t_pre: float = 0.0  # seconds


@dataclass(eq=False)
class _Stream:
    index: int
    name: str
    source: FrameSource
    sinks: list[Sink]
    capacity: int
    buf: deque[_Item] = field(default_factory=deque)
    state: StreamState = StreamState.RUNNING
    error: str | None = None
    taken: int = 0  # frames put into the buffer (pulled: taken into a batch)
    replaced: int = 0  # pulled frames replaced in the buffer by a newer one (drops)
    done: int = 0  # results delivered to the sinks
    read_since: float | None = None  # perf_counter() when the reader entered read(), else None
    t_last: float | None = None  # perf_counter() of the last result
    latencies: list[float] = field(default_factory=list)
    sinks_closed: bool = False
    reader: threading.Thread | None = None

    @property
    def pull(self) -> bool:
        """A live stream, pulled: the buffer holds the newest raw frame."""
        return bool(self.source.live)


class MultiStream:
    """Runs ``engine`` over every source in ``sources`` until all have ended, failed or stalled,
    a sink asks to stop (``stop_requested``), :meth:`stop` is called, or Ctrl-C.

    ``sinks[i]`` are stream ``i``'s sinks (default: none); ``names[i]`` its name in summaries
    (default: the source's ``name``). ``on_result(stream_index, frame, result, times)`` is
    called on the main thread after that stream's sinks.
    """

    def __init__(
        self,
        engine: Engine,
        sources: Sequence[FrameSource],
        sinks: Sequence[Sequence[Sink]] | None = None,
        names: Sequence[str] | None = None,
        config: MultiStreamConfig | None = None,
        on_result: Callable[[int, Frame, FrameResult, StageTimes], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = c = config or MultiStreamConfig()
        sinks = sinks if sinks is not None else [[] for _ in sources]
        names = names if names is not None else [s.name for s in sources]
        if not (len(sinks) == len(names) == len(sources) >= 1):
            raise ValueError("MultiStream: one list of sinks and one name per source, >= 1 source")
        self._streams = [
            _Stream(i, n, src, list(sk), 1 if src.live else c.queue_size)
            for i, (src, sk, n) in enumerate(zip(sources, sinks, names))
        ]
        self._pull = any(s.pull for s in self._streams)
        self._slot = threading.Semaphore(plumbing.PULL_IN_FLIGHT)  # pull: batches in flight
        self.on_result = on_result
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._q_post: queue.Queue[Any] = queue.Queue(2)
        self._interrupted = False
        self._error: BaseException | None = None
        self._batch_sizes: list[int] = []
        self._inference_s = 0.0
        self._rotate = 0  # first stream considered when a batch cannot take every stream

    def stop(self) -> None:
        """End the run after the batch in hand (thread-safe); streams still running: STOPPED."""
        self._interrupted = True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    # ---- readers ------------------------------------------------------------------------------

    def _read_loop(self, s: _Stream) -> None:
        end, error = StreamState.ENDED, None
        limit = self.config.max_frames
        try:
            while True:
                with self._cond:  # a pulled stream never waits: a newer frame replaces the old
                    while not s.pull and len(s.buf) >= s.capacity and not self._stop.is_set():
                        self._cond.wait(0.1)
                if self._stop.is_set():
                    end = StreamState.STOPPED
                    return
                if s.state is not StreamState.RUNNING or (limit is not None and s.taken >= limit):
                    return
                s.read_since = time.perf_counter()
                frame = s.source.read()
                s.read_since = None
                if frame is None:
                    return
                item = _Item(s, frame)
                if not s.pull:  # a pulled frame is preprocessed by the batcher, when it runs
                    t0 = time.perf_counter()
                    x, lbs = self.engine.preprocess([frame.image])
                    item.x, item.letterbox, item.t_pre = x, lbs[0], time.perf_counter() - t0
                with self._cond:
                    if s.state is not StreamState.RUNNING:  # declared stalled meanwhile
                        return
                    if s.pull and s.buf:
                        s.buf.clear()
                        s.replaced += 1
                    s.buf.append(item)
                    s.taken += 0 if s.pull else 1
                    self._cond.notify_all()
        except Exception as e:  # whatever breaks one stream must not stop the others
            end = StreamState.FAILED
            error = str(e) if isinstance(e, EdgeMTLError) else f"{type(e).__name__}: {e}"
        finally:
            with self._cond:
                if s.state is StreamState.RUNNING:
                    s.state, s.error = end, error
                    if end is StreamState.FAILED:
                        log.warning("stream %d %s failed: %s", s.index, s.name, error)
                self._cond.notify_all()

    # ---- batcher ------------------------------------------------------------------------------

    def _check_stalls(self) -> None:
        """Remove streams whose reader has been inside ``read()`` too long (lock held)."""
        limit = self.config.stall_timeout_s
        if limit is None:
            return
        now = time.perf_counter()
        for s in self._streams:
            since = s.read_since
            if s.state is not StreamState.RUNNING or s.buf or since is None or now - since < limit:
                continue
            s.state = StreamState.STALLED
            s.error = f"no frame for {limit:g} s"
            log.warning("stream %d %s stalled: no frame for %g s", s.index, s.name, limit)

    def _gather(self) -> list[_Item] | None:
        """One frame from each stream that has one; ``None`` when no stream can give more."""
        streams = self._streams
        with self._cond:
            while True:
                self._check_stalls()
                if self._stop.is_set():
                    return None
                if any(s.buf for s in streams):
                    break
                if all(s.state is not StreamState.RUNNING for s in streams):
                    return None
                self._cond.wait(0.05)
            deadline = time.perf_counter() + self.config.max_wait_ms / 1e3
            while not self._stop.is_set():
                left = deadline - time.perf_counter()
                missing = any(s.state is StreamState.RUNNING and not s.buf for s in streams)
                if not missing or left <= 0:
                    break
                self._cond.wait(left)
            n = len(streams)
            order = [streams[(self._rotate + k) % n] for k in range(n)]
            ready = [s for s in order if s.buf][: self.config.max_batch or n]
            self._rotate = (ready[-1].index + 1) % n
            items = [s.buf.popleft() for s in ready]
            for s in ready:
                if s.pull:
                    s.taken += 1
                    if self.config.max_frames is not None and s.taken >= self.config.max_frames:
                        s.state = StreamState.ENDED
            self._cond.notify_all()  # readers waiting for room
        return items

    def _preprocess_pulled(self, items: list[_Item]) -> None:
        """Letterbox + normalise the pulled live frames of a batch, now that it is to run."""
        raw = [it for it in items if it.x is None]
        if not raw:
            return
        t0 = time.perf_counter()
        x, lbs = self.engine.preprocess([it.frame.image for it in raw])
        share = (time.perf_counter() - t0) / len(raw)  # each frame's part of the batch's time
        for k, it in enumerate(raw):
            it.x, it.letterbox, it.t_pre = x[k : k + 1], lbs[k], share

    def _batcher(self) -> None:
        while (not self._pull or plumbing.acquire(self._slot, self._stop)) and (
            items := self._gather()
        ) is not None:
            self._preprocess_pulled(items)
            xs = [it.x for it in items if it.x is not None]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            t0 = time.perf_counter()
            outputs = self.engine.run(x)  # (N, ...) per output, row k = items[k]
            t_inf = time.perf_counter() - t0
            self._inference_s += t_inf
            self._batch_sizes.append(len(items))
            if not plumbing.put(self._q_post, (items, outputs, t_inf), self._stop):
                return

    def _keep_error(self, e: BaseException) -> None:
        self._error = e  # re-raised on the main thread by run()

    # ---- main thread --------------------------------------------------------------------------

    def run(self) -> MultiStreamSummary:
        """Run to the end; returns the summary. Every sink and source is closed on every exit
        path; an inference or sink error is re-raised after cleanup. A failed, stalled or
        ended stream does not end the run; Ctrl-C does, with ``interrupted=True``."""
        for s in self._streams:
            s.reader = threading.Thread(
                target=self._read_loop, args=(s,), name=f"edge-mtl-read-{s.index}", daemon=True
            )
        batcher = plumbing.stage_thread(
            "batcher", self._batcher, self._q_post, self._stop, self._keep_error
        )
        restore_sigint = plumbing.stop_on_sigint(self.stop)
        t_start = time.perf_counter()
        try:
            for s in self._streams:
                s.reader.start()
            batcher.start()
            while (item := plumbing.get(self._q_post, self._stop, self._retire)) is not END:
                if self._pull:
                    self._slot.release()  # the next batch may be gathered now
                self._deliver(*item)
                self._retire()
                if self._stop.is_set() or plumbing.stop_requested(
                    k for s in self._streams for k in s.sinks
                ):
                    break
        except KeyboardInterrupt:
            self._interrupted = True
        finally:
            seconds = time.perf_counter() - t_start
            restore_sigint()
            self._shutdown(batcher)
        if self._error is not None:
            raise self._error
        return self._summary(t_start, seconds)

    def _deliver(self, items: list[_Item], outputs: dict[str, np.ndarray], t_inf: float) -> None:
        for k, it in enumerate(items):
            t0 = time.perf_counter()
            row = {name: v[k : k + 1] for name, v in outputs.items()}
            assert it.letterbox is not None, "every item is preprocessed before it runs"
            result = self.engine.postprocess(row, [it.letterbox])[0]
            t1 = time.perf_counter()
            total = (t1 - it.frame.t_capture) * 1e3
            times = StageTimes(it.t_pre * 1e3, t_inf * 1e3, (t1 - t0) * 1e3, total)
            s = it.stream
            for sink in s.sinks:
                sink.write(it.frame, result, times)
            s.done += 1
            s.t_last = t1
            s.latencies.append(total)
            if self.on_result is not None:
                self.on_result(s.index, it.frame, result, times)

    def _retire(self) -> None:
        """Close the sinks of streams that are over and fully delivered (files complete now)."""
        for s in self._streams:
            over = s.state is not StreamState.RUNNING and s.done == s.taken and not s.buf
            if not s.sinks_closed and over:
                self._close_sinks(s)

    def _close_sinks(self, s: _Stream) -> None:
        s.sinks_closed = True
        failed = plumbing.close_all(s.sinks)
        if failed is not None and self._error is None:
            self._error = failed

    def _shutdown(self, batcher: threading.Thread) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # Live sources first: closing wakes a reader waiting in read(). A file source is closed
        # only once its reader has left read(); a stalled reader is abandoned (daemon thread).
        for s in self._streams:
            if s.source.live:
                s.source.close()
        if batcher.ident is not None:
            batcher.join(timeout=10.0)
        deadline = time.perf_counter() + 10.0
        for s in self._streams:
            if s.reader is not None and s.reader.ident is not None:
                # A reader out of read() leaves within 0.1 s of the stop; a file read takes
                # milliseconds, so one still inside read() after a second is not coming back.
                inside = s.read_since is not None and not s.source.live
                left = max(0.0, deadline - time.perf_counter())
                if s.state is not StreamState.STALLED:
                    s.reader.join(timeout=min(left, 1.0) if inside else left)
                if s.reader.is_alive():
                    log.warning("stream %d %s: reader still blocked in read()", s.index, s.name)
                elif not s.source.live:
                    s.source.close()
            with self._cond:
                if s.state is StreamState.RUNNING:
                    s.state = StreamState.STOPPED
            if not s.sinks_closed:
                self._close_sinks(s)

    def _summary(self, t_start: float, seconds: float) -> MultiStreamSummary:
        # Over the span to the last result, like each stream's own FPS (not the shutdown).
        last = max((s.t_last for s in self._streams if s.t_last is not None), default=None)
        seconds = last - t_start if last is not None else seconds
        out = MultiStreamSummary(seconds=seconds, interrupted=self._interrupted)
        out.batches = len(self._batch_sizes)
        out.batched_frames = sum(self._batch_sizes)
        out.inference_mean_ms = 1e3 * self._inference_s / out.batches if out.batches else 0.0
        for s in self._streams:
            row = StreamSummary(s.index, s.name, s.state, s.done, error=s.error, live=s.pull)
            row.seconds = (s.t_last - t_start) if s.t_last is not None else 0.0
            row.drops = int(s.source.drops) + s.replaced
            row.reconnects = int(s.source.reconnects)
            p50, p90, p99 = plumbing.latency_percentiles(s.latencies)
            row.latency_p50_ms, row.latency_p90_ms, row.latency_p99_ms = p50, p90, p99
            out.streams.append(row)
        return out
