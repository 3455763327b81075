"""The segment kind on the torch side: config checks, head outputs, targets, loss, metric,
and its place in compare."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_mtl.compare import delta_se, headline, variants
from edge_mtl.config import ConfigError, TrainConfig, config_from_dict
from edge_mtl.data.masks import IGNORE, MaskLabel, letterbox_mask, to_task
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel
from edge_mtl.progressive import resize_batch
from edge_mtl.runtime.preprocess import letterbox
from edge_mtl.tasks import KINDS
from edge_mtl.tasks.base import Sample, Task
from edge_mtl.tasks.segment import SegmentMetric, dice_loss, segmentation_loss
from edge_mtl.weighting import WEIGHTINGS, build_weighting
from tests.edge_mtl.conftest import tiny_cfg_dict

SEG = {"drivable": ["background", "direct", "alternative"], "lanes": ["background", "lane"]}


def _cfg(**model):
    d = tiny_cfg_dict()
    d["model"]["segment"] = SEG
    d["model"].update(model)
    return config_from_dict(d, "seg.yaml")


def test_segment_tasks_must_be_label_kinds_with_their_classes():
    assert _cfg().model.task_names()[-2:] == ["drivable", "lanes"]
    with pytest.raises(ConfigError, match=r"seg\.yaml: model\.segment\.road: no dataset labels"):
        _cfg(segment={"road": ["background", "road"]})
    with pytest.raises(ConfigError, match=r"model\.segment\.drivable: expected 'background' first"):
        _cfg(segment={"drivable": ["direct", "background"]})
    with pytest.raises(ConfigError, match="some of lane"):
        _cfg(segment={"lanes": ["background", "curb"]})
    # a subset of a kind's classes is a task of its own: alternative lanes count as background
    assert _cfg(segment={"drivable": ["background", "direct"]}).model.segment


def test_head_gives_input_resolution_logits_and_a_uint8_class_map_in_eval():
    cfg = _cfg()
    model = MultiTaskModel(cfg.model)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out["seg_drivable_logits"].shape == (2, 3, 64, 96) and "seg_drivable" not in out
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out["seg_lanes"].dtype == torch.uint8 and out["seg_lanes"].shape == (2, 64, 96)
    assert torch.equal(out["seg_drivable"], out["seg_drivable_logits"].argmax(1).byte())
    assert model.output_names()[-2:] == ["seg_drivable", "seg_lanes"]
    model.heads["segment"].emit_logits = True
    with torch.no_grad():
        assert model(x)["seg_lanes"].shape == (2, 2, 64, 96)


def test_targets_map_canonical_classes_onto_the_task_and_keep_no_label_apart():
    kind = KINDS["segment"]
    canon = np.array([[0, 1, 2, IGNORE]], np.uint8)
    sample = Sample(np.zeros((1, 4, 3), np.uint8), np.zeros((0, 4)), np.zeros(0), {}, {}, None,
                    {"drivable": canon})  # fmt: skip
    full = kind.targets(Task("drivable", "segment", tuple(SEG["drivable"])), sample)
    assert full["seg_drivable"].tolist() == [[0, 1, 2, IGNORE]]
    # a task without "alternative": those pixels are its background
    direct = kind.targets(Task("drivable", "segment", ("background", "direct")), sample)
    assert direct["seg_drivable"].tolist() == [[0, 1, 0, IGNORE]]
    lanes = Task("lanes", "segment", ("background", "lane"))
    assert kind.targets(lanes, sample) == {"seg_lanes": None}
    assert not kind.labelled(lanes, [kind.targets(lanes, sample)])


def test_loss_is_cross_entropy_over_labelled_pixels_and_exactly_zero_without_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = IGNORE
    ok = target != IGNORE
    ce = F.cross_entropy(logits.permute(0, 2, 3, 1)[ok], target[ok])
    both = segmentation_loss(logits, target)
    assert both.item() == pytest.approx(ce.item() + dice_loss(logits, target).item(), rel=1e-6)
    none = segmentation_loss(logits, torch.full((2, 4, 5), IGNORE))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and not logits.grad.any()


def test_dice_is_near_zero_for_a_confident_right_answer_and_counts_foreground_only():
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:4] = 1  # a thin class: 16 of 64 pixels
    right = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 40
    assert dice_loss(right, target).item() < 1e-3
    background = torch.zeros(1, 2, 8, 8)
    background[:, 0] = 40
    # nothing to find and nothing found: no loss (the smoothing term)
    assert dice_loss(background, torch.zeros_like(target)).item() < 1e-3
    # the thin class wholly missed: Dice ~ 1, though 75% of the pixels are right
    assert dice_loss(background, target).item() > 0.9


def test_low_resolution_steps_shrink_the_pixel_labels_with_the_image():
    target = torch.zeros(8, 8, dtype=torch.uint8)
    target[:, 4:] = 1
    target[0, 0] = IGNORE
    images, targets = resize_batch(torch.zeros(1, 3, 8, 8), [{"boxes": torch.zeros(0, 4),
                                   "seg_lanes": target, "seg_drivable": None}], (4, 4))  # fmt: skip
    small = targets[0]["seg_lanes"]
    assert images.shape[-2:] == (4, 4) and small.dtype == torch.uint8
    assert small.tolist() == [[IGNORE, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert targets[0]["seg_drivable"] is None


def test_metric_matches_hand_counts():
    task = Task("drivable", "segment", ("background", "direct", "alternative"))
    m = SegmentMetric(task, "seg_drivable")
    truth = np.array([[0, 0, 1, 1, 2, IGNORE]], np.uint8)
    pred = np.array([[[0, 1, 1, 1, 2, 2]]], np.uint8)
    m.add({"seg_drivable": pred}, [{"seg_drivable": truth}, {"seg_drivable": None}][:1], [])
    r = m.result()
    # five labelled pixels, four right; background IoU 1/2, direct 2/3, alternative 1/1
    assert r["drivable/pixel_acc"] == pytest.approx(0.8)
    assert r["drivable/iou_background"] == pytest.approx(0.5)
    assert r["drivable/iou_direct"] == pytest.approx(2 / 3)
    assert r["drivable/miou_all"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    # merged foreground {direct, alternative}: truth 3 px, prediction 4 px, 3 shared -> 3/4
    assert r["drivable/iou"] == pytest.approx(0.75)
    assert r["drivable/miou"] == pytest.approx((0.75 + 0.5) / 2)
    # a second, perfect image: per-image mIoU 0.625 and 1, spread 0.1875
    m.add({"seg_drivable": truth[None].clip(max=2)}, [{"seg_drivable": truth}], [])
    assert m.result()["drivable/miou_sd"] == pytest.approx(0.1875)
    empty = SegmentMetric(task, "seg_drivable")
    empty.add({"seg_drivable": pred}, [{"seg_drivable": None}], [])
    assert math.isnan(empty.result()["drivable/miou"])


def test_metric_reads_logits_when_there_is_no_class_map():
    task = Task("lanes", "segment", ("background", "lane"))
    m = SegmentMetric(task, "seg_lanes")
    logits = np.zeros((1, 2, 1, 4), np.float32)
    logits[0, 1, 0, :2] = 1.0
    m.add({"seg_lanes_logits": logits}, [{"seg_lanes": np.array([[1, 1, 0, 0]], np.uint8)}], [])
    assert m.result()["lanes/iou"] == 1.0


def test_masks_follow_the_letterbox_and_padding_is_unlabelled():
    frame = np.zeros((30, 80, 3), np.uint8)
    _, lb = letterbox(frame, (64, 96))
    mask = np.zeros((30, 80), np.uint8)
    mask[:, 40:] = 1
    out = letterbox_mask(mask, lb, (64, 96))
    rows = np.flatnonzero((out != IGNORE).any(1))
    assert len(rows) == round(30 * lb.scale) and rows[0] == round(lb.pad_y)
    inside = out[rows[0]]
    assert inside[:48].max() == 0 and inside[48:].min() == 1
    lines = MaskLabel("lanes", lines=(np.array([[0.0, 10.0], [79.0, 10.0]]),), width=3)
    drawn = lines.load((30, 80))
    assert drawn[9:12].all() and not drawn[:8].any() and not drawn[13:].any()
    assert to_task(drawn, "lanes", ("background", "lane")).max() == 1


def test_compare_trains_segmentation_alone_and_reads_its_se_from_per_image_spread():
    cfg = _cfg()
    vs = {v.name: v for v in variants(cfg)}
    lanes = vs["lanes"].cfg.model
    assert lanes.segment == {"lanes": ("background", "lane")} and not lanes.detect
    assert headline(cfg, "drivable") == ("drivable/miou", True)
    m, s = {"drivable/miou": 0.9, "drivable/miou_sd": 0.3}, {"drivable/miou": 0.88}
    assert delta_se(cfg, "drivable", m, s, 100) == (None, "no per-image error SD recorded")
    s["drivable/miou_sd"] = 0.4
    assert delta_se(cfg, "drivable", m, s, 100) == (pytest.approx(0.05), "per-image mIoU SD")


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_every_weighting_strategy_weighs_the_pixel_tasks(name):
    torch.manual_seed(0)
    cfg = _cfg(detect=[], classify={"weather": ["clear", "rainy"]}, regress=[])
    model = MultiTaskModel(cfg.model)
    tasks = tuple(cfg.model.task_names())
    weighting = build_weighting(TrainConfig(weighting=name), tasks, model.shared_parameter())
    loss_fn = MultiTaskLoss(cfg.model, weighting, torch.device("cpu"))
    opt = torch.optim.SGD([*model.parameters(), *weighting.trainable()], lr=1e-3)
    lanes = torch.zeros(64, 96, dtype=torch.uint8)
    lanes[:, 40:44] = 1
    targets = [
        {
            "cls_weather": 1,
            "seg_drivable": torch.zeros(64, 96, dtype=torch.uint8),
            "seg_lanes": lanes,
        },
        {"cls_weather": 0, "seg_drivable": None, "seg_lanes": None},
    ]
    for _ in range(2):  # a second step: dwa and gradnorm adapt from the first
        total, parts = loss_fn(model(torch.randn(2, 3, 64, 96)), targets)
        opt.zero_grad()
        total.backward()
        opt.step()
        weighting.after_step()
        weighting.end_epoch()
    assert set(parts) == {"weather", "drivable", "lanes"} and parts["lanes"] > 0
    weights = weighting.weights()
    assert set(weights) == set(tasks) and all(math.isfinite(v) and v > 0 for v in weights.values())
    assert model.heads["segment"].out["lanes"][0][0].weight.grad.abs().sum() > 0
