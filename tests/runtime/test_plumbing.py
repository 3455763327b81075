"""The queue, thread, Ctrl-C and sink helpers both pipelines share."""

from __future__ import annotations

import queue
import signal
import threading

import pytest

from edge_mtl.runtime import plumbing
from edge_mtl.runtime.plumbing import END


def test_put_waits_for_room_and_gives_up_once_stopped() -> None:
    q: queue.Queue[int] = queue.Queue(1)
    stop = threading.Event()
    assert plumbing.put(q, 1, stop)
    threading.Timer(0.15, stop.set).start()
    assert not plumbing.put(q, 2, stop)  # full until the stop: nothing put
    assert q.get_nowait() == 1 and q.empty()


def test_get_drains_then_ends_and_idles_while_waiting() -> None:
    q: queue.Queue[int] = queue.Queue()
    stop = threading.Event()
    idles: list[int] = []

    def idle() -> None:  # the first empty poll stops the run
        idles.append(1)
        stop.set()

    q.put(7)
    assert plumbing.get(q, stop, idle) == 7 and not idles
    assert plumbing.get(q, stop, idle) is END
    assert idles == [1]


def test_stage_thread_hands_errors_over_and_always_ends_downstream() -> None:
    out: queue.Queue[object] = queue.Queue(2)
    errors: list[BaseException] = []

    def body() -> None:
        out.put("frame")
        raise ValueError("decoder broke")

    t = plumbing.stage_thread("test", body, out, threading.Event(), errors.append)
    t.start()
    t.join(5)
    assert t.name == "edge-mtl-test" and t.daemon
    assert [out.get_nowait(), out.get_nowait()] == ["frame", END]
    assert [str(e) for e in errors] == ["decoder broke"]


class _Sink:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.closed, self.stop_requested = fail, 0, False

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise OSError(f"disk full {id(self)}")


def test_close_all_closes_every_sink_and_reports_the_first_failure() -> None:
    sinks = [_Sink(), _Sink(fail=True), _Sink(fail=True), _Sink()]
    first = plumbing.close_all(sinks)
    assert [s.closed for s in sinks] == [1, 1, 1, 1]
    assert str(first) == f"disk full {id(sinks[1])}"
    assert plumbing.close_all([_Sink()]) is None
    assert not plumbing.stop_requested(sinks)
    sinks[3].stop_requested = True
    assert plumbing.stop_requested(sinks) and not plumbing.stop_requested([object()])


def test_latency_percentiles() -> None:
    assert plumbing.latency_percentiles([]) == (0.0, 0.0, 0.0)
    assert plumbing.latency_percentiles([5.0]) == (5.0, 5.0, 5.0)
    p50, p90, p99 = plumbing.latency_percentiles([float(v) for v in range(1, 102)])
    assert p50 == 51.0 and p90 == pytest.approx(91.0) and p99 == pytest.approx(100.0)


def test_acquire_waits_for_the_slot_and_gives_up_once_stopped() -> None:
    slot, stop = threading.Semaphore(1), threading.Event()
    assert plumbing.acquire(slot, stop)
    threading.Timer(0.15, slot.release).start()
    assert plumbing.acquire(slot, stop)  # released by the timer
    threading.Timer(0.15, stop.set).start()
    assert not plumbing.acquire(slot, stop)  # never released: gives up at the stop


def test_first_ctrl_c_calls_back_second_raises_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    calls: list[int] = []
    restore = plumbing.stop_on_sigint(lambda: calls.append(1))
    try:
        signal.raise_signal(signal.SIGINT)
        assert calls == [1]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is before
