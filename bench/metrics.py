"""Torch-free metrics on numpy arrays, shared by training's evaluation (``edge_mtl.evaluate``)
and quantization's accuracy report (``edge_mtl.calibration.accuracy``): detection mAP by the COCO
protocol (pycocotools, imported on use), accuracy / macro-F1 of class indices, and the IoU figures
of pixel tasks (:class:`SegConfusion`)."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_mtl.runtime.postprocess import EVAL_MAX_DET, Detections, box_iou_one_to_many

# COCO's object sizes by box area in frame pixels (pycocotools' areaRng)
COCO_SIZES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, math.inf))


def coco_map(
    gts: list[tuple[np.ndarray, np.ndarray]],
    dets: list[tuple[np.ndarray, ...]],
    num_classes: int,
    image_hw: list[tuple[int, int]],
) -> dict[str, Any]:
    """mAP@0.5 and mAP@0.5:0.95 with pycocotools. ``gts``: per image (boxes (K,4) xyxy,
    classes (K,)); ``dets``: per image (boxes (M,4), scores (M,), classes (M,)).

    Also COCO's breakdowns: ``map_small``/``map_medium``/``map_large`` (mAP@0.5:0.95 over
    objects under 32x32 px, up to 96x96, larger; NaN where there are none) and ``ap50`` (AP@0.5
    per class id, NaN for a class without labelled objects)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, ((gb, gc), (db, ds, dc), (h, w)) in enumerate(zip(gts, dets, image_hw)):
        images.append({"id": i, "height": int(h), "width": int(w)})
        for b, c in zip(gb, gc):
            bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": [float(b[0]), float(b[1]), bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        for b, s, c in zip(db, ds, dc):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c),
                    "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                }
            )
    if not anns:
        return {"map50": math.nan, "map": math.nan}
    if not results:  # every AP is 0 where there are objects to find
        areas = np.array([a["area"] for a in anns])
        present = {int(a["category_id"]) for a in anns}
        return {
            "map50": 0.0,
            "map": 0.0,
            **{
                f"map_{name}": 0.0 if ((areas >= lo) & (areas < hi)).any() else math.nan
                for name, lo, hi in COCO_SIZES
            },
            "ap50": [0.0 if c in present else math.nan for c in range(num_classes)],
        }
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, EVAL_MAX_DET]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision: (IoU thresholds, recall points, classes, area ranges, max dets); -1 = no objects
    p50 = ev.eval["precision"][0, :, :, 0, -1]
    ap50 = [float(p[p > -1].mean()) if (p > -1).any() else math.nan for p in p50.T]
    small, medium, large = (float(v) if v > -1 else math.nan for v in ev.stats[3:6])
    return {
        "map": float(ev.stats[0]),
        "map50": float(ev.stats[1]),
        "map_small": small,
        "map_medium": medium,
        "map_large": large,
        "ap50": ap50,
    }


def accuracy_f1(pred: np.ndarray, true: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 over labelled samples (true >= 0); classes absent from both
    predictions and labels are left out of the macro average."""
    m = true >= 0
    pred, true = pred[m], true[m]
    if true.size == 0:
        return math.nan, math.nan
    acc = float((pred == true).mean())
    f1s = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return acc, float(np.mean(f1s))


MATCH_IOU = 0.5  # two detections of the same class agree at IoU >= 0.5


def match_count(a: Detections, b: Detections, iou: float = MATCH_IOU) -> int:
    """Detections of ``a`` (highest score first) that find an unused same-class partner in ``b``
    with IoU >= ``iou``."""
    if len(a) == 0 or len(b) == 0:
        return 0
    used = np.zeros(len(b), bool)
    n = 0
    for i in np.argsort(-a.scores, kind="stable"):
        cand = (~used) & (b.classes == a.classes[i])
        if not cand.any():
            continue
        ious = np.where(cand, box_iou_one_to_many(a.boxes[i], b.boxes), -1.0)
        j = int(np.argmax(ious))
        if ious[j] >= iou:
            used[j] = True
            n += 1
    return n


SEG_IGNORE = 255  # class-map value of a pixel without a label (letterbox padding, unlabelled)


@dataclass
class SegConfusion:
    """Pixel confusion matrix of one segment task over an evaluation pass: rows the truth,
    columns the prediction, int64 (K, K) pixel counts. Shared by training's metric
    (``edge_mtl.tasks.segment.SegmentMetric``) and the ONNX evaluation
    (:mod:`edge_mtl.bench.accuracy`), so both report the same figures from the same pixels."""

    k: int
    conf: np.ndarray = field(init=False)
    images: int = 0
    per_image: list[float] = field(default_factory=list)  # each image's own ``miou``

    def __post_init__(self) -> None:
        self.conf = np.zeros((self.k, self.k), np.int64)

    def add(self, pred: np.ndarray, truth: np.ndarray) -> None:
        """One image: ``pred`` and ``truth`` class indices (uint8 (H, W), same shape; truth
        :data:`SEG_IGNORE` where unlabelled, those pixels left out)."""
        if pred.shape != truth.shape:
            raise ValueError(f"class map {pred.shape} vs truth {truth.shape}")
        ok = truth != SEG_IGNORE
        idx = truth[ok].astype(np.int64) * self.k + pred[ok].astype(np.int64)
        one = np.bincount(idx, minlength=self.k * self.k).reshape(self.k, self.k)
        self.conf += one
        self.images += 1
        if one.sum():
            self.per_image.append(float(np.mean(_bg_fg_iou(one))))

    def result(self, task: str, classes: tuple[str, ...]) -> dict[str, float]:
        """Per ``<task>/`` (fractions 0-1): ``miou`` mean IoU of background and foreground
        (every class but the first merged: YOLOP's drivable-area mIoU), ``iou`` foreground IoU
        (YOLOP's lane IoU), ``pixel_acc`` share of labelled pixels classed right,
        ``iou_<class>`` per class and ``miou_all`` their mean, ``miou_sd`` the spread of the
        images' own ``miou`` (for standard errors); NaN without labelled pixels."""
        t, c = task, self.conf
        names = [f"{t}/miou", f"{t}/iou", f"{t}/pixel_acc", f"{t}/miou_all", f"{t}/miou_sd"]
        names += [f"{t}/iou_{n}" for n in classes]
        if c.sum() == 0:
            return dict.fromkeys(names, math.nan)
        per_class = np.diag(c) / np.maximum(c.sum(0) + c.sum(1) - np.diag(c), 1)
        bg_iou, fg_iou = _bg_fg_iou(c)
        res = {
            f"{t}/miou": float((fg_iou + bg_iou) / 2),
            f"{t}/iou": float(fg_iou),
            f"{t}/pixel_acc": float(np.trace(c) / c.sum()),
            f"{t}/miou_all": float(per_class.mean()),
            f"{t}/miou_sd": float(np.std(self.per_image)),
        }
        res.update({f"{t}/iou_{n}": float(v) for n, v in zip(classes, per_class)})
        return res


def _bg_fg_iou(c: np.ndarray) -> tuple[float, float]:
    """(background IoU, IoU of every other class merged) of a (K, K) confusion matrix; a class
    absent from both truth and prediction counts as 1 (nothing to find, nothing found)."""
    fg_tp = c[1:, 1:].sum()
    fg_union = c[1:, :].sum() + c[:, 1:].sum() - fg_tp
    bg_union = c[0, :].sum() + c[:, 0].sum() - c[0, 0]
    return (
        float(c[0, 0] / bg_union) if bg_union else 1.0,
        float(fg_tp / fg_union) if fg_union else 1.0,
    )
