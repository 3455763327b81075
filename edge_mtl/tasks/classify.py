"""The ``classify`` kind: one classification task per ``model.classify`` entry (e.g. weather,
scene, time of day), on globally pooled C5.

Head: a shared hidden layer, then one linear classifier per task (output ``cls_<task>`` (K,)
logits). Loss: cross-entropy with light label smoothing over samples with a label. Metrics:
accuracy and macro-F1 over labelled samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.bench.metrics import accuracy_f1
from edge_mtl.config import ModelConfig
from edge_mtl.runtime.decoders import DECODERS
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.tasks.base import Kind, LossContext, Sample, Task


class ClassifyHead(nn.Module):
    """A shared hidden layer on globally pooled C5, then one linear classifier per task."""

    def __init__(self, tasks: dict[str, tuple[str, ...]], in_channels: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_channels, 256), nn.ReLU(True), nn.Dropout(0.1))
        self.out = nn.ModuleDict({t: nn.Linear(256, len(c)) for t, c in tasks.items()})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled C5 (B, C5) -> ``cls_<task>`` (B, K) logits per task."""
        h = self.hidden(pooled)
        return {CLASSIFY.key(t): m(h) for t, m in self.out.items()}


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over samples with a label (>= 0); exactly 0 when none has one."""
    mask = labels >= 0
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float()[mask], labels[mask], label_smoothing=0.05)


class ClassifyMetric:
    """Top-1 predictions and labels of one task over an evaluation pass."""

    def __init__(self, task: Task, key: str) -> None:
        self.task, self.key = task, key
        self.pred: list[int] = []
        self.true: list[int] = []

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None:
        self.pred += [int(k) for k in out[self.key].argmax(1)]
        self.true += [int(t[self.key]) for t in targets]

    def result(self) -> dict[str, float]:
        """``<task>/acc`` and ``<task>/f1`` (macro), NaN without labels."""

        n = len(self.task.classes)
        acc, f1 = accuracy_f1(np.array(self.pred), np.array(self.true), n)
        return {f"{self.task.name}/acc": acc, f"{self.task.name}/f1": f1}


class ClassifyKind(Kind):
    """Classification tasks: ``model.classify`` maps each task name to its class names."""

    name = TaskKind.CLASSIFY.value
    decoder = DECODERS[TaskKind.CLASSIFY.value]

    def declared(self, cfg: ModelConfig) -> tuple[Task, ...]:
        return tuple(Task(t, self.name, tuple(c)) for t, c in cfg.classify.items())

    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        return ClassifyHead({t.name: t.classes for t in tasks}, trunk_channels[32])

    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        return {self.key(task.name): (len(task.classes),)}

    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        return {self.key(task.name): sample.labels.get(task.name, -1)}  # -1 = no label

    def labelled(self, task: Task, targets: list[dict]) -> bool:
        return any(x[self.key(task.name)] >= 0 for x in targets)

    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        key = self.key(task.name)
        labels = torch.tensor([x[key] for x in targets], device=out[key].device)
        return classification_loss(out[key], labels)

    def metric(self, task: Task, cfg: ModelConfig) -> ClassifyMetric:
        return ClassifyMetric(task, self.key(task.name))

    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        return TaskMeta(task.name, TaskKind.CLASSIFY, self.output_names(task), task.classes)

    def metric_lines(self, task: Task, metrics: dict[str, float]) -> list[str]:
        t = task.name
        if f"{t}/acc" not in metrics:
            return []
        return [f"  {t:<10} accuracy {metrics[t + '/acc']:.3f}  macro-F1 {metrics[t + '/f1']:.3f}"]


CLASSIFY = ClassifyKind()
