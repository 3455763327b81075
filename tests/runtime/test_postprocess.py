"""NMS, dense-output decoding, undoing the letterbox, softmax."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mtl.runtime.postprocess import (
    Detections,
    box_iou_one_to_many,
    detections_to_frame,
    nms,
    postprocess_detections,
    softmax,
)
from edge_mtl.runtime.preprocess import letterbox


def test_iou_values() -> None:
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 9]], np.float32)
    np.testing.assert_allclose(box_iou_one_to_many(box, others), [1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_best_and_distinct_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.55], np.float32)
    # IoU(1, 0) = 81/119 = .68 and IoU(1, 3) = 72/118 = .61: both suppressed at 0.5.
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # At 0.7 box 0 survives box 1, but box 3 overlaps box 0 by 90/100.
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 2]


def test_nms_iou_equal_to_threshold_is_kept() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU = 1/3 exactly
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 1 / 3).tolist() == [0, 1]  # suppress only when IoU > threshold
    assert nms(boxes, scores, 0.3).tolist() == [0]


def test_postprocess_is_per_class_and_thresholded() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array(
        [
            [0.9, 0.8],  # same box, two classes: both survive (NMS is per class)
            [0.7, 0.1],  # overlaps anchor 0 in class 0: suppressed
            [0.2, 0.4],  # class 0 below threshold, class 1 kept
        ],
        np.float32,
    )
    d = postprocess_detections(boxes, scores, conf_threshold=0.3, iou_threshold=0.5)
    assert d.scores.tolist() == pytest.approx([0.9, 0.8, 0.4])
    assert d.classes.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(d.boxes, boxes[[0, 0, 2]])
    assert d.classes.dtype == np.int64 and d.boxes.dtype == np.float32


def test_postprocess_drops_non_finite_and_caps() -> None:
    boxes = np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], np.float32)
    scores = np.array([[0.9], [0.99], [0.8], [0.7]], np.float32)
    d = postprocess_detections(boxes, scores, 0.5, 0.5, max_det=2)
    assert d.scores.tolist() == pytest.approx([0.9, 0.8])
    empty = postprocess_detections(boxes, scores * 0, 0.5, 0.5)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_detections_to_frame_undoes_letterbox() -> None:
    _, lb = letterbox(np.zeros((48, 64, 3), np.uint8), (32, 32))  # scale .5, pad_y 4
    d = Detections(np.array([[0, 4, 16, 28]], np.float32), np.ones(1, np.float32), np.zeros(1))
    np.testing.assert_allclose(detections_to_frame(d, lb).boxes, [[0, 0, 32, 48]])


def test_softmax_rows() -> None:
    p = softmax(np.array([[0.0, 0.0], [1000.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5])
    np.testing.assert_allclose(p[1], [1.0, 0.0])
    assert p[2, 1] == pytest.approx(np.exp(2) / (np.exp(1) + np.exp(2)))


def _greedy_reference(boxes, scores, thr):
    """The textbook loop: keep the best, drop what overlaps it, repeat."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        ious = box_iou_one_to_many(boxes[i], boxes[order[1:]])
        order = order[1:][ious <= thr]
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_matrix_nms_equals_the_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 300))
    xy = rng.uniform(0, 200, (k, 2)).astype(np.float32)
    wh = rng.uniform(0, 60, (k, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.choice([0.3, 0.5, 0.9], k).astype(np.float32)  # ties on purpose
    thr = float(rng.choice([0.3, 0.5, 0.7]))
    assert nms(boxes, scores, thr).tolist() == _greedy_reference(boxes, scores, thr)
