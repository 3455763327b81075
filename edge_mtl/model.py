"""The multi-task network: ResNet trunk -> FPN neck (P3-P5) -> one head per task kind.

The heads come from the task registry (:mod:`edge_mtl.tasks`): every kind with tasks in the
config adds its head, keyed by the kind name. ``MultiTaskModel.forward(images)`` returns a dict
with fixed keys; the ONNX contract outputs (each kind's ``output_names``) are among them, the
rest (e.g. the detection logits) exist for the losses and are dropped at export.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from edge_mtl.config import ModelConfig
from edge_mtl.runtime.errors import InputError
from edge_mtl.tasks import KINDS, Features, Kind, Task, declared
from edge_mtl.tasks.base import conv_bn_relu


class Backbone(nn.Module):
    """torchvision ResNet without its classifier; returns C2-C5 (strides 4, 8, 16, 32)."""

    def __init__(self, name: str, pretrained: str | None = None) -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            path = Path(pretrained)
            if not path.is_file():
                raise InputError(f"{path}: pretrained checkpoint not found")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises many types for a bad file
                raise InputError(f"{path}: not a readable torch checkpoint ({e})") from None
            missing, _ = net.load_state_dict(state, strict=False)
            if len(missing) > 10:
                raise InputError(f"{path}: not a torchvision {name} state dict")
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        expansion = 4 if name == "resnet50" else 1
        self.channels = {s: 16 * s * expansion for s in (4, 8, 16, 32)}  # 64 ... 512 for R18

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Feature maps by stride: C2 (B, 64e, H/4, W/4) ... C5 (B, 512e, H/32, W/32)."""
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return {4: c2, 8: c3, 16: c4, 32: self.layer4(c4)}


class FPN(nn.Module):
    """Top-down feature pyramid, finest first: (C3, C4, C5) -> (P3, P4, P5), or with C2 in
    front also P2; all ``width`` channels."""

    def __init__(self, in_channels: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(width, width) for _ in in_channels)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        lat = [m(f) for m, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:])
        return [m(x) for m, x in zip(self.smooth, lat)]


class MultiTaskModel(nn.Module):
    """Shared trunk + neck, one head per task kind the config declares (registry order). Input:
    float32 (B, 3, H, W) normalised RGB; H, W multiples of 32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # the kinds this model was built with, fixed even if the registry changes later
        self.tasks: dict[str, tuple[Task, ...]] = declared(cfg)
        self.kinds: dict[str, Kind] = {name: KINDS[name] for name in self.tasks}
        self.backbone = Backbone(cfg.backbone, cfg.pretrained)
        # A classification-only model has no use for the pyramid: skipping it keeps single-task
        # baselines (``edge-mtl compare``) as lean as a user would build them.
        needs_neck = any(k.needs_neck for k in self.kinds.values())
        chans = tuple(self.backbone.channels[s] for s in cfg.strides)
        self.neck = FPN(chans, cfg.neck_channels) if needs_neck else None
        self.heads = nn.ModuleDict(
            {
                name: kind.build_head(cfg, self.tasks[name], self.backbone.channels)
                for name, kind in self.kinds.items()
            }
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.backbone(images)
        strides = self.cfg.strides
        p = self.neck([c[s] for s in strides]) if self.neck is not None else []
        feats = Features(c, dict(zip(strides, p)))
        out: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            out.update(head(self.kinds[name].head_input(feats)))
        return out

    def output_names(self) -> list[str]:
        """The ONNX contract outputs, in a fixed order (registry order, then task order)."""
        return [
            n
            for name, kind in self.kinds.items()
            for t in self.tasks[name]
            for n in kind.output_names(t)
        ]

    def shared_parameter(self) -> nn.Parameter:
        """The weight of the last layer every task's loss flows through (GradNorm measures
        per-task gradient norms there): the last conv of C5's final block. Not the FPN, which
        classification bypasses (it pools C5 directly)."""
        block = self.backbone.layer4[-1]
        return (block.conv3 if hasattr(block, "conv3") else block.conv2).weight


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
