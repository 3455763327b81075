"""The ``detect`` kind: an anchor-free dense detector (FCOS-style) on the feature pyramid.

Head: class logits, box distances and a centerness logit per location, decoded to boxes in the
graph (outputs ``det_boxes`` (A, 4) xyxy input pixels, ``det_scores`` (A, C)). Loss: points
inside a box's centre region on the pyramid level whose range fits the box are positives;
sigmoid focal loss on classes, GIoU on decoded boxes (weighted by centerness), BCE on
centerness. A box that gets no point (tiny objects) takes its nearest finest-level point, so
every labelled object is learned. Metrics: COCO mAP@0.5 and mAP@0.5:0.95 on the runtime's own
postprocessing, with per-size and per-class breakdowns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from edge_mtl.bench.metrics import COCO_SIZES, coco_map
from edge_mtl.config import ModelConfig
from edge_mtl.runtime.decoders import DECODERS, DET_BOXES, DET_SCORES
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.postprocess import (
    EVAL_CONF,
    EVAL_IOU,
    EVAL_MAX_DET,
    detections_to_frame,
    postprocess_detections,
)
from edge_mtl.runtime.preprocess import Letterbox
from edge_mtl.tasks.base import Features, Kind, LossContext, Sample, Task

SCORE_THRESHOLD = 0.25  # deployment defaults recorded in the metadata (TaskMeta's own)
IOU_THRESHOLD = 0.5
CENTER_RADIUS = 2.5  # in strides
MIN_BOX_STRIDES = 1.5  # boxes are assigned and centred as if at least this many strides wide


class LevelTower(nn.Module):
    """Conv-BN-ReLU blocks whose convolutions every pyramid level shares, with a BatchNorm per
    level. One BatchNorm over all levels normalises each level by its own batch statistics in
    training but by a blend of all levels' running statistics in eval mode, and the levels
    differ, so P3 features would be scaled wrongly at inference. At export each level's
    BatchNorm folds into its own copy of the convolution (:meth:`fold_norms`)."""

    def __init__(self, width: int, convs: int, levels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(convs)
        )
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(width) for _ in range(convs)) for _ in range(levels)
        )
        self.folded: nn.ModuleList | None = None  # per-level convs with norms folded in

    def fold_norms(self) -> None:
        """For inference only: give each level its own copy of the convolutions with that
        level's BatchNorm folded in (export calls this; a folded tower cannot train)."""
        self.folded = nn.ModuleList(
            nn.ModuleList(
                torch.nn.utils.fusion.fuse_conv_bn_eval(conv, norm)
                for conv, norm in zip(self.convs, norms)
            )
            for norms in self.norms
        )

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        if self.folded is not None:
            for conv in self.folded[level]:
                x = F.relu(conv(x), inplace=True)
            return x
        for conv, norm in zip(self.convs, self.norms[level]):
            x = F.relu(norm(conv(x)), inplace=True)
        return x


class DetectHead(nn.Module):
    """Anchor-free dense detector (FCOS-style) shared over the pyramid levels (P3-P5, or P2-P5),
    boxes decoded in forward.

    Per location: class logits (C), box distances left/top/right/bottom in input pixels, and a
    centerness logit. Score = sqrt(sigmoid(class) * sigmoid(centerness)).
    """

    def __init__(self, classes: tuple[str, ...], width: int, convs: int, strides: tuple[int, ...]):
        super().__init__()
        self.num_classes = len(classes)
        self.strides = strides
        self.cls_tower = LevelTower(width, convs, len(strides))
        self.reg_tower = LevelTower(width, convs, len(strides))
        self.cls_out = nn.Conv2d(width, self.num_classes, 3, padding=1)
        self.reg_out = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_out = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(len(strides)))
        nn.init.constant_(self.cls_out.bias, -4.6)  # prior probability 0.01 (focal loss init)
        nn.init.normal_(self.cls_out.weight, std=0.01)

    @staticmethod
    def points(hw: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
        """Centres of a feature map's cells in input pixels, (h*w, 2) as (x, y)."""
        h, w = hw
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pyramid levels finest first -> ``det_boxes`` (B, A, 4), ``det_scores`` (B, A, C) and,
        for the loss, ``det_logits`` (B, A, C) and ``det_ctr`` (B, A)."""
        logits, dists, ctrs, pts = [], [], [], []
        for i, (f, stride) in enumerate(zip(feats, self.strides)):
            b = f.shape[0]
            c = self.cls_tower(f, i)
            r = self.reg_tower(f, i)
            logits.append(self.cls_out(c).flatten(2).transpose(1, 2))  # (B, hw, C)
            ctrs.append(self.ctr_out(r).flatten(2).transpose(1, 2))  # (B, hw, 1)
            d = F.relu(self.reg_out(r) * self.scales[i]) * stride  # distances in pixels
            dists.append(d.flatten(2).transpose(1, 2))  # (B, hw, 4)
            pts.append(self.points(f.shape[-2:], stride, f.device).expand(b, -1, -1))
        logit = torch.cat(logits, 1)  # (B, A, C)
        ctr = torch.cat(ctrs, 1)  # (B, A, 1)
        dist = torch.cat(dists, 1).float()
        p = torch.cat(pts, 1)  # (B, A, 2)
        boxes = torch.cat([p - dist[..., :2], p + dist[..., 2:]], -1)  # (B, A, 4) xyxy
        scores = torch.sqrt(torch.sigmoid(logit.float()) * torch.sigmoid(ctr.float()))
        return {
            DET_BOXES: boxes,
            DET_SCORES: scores,
            "det_logits": logit,
            "det_ctr": ctr[..., 0],
        }


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
    """FCOS centerness in [0, 1] of ``points`` (P, 2) inside their ``boxes`` (P, 4) xyxy."""
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
) -> dict[str, torch.Tensor]:
    """Focal classification, GIoU box and centerness losses of the dense head (``det_cls``,
    ``det_box``, ``det_ctr``); ``level``: :func:`level_info` of the input size."""
    points, strides, ranges = level
    logits = out["det_logits"].float()  # (B, A, C)
    boxes = out[DET_BOXES].float()  # (B, A, 4)
    ctr = out["det_ctr"].float()  # (B, A)
    cls_t = torch.zeros_like(logits)
    pos_mask = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
    gt_per_loc = torch.zeros_like(boxes)
    mask_img = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
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
    # an exact zero that still reaches every detection output: zero gradient, never None
    zero = (logits.sum() + boxes.sum() + ctr.sum()) * 0.0
    if not mask_img.any():
        return {"det_cls": zero, "det_box": zero, "det_ctr": zero}
    num_pos = max(float(pos_mask.sum()), 1.0)
    focal = torchvision.ops.sigmoid_focal_loss(logits[mask_img], cls_t[mask_img], reduction="sum")
    if not pos_mask.any():
        return {"det_cls": focal / num_pos, "det_box": zero, "det_ctr": zero}
    pb, gb = boxes[pos_mask], gt_per_loc[pos_mask]
    pos_strides = strides.expand(pos_mask.shape)[pos_mask]
    ctr_t = centerness_target(
        points.expand_as(boxes[..., :2])[pos_mask], grown_to_grid(gb, pos_strides)
    )
    giou = torchvision.ops.generalized_box_iou_loss(pb, gb, reduction="none")
    box = (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1e-6)
    ctr_bce = F.binary_cross_entropy_with_logits(ctr[pos_mask], ctr_t, reduction="none")
    ctr_loss = ctr_bce.sum() / num_pos
    return {"det_cls": focal / num_pos, "det_box": box * 2.0, "det_ctr": ctr_loss}


class DetectMetric:
    """COCO mAP over images with box labels (images of a source without boxes would count every
    detection as a false positive), detections decoded as the runtime decodes them."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.gts: list[tuple[np.ndarray, np.ndarray]] = []
        self.dets: list[tuple[np.ndarray, ...]] = []
        self.sizes: list[tuple[int, int]] = []

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None:
        for j, t in enumerate(targets):
            rec = records[t["index"]]
            if not rec.has_boxes:
                continue
            scale, px, py, fh, fw = t["letterbox"]
            lb = Letterbox(scale, px, py, (int(fh), int(fw)))
            d = postprocess_detections(
                out[DET_BOXES][j], out[DET_SCORES][j], EVAL_CONF, EVAL_IOU, EVAL_MAX_DET
            )
            d = detections_to_frame(d, lb)
            self.gts.append((rec.boxes, rec.classes))
            self.dets.append((d.boxes, d.scores, d.classes))
            self.sizes.append((int(fh), int(fw)))

    def result(self) -> dict[str, float]:
        """``det/map50``, ``det/map``, ``det/map_{small,medium,large}``, ``det/ap50/<class>``."""

        if not self.gts:
            return {}
        classes, p = self.task.classes, f"{self.task.name}/"
        r = coco_map(self.gts, self.dets, len(classes), self.sizes)
        metrics = {f"{p}map50": r["map50"], f"{p}map": r["map"]}
        for size, _, _ in COCO_SIZES:
            metrics[f"{p}map_{size}"] = r.get(f"map_{size}", math.nan)  # NaN: no labels at all
        for name, ap in zip(classes, r.get("ap50", [math.nan] * len(classes))):
            metrics[f"{p}ap50/{name}"] = ap
        return metrics


def _f3(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "—"  # e.g. no objects of that size


class DetectKind(Kind):
    """One detection task, ``det``, over the classes of ``model.detect``."""

    name = TaskKind.DETECT.value
    decoder = DECODERS[TaskKind.DETECT.value]
    needs_neck = True

    def declared(self, cfg: ModelConfig) -> tuple[Task, ...]:
        return (Task("det", self.name, tuple(cfg.detect)),) if cfg.detect else ()

    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        return DetectHead(cfg.detect, cfg.neck_channels, cfg.head_convs, cfg.strides)

    def head_input(self, feats: Features) -> list[torch.Tensor]:
        return list(feats.pyramid.values())

    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        anchors = sum((hw[0] // s) * (hw[1] // s) for s in cfg.strides)
        return {DET_BOXES: (anchors, 4), DET_SCORES: (anchors, len(task.classes))}

    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        return {}  # boxes, classes and has_boxes are in every item (augmentation moves them)

    def labelled(self, task: Task, targets: list[dict]) -> bool:
        return any(t.get("has_boxes", True) for t in targets)

    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        key = ("detect-levels", tuple(ctx.hw))
        if key not in ctx.cache:  # computed once per input size
            ctx.cache[key] = level_info(ctx.cfg, ctx.device, key[1])
        return sum(detection_loss(out, targets, ctx.cfg, ctx.cache[key]).values())

    def metric(self, task: Task, cfg: ModelConfig) -> DetectMetric:
        return DetectMetric(task)

    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        return TaskMeta(
            task.name,
            TaskKind.DETECT,
            self.output_names(task, nms),
            task.classes,
            tuple(cfg.strides),
            SCORE_THRESHOLD,
            IOU_THRESHOLD,
            nms,
        )

    def metric_lines(self, task: Task, metrics: dict[str, float]) -> list[str]:
        p = f"{task.name}/"
        if f"{p}map50" not in metrics:
            return []
        map50, map_ = metrics[f"{p}map50"], metrics[f"{p}map"]
        rows = [f"  detection  mAP@0.5 {map50:.3f}  mAP@0.5:0.95 {map_:.3f}"]
        sizes = [(s, metrics.get(f"{p}map_{s}", math.nan)) for s in ("small", "medium", "large")]
        if any(math.isfinite(v) for _, v in sizes):
            rows.append("    by size  mAP@0.5:0.95 " + "  ".join(f"{s} {_f3(v)}" for s, v in sizes))
        per_class = [
            (k.removeprefix(f"{p}ap50/"), v)
            for k, v in metrics.items()
            if k.startswith(f"{p}ap50/")
        ]
        if per_class:
            rows.append("    by class AP@0.5 " + "  ".join(f"{c} {_f3(v)}" for c, v in per_class))
        return rows


DETECT = DetectKind()
