"""Per-task losses and their weighted sum.

Detection (FCOS-style): points inside a box's centre region on the pyramid level whose range
fits the box are positives; sigmoid focal loss on classes, GIoU on decoded boxes (weighted by
centerness), BCE on centerness. A box that gets no point (tiny objects) takes its nearest P3
point, so every labelled object is learned. Classification: cross-entropy over labelled samples.
Regression: smooth-L1 over labelled samples. A task without labels in the batch contributes an
exact zero (and so zero gradient), never NaN. ``MultiTaskLoss`` hands the per-task losses to a
weighting strategy for the total.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision

from edge_mtl.config import ModelConfig, TrainConfig
from edge_mtl.weighting import Fixed, Weighting

CENTER_RADIUS = 2.5  # in strides
MIN_BOX_STRIDES = 1.5  # boxes are assigned and centred as if at least this many strides wide


def level_range(strides: tuple[int, ...], i: int) -> tuple[float, float]:
    """The box reach, max(l, t, r, b) in pixels, that level ``i`` (stride s) learns: 4s to 8s,
    from 0 on the finest level and without limit on the coarsest. P3-P5 get FCOS's 0-64,
    64-128 and 128-inf; with P2, P2 takes reaches under 32 px and P3 32-64."""
    s = strides[i]
    lo = 0.0 if i == 0 else 4.0 * s
    hi = float("inf") if i == len(strides) - 1 else 8.0 * s
    return lo, hi


def level_info(
    cfg: ModelConfig, device: torch.device, hw: tuple[int, int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every dense location of an ``hw`` input (default ``cfg.input_hw``): centre (A, 2)
    in pixels, stride (A,), level range (A, 2)."""
    from edge_mtl.model import DetectHead

    h, w = hw or cfg.input_hw
    pts, strides, ranges = [], [], []
    for i, s in enumerate(cfg.strides):
        p = DetectHead.points((h // s, w // s), s, device)
        pts.append(p)
        strides.append(torch.full((len(p),), float(s), device=device))
        lo, hi = level_range(cfg.strides, i)
        ranges.append(torch.tensor([lo, hi], device=device).expand(len(p), 2))
    return torch.cat(pts), torch.cat(strides), torch.cat(ranges)


def grown_to_grid(boxes: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """``boxes`` (..., 4) xyxy grown about their centres to at least ``MIN_BOX_STRIDES`` x
    ``strides`` (...) wide and high. A box thinner than the grid step (a traffic light 6 px
    wide on a stride-8 map) may hold no cell centre, or hold one near its edge where its
    centerness is ~0, so its detections would score ~0. Measured against the grown box, the
    nearest cell centre (at most half a stride off in x and y) is always inside with a
    centerness of at least 0.2 per axis. Boxes already that large are unchanged."""
    c = (boxes[..., :2] + boxes[..., 2:]) / 2
    least = strides[..., None] * (MIN_BOX_STRIDES / 2)
    half = torch.maximum((boxes[..., 2:] - boxes[..., :2]) / 2, least)
    return torch.cat([c - half, c + half], -1)


@torch.no_grad()
def assign(points, strides, ranges, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Index of the assigned box per location (A,), -1 for background."""
    a = points.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((a,), -1, dtype=torch.long, device=points.device)
    x, y = points[:, 0:1], points[:, 1:2]  # (A, 1)
    grown = grown_to_grid(gt_boxes[None], strides[:, None])  # (A, G, 4)
    l = x - grown[..., 0]
    t = y - grown[..., 1]
    r = grown[..., 2] - x
    b = grown[..., 3] - y
    ltrb = torch.stack([l, t, r, b], -1)  # (A, G, 4)
    inside = ltrb.min(-1).values > 0
    cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2
    cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    rad = strides[:, None] * CENTER_RADIUS
    central = ((x - cx).abs() < rad) & ((y - cy).abs() < rad)
    reach = ltrb.max(-1).values
    in_range = (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
    ok = inside & central & in_range  # (A, G)
    area = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])).expand(a, -1)
    area = torch.where(ok, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(1)
    best[torch.isinf(best_area)] = -1
    # objects no location picked: give each its nearest finest-level location that is free
    covered = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=points.device)
    covered[best[best >= 0]] = True
    finest = strides == strides.min()
    for g in torch.nonzero(~covered).flatten().tolist():
        d = (points[:, 0] - cx[g]) ** 2 + (points[:, 1] - cy[g]) ** 2
        d[~finest | (best >= 0)] = float("inf")
        best[int(d.argmin())] = g
    return best


def centerness_target(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    l = (points[:, 0] - boxes[:, 0]).clamp(min=0)
    t = (points[:, 1] - boxes[:, 1]).clamp(min=0)
    r = (boxes[:, 2] - points[:, 0]).clamp(min=0)
    b = (boxes[:, 3] - points[:, 1]).clamp(min=0)
    lr = torch.stack([l, r], 1)
    tb = torch.stack([t, b], 1)
    c = (lr.min(1).values / lr.max(1).values.clamp(min=1e-6)) * (
        tb.min(1).values / tb.max(1).values.clamp(min=1e-6)
    )
    return c.clamp(min=0).sqrt()


def detection_loss(
    out: dict[str, torch.Tensor],
    targets: list[dict],
    cfg: ModelConfig,
    level: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    object_balance: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Focal classification, GIoU box and centerness losses of the dense head. With
    ``object_balance`` p > 0, a positive location of an object with n positives weighs n^-p,
    scaled so the positives' weights still sum to their count: p = 0.5 lets an object's say
    grow with the square root of its area instead of linearly."""
    points, strides, ranges = level
    logits = out["det_logits"].float()  # (B, A, C)
    boxes = out["det_boxes"].float()  # (B, A, 4)
    ctr = out["det_ctr"].float()  # (B, A)
    cls_t = torch.zeros_like(logits)
    pos_mask = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
    gt_per_loc = torch.zeros_like(boxes)
    mask_img = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    weight = torch.ones(logits.shape[:2], device=logits.device) if object_balance > 0 else None
    for i, t in enumerate(targets):
        if not t.get("has_boxes", True):
            continue
        mask_img[i] = True
        gb = t["boxes"].to(logits.device)
        idx = assign(points, strides, ranges, gb)
        pos = idx >= 0
        pos_mask[i] = pos
        cls_t[i, pos, t["classes"].to(logits.device)[idx[pos]]] = 1.0
        gt_per_loc[i, pos] = gb[idx[pos]]
        if weight is not None and pos.any():
            per_object = torch.bincount(idx[pos], minlength=gb.shape[0]).float()
            weight[i, pos] = per_object[idx[pos]] ** -object_balance
    # an exact zero that still reaches every detection output: zero gradient, never None
    zero = (logits.sum() + boxes.sum() + ctr.sum()) * 0.0
    if not mask_img.any():
        return {"det_cls": zero, "det_box": zero, "det_ctr": zero}
    num_pos = max(float(pos_mask.sum()), 1.0)
    if weight is None:
        focal = torchvision.ops.sigmoid_focal_loss(
            logits[mask_img], cls_t[mask_img], reduction="sum"
        )
    else:
        w_pos = weight[pos_mask]
        weight[pos_mask] = w_pos * (w_pos.numel() / w_pos.sum().clamp(min=1e-6))
        focal = torchvision.ops.sigmoid_focal_loss(logits[mask_img], cls_t[mask_img])
        focal = (focal * weight[mask_img][..., None]).sum()
    if not pos_mask.any():
        return {"det_cls": focal / num_pos, "det_box": zero, "det_ctr": zero}
    pb, gb = boxes[pos_mask], gt_per_loc[pos_mask]
    pos_strides = strides.expand(pos_mask.shape)[pos_mask]
    ctr_t = centerness_target(
        points.expand_as(boxes[..., :2])[pos_mask], grown_to_grid(gb, pos_strides)
    )
    w = weight[pos_mask] if weight is not None else 1.0  # no per-location tensor when off
    giou = torchvision.ops.generalized_box_iou_loss(pb, gb, reduction="none")
    box = (giou * ctr_t * w).sum() / (ctr_t * w).sum().clamp(min=1e-6)
    ctr_bce = F.binary_cross_entropy_with_logits(ctr[pos_mask], ctr_t, reduction="none")
    ctr_loss = (ctr_bce * w).sum() / num_pos
    return {"det_cls": focal / num_pos, "det_box": box * 2.0, "det_ctr": ctr_loss}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over samples with a label (>= 0); exactly 0 when none has one."""
    mask = labels >= 0
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float()[mask], labels[mask], label_smoothing=0.05)


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 over finite targets; exactly 0 when none is labelled."""
    mask = torch.isfinite(target)
    if not mask.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred.float()[:, 0][mask], target[mask], beta=0.1)


class MultiTaskLoss:
    """Per-task losses combined by a weighting strategy (``edge_mtl.weighting``).

    ``weighting``: a ``Weighting`` or, for a fixed weighting, a dict task -> weight (default 1).
    ``object_balance``: :func:`detection_loss`'s per-object weighting of positives.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        weighting: Weighting | dict[str, float],
        device: torch.device,
        object_balance: float = 0.0,
    ):
        self.cfg = cfg
        self.object_balance = object_balance  # detection_loss's per-object weighting
        if not isinstance(weighting, Weighting):
            weighting = Fixed(self.tasks(), TrainConfig(loss_weights=dict(weighting)))
        self.weighting = weighting.to(device)
        self.device = device
        self._levels: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}  # by input size

    @property
    def weights(self) -> dict[str, float]:
        return self.weighting.weights()

    def tasks(self) -> list[str]:
        return self.cfg.task_names()

    def labelled(self, targets: list[dict]) -> set[str]:
        """Tasks with at least one label in the batch."""
        found = set()
        if self.cfg.detect and any(t.get("has_boxes", True) for t in targets):
            found.add("det")
        found.update(t for t in self.cfg.classify if any(x[f"cls_{t}"] >= 0 for x in targets))
        found.update(
            t for t in self.cfg.regress if any(math.isfinite(x[f"reg_{t}"]) for x in targets)
        )
        return found

    def level(self, hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, ...]:
        """:func:`level_info` for an input of ``hw`` (default the model's), computed once."""
        key = tuple(hw or self.cfg.input_hw)
        if key not in self._levels:
            self._levels[key] = level_info(self.cfg, self.device, key)
        return self._levels[key]

    def task_losses(
        self, out: dict[str, torch.Tensor], targets: list[dict], hw: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Scalar float32 loss per task; an exact 0 (zero gradient) for a task without labels.
        ``hw``: the input size ``out`` was computed from (default the model's input_hw)."""
        parts: dict[str, torch.Tensor] = {}
        device = next(iter(out.values())).device
        if self.cfg.detect:
            det = detection_loss(out, targets, self.cfg, self.level(hw), self.object_balance)
            parts["det"] = sum(det.values())
        for t in self.cfg.classify:
            labels = torch.tensor([x[f"cls_{t}"] for x in targets], device=device)
            parts[t] = classification_loss(out[f"cls_{t}"], labels)
        for t in self.cfg.regress:
            target = torch.tensor(
                [x[f"reg_{t}"] for x in targets], device=device, dtype=torch.float32
            )
            parts[t] = regression_loss(out[f"reg_{t}"], target)
        return parts

    def __call__(
        self, out: dict[str, torch.Tensor], targets: list[dict], hw: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss to backpropagate, per-task loss values for logs)."""
        parts = self.task_losses(out, targets, hw)
        total = self.weighting(parts, self.labelled(targets))
        return total, {k: float(v.detach()) for k, v in parts.items()}
