"""The ``segment`` kind: one pixel task per ``model.segment`` entry (drivable area, lane markings).

Head, per task: two 3x3 conv-BN-ReLU layers (32 channels) and a 1x1 classifier on the finest
pyramid level (P2 at stride 4 in the demo), upsampled bilinearly to the input resolution. The map
is emitted at the input's resolution, not at stride 4: lane markings are 2-8 input pixels wide, and
a stride-4 class map would round each one to a whole cell or lose it; bilinear logits keep their
position within the cell for the price of a resize and an argmax.

Outputs: ``seg_<task>_logits`` (B, K, H, W) for the loss; in eval mode also ``seg_<task>``, the
uint8 class map (B, H, W) the ONNX file carries (or the logits, with ``--seg-logits``).
Loss: per-pixel cross-entropy over labelled pixels (255 = none) plus soft Dice over the
foreground classes: on the synthetic scenes Dice lifted lane IoU from 0.20 (cross-entropy alone)
and 0.41 (class-weighted cross-entropy) to 0.51 at the same steps (docs/results.md).
Metrics (:class:`SegmentMetric`) are defined as YOLOP and HybridNets report theirs, so the
figures are of the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.bench.metrics import SegConfusion
from edge_mtl.config import ModelConfig
from edge_mtl.data.masks import IGNORE, to_task
from edge_mtl.runtime.decoders import DECODERS
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.tasks.base import Features, Kind, LossContext, Sample, Task, conv_bn_relu

HIDDEN = 32
MAP_NOTE = (
    "class map at the input resolution: logits are computed at the finest pyramid stride and "
    "upsampled bilinearly, so lane markings a few pixels wide keep their position"
)


class SegmentHead(nn.Module):
    """Per task: conv-BN-ReLU x2 -> 1x1 classifier on the finest pyramid level, upsampled by
    ``stride`` to the input resolution."""

    def __init__(self, tasks: dict[str, int], width: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.emit_logits = False  # export --seg-logits: seg_<task> carries the logits
        self.out = nn.ModuleDict(
            {
                t: nn.Sequential(
                    conv_bn_relu(width, HIDDEN),
                    conv_bn_relu(HIDDEN, HIDDEN),
                    nn.Conv2d(HIDDEN, k, 1),
                )
                for t, k in tasks.items()
            }
        )

    def forward(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Finest level (B, width, H/s, W/s) -> ``seg_<task>_logits`` (B, K, H, W), and in eval
        mode ``seg_<task>`` (uint8 (B, H, W) class map, or the logits)."""
        out: dict[str, torch.Tensor] = {}
        for t, m in self.out.items():
            logits = F.interpolate(
                m(p), scale_factor=self.stride, mode="bilinear", align_corners=False
            )
            key = SEGMENT.key(t)
            out[key + "_logits"] = logits
            if not self.training:
                out[key] = logits if self.emit_logits else logits.argmax(1).to(torch.uint8)
        return out


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice, averaged over the foreground classes (1..K-1), over labelled pixels.
    ``logits`` (B, K, H, W) float32, ``target`` (B, H, W) int64 with IGNORE."""
    valid = (target != IGNORE).unsqueeze(1)  # (B, 1, H, W)
    probs = torch.softmax(logits, 1) * valid
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(probs.dtype) * valid
    inter = (probs * onehot).sum((0, 2, 3))[1:]
    total = (probs + onehot).sum((0, 2, 3))[1:]
    return (1 - (2 * inter + 1) / (total + 1)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled pixels + soft Dice over the foreground classes; ``logits``
    (B, K, H, W) and ``target`` (B, H, W) int64 of the same size."""
    logits = logits.float()
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE) + dice_loss(logits, target)


class SegmentMetric:
    """Confusion matrix of one pixel task over an evaluation pass, at the model input's
    resolution (letterbox padding and unlabelled pixels left out); the accumulation and the
    figures are :class:`edge_mtl.bench.metrics.SegConfusion`'s, which the ONNX evaluation
    shares."""

    def __init__(self, task: Task, key: str) -> None:
        self.task, self.key = task, key
        self.conf = SegConfusion(len(task.classes))

    @property
    def images(self) -> int:
        return self.conf.images

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None:
        pred = out[self.key] if self.key in out else out[self.key + "_logits"]
        if pred.ndim == 4:
            pred = pred.argmax(1)
        for p, t in zip(pred, targets):
            if t[self.key] is not None:
                self.conf.add(p, np.asarray(t[self.key]))

    def result(self) -> dict[str, float]:
        """See :meth:`SegConfusion.result`: ``<task>/miou``, ``iou``, ``pixel_acc``,
        ``miou_all``, ``iou_<class>``; NaN without labelled pixels."""
        return self.conf.result(self.task.name, self.task.classes)


class SegmentKind(Kind):
    """Pixel tasks named in ``model.segment``; a task's name is the label kind it reads."""

    name = TaskKind.SEGMENT.value
    decoder = DECODERS[TaskKind.SEGMENT.value]
    needs_neck = True

    def declared(self, cfg: ModelConfig) -> tuple[Task, ...]:
        return tuple(Task(t, self.name, tuple(c)) for t, c in cfg.segment.items())

    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        return SegmentHead(
            {t.name: len(t.classes) for t in tasks}, cfg.neck_channels, min(cfg.strides)
        )

    def head_input(self, feats: Features) -> torch.Tensor:
        return feats.pyramid[min(feats.pyramid)]

    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        return {self.key(task.name): tuple(hw)}

    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        mask = sample.masks.get(task.name)
        if mask is None:
            return {self.key(task.name): None}  # the source has no such label: no loss
        return {self.key(task.name): torch.from_numpy(to_task(mask, task.name, task.classes))}

    def labelled(self, task: Task, targets: list[dict]) -> bool:
        return any(x[self.key(task.name)] is not None for x in targets)

    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        key = self.key(task.name)
        logits = out[key + "_logits"]
        rows = [i for i, x in enumerate(targets) if x[key] is not None]
        if not rows:
            return logits.sum() * 0.0
        target = torch.stack([targets[i][key] for i in rows]).to(logits.device, torch.int64)
        return segmentation_loss(logits[rows], target)

    def metric(self, task: Task, cfg: ModelConfig) -> SegmentMetric:
        return SegmentMetric(task, self.key(task.name))

    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        return TaskMeta(
            task.name, TaskKind.SEGMENT, self.output_names(task), task.classes, note=MAP_NOTE
        )

    def metric_lines(self, task: Task, metrics: dict[str, float]) -> list[str]:
        t = task.name
        if f"{t}/miou" not in metrics:
            return []
        per_class = "  ".join(
            f"{n} {metrics[f'{t}/iou_{n}']:.3f}" for n in task.classes if f"{t}/iou_{n}" in metrics
        )
        return [
            f"  {t:<10} mIoU {metrics[t + '/miou']:.3f}  IoU {metrics[t + '/iou']:.3f}  "
            f"pixel acc {metrics[t + '/pixel_acc']:.3f}  (per class: {per_class})"
        ]


SEGMENT = SegmentKind()
