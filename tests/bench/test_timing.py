"""Bench's statistics and timing: known percentiles, warm-up and budgets, turns that rotate, and
engines timed side by side."""

from __future__ import annotations

import math

import pytest

from edge_mtl.bench.stats import latency_stats, throughput
from edge_mtl.bench.timing import (
    bench_input,
    time_calls,
    time_engines,
    time_in_turns,
    turn_blocks,
)
from edge_mtl.runtime.engine import Engine, EngineConfig


def test_latency_stats_from_known_timings() -> None:
    s = latency_stats([float(v) for v in range(1, 101)])  # 1..100 ms, shuffled order irrelevant
    assert (s.p50, s.p90, s.p99) == pytest.approx((50.5, 90.1, 99.01))
    assert s.mean == pytest.approx(50.5)
    assert s.std == pytest.approx(math.sqrt((100**2 - 1) / 12))  # population std of 1..n
    assert (s.min, s.max) == (1.0, 100.0)
    assert latency_stats([4.0, 1.0, 3.0, 2.0]).p50 == pytest.approx(2.5)
    one = latency_stats([7.0])
    assert (one.p50, one.p99, one.std) == (7.0, 7.0, 0.0)
    with pytest.raises(ValueError):
        latency_stats([])


def test_time_calls_runs_warmup_and_seconds() -> None:
    calls: list[int] = []
    ms = time_calls(lambda: calls.append(1), runs=5, seconds=None, warmup=3)
    assert len(ms) == 5 and len(calls) == 8 and all(t >= 0 for t in ms)
    assert len(time_calls(lambda: None, runs=10**9, seconds=0.01, warmup=0)) >= 1
    assert throughput([10.0, 10.0], batch=4) == pytest.approx(400.0)


def test_turn_blocks_split_the_budget() -> None:
    assert turn_blocks(100, None) == [(10, None)] * 10
    assert [r for r, _ in turn_blocks(25, None)] == [3] * 5 + [2] * 5
    assert turn_blocks(3, None) == [(1, None)] * 3
    five = turn_blocks(100, 5.0)
    assert len(five) == 10 and all(r == 1 and s == pytest.approx(0.5) for r, s in five)
    assert turn_blocks(100, 0.2) == [(1, 0.2)]
    odd = turn_blocks(100, 1.2)  # three turns of 0.4 s, not two of 0.5 and a stub
    assert len(odd) == 3 and sum(s for _, s in odd) == pytest.approx(1.2)


def test_time_in_turns_rotates_and_warms_each_turn() -> None:
    log: list[str] = []
    calls = [lambda k=k: log.append(k) for k in "abc"]
    rounds: list[int] = []
    ms = time_in_turns(calls, [(2, None)] * 3, warmup=1, on_round=lambda k, _: rounds.append(k))
    assert [len(m) for m in ms] == [6, 6, 6] and rounds == [0, 1, 2]
    assert "".join(log[:3]) == "abc"  # warm-up
    # Each turn is one untimed call and 2 timed ones; the order rotates by one every round,
    # so every callable runs first once and after each of the others.
    turns = "".join(log[3:])
    assert turns == "aaabbbccc" + "bbbcccaaa" + "cccaaabbb"


def test_time_engines_times_each_engine_on_its_input(models) -> None:
    engines = [Engine(models[k], "cpu", EngineConfig(warmup_runs=0)) for k in ("dense", "batch1")]
    runs = [(e, bench_input(e, 1)) for e in engines]
    assert runs[0][1].shape == (1, 3, 32, 32)
    rounds: list[int] = []
    ms = time_engines(runs, [(2, None)] * 3, warmup=1, on_round=lambda k, _: rounds.append(k))
    assert [len(m) for m in ms] == [6, 6] and rounds == [0, 1, 2]
    assert all(t > 0 for m in ms for t in m)
