"""The torch eager baseline of ``edge-mtl bench --torch CKPT``: the checkpoint's model in fp32 on
CPU under ``torch.inference_mode``, timed exactly like the ONNX rows (same warm-up, runs or
seconds, threads, batch and input size), so the table shows what export bought.

Imported only by the bench CLI when ``--torch`` is given; needs ``pip install edge-mtl[train]``.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edge_mtl.checkpoint import load_model
from runtime.bench import (
    BenchSettings,
    Row,
    device_label,
    latency_stats,
    own_pass,
    peak_rss_mb,
    reset_peak_rss,
    throughput,
    time_calls,
)


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
    gen = torch.Generator().manual_seed(0)
    try:
        for batch in settings.batches:
            log(f"{path.name} [torch eager cpu] batch {batch}: measuring")
            x = torch.randn((batch, 3, *hw), generator=gen)  # (B, 3, H, W) float32
            ms = _time_model(model, x, settings)
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


def _time_model(model: torch.nn.Module, x: torch.Tensor, settings: BenchSettings) -> list[float]:
    """Latencies in ms of ``model(x)`` under inference mode (no autograd bookkeeping), in the
    row's own pass (:func:`runtime.bench.own_pass`)."""
    own = own_pass(settings)
    with torch.inference_mode():
        return time_calls(lambda: model(x), own.runs, own.seconds, own.warmup)


def torch_call(row: Row, settings: BenchSettings) -> Callable[[], object]:
    """The timed call of a torch row, for :func:`runtime.bench.retime_in_turns`: the row's
    checkpoint on the row's batch and input size, with the row's threads set before each call
    (the ONNX rows in between do not touch torch's pool, so this is normally a no-op)."""
    model, _, _ = load_model(Path(row.model_path))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((row.batch, 3, *row.input_hw), generator=gen)  # (B, 3, H, W) float32
    threads = settings.threads or torch.get_num_threads()

    def call() -> object:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(x)

    return call
