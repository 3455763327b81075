"""The multi-task loss: every declared task's own loss (from its kind in the task registry,
:mod:`edge_mtl.tasks`), combined by a weighting strategy.

A task without labels in the batch contributes an exact zero (and so zero gradient), never NaN;
only tasks with a label take part in the weighting's step.
"""

from __future__ import annotations

from typing import Any

import torch

from edge_mtl.config import ModelConfig, TrainConfig
from edge_mtl.tasks import KINDS, Kind, LossContext, Task, declared
from edge_mtl.weighting import Fixed, Weighting


class MultiTaskLoss:
    """Per-task losses combined by a weighting strategy (``edge_mtl.weighting``).

    ``weighting``: a ``Weighting`` or, for a fixed weighting, a dict task -> weight (default 1).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        weighting: Weighting | dict[str, float],
        device: torch.device,
    ):
        self.cfg = cfg
        # (task, its kind) in registry order, fixed even if the registry changes later
        self.declared: list[tuple[Task, Kind]] = [
            (t, KINDS[name]) for name, tasks in declared(cfg).items() for t in tasks
        ]
        if not isinstance(weighting, Weighting):
            weighting = Fixed(self.tasks(), TrainConfig(loss_weights=dict(weighting)))
        self.weighting = weighting.to(device)
        self.device = device
        self._cache: dict[Any, Any] = {}  # kinds keep per-input-size tensors here

    @property
    def weights(self) -> dict[str, float]:
        return self.weighting.weights()

    def tasks(self) -> list[str]:
        """Loss task names in the registry's order (``det``, classification, regression, ...)."""
        return [t.name for t, _ in self.declared]

    def labelled(self, targets: list[dict]) -> set[str]:
        """Tasks with at least one label in the batch."""
        return {t.name for t, kind in self.declared if kind.labelled(t, targets)}

    def task_losses(
        self, out: dict[str, torch.Tensor], targets: list[dict], hw: tuple[int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Scalar float32 loss per task; an exact 0 (zero gradient) for a task without labels.
        ``hw``: the input size ``out`` was computed from (default the model's input_hw)."""
        ctx = LossContext(self.cfg, tuple(hw or self.cfg.input_hw), self.device, self._cache)
        return {t.name: kind.loss(t, out, targets, ctx) for t, kind in self.declared}

    def __call__(
        self, out: dict[str, torch.Tensor], targets: list[dict], hw: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss to backpropagate, per-task loss values for logs)."""
        parts = self.task_losses(out, targets, hw)
        total = self.weighting(parts, self.labelled(targets))
        return total, {k: float(v.detach()) for k, v in parts.items()}
