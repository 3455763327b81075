"""The multi-task network: ResNet trunk -> FPN neck (P3-P5) -> a dict of task heads.

``MultiTaskModel.forward(images)`` returns a dict with fixed keys; the ONNX contract outputs
(``det_boxes``, ``det_scores``, ``cls_<task>``, ``reg_<task>``) are among them, the rest
(``det_logits``, ``det_ctr``) exist for the losses and are dropped at export.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from edge_mtl.config import ModelConfig
from edge_mtl.runtime.errors import InputError


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


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


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


class LevelTower(nn.Module):
    """Conv-BN-ReLU blocks whose convolutions every pyramid level shares, with a BatchNorm per
    level. One BatchNorm over all levels normalises each level by its own batch statistics in
    training but by a blend of all levels' running statistics in eval mode, and the levels
    differ: P3 features were then scaled wrongly at inference (on the demo model, giving each
    level its own statistics raised mAP@0.5:0.95 from 0.38 to 0.47 with the weights unchanged).
    At export each level's BatchNorm folds into its own copy of the convolution."""

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
            "det_boxes": boxes,
            "det_scores": scores,
            "det_logits": logit,
            "det_ctr": ctr[..., 0],
        }


class ClassifyHead(nn.Module):
    """A shared hidden layer on globally pooled C5, then one linear classifier per task."""

    def __init__(self, tasks: dict[str, tuple[str, ...]], in_channels: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_channels, 256), nn.ReLU(True), nn.Dropout(0.1))
        self.out = nn.ModuleDict({t: nn.Linear(256, len(c)) for t, c in tasks.items()})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.hidden(pooled)
        return {f"cls_{t}": m(h) for t, m in self.out.items()}  # each (B, K) logits


class RegressHead(nn.Module):
    """Scalar targets that depend on *where* things are (road curvature): attention pooling
    over P4 with coordinate channels appended, so the pooled vector keeps position."""

    def __init__(self, tasks: tuple[str, ...], width: int, maps: int = 4) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(width + 2, 64)
        self.attn = nn.Conv2d(64, maps, 1)
        self.out = nn.ModuleDict(
            {
                t: nn.Sequential(nn.Linear(maps * 66, 64), nn.ReLU(True), nn.Linear(64, 1))
                for t in tasks
            }
        )

    def forward(self, p4: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = p4.shape
        ys = torch.linspace(-1, 1, h, device=p4.device, dtype=p4.dtype)
        xs = torch.linspace(-1, 1, w, device=p4.device, dtype=p4.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy]).expand(b, -1, -1, -1)  # (B, 2, h, w)
        f = self.reduce(torch.cat([p4, coords], 1))  # (B, 64, h, w)
        fc = torch.cat([f, coords], 1).flatten(2)  # (B, 66, hw)
        a = torch.softmax(self.attn(f).flatten(2), -1)  # (B, maps, hw)
        pooled = torch.einsum("bmn,bcn->bmc", a, fc).flatten(1)  # (B, maps*66)
        return {f"reg_{t}": m(pooled) for t, m in self.out.items()}  # each (B, 1)


HEADS: dict[str, type[nn.Module]] = {
    "classify": ClassifyHead,
    "detect": DetectHead,
    "regress": RegressHead,
}


class MultiTaskModel(nn.Module):
    """Shared trunk + neck, task heads from the config. Input: float32 (B, 3, H, W) normalised
    RGB; H, W multiples of 32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, cfg.pretrained)
        # A classification-only model has no use for the pyramid: skipping it keeps single-task
        # baselines (``edge-mtl compare``) as lean as a user would build them.
        needs_neck = bool(cfg.detect or cfg.regress)
        chans = tuple(self.backbone.channels[s] for s in cfg.strides)
        self.neck = FPN(chans, cfg.neck_channels) if needs_neck else None
        self.heads = nn.ModuleDict()
        if cfg.detect:
            self.heads["detect"] = HEADS["detect"](
                cfg.detect, cfg.neck_channels, cfg.head_convs, cfg.strides
            )
        if cfg.classify:
            self.heads["classify"] = HEADS["classify"](cfg.classify, self.backbone.channels[32])
        if cfg.regress:
            self.heads["regress"] = HEADS["regress"](cfg.regress, cfg.neck_channels)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.backbone(images)
        strides = self.cfg.strides
        p = self.neck([c[s] for s in strides]) if self.neck is not None else []
        out: dict[str, torch.Tensor] = {}
        if "detect" in self.heads:
            out.update(self.heads["detect"](p))
        if "classify" in self.heads:
            out.update(self.heads["classify"](c[32].mean((2, 3))))
        if "regress" in self.heads:
            out.update(self.heads["regress"](p[strides.index(16)]))
        return out

    def output_names(self) -> list[str]:
        """The ONNX contract outputs, in a fixed order."""
        names = ["det_boxes", "det_scores"] if self.cfg.detect else []
        names += [f"cls_{t}" for t in self.cfg.classify]
        names += [f"reg_{t}" for t in self.cfg.regress]
        return names

    def shared_parameter(self) -> nn.Parameter:
        """The weight of the last layer every task's loss flows through (GradNorm measures
        per-task gradient norms there): the last conv of C5's final block. Not the FPN, which
        classification bypasses (it pools C5 directly)."""
        block = self.backbone.layer4[-1]
        return (block.conv3 if hasattr(block, "conv3") else block.conv2).weight


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
