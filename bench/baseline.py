"""The one plug between the measuring tools and the training side: a checkpoint can only be
loaded with torch, which bench never imports, so the composition root (``edge_mtl/cli.py``)
hands bench and compare a :class:`Baseline` (``edge_mtl.export.torch_baseline.TorchBaseline``),
made on first use so that commands which do not need it never import torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edge_mtl.bench.schema import BenchSettings, Row

Log = Callable[[str], None]


class Baseline(Protocol):
    """Measures checkpoints beside the ONNX models, with bench's own timing functions."""

    def rows(
        self,
        ckpt: str | Path,
        settings: BenchSettings,
        machine: dict[str, Any],
        session_index: int,
        input_hw: tuple[int, int] | None,
        log: Log,
    ) -> list[Row]:
        """``bench --torch CKPT``: one row per batch size of ``settings`` for the checkpoint in
        eager mode, timed like the ONNX rows at ``input_hw`` (H, W) pixels (None: the
        checkpoint's training size); ``runtime`` is ``"torch"``."""
        ...

    def call(self, row: Row, settings: BenchSettings) -> Callable[[], object]:
        """The timed call of a row :meth:`rows` made, for timing in turns with the ONNX rows
        (:func:`edge_mtl.bench.measure.retime_in_turns`)."""
        ...

    def latency(self, weights: dict[str, Path], workdir: Path) -> dict[str, dict[str, float]]:
        """``compare``: each checkpoint (name -> path) exported to FP32 ONNX under ``workdir``
        and timed side by side at batch 1 on the CPU: name -> ``p50_ms``, ``p90_ms``, ``p99_ms``,
        ``mean_ms``, ``std_ms``, ``min_ms``, ``max_ms``."""
        ...


BaselineFactory = Callable[[], Baseline]  # makes the baseline on first use (imports torch)
