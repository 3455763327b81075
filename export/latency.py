"""Deployed latency of several checkpoints, measured side by side: each is exported to an FP32
ONNX file and timed on the ONNX Runtime CPU provider in interleaved rounds
(:func:`edge_mtl.bench.timing.time_engines`), so a noisy machine slows every model alike instead
of whichever happened to run during the noise.

``edge-mtl compare`` reaches this through the :class:`~edge_mtl.bench.baseline.Baseline` the
composition root (``edge_mtl/cli.py``) hands it, since ``edge_mtl`` itself may not import
``export``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_mtl.bench.stats import latency_stats
from edge_mtl.bench.timing import bench_input, time_engines
from edge_mtl.export.onnx_export import ExportConfig, export
from edge_mtl.runtime.engine import Engine, EngineConfig


def side_by_side_latency(
    weights: dict[str, Path],
    workdir: Path,
    rounds: int = 5,
    runs_per_round: int = 10,
    warmup: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """name -> latency stats in ms (``p50_ms``, ``p90_ms``, ...) at batch 1 on the CPU. Each
    checkpoint is exported to ``workdir/<name>/model.onnx`` unless that file is newer."""
    engines: dict[str, Engine] = {}
    for name, w in weights.items():
        onnx_path = workdir / name / "model.onnx"
        if not onnx_path.is_file() or onnx_path.stat().st_mtime < w.stat().st_mtime:
            export(ExportConfig(weights=str(w), out=str(onnx_path), batch=1, parity_images=1))
        engines[name] = Engine(onnx_path, "cpu", EngineConfig(warmup_runs=warmup))
    names = list(engines)
    runs = [(engines[n], bench_input(engines[n], 1)) for n in names]  # (1, 3, H, W) noise

    def progress(k: int, ms: list[list[float]]) -> None:
        medians = ", ".join(f"{n} {np.median(v):.1f} ms" for n, v in zip(names, ms))
        log(f"latency round {k + 1}/{rounds}: {medians}")

    timings = time_engines(runs, [(runs_per_round, None)] * rounds, 0, progress)
    ms = dict(zip(names, timings))
    return {
        name: {f"{k}_ms": v for k, v in asdict(latency_stats(v)).items()} for name, v in ms.items()
    }
