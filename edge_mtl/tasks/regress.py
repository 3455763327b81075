"""The ``regress`` kind: one scalar per ``model.regress`` entry (e.g. road curvature), from
attention pooling over P4 with coordinate channels, so the pooled vector keeps position.

Output ``reg_<task>`` (1,). Loss: smooth-L1 over finite targets. Metrics: MAE, the label
standard deviation to read it against, and the spread of the per-image errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.config import ModelConfig
from edge_mtl.runtime.decoders import DECODERS
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.tasks.base import Features, Kind, LossContext, Sample, Task, conv_bn_relu


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
        """P4 (B, width, H/16, W/16) -> ``reg_<task>`` (B, 1) per task."""
        b, _, h, w = p4.shape
        ys = torch.linspace(-1, 1, h, device=p4.device, dtype=p4.dtype)
        xs = torch.linspace(-1, 1, w, device=p4.device, dtype=p4.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy]).expand(b, -1, -1, -1)  # (B, 2, h, w)
        f = self.reduce(torch.cat([p4, coords], 1))  # (B, 64, h, w)
        fc = torch.cat([f, coords], 1).flatten(2)  # (B, 66, hw)
        a = torch.softmax(self.attn(f).flatten(2), -1)  # (B, maps, hw)
        pooled = torch.einsum("bmn,bcn->bmc", a, fc).flatten(1)  # (B, maps*66)
        return {REGRESS.key(t): m(pooled) for t, m in self.out.items()}


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 over finite targets; exactly 0 when none is labelled."""
    mask = torch.isfinite(target)
    if not mask.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred.float()[:, 0][mask], target[mask], beta=0.1)


class RegressMetric:
    """Predictions and labels of one scalar task over an evaluation pass."""

    def __init__(self, task: Task, key: str) -> None:
        self.task, self.key = task, key
        self.pred: list[float] = []
        self.true: list[float] = []

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None:
        self.pred += [float(v) for v in out[self.key][:, 0]]
        self.true += [float(t[self.key]) for t in targets]

    def result(self) -> dict[str, float]:
        """``<task>/mae``, ``<task>/std`` (label standard deviation, to read MAE against) and
        ``<task>/mae_sd`` (spread of the per-image absolute errors), NaN without labels."""
        p, y = np.array(self.pred), np.array(self.true)
        ok = np.isfinite(y)
        t = self.task.name
        if not ok.any():
            return {f"{t}/mae": math.nan, f"{t}/std": math.nan, f"{t}/mae_sd": math.nan}
        err = np.abs(p[ok] - y[ok])
        return {
            f"{t}/mae": float(err.mean()),
            f"{t}/std": float(y[ok].std()),
            f"{t}/mae_sd": float(err.std()),
        }


class RegressKind(Kind):
    """Scalar regression tasks named in ``model.regress``."""

    name = TaskKind.REGRESS.value
    decoder = DECODERS[TaskKind.REGRESS.value]
    needs_neck = True

    def declared(self, cfg: ModelConfig) -> tuple[Task, ...]:
        return tuple(Task(t, self.name) for t in cfg.regress)

    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        return RegressHead(tuple(t.name for t in tasks), cfg.neck_channels)

    def head_input(self, feats: Features) -> torch.Tensor:
        return feats.pyramid[16]  # P4

    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        return {self.key(task.name): (1,)}

    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        return {self.key(task.name): sample.values.get(task.name, math.nan)}  # NaN = no label

    def labelled(self, task: Task, targets: list[dict]) -> bool:
        return any(math.isfinite(x[self.key(task.name)]) for x in targets)

    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        key = self.key(task.name)
        target = torch.tensor(
            [x[key] for x in targets], device=out[key].device, dtype=torch.float32
        )
        return regression_loss(out[key], target)

    def metric(self, task: Task, cfg: ModelConfig) -> RegressMetric:
        return RegressMetric(task, self.key(task.name))

    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        unit = cfg.regress_units.get(task.name, "")  # read by the runtime, written to JSONL
        return TaskMeta(task.name, TaskKind.REGRESS, self.output_names(task), unit=unit)

    def metric_lines(self, task: Task, metrics: dict[str, float]) -> list[str]:
        t = task.name
        if f"{t}/mae" not in metrics:
            return []
        return [f"  {t:<10} MAE {metrics[t + '/mae']:.4f}  (label std {metrics[t + '/std']:.4f})"]


REGRESS = RegressKind()
