"""Turn raw model outputs into detections and task answers (numpy only).

Evaluation in ``edge_mtl`` calls these very functions, so reported metrics measure what ships.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_mtl.runtime.preprocess import Letterbox, boxes_to_frame

# Decoding for evaluation (training metrics and the quantization accuracy check alike): COCO
# mAP counts low-score detections, so these keep them; deployment thresholds are the model's.
EVAL_CONF = 0.001
EVAL_IOU = 0.6
EVAL_MAX_DET = 100


@dataclass(frozen=True)
class Detections:
    """Detections of one image. ``boxes`` float32 (K, 4) xyxy pixels, ``scores`` float32 (K,)
    in [0, 1], ``classes`` int64 (K,) indices into the model's detection class list."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        )


def box_iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) with many (K, 4) -> (K,). Degenerate boxes give IoU 0."""
    return box_iou_matrix(np.asarray(box)[None], boxes)[0]


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (Ka, 4) x (Kb, 4) -> (Ka, Kb). Degenerate boxes give IoU 0.

    Runs per frame (NMS, the tracker), so the (Ka, Kb) arrays are worked on in place: about a
    fifth of the time of the plain broadcast version at 100 x 100 float64 boxes."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.issubdtype(np.result_type(a, b), np.floating):  # the in-place division needs floats
        a, b = a.astype(np.float64), b.astype(np.float64)
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))
    bx1, by1, bx2, by2 = b.T
    inter = np.minimum(ax2, bx2)
    inter -= np.maximum(ax1, bx1)
    np.maximum(inter, 0, out=inter)
    ih = np.minimum(ay2, by2)
    ih -= np.maximum(ay1, by1)
    np.maximum(ih, 0, out=ih)
    inter *= ih
    area_a = np.maximum(ax2 - ax1, 0) * np.maximum(ay2 - ay1, 0)
    area_b = np.maximum(bx2 - bx1, 0) * np.maximum(by2 - by1, 0)
    union = area_a + area_b
    union -= inter
    empty = ~(union > 0)  # no area, or a NaN box: IoU 0
    np.maximum(union, 1e-12, out=union)
    inter /= union
    inter[empty] = 0
    return inter


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS. boxes (K, 4) xyxy, scores (K,). Returns kept indices, highest score first.

    Suppresses a box when its IoU with a kept box is strictly greater than ``iou_threshold``
    (the ONNX NonMaxSuppression rule), so in-graph and numpy NMS agree. The IoUs are computed
    once as a matrix, so the greedy pass is one vector OR per kept box (this runs per frame).
    """
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    over = ~(box_iou_matrix(b, b) <= iou_threshold)  # a NaN IoU suppresses, as it always did
    suppressed = np.zeros(len(order), bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[np.asarray(keep, np.int64)]


def postprocess_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    conf_threshold: float = 0.25,
    iou_threshold: float = 0.5,
    max_det: int = 300,
    pre_nms_topk: int = 1000,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
) -> Detections:
    """Dense outputs of one image -> detections in model-input pixels.

    boxes: float32 (A, 4) xyxy input pixels; scores: float32 (A, C) per-class probabilities.
    Every (anchor, class) pair above ``conf_threshold`` is a candidate (multi-label); NMS runs
    per class, or across classes with ``agnostic`` (one box per object: the best class wins).
    ``classes``: only these class ids are candidates (None = all), chosen before NMS so a
    dropped class never suppresses a kept one. Non-finite scores or boxes are dropped, never
    propagated. Box corners are put in order (x1 <= x2, y1 <= y2), as ONNX NonMaxSuppression
    reads either diagonal.
    """
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    # NaN never passes ">", and +inf is no probability: both are dropped here.
    candidate = (scores > conf_threshold) & (scores < np.inf)
    if classes is not None:
        candidate &= np.isin(np.arange(scores.shape[-1]), np.asarray(classes, np.int64))
    anchor_idx, cls_idx = np.nonzero(candidate)
    finite = np.isfinite(boxes[anchor_idx]).all(axis=1)  # only the candidates' boxes
    anchor_idx, cls_idx = anchor_idx[finite], cls_idx[finite]
    if anchor_idx.size == 0:
        return Detections.empty()
    cand_scores = scores[anchor_idx, cls_idx]
    if cand_scores.size > pre_nms_topk:
        top = np.argpartition(-cand_scores, pre_nms_topk)[:pre_nms_topk]
        anchor_idx, cls_idx, cand_scores = anchor_idx[top], cls_idx[top], cand_scores[top]
    corners = boxes[anchor_idx]
    cand_boxes = np.concatenate(
        [np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])],
        axis=1,
    )
    if agnostic:
        keep = nms(cand_boxes, cand_scores, iou_threshold)[:max_det]
    else:
        # Offset boxes per class so one NMS pass never suppresses across classes.
        span = np.float32(np.abs(cand_boxes).max() + 1.0)
        offset = (cls_idx.astype(np.float32) * span)[:, None]  # stay float32, as ONNX NMS does
        keep = nms(cand_boxes + offset, cand_scores, iou_threshold)[:max_det]
    return Detections(cand_boxes[keep], cand_scores[keep], cls_idx[keep].astype(np.int64))


def detections_to_frame(dets: Detections, lb: Letterbox) -> Detections:
    """Map detections from model-input pixels back to the original frame (undo the letterbox)."""
    if len(dets) == 0:
        return dets
    return Detections(boxes_to_frame(dets.boxes, lb), dets.scores, dets.classes)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, stable for large values. Always a distribution: a
    NaN logit counts as the lowest, +inf as the highest (ties share the probability)."""
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating) or logits.dtype.itemsize < 4:
        logits = logits.astype(np.float32)  # fp16 cannot hold the stand-ins below
    if not np.isfinite(logits).all():
        logits = np.nan_to_num(logits, nan=-1e30, posinf=1e30, neginf=-1e30)
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
