"""The training entry point: ``train(cfg, out_dir)`` runs one :class:`edge_mtl.trainer.Trainer`.

The loop: multi-task loss weighted by a strategy (``edge_mtl.weighting``), AdamW + warm-up +
cosine, autocast where the hardware has fast low precision, gradient clipping, EMA weights,
per-epoch evaluation, ``metrics.jsonl``, atomic ``last.pt``/``best.pt`` (``edge_mtl.checkpoint``)
and exact resume (mid-epoch too). A step whose loss or gradient is not finite is skipped (no
optimizer, EMA or weighting update) with a warning; ``train.max_nonfinite_steps`` in a row stop
the run.

Several sources mix by per-source sampling (``edge_mtl.data.sampling``); under ``torchrun`` (one
machine or several, see ``edge_mtl.distributed``) the same loop runs data-parallel: every rank
takes its slice of each global batch, rank 0 alone logs, evaluates and writes."""

from __future__ import annotations

import sys
from pathlib import Path

from edge_mtl import distributed as ddp
from edge_mtl.config import Config
from edge_mtl.runtime.files import check_writable_dir
from edge_mtl.train_parts import EMA, label_counts, pick_autocast, pick_device
from edge_mtl.trainer import Trainer

__all__ = ["EMA", "Trainer", "label_counts", "pick_autocast", "pick_device", "train"]


def train(
    cfg: Config,
    out_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    data_root: str | Path = "data",
    log=print,
) -> dict:
    """Train ``cfg`` into ``out_dir`` (``last.pt``, ``best.pt``, ``metrics.jsonl``); returns the
    final evaluation metrics (rank 0's; other ranks of a distributed run return an empty dict).
    ``device``: auto, cpu, cuda or cuda:N; ``resume`` continues from ``out_dir/last.pt``."""
    info = ddp.from_env()
    if not info.is_main:
        log, progress = (lambda *a, **k: None), False
    # a progress bar only on a terminal; in a log file, a line every 50 steps instead
    progress = progress and sys.stderr.isatty()
    out = check_writable_dir(out_dir, "run folder")
    dev = ddp.init(info, pick_device(device))
    try:
        trainer = Trainer(cfg, out, dev, info, progress, Path(data_root), log)
        if resume:
            trainer.resume()
        return trainer.fit()
    finally:
        ddp.shutdown(info)
