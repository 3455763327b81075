"""Progressive resizing: the early part of a run trains on smaller inputs, the rest at the
model's input size.

A smaller step costs less (at 0.5x the side length, under half a full-size step on CPU), so a
time-limited run sees more images; the full-size end adapts the weights and BatchNorm statistics
to the size that is exported and deployed.

The whole batch is resized after loading, so data loading, augmentation and the letterbox stay
as they are: bilinear resizing commutes with the per-channel normalisation, and box labels in
input pixels scale with the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_mtl.config import ModelConfig, TrainConfig, as_tuple


def low_res_hw(input_hw: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """Each side of ``input_hw``: the largest multiple of ``multiple`` (the largest stride, so
    every feature map has whole cells) not above ``scale`` x the side, and at least
    ``multiple``. 256x448 at 0.75 gives 192x320."""
    h, w = (max(multiple, int(s * scale) // multiple * multiple) for s in input_hw)
    return h, w


def stages(train: TrainConfig) -> list[tuple[float, float]]:
    """``(scale, until)`` per smaller-size stage, in order: stage k trains at ``scale`` x the
    input size until ``until`` of the run. Stages at full scale or ending at 0 are left out."""
    pairs = zip(as_tuple(train.low_res_scale), as_tuple(train.low_res_until))
    return [(s, u) for s, u in pairs if s < 1.0 and u > 0]


def active(train: TrainConfig) -> bool:
    """Whether the run trains any step at a smaller size."""
    return bool(stages(train))


def stage_at(progress: float, train: TrainConfig) -> tuple[float, float] | None:
    """The ``(scale, until)`` stage a step at ``progress`` (0..1 of the run) is in; ``None``
    once the run trains at full size."""
    return next(((s, u) for s, u in stages(train) if progress < u), None)


def train_hw(progress: float, model: ModelConfig, train: TrainConfig) -> tuple[int, int]:
    """The input size a step at ``progress`` (0..1 of the run) trains at."""
    stage = stage_at(progress, train)
    if stage is not None:
        return low_res_hw(model.input_hw, stage[0], max(model.strides))
    return tuple(model.input_hw)  # type: ignore[return-value]


def resize_batch(
    images: torch.Tensor, targets: list[dict], hw: tuple[int, int]
) -> tuple[torch.Tensor, list[dict]]:
    """``images`` (B, 3, H, W) normalised float resized to ``hw`` (bilinear, antialiased when
    shrinking), and ``targets`` with their ``boxes`` (N, 4) xyxy input pixels scaled alike and
    their pixel labels (``seg_<task>`` uint8 (H, W)) resized nearest-neighbour, so the loss of
    an early low-resolution step costs what its image does. The inputs are returned unchanged
    when they already have that size."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(hw):
        return images, targets
    sy, sx = hw[0] / h, hw[1] / w
    scale = torch.tensor([sx, sy, sx, sy])
    small = F.interpolate(
        images, size=tuple(hw), mode="bilinear", align_corners=False, antialias=True
    )
    return small, [
        {**t, "boxes": t["boxes"] * scale.to(t["boxes"]), **_masks(t, hw)} for t in targets
    ]


def _masks(target: dict, hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The target's pixel labels at ``hw`` (nearest neighbour: classes stay classes)."""
    return {
        k: F.interpolate(v[None, None].float(), size=tuple(hw), mode="nearest")[0, 0].to(v.dtype)
        for k, v in target.items()
        if k.startswith("seg_") and isinstance(v, torch.Tensor)
    }
