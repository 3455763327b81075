"""Latency statistics of timed calls: percentiles, spread and throughput, in milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency over the timed calls of one row, milliseconds per call (one call = one batch)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


def latency_stats(ms: Sequence[float]) -> LatencyStats:
    """Percentiles (linear interpolation, numpy's default), mean, population std, min and max
    of latencies in milliseconds. Raises ValueError on an empty sequence."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("latency_stats: no timings")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        float(p50), float(p90), float(p99), float(a.mean()), float(a.std()), float(a.min()),
        float(a.max()),
    )  # fmt: skip


def throughput(ms: Sequence[float], batch: int) -> float:
    """Images per second over the timed calls (milliseconds each): ``batch`` images per call."""
    total_s = float(np.sum(ms)) / 1e3
    return batch * len(ms) / total_s if total_s > 0 else 0.0
