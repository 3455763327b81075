"""The torch eager baseline of ``edge-mtl bench --torch CKPT``: the checkpoint's model in fp32 on
CPU under ``torch.inference_mode``, timed exactly like the ONNX rows (same warm-up, runs or
seconds, threads, batch and input size), so the table shows what export bought.

:class:`TorchBaseline` is the :class:`~edge_mtl.bench.baseline.Baseline` the composition root
(``edge_mtl/cli.py``) hands bench and compare; it is imported only when a command needs it, since
it needs ``pip install edge-mtl[train]``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edge_mtl.bench.baseline import Log
from edge_mtl.bench.machine import device_label, peak_rss_mb, reset_peak_rss
from edge_mtl.bench.schema import BenchSettings, Row, own_pass
from edge_mtl.bench.stats import latency_stats, throughput
from edge_mtl.bench.timing import time_calls
from edge_mtl.checkpoint import load_model
from edge_mtl.export.latency import side_by_side_latency


def bench_torch(
    ckpt_path: str | Path,
    settings: BenchSettings,
    machine: dict[str, Any],
    session_index: int = 0,
    input_hw: tuple[int, int] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> list[Row]:
    """One row per batch size for the checkpoint at ``ckpt_path``. ``input_hw`` (H, W) pixels
    is the size the ONNX rows ran at (default: the checkpoint's training size). The input is
    float32 (batch, 3, H, W) normalised noise, the layout the exported graph takes."""
    path = Path(ckpt_path)
    can_reset = reset_peak_rss()
    model, cfg, _ = load_model(path)
    notes: list[str] = []
    hw = tuple(input_hw) if input_hw is not None else tuple(cfg.model.input_hw)
    if hw != tuple(cfg.model.input_hw):
        h, w = cfg.model.input_hw
        notes.append(f"trained at {h}x{w}; timed at the ONNX models' {hw[0]}x{hw[1]}")
    threads_before = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    else:
        notes.append(f"torch default threads ({threads_before})")
    if not can_reset:
        notes.append("peak RSS is the process peak since start (cannot reset it here)")
    base: dict[str, Any] = dict(
        session=session_index, device=device_label(machine, "cpu"), runtime="torch",
        model=f"{path.name} (torch eager)", model_path=str(path),
        model_size_mb=path.stat().st_size / 1e6, precision="fp32", provider_requested="cpu",
        provider="cpu", fallback_reasons=[], input_hw=list(hw), warmup=settings.warmup,
        threads=settings.threads, gpu_memory_mb=None, e2e=None, status="ok", reason=None,
    )  # fmt: skip
    rows: list[Row] = []
    try:
        for batch in settings.batches:
            log(f"{path.name} [torch eager cpu] batch {batch}: measuring")
            own = own_pass(settings)
            call = _call(model, _input(batch, hw), settings.threads)
            ms = time_calls(call, own.runs, own.seconds, own.warmup)
            measured = dict(
                batch=batch, runs=len(ms), latency_ms=asdict(latency_stats(ms)),
                throughput_ips=throughput(ms, batch), peak_rss_mb=peak_rss_mb(),
            )  # fmt: skip
            rows.append(Row(**base, **measured, notes=list(notes)))
            reset_peak_rss()
    finally:
        torch.set_num_threads(threads_before)
        model = None  # free the weights before the caller measures anything else
        gc.collect()
    return rows


def _input(batch: int, hw: tuple[int, ...]) -> torch.Tensor:
    """The timed input: (batch, 3, H, W) float32 seeded noise, the layout the graph takes."""
    return torch.randn((batch, 3, *hw), generator=torch.Generator().manual_seed(0))


def _call(model: torch.nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """``model(x)`` under inference mode (no autograd bookkeeping), with ``threads`` (0: as
    set now) in force: between the turns of :func:`edge_mtl.bench.measure.retime_in_turns` the
    ONNX rows do not touch torch's pool, so resetting it is normally a no-op."""
    threads = threads or torch.get_num_threads()

    def call() -> object:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(x)

    return call


def torch_call(row: Row, settings: BenchSettings) -> Callable[[], object]:
    """The timed call of a torch row, for :func:`edge_mtl.bench.measure.retime_in_turns`: the
    row's checkpoint on the row's batch and input size, with the row's threads."""
    model, _, _ = load_model(Path(row.model_path))
    return _call(model, _input(row.batch, tuple(row.input_hw)), settings.threads)


class TorchBaseline:
    """The :class:`~edge_mtl.bench.baseline.Baseline` of this project: torch eager rows
    (:func:`bench_torch`), their calls in turns (:func:`torch_call`) and ``compare``'s exported
    latency (:func:`~edge_mtl.export.latency.side_by_side_latency`)."""

    def rows(
        self,
        ckpt: str | Path,
        settings: BenchSettings,
        machine: dict[str, Any],
        session_index: int,
        input_hw: tuple[int, int] | None,
        log: Log,
    ) -> list[Row]:
        return bench_torch(ckpt, settings, machine, session_index, input_hw, log)

    def call(self, row: Row, settings: BenchSettings) -> Callable[[], object]:
        return torch_call(row, settings)

    def latency(self, weights: dict[str, Path], workdir: Path) -> dict[str, dict[str, float]]:
        return side_by_side_latency(weights, workdir)
