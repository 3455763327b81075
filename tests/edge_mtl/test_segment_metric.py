"""Training's segment metric is the torch-free :class:`SegConfusion` fed from a batch: logits or
class maps, images without labels skipped, 255 ignored, the same keys and values."""

import numpy as np
import pytest

from edge_mtl.bench.metrics import SegConfusion
from edge_mtl.tasks.base import Task
from edge_mtl.tasks.segment import SegmentMetric

CLASSES = ("background", "direct", "alternative")


def test_segment_metric_equals_the_confusion_of_its_labelled_images():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 3, 8, 10)).astype(np.float32)  # (B, K, H, W)
    truth = rng.integers(0, 3, (3, 8, 10)).astype(np.uint8)
    truth[0, :2] = 255  # unlabelled rows
    metric = SegmentMetric(Task("drivable", "segment", CLASSES), "seg_drivable")
    targets = [{"seg_drivable": truth[0]}, {"seg_drivable": None}, {"seg_drivable": truth[2]}]
    metric.add({"seg_drivable_logits": logits}, targets, [None] * 3)
    want = SegConfusion(3)
    for i in (0, 2):
        want.add(logits[i].argmax(0).astype(np.uint8), truth[i])
    got = metric.result()
    assert metric.images == 2 and got == want.result("drivable", CLASSES)
    assert sorted(got) == sorted(
        ["drivable/miou", "drivable/iou", "drivable/pixel_acc", "drivable/miou_all"]
        + ["drivable/miou_sd"]
        + [f"drivable/iou_{c}" for c in CLASSES]
    )
    pred, ok = logits[[0, 2]].argmax(1), truth[[0, 2]] != 255
    assert got["drivable/pixel_acc"] == pytest.approx((pred[ok] == truth[[0, 2]][ok]).mean())
    # the class map output (eval mode) gives the same figures as the logits
    again = SegmentMetric(Task("drivable", "segment", CLASSES), "seg_drivable")
    again.add({"seg_drivable": logits.argmax(1).astype(np.uint8)}, targets, [None] * 3)
    assert again.result() == got
