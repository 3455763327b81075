"""Task weighting: how per-task losses become the one loss the network minimises.

Strategies (``train.weighting``), each a small ``nn.Module`` in the ``WEIGHTINGS`` registry:

- ``fixed``: total = sum_t w_t L_t with ``train.loss_weights`` (default 1).
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): a learned log-variance s_t per task,
  total = sum_t (w_t exp(-s_t) L_t + s_t / 2); the s_t train with the network's optimizer.
- ``gradnorm`` (Chen et al. 2018): learned weights whose gradient norms on the last shared layer
  are pulled towards mean norm x (relative inverse training rate) ** alpha.
- ``dwa`` (Liu, Johns & Davison 2019, dynamic weight average): weights from how much each task's
  epoch-mean loss fell over the last two epochs, K softmax(ratio / T).

``train.loss_weights`` act as a fixed per-task factor in every strategy (GradNorm: the start).
Only tasks with a label in the batch take part in a step; the others add exactly zero.

A training step calls ``forward(losses, labelled)`` -> total, backpropagates, steps the
optimizer, and then calls ``after_step()`` only if the step was applied (finite loss and
gradients), so a skipped step leaves no trace in a strategy. ``end_epoch()`` follows every full
epoch. All state (learned values, running means, GradNorm's own optimizer) is in
``state_dict()``, so a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch import nn

from edge_mtl.config import TrainConfig, WeightingName  # the names live with the config


class Weighting(nn.Module):
    """Base strategy. ``tasks`` fixes the order of every per-task tensor, shape (T,)."""

    name: WeightingName

    def __init__(
        self, tasks: Sequence[str], tc: TrainConfig, shared: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        prior = [float(tc.loss_weights.get(t, 1.0)) for t in self.tasks]
        self.register_buffer("prior", torch.tensor(prior), persistent=False)  # (T,)

    def forward(
        self, losses: dict[str, torch.Tensor], labelled: Collection[str] | None = None
    ) -> torch.Tensor:
        """Scalar total loss from per-task scalar losses (every task in ``tasks``).
        ``labelled``: tasks with at least one label in the batch (default: all)."""
        return (self.current() * self._stack(losses)).sum()

    def current(self) -> torch.Tensor:
        """The weights applied to the task losses now, (T,), no gradient."""
        return self.prior

    def weights(self) -> dict[str, float]:
        """Current weight per task, for logs and ``metrics.jsonl``."""
        return {t: round(float(w), 6) for t, w in zip(self.tasks, self.current())}

    def trainable(self) -> list[nn.Parameter]:
        """Parameters the network's optimizer should update too (without weight decay)."""
        return []

    def after_step(self) -> None:
        """The optimizer step of the last ``forward`` was applied."""

    def end_epoch(self) -> None:
        """A full epoch has been trained."""

    def _stack(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"{self.name} weighting: no loss for tasks {missing}")
        return torch.stack([losses[t].float().reshape(()) for t in self.tasks])  # (T,)

    def _mask(self, labelled: Collection[str] | None) -> torch.Tensor:
        """(T,) bool: which tasks have labels in the batch."""
        keep = [labelled is None or t in labelled for t in self.tasks]
        return torch.tensor(keep, device=self.prior.device)


WEIGHTINGS: dict[WeightingName, type[Weighting]] = {}


def register(name: WeightingName) -> Callable[[type[Weighting]], type[Weighting]]:
    def add(cls: type[Weighting]) -> type[Weighting]:
        if name in WEIGHTINGS:
            raise ValueError(f"weighting {name.value!r} is already registered")
        cls.name = name
        WEIGHTINGS[name] = cls
        return cls

    return add


def build_weighting(
    tc: TrainConfig, tasks: Sequence[str], shared: torch.Tensor | None = None
) -> Weighting:
    """The strategy ``tc.weighting`` for ``tasks``. ``shared``: the weight of the network's
    last layer that every task's loss flows through (GradNorm measures gradients there)."""
    return WEIGHTINGS[WeightingName(tc.weighting)](tasks, tc, shared)


@register(WeightingName.FIXED)
class Fixed(Weighting):
    """Constant weights from ``train.loss_weights``."""


@register(WeightingName.UNCERTAINTY)
class Uncertainty(Weighting):
    """Homoscedastic uncertainty: s_t = log sigma_t^2 learned per task, weight w_t exp(-s_t).

    At the optimum exp(-s_t) = 1 / (2 L_t): a task whose loss stays high (noisy labels, a harder
    task) is trusted less. The s_t / 2 term keeps s_t from growing without bound.
    """

    def __init__(self, tasks, tc, shared=None) -> None:
        super().__init__(tasks, tc, shared)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))  # (T,) s_t, start at 0

    def forward(self, losses, labelled=None) -> torch.Tensor:
        s = self.log_vars
        terms = self.prior * torch.exp(-s) * self._stack(losses) + 0.5 * s  # (T,)
        # an unlabelled task adds nothing, not even its s_t / 2 (which would push s_t down)
        return torch.where(self._mask(labelled), terms, torch.zeros_like(terms)).sum()

    def current(self) -> torch.Tensor:
        return (self.prior * torch.exp(-self.log_vars)).detach()

    def trainable(self) -> list[nn.Parameter]:
        return [self.log_vars]


@register(WeightingName.GRADNORM)
class GradNorm(Weighting):
    """GradNorm with weights w_t (sum = T) learned by their own Adam (``train.gradnorm_lr``).

    Per step, over the labelled tasks: g_t = ||d L_t / d W|| on the shared layer W, G_t = w_t g_t,
    training rate r_t = (L_t / L_t(0)) / mean, target G_t* = mean(G) r_t ** alpha (a constant),
    L_grad = sum_t |G_t - G_t*|. A task that trains slower (higher r_t) or back-propagates less
    (lower G_t) gains weight. Since G_t is linear in w_t, dL_grad/dw_t = sign(G_t - G_t*) g_t
    exactly, so no second-order backward is needed; one partial backward per task to W is.

    Its own optimizer, not the network's: the weights must follow L_grad only (the total loss
    would drive them to zero), and the network's warm-up, clipping, AMP loss scaling and weight
    decay are meant for the network, not for T numbers that are renormalised every step.
    """

    def __init__(self, tasks, tc, shared=None) -> None:
        super().__init__(tasks, tc, shared)
        if shared is None:
            raise ValueError("gradnorm weighting needs the model's last shared parameter")
        self._shared = (shared,)  # a tuple, so it is not registered as this module's parameter
        self.alpha = tc.gradnorm_alpha
        n = len(self.tasks)
        self.task_weights = nn.Parameter(self.prior * n / self.prior.sum())  # (T,), sum T
        self.register_buffer("initial", torch.zeros(n))  # L_t(0), first labelled loss
        self.register_buffer("seen", torch.zeros(n, dtype=torch.bool))
        self._opt = torch.optim.Adam([self.task_weights], lr=tc.gradnorm_lr)
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, losses, labelled=None) -> torch.Tensor:
        loss = self._stack(losses)  # (T,)
        self._pending = None
        if self.training and torch.is_grad_enabled():
            self._pending = self._weight_grad(losses, loss.detach(), self._mask(labelled))
        return (self.task_weights.detach() * loss).sum()

    def _weight_grad(
        self, losses: dict[str, torch.Tensor], loss: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dL_grad/dw (T,), this step's losses (T,), mask (T,)); applied in ``after_step``."""
        grad = torch.zeros_like(loss)
        idx = torch.nonzero(mask).flatten()
        if len(idx) < 2:  # nothing to balance
            return grad, loss, mask
        (shared,) = self._shared
        norms = []
        for i in idx.tolist():
            (g,) = torch.autograd.grad(
                losses[self.tasks[i]], shared, retain_graph=True, allow_unused=True
            )
            norms.append(g.float().norm() if g is not None else loss.new_zeros(()))
        g = torch.stack(norms)  # (P,) gradient norm of the unweighted loss per labelled task
        w = self.task_weights.detach()[idx]
        big_g = w * g
        start = torch.where(self.seen[idx], self.initial[idx], loss[idx])
        ratio = loss[idx] / start.clamp(min=1e-12)
        rate = ratio / ratio.mean().clamp(min=1e-12)
        target = big_g.mean() * rate**self.alpha
        grad[idx] = torch.sign(big_g - target) * g
        return grad, loss, mask

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is None:
            return
        grad, loss, mask = self._pending
        self._pending = None
        if not (torch.isfinite(grad).all() and torch.isfinite(loss).all()):
            return
        first = mask & ~self.seen
        self.initial[first] = loss[first]
        self.seen |= mask
        if not grad.any():
            return
        w = self.task_weights
        before = w.detach().clone()
        w.grad = grad
        self._opt.step()
        w.grad = None
        w[~mask] = before[~mask]  # Adam momentum must not move tasks absent from the batch
        w.clamp_(min=1e-3)
        w.mul_(len(self.tasks) / w.sum())

    def current(self) -> torch.Tensor:
        return self.task_weights.detach()

    def get_extra_state(self) -> dict:
        return {"adam": self._opt.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self._opt.load_state_dict(state["adam"])


@register(WeightingName.DWA)
class DynamicWeightAverage(Weighting):
    """lambda_t = T softmax_t(r_t / temperature), r_t = Lbar_t(e-1) / Lbar_t(e-2) with Lbar the
    epoch mean of the task's loss over its labelled, applied steps; lambda = 1 for the first two
    epochs. The task whose loss fell least (r_t highest) gets the most weight."""

    def __init__(self, tasks, tc, shared=None) -> None:
        super().__init__(tasks, tc, shared)
        n = len(self.tasks)
        self.temperature = tc.dwa_temperature
        self.register_buffer("lam", torch.ones(n))  # (T,) lambda_t for this epoch
        self.register_buffer("sums", torch.zeros(n, dtype=torch.float64))  # this epoch so far
        self.register_buffer("counts", torch.zeros(n, dtype=torch.long))
        self.register_buffer("history", torch.full((2, n), float("nan")))  # means e-2, e-1
        self.register_buffer("epochs", torch.zeros((), dtype=torch.long))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, losses, labelled=None) -> torch.Tensor:
        loss = self._stack(losses)
        self._pending = (loss.detach(), self._mask(labelled))
        return (self.current() * loss).sum()

    def current(self) -> torch.Tensor:
        return self.prior * self.lam

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is None:
            return
        loss, mask = self._pending
        self._pending = None
        self.sums += torch.where(mask, loss.double(), 0.0)
        self.counts += mask.long()

    @torch.no_grad()
    def end_epoch(self) -> None:
        mean = (self.sums / self.counts.clamp(min=1)).float()
        mean = torch.where(self.counts > 0, mean, self.history[1])  # unseen task: no change
        self.history.copy_(torch.stack([self.history[1], mean]))
        self.epochs += 1
        self.sums.zero_()
        self.counts.zero_()
        if self.epochs >= 2:
            ratio = self.history[1] / self.history[0].clamp(min=1e-12)
            ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
            self.lam.copy_(len(self.tasks) * torch.softmax(ratio / self.temperature, 0))
