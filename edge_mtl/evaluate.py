"""Metrics: detection mAP via pycocotools (COCO protocol), accuracy and macro-F1 per
classification task, MAE per regression task. Detections go through the runtime's own numpy
postprocessing, so the numbers measure what is deployed."""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from edge_mtl.bench.metrics import COCO_SIZES, accuracy_f1, coco_map
from edge_mtl.config import Config
from edge_mtl.runtime.postprocess import detections_to_frame, postprocess_detections
from edge_mtl.runtime.preprocess import Letterbox

EVAL_CONF = 0.001  # COCO evaluation keeps low-score detections; thresholds are for deployment
EVAL_IOU = 0.6
EVAL_MAX_DET = 100


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
    the per-image absolute errors, for the MAE's standard error).
    """
    model.eval()
    m = cfg.model
    gts, dets, sizes = [], [], []
    cls_pred: dict[str, list] = {t: [] for t in m.classify}
    cls_true: dict[str, list] = {t: [] for t in m.classify}
    reg_pred: dict[str, list] = {t: [] for t in m.regress}
    reg_true: dict[str, list] = {t: [] for t in m.regress}
    records = loader.dataset.records
    for images, targets in tqdm(
        loader, desc="eval", leave=False, disable=None if progress else True
    ):
        images = images.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(images)
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
        for j, t in enumerate(targets):
            # images without box labels (e.g. a class-folder source) would count every
            # detection as a false positive: detection is scored on labelled images only
            if m.detect and records[t["index"]].has_boxes:
                scale, px, py, fh, fw = t["letterbox"]
                lb = Letterbox(scale, px, py, (int(fh), int(fw)))
                d = postprocess_detections(
                    out["det_boxes"][j], out["det_scores"][j], EVAL_CONF, EVAL_IOU, EVAL_MAX_DET
                )
                d = detections_to_frame(d, lb)
                rec = records[t["index"]]
                gts.append((rec.boxes, rec.classes))
                dets.append((d.boxes, d.scores, d.classes))
                sizes.append((int(fh), int(fw)))
            for task in m.classify:
                cls_pred[task].append(int(out[f"cls_{task}"][j].argmax()))
                cls_true[task].append(int(t[f"cls_{task}"]))
            for task in m.regress:
                reg_pred[task].append(float(out[f"reg_{task}"][j, 0]))
                reg_true[task].append(float(t[f"reg_{task}"]))
    metrics: dict[str, float] = {}
    if m.detect and gts:
        r = coco_map(gts, dets, len(m.detect), sizes)
        metrics["det/map50"], metrics["det/map"] = r["map50"], r["map"]
        for size, _, _ in COCO_SIZES:
            metrics[f"det/map_{size}"] = r.get(f"map_{size}", math.nan)  # NaN: no labels at all
        for name, ap in zip(m.detect, r.get("ap50", [math.nan] * len(m.detect))):
            metrics[f"det/ap50/{name}"] = ap
    for task, names in m.classify.items():
        acc, f1 = accuracy_f1(np.array(cls_pred[task]), np.array(cls_true[task]), len(names))
        metrics[f"{task}/acc"], metrics[f"{task}/f1"] = acc, f1
    for task in m.regress:
        p, y = np.array(reg_pred[task]), np.array(reg_true[task])
        ok = np.isfinite(y)
        metrics[f"{task}/mae"] = float(np.abs(p[ok] - y[ok]).mean()) if ok.any() else math.nan
        metrics[f"{task}/std"] = float(y[ok].std()) if ok.any() else math.nan
        metrics[f"{task}/mae_sd"] = float(np.abs(p[ok] - y[ok]).std()) if ok.any() else math.nan
    return metrics


def is_breakdown(key: str) -> bool:
    """Metrics kept in ``metrics.jsonl`` and shown by ``eval`` but left out of the training log
    line: label spreads and detection's per-size and per-class figures."""
    return key.endswith(("/std", "/mae_sd")) or key.startswith(("det/map_", "det/ap50/"))


def jsonable(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (no objects of a size, no labels for a task) as ``null``: strict JSON readers and
    ``jq`` refuse a bare ``NaN``."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def score(metrics: dict[str, float]) -> float:
    """One number to pick the best checkpoint: mean of mAP@0.5:0.95, accuracies and
    (1 - MAE/std) per regression task."""
    parts = [v for k, v in metrics.items() if k in ("det/map",) or k.endswith("/acc")]
    for k, v in metrics.items():
        if k.endswith("/mae"):
            std = metrics.get(k[:-4] + "/std", 1.0) or 1.0
            parts.append(1.0 - v / std)
    parts = [p for p in parts if not math.isnan(p)]
    return float(np.mean(parts)) if parts else 0.0
