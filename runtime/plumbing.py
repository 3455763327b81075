"""Threads, queues, Ctrl-C, sink closing and latency statistics shared by one stream
(:class:`~edge_mtl.runtime.pipeline.Pipeline`) and many (:class:`~edge_mtl.runtime.multistream.
MultiStream`).

Stages run on daemon threads joined by bounded queues; a shared ``threading.Event`` stops them.
Every wait polls the event every 0.1 s, so no thread outlives a stop by more than that (plus the
call in hand). Postprocess, sinks and Ctrl-C stay on the caller's (main) thread.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

END = object()  # end-of-stream marker passed down the queues
POLL_S = 0.1  # how often a blocked put/get looks at the stop event
# Live sources: results in flight between the pulling thread and the main thread (one being
# made, one waiting for postprocess). With one, the pulling thread would wait for the main
# thread to wake up before every frame, which cost 18% FPS on a loaded 2-core machine.
PULL_IN_FLIGHT = 2


class Closable(Protocol):
    """A sink (or anything) with ``close()``; ``stop_requested`` when present asks to end."""

    def close(self) -> None:
        """Flush and release; called exactly once per run."""
        ...


def put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item``, waiting while ``q`` is full; False (nothing put) once ``stop`` is set."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def acquire(slot: threading.Semaphore, stop: threading.Event) -> bool:
    """Take ``slot``, waiting while it is taken; False (not taken) once ``stop`` is set."""
    while not stop.is_set():
        if slot.acquire(timeout=POLL_S):
            return True
    return False


def get(q: queue.Queue[Any], stop: threading.Event, idle: Callable[[], None] | None = None) -> Any:
    """The next item of ``q``, or :data:`END` once ``q`` is empty and ``stop`` is set.
    ``idle`` is called after every empty poll (housekeeping while waiting)."""
    while True:
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if stop.is_set():
                return END
            if idle is not None:
                idle()


def stage_thread(
    name: str,
    body: Callable[[], None],
    out: queue.Queue[Any],
    stop: threading.Event,
    on_error: Callable[[BaseException], None],
) -> threading.Thread:
    """A daemon thread ``edge-mtl-<name>`` running ``body``. An exception goes to ``on_error``
    (the main thread re-raises it after cleanup); :data:`END` always follows downstream."""

    def run() -> None:
        try:
            body()
        except Exception as e:  # handed to the main thread, which re-raises it
            on_error(e)
        finally:
            put(out, END, stop)

    return threading.Thread(target=run, name=f"edge-mtl-{name}", daemon=True)


def stop_on_sigint(on_first: Callable[[], None]) -> Callable[[], None]:
    """Route the first Ctrl-C to ``on_first`` (finish the frame or batch in hand, then stop, so
    every sink gets whole frames); a second one raises KeyboardInterrupt as usual. Returns the
    function that restores the previous handler. Off the main thread: nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigint(signum: int, frame: Any) -> None:
        on_first()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, previous)


def stop_requested(sinks: Iterable[object]) -> bool:
    """Whether a sink asks to end the run (a window's q or Esc sets ``stop_requested``)."""
    return any(getattr(s, "stop_requested", False) for s in sinks)


def close_all(sinks: Iterable[Closable]) -> Exception | None:
    """Close every sink even when one fails; returns the first failure (None: all closed)."""
    first: Exception | None = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as e:  # close the rest, report the first
            if first is None:
                first = e
    return first


def latency_percentiles(values_ms: Iterable[float]) -> tuple[float, float, float]:
    """(p50, p90, p99) of latencies in milliseconds (linear interpolation); zeros when empty."""
    a = np.asarray(list(values_ms), dtype=np.float64)
    if a.size == 0:
        return 0.0, 0.0, 0.0
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def age_words(live: bool, p50: float, p90: float, p99: float) -> str:
    """The summary lines' age figures (ms): from capture on a camera or stream, from the read on
    a file (whose frames wait in the read-ahead queues)."""
    return (
        f"{'capture' if live else 'read'} to result p50 {p50:.1f} ms p90 {p90:.1f} ms "
        f"p99 {p99:.1f} ms"
    )
