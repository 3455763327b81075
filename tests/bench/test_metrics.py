"""The torch-free metrics training and quantization share: COCO mAP on hand-made boxes, and
accuracy / macro-F1 by hand, segmentation IoU from a hand-counted confusion; importing them
loads no torch."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.bench.metrics import SegConfusion, accuracy_f1, coco_map
from tests.runtime.conftest import BLOCK_TORCH

REPO = Path(__file__).resolve().parents[2]


def _one(boxes, classes):
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def test_perfect_detections_score_one():
    gts = [_one([[10, 10, 50, 60], [70, 20, 90, 40]], [0, 1])]
    dets = [(gts[0][0], np.array([0.9, 0.8], np.float32), gts[0][1])]
    r = coco_map(gts, dets, 2, [(100, 120)])
    assert r["map50"] == pytest.approx(1.0) and r["map"] == pytest.approx(1.0)


def test_partial_overlap_counts_only_at_thresholds_it_passes():
    # prediction shifted so IoU = 31*40 / (2*40*40 - 31*40) = 0.6327: passes 0.50, 0.55, 0.60
    gts = [_one([[0, 0, 40, 40]], [0])]
    dets = [(np.array([[9, 0, 49, 40]], np.float32), np.array([0.9], np.float32), np.array([0]))]
    r = coco_map(gts, dets, 1, [(100, 100)])
    assert r["map50"] == pytest.approx(1.0)
    assert r["map"] == pytest.approx(0.3)


def test_ranking_of_a_false_positive_matters():
    # 2 objects; detections ranked TP, FP, TP -> COCO 101-point interpolated AP@0.5
    gts = [_one([[0, 0, 20, 20], [50, 50, 70, 70]], [0, 0])]
    boxes = np.array([[0, 0, 20, 20], [80, 0, 99, 20], [50, 50, 70, 70]], np.float32)
    dets = [(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 0, 0]))]
    r = coco_map(gts, dets, 1, [(100, 100)])
    # precision envelope: 1.0 for recall <= 0.5, 2/3 for recall in (0.5, 1]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert r["map50"] == pytest.approx(expected, abs=1e-6)


def test_no_detections_is_zero_and_no_labels_is_nan():
    gts = [_one([[0, 0, 20, 20]], [0])]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    r = coco_map(gts, [empty], 2, [(50, 50)])
    assert r["map50"] == 0.0 and r["map_small"] == 0.0 and math.isnan(r["map_large"])
    assert r["ap50"][0] == 0.0 and math.isnan(r["ap50"][1])
    assert math.isnan(coco_map([_one([], [])], [empty], 1, [(50, 50)])["map50"])


def test_breakdowns_by_size_and_class():
    # a small car (20x20 px) found, a large truck (120x120 px) missed, no medium object
    gts = [_one([[10, 10, 30, 30], [50, 50, 170, 170]], [0, 1])]
    dets = [(gts[0][0][:1], np.array([0.9], np.float32), np.array([0]))]
    r = coco_map(gts, dets, 3, [(200, 200)])
    assert r["map_small"] == pytest.approx(1.0) and r["map_large"] == 0.0
    assert math.isnan(r["map_medium"])
    assert r["ap50"][:2] == [pytest.approx(1.0), 0.0] and math.isnan(r["ap50"][2])  # no bus
    assert r["map50"] == pytest.approx(0.5)  # the mean over the two labelled classes


def test_accuracy_and_macro_f1_by_hand():
    true = np.array([0, 0, 1, 1, 2, -1])
    pred = np.array([0, 1, 1, 1, 0, 2])
    acc, f1 = accuracy_f1(pred, true, 3)
    assert acc == pytest.approx(3 / 5)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_metrics_need_no_torch() -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import numpy as np
        from edge_mtl.bench.metrics import accuracy_f1
        acc, f1 = accuracy_f1(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)
        assert (round(acc, 4), round(f1, 4)) == (0.6667, 0.6667), (acc, f1)
        assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_segmentation_iou_by_hand():
    """Drivable-style task (background, direct, alternative); 255 is not counted. Pairs
    (truth, pred): (0,0) x2, (0,1), (1,1) x2, (2,2), (2,1)."""
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 0]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 1, 0, 0]], np.uint8)
    c = SegConfusion(3)
    c.add(pred, truth)
    assert c.conf.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 1]] and c.images == 1
    r = c.result("drivable", ("background", "direct", "alternative"))
    assert r["drivable/iou"] == pytest.approx(4 / 5)  # fg merged: tp 4, truth 4, pred 5
    assert r["drivable/miou"] == pytest.approx((4 / 5 + 2 / 3) / 2)  # with bg IoU 2/3
    assert r["drivable/pixel_acc"] == pytest.approx(5 / 7)
    assert r["drivable/iou_background"] == pytest.approx(2 / 3)
    assert r["drivable/iou_direct"] == pytest.approx(2 / 4)
    assert r["drivable/iou_alternative"] == pytest.approx(1 / 2)
    assert r["drivable/miou_all"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)


def test_segmentation_without_labelled_pixels_is_nan_and_shapes_must_match():
    c = SegConfusion(2)
    c.add(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8))
    r = c.result("lanes", ("background", "lane"))
    assert len(r) == 7 and all(math.isnan(v) for v in r.values())
    with pytest.raises(ValueError, match="class map"):
        c.add(np.zeros((2, 3), np.uint8), np.zeros((2, 2), np.uint8))
