"""Metrics: every declared task's kind (:mod:`edge_mtl.tasks`) accumulates its own over one
pass: detection mAP via pycocotools (COCO protocol), accuracy and macro-F1 per classification
task, MAE per regression task. Detections go through the runtime's own numpy postprocessing, so
the numbers measure what is deployed."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from edge_mtl.config import Config
from edge_mtl.tasks import KINDS, declared


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    cfg: Config,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Run ``model`` over ``loader`` (a non-augmented MultiTaskDataset) and compute all metrics.

    Keys: ``det/map50``, ``det/map``, ``det/map_{small,medium,large}``, ``det/ap50/<class>``,
    ``<task>/acc``, ``<task>/f1``, ``<task>/mae``,
    ``<task>/std`` (label standard deviation, to read MAE against), ``<task>/mae_sd`` (spread of
    the per-image absolute errors, for the MAE's standard error), and each registered kind's
    own (``<task>/<metric>``).
    """
    model.eval()
    metrics_of = [
        KINDS[name].metric(t, cfg.model) for name, ts in declared(cfg.model).items() for t in ts
    ]
    records = loader.dataset.records
    for images, targets in tqdm(
        loader, desc="eval", leave=False, disable=None if progress else True
    ):
        images = images.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(images)
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
        for metric in metrics_of:
            metric.add(out, targets, records)
    metrics: dict[str, float] = {}
    for metric in metrics_of:
        metrics.update(metric.result())
    return metrics


def is_breakdown(key: str) -> bool:
    """Metrics kept in ``metrics.jsonl`` and shown by ``eval`` but left out of the training log
    line: label spreads, detection's per-size and per-class figures, segmentation's per-class
    IoUs and pixel accuracy."""
    return (
        key.endswith(("/std", "/mae_sd", "/miou_sd", "/miou_all", "/pixel_acc"))
        or key.startswith(("det/map_", "det/ap50/"))
        or "/iou_" in key
    )


def jsonable(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (no objects of a size, no labels for a task) as ``null``: strict JSON readers and
    ``jq`` refuse a bare ``NaN``."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def score(metrics: dict[str, float]) -> float:
    """One number to pick the best checkpoint: mean of mAP@0.5:0.95, accuracies, mIoU per
    segmentation task and (1 - MAE/std) per regression task."""
    parts = [
        v
        for k, v in metrics.items()
        if k in ("det/map",) or k.endswith("/acc") or k.endswith("/miou")
    ]
    for k, v in metrics.items():
        if k.endswith("/mae"):
            std = metrics.get(k[:-4] + "/std", 1.0) or 1.0
            parts.append(1.0 - v / std)
    parts = [p for p in parts if not math.isnan(p)]
    return float(np.mean(parts)) if parts else 0.0
