"""How calls are timed: a warm-up, then each call on ``time.perf_counter_ns``, alone or in turns
with other callables, so drift in the machine's speed (other tenants, turbo, thermal limits) hits
them alike. ``edge-mtl bench``, ``quantize``'s latency table, ``compare``'s side-by-side latency
and the torch baseline all time through these functions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from edge_mtl.runtime.engine import Engine

TURN_BLOCK_S = 0.5  # --seconds: each row's turn is about this long
TURN_ROUNDS = 10  # --runs: the calls are split into at most this many turns per row

Block = tuple[int, float | None]  # one turn's amount: (runs, seconds) as time_calls takes them
OnRound = Callable[[int, list[list[float]]], None]  # (round index, ms per callable so far)


def time_calls(
    fn: Callable[[], object], runs: int, seconds: float | None, warmup: int
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then time each call: ``runs`` calls, or when
    ``seconds`` is set as many as start within ``seconds`` (at least one). Milliseconds."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = None if seconds is None else time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if (len(out) >= runs) if deadline is None else (time.perf_counter() >= deadline):
            return out


def turn_blocks(runs: int, seconds: float | None) -> list[Block]:
    """How :func:`time_in_turns` splits one row's budget: one ``(runs, seconds)`` amount per
    round, in :func:`time_calls`' terms. ``seconds`` is cut into rounds of about
    :data:`TURN_BLOCK_S`; ``runs`` into at most :data:`TURN_ROUNDS` near-equal parts. The
    amounts add up to the budget: ``runs`` calls, or ``seconds`` of timed calls."""
    if seconds is not None:
        rounds = max(1, math.ceil(seconds / TURN_BLOCK_S - 1e-9))
        return [(1, seconds / rounds)] * rounds
    rounds = max(1, min(runs, TURN_ROUNDS))
    q, extra = divmod(runs, rounds)
    return [(q + (i < extra), None) for i in range(rounds)]


def turn_order(k: int, n: int) -> list[int]:
    """Who goes when in round ``k`` of ``n`` takers of turns: 0..n-1 rotated by ``k``, so no
    taker always follows the same one."""
    return [(k + j) % n for j in range(n)]


def time_in_turns(
    calls: Sequence[Callable[[], object]],
    blocks: Sequence[Block],
    warmup: int,
    on_round: OnRound | None = None,
) -> list[list[float]]:
    """Time several callables in turns, so drift in the machine's speed hits them alike rather
    than whichever ran while it happened. After ``warmup`` untimed calls each, round k gives
    every callable one turn of ``blocks[k]`` (``(runs, seconds)`` as in :func:`time_calls`);
    the order rotates by one each round (:func:`turn_order`). Each turn starts with one untimed
    call, which absorbs the switch (caches, thread pools spinning down). ``on_round(k, ms)`` is
    called after each round. Returns the milliseconds per call, one list per callable."""
    for fn in calls:
        for _ in range(warmup):
            fn()
    ms: list[list[float]] = [[] for _ in calls]
    for k, (runs, seconds) in enumerate(blocks):
        for i in turn_order(k, len(calls)):
            ms[i] += time_calls(calls[i], runs, seconds, 1)
        if on_round is not None:
            on_round(k, ms)
    return ms


def bench_input(engine: Engine, batch: int) -> np.ndarray:
    """The timed input: ``batch`` seeded noise frames, preprocessed to (batch, 3, H, W) in the
    model's input dtype (float32, float16 or uint8)."""
    h, w = engine.meta.input_hw
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    return engine.preprocess(frames)[0]


def time_engines(
    runs: Sequence[tuple[Engine, np.ndarray]],
    blocks: Sequence[Block],
    warmup: int,
    on_round: OnRound | None = None,
) -> list[list[float]]:
    """:func:`time_in_turns` of bare ``engine.run(x)`` calls, one per ``(engine, x)`` pair
    (``x`` a preprocessed (N, 3, H, W) batch). Milliseconds per call, one list per pair."""
    calls = [lambda e=engine, x=x: e.run(x) for engine, x in runs]
    return time_in_turns(calls, blocks, warmup, on_round)
