"""What every task kind provides on the torch side, and the small types its parts exchange.

A :class:`Kind` declares its tasks from the model config, builds one head for all of them,
names their ONNX outputs (through its runtime decoder, which owns the names), turns a training
sample into targets, computes losses and metrics, and describes its tasks in the ONNX metadata.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from edge_mtl.config import ModelConfig
from edge_mtl.runtime.decoders import Decoder
from edge_mtl.runtime.metadata import TaskMeta


@dataclass(frozen=True)
class Task:
    """One declared task: ``name`` (its loss and metric name, e.g. ``det``, ``weather``),
    ``kind`` (the registry key) and ``classes`` (class names; empty for value tasks)."""

    name: str
    kind: str
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Features:
    """What heads read. ``trunk``: C2-C5 by stride, (B, C_s, H/s, W/s); ``pyramid``: the FPN
    levels by stride, finest first, (B, neck_channels, H/s, W/s), empty when no head needs it."""

    trunk: dict[int, torch.Tensor]
    pyramid: dict[int, torch.Tensor] = field(default_factory=dict)

    def pooled(self) -> torch.Tensor:
        """Globally average-pooled C5, (B, C5)."""
        return self.trunk[32].mean((2, 3))


@dataclass(frozen=True)
class Sample:
    """One training item as a kind's ``targets`` sees it. ``image``: uint8 BGR (H, W, 3) in
    model-input pixels (letterboxed, augmented); ``boxes`` float32 (K, 4) xyxy input pixels and
    ``classes`` (K,) after augmentation; ``labels``: class index per classification task;
    ``values``: scalar targets by task (augmented, e.g. curvature flips with the image);
    ``record``: the source's ``edge_mtl.data.bdd.Record``; ``masks``: pixel labels by label kind
    (``drivable``, ``lanes``), canonical classes (``edge_mtl.data.masks``) as uint8 (H, W) in
    model-input pixels (augmented, 255 = no label), only the kinds the model declares and the
    source has."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    labels: dict[str, int]
    values: dict[str, float]
    record: Any
    masks: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class LossContext:
    """Shared by a kind's loss calls: the model config, the input size the outputs came from
    (H, W pixels), the device, and a cache a kind may keep per-size tensors in."""

    cfg: ModelConfig
    hw: tuple[int, int]
    device: torch.device
    cache: dict[Any, Any]


class TaskMetric(Protocol):
    """Accumulates one task's predictions over an evaluation pass. ``add`` gets a batch's outputs
    (name -> float32 numpy (B, ...)), its targets and the dataset's records (``t["index"]``
    indexes them); ``result`` returns metrics keyed ``<task>/<metric>``."""

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None: ...

    def result(self) -> dict[str, float]: ...


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU, spatial size kept; the neck and heads use it."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


class Kind(abc.ABC):
    """One task kind on the torch side. ``name`` is its registry key and the ``kind`` in the
    ONNX metadata; ``decoder`` is its runtime side, which owns the ONNX output names;
    ``needs_neck``: whether its head reads the feature pyramid."""

    name: str
    decoder: Decoder
    needs_neck: bool = False

    def declared(self, cfg: ModelConfig) -> tuple[Task, ...]:
        """The tasks of this kind the model config declares (none: no head). A registered kind's
        config entry is ``model.tasks.<kind>``: task name -> options (read them from
        ``cfg.tasks[self.name][task.name]``); the built-in kinds have their own keys."""
        return tuple(Task(name, self.name) for name in cfg.tasks.get(self.name, {}))

    @abc.abstractmethod
    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        """One head for all ``tasks``; its forward takes :meth:`head_input` and returns a dict
        holding every name of :meth:`output_names` (and any extra tensors its loss needs)."""

    def head_input(self, feats: Features) -> Any:
        """What the head's forward takes (default: pooled C5, (B, C5))."""
        return feats.pooled()

    def key(self, task: str) -> str:
        """The task's (first) output name, also its target's key in a dataset item's targets."""
        return self.decoder.outputs(task)[0]

    def output_names(self, task: Task, nms: bool = False) -> tuple[str, ...]:
        """The task's ONNX outputs, in graph order (the decoder's names)."""
        return self.decoder.outputs(task.name, nms)

    @abc.abstractmethod
    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        """Per-image shape (batch axis left out) of each output for an ``hw`` input."""

    @abc.abstractmethod
    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        """The task's entries in a dataset item's target dict (a missing label is masked:
        -1, NaN, ...; never faked)."""

    @abc.abstractmethod
    def labelled(self, task: Task, targets: list[dict]) -> bool:
        """Whether any item of the batch has a label for ``task``."""

    @abc.abstractmethod
    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        """Scalar float32 loss; an exact 0 that still reaches the head when nothing is labelled."""

    @abc.abstractmethod
    def metric(self, task: Task, cfg: ModelConfig) -> TaskMetric:
        """A fresh accumulator for one evaluation pass."""

    @abc.abstractmethod
    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        """The task's entry in the ONNX metadata (``nms``: in-graph NMS was appended)."""

    def metric_lines(self, task: Task, metrics: dict[str, float]) -> list[str]:
        """Lines for the CLI's metric summary (default: ``<task>  <metric> <value> ...``)."""
        mine = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{task.name}/")}
        if not mine:
            return []
        return [f"  {task.name:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in mine.items())]
