"""Task weighting strategies on a toy two-task problem, the registry, exact state round trips,
and zero loss / zero gradient for tasks without labels in a batch."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edge_mtl.config import ConfigError, TrainConfig, config_from_dict
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel
from edge_mtl.weighting import WEIGHTINGS, Fixed, WeightingName, build_weighting, register
from tests.edge_mtl.conftest import tiny_cfg_dict

TASKS = ("a", "b")


class Toy(nn.Module):
    """One shared layer, one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 16)
        self.heads = nn.ModuleDict({t: nn.Linear(16, 1) for t in TASKS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.shared(x))
        return {t: m(h)[:, 0] for t, m in self.heads.items()}


def toy_data(scale_b: float = 1.0, noise_b: float = 0.0, n: int = 256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y_a = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    y_b = scale_b * (x @ torch.tensor([0.0, 1.0, 1.0, -1.0])) + noise_b * torch.randn(
        n, generator=g
    )
    return x, {"a": y_a, "b": y_b}


def train_toy(name: str, epochs: int, steps: int, data, **train_kw):
    """Full-batch Adam on the toy; returns the strategy and its weights after every epoch."""
    torch.manual_seed(0)
    model = Toy()
    w = build_weighting(TrainConfig(weighting=name, **train_kw), TASKS, model.shared.weight)
    opt = torch.optim.Adam([*model.parameters(), *w.trainable()], lr=0.02)
    x, y = data
    history = []
    for _ in range(epochs):
        for _ in range(steps):
            out = model(x)
            total = w({t: F.mse_loss(out[t], y[t]) for t in TASKS})
            opt.zero_grad()
            total.backward()
            opt.step()
            w.after_step()
        w.end_epoch()
        history.append(w.weights())
    return w, history


def test_every_weighting_name_is_registered_once():
    assert set(WEIGHTINGS) == set(WeightingName)
    with pytest.raises(ValueError, match="already registered"):
        register(WeightingName.FIXED)(Fixed)


@pytest.mark.parametrize("name", list(WEIGHTINGS))
def test_each_strategy_trains_and_its_state_round_trips_exactly(name):
    data = toy_data(scale_b=3.0, noise_b=0.5)
    w, history = train_toy(name, epochs=3, steps=5, data=data)
    assert set(history[-1]) == set(TASKS)
    assert all(math.isfinite(v) and v > 0 for v in history[-1].values())

    buf = io.BytesIO()
    torch.save({"weighting": w.state_dict()}, buf)  # as in a checkpoint
    buf.seek(0)
    shared = nn.Parameter(torch.zeros(16, 4))
    copy = build_weighting(TrainConfig(weighting=name), TASKS, shared)
    copy.load_state_dict(torch.load(buf, weights_only=True)["weighting"])
    assert copy.weights() == w.weights()
    for k, v in w.state_dict().items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(copy.state_dict()[k], v, rtol=0, atol=0, equal_nan=True)

    # both continue identically: same losses in, same weights out
    model = Toy()
    x, y = data
    if name == "gradnorm":  # measure on the new model's shared layer
        w._shared = copy._shared = (model.shared.weight,)
    results = []
    for strategy in (w, copy):
        out = model(x)
        total = strategy({t: F.mse_loss(out[t], y[t]) for t in TASKS})
        strategy.after_step()
        strategy.end_epoch()
        results.append((float(total.detach()), strategy.weights()))
    assert results[0] == results[1]


def test_fixed_uses_the_configured_weights():
    w = build_weighting(TrainConfig(loss_weights={"b": 0.25}), TASKS)
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(4.0)})
    assert float(total) == 3.0 and w.weights() == {"a": 1.0, "b": 0.25}


def test_uncertainty_trusts_the_noisier_task_less():
    _, history = train_toy("uncertainty", epochs=1, steps=300, data=toy_data(noise_b=3.0))
    w = history[-1]
    # exp(-s) tends to 1 / (2 L): L_b stays near the noise variance 9, L_a goes towards 0
    assert w["b"] < 0.25 < 1.0 < w["a"]


def test_uncertainty_leaves_an_unlabelled_task_alone():
    w = build_weighting(TrainConfig(weighting="uncertainty"), TASKS)
    loss_b = nn.Parameter(torch.tensor(1.0)) * 0.0  # what a task without labels contributes
    total = w({"a": torch.tensor(2.0), "b": loss_b}, labelled={"a"})
    total.backward()
    assert float(total.detach()) == 2.0  # exp(0) * 2 + 0 / 2; b adds nothing, not even s_b / 2
    assert w.log_vars.grad.tolist() == [-1.5, 0.0]  # d/ds (exp(-s) 2 + s/2) at 0


def test_gradnorm_takes_weight_from_the_task_with_larger_gradients():
    w, history = train_toy("gradnorm", epochs=10, steps=4, data=toy_data(scale_b=10.0))
    # b's loss is 100x a's and its gradients ~10x: b loses weight from the first steps on
    # (as b then trains slower than a, the rate term pulls part of it back)
    assert all(h["b"] < 0.95 < 1.05 < h["a"] for h in history)
    assert min(h["b"] for h in history) < 0.6
    assert sum(w.task_weights.tolist()) == pytest.approx(2.0, abs=1e-5)


def test_gradnorm_gives_weight_to_the_slower_training_task():
    """Same gradient norms; after L_a fell to 0.2 of its start and L_b stayed, b gains."""
    shared = nn.Parameter(torch.ones(3))
    w = build_weighting(TrainConfig(weighting="gradnorm", gradnorm_alpha=1.5), TASKS, shared)

    def step(loss_a: float, loss_b: float) -> None:
        g = shared.sum() * 0.1  # equal gradients, loss values set by the constants
        w({"a": g - g.detach() + loss_a, "b": g - g.detach() + loss_b})
        w.after_step()

    step(1.0, 1.0)  # records L(0); balanced already, so no change
    assert w.weights() == {"a": 1.0, "b": 1.0}
    step(0.2, 1.0)
    assert w.weights()["b"] > 1.0 > w.weights()["a"]
    assert sum(w.weights().values()) == pytest.approx(2.0)


def test_gradnorm_skips_a_step_that_was_not_applied():
    shared = nn.Parameter(torch.ones(3))
    w = build_weighting(TrainConfig(weighting="gradnorm"), TASKS, shared)
    w({"a": shared.sum(), "b": shared.sum() * 5})  # forward only: the loop skipped this step
    w({"a": shared.sum(), "b": shared.sum() * 5})
    w.after_step()
    assert w.seen.tolist() == [True, True] and w._opt.state[w.task_weights]["step"] == 1


def test_dwa_favours_the_task_whose_loss_fell_least():
    w = build_weighting(TrainConfig(weighting="dwa", dwa_temperature=2.0), TASKS)
    for epoch_losses in ((1.0, 1.0), (0.5, 0.9)):
        for _ in range(3):
            w({"a": torch.tensor(epoch_losses[0]), "b": torch.tensor(epoch_losses[1])})
            w.after_step()
        assert w.weights() == {"a": 1.0, "b": 1.0}  # first two epochs: equal
        w.end_epoch()
    expected = 2 * torch.softmax(torch.tensor([0.5, 0.9]) / 2.0, 0)
    assert w.weights() == pytest.approx(dict(zip(TASKS, expected.tolist())), abs=1e-6)
    assert w.weights()["b"] > 1.0 > w.weights()["a"]


def test_dwa_on_the_toy_weights_the_unlearnable_task_up():
    data = toy_data(noise_b=2.0)
    x, y = data
    y["b"] = 2.0 * torch.randn(len(x), generator=torch.Generator().manual_seed(1))  # pure noise
    _, history = train_toy("dwa", epochs=4, steps=20, data=(x, y))  # weights after each epoch
    assert history[0] == {"a": 1.0, "b": 1.0}  # epochs 1 and 2 train with equal weights
    assert all(h["b"] > 1.0 > h["a"] for h in history[1:])


def test_config_accepts_every_registered_weighting_and_lists_them_on_error():
    d = tiny_cfg_dict()
    for name in WEIGHTINGS:
        d["train"]["weighting"] = str(name)
        assert config_from_dict(d).train.weighting == name
    d["train"]["weighting"] = "magic"
    with pytest.raises(ConfigError, match="fixed, uncertainty, gradnorm, dwa, got 'magic'"):
        config_from_dict(d, "x.yaml")


def _mixed_targets():
    """Image 0: boxes and a weather label; image 1: no boxes, a scene label. Nobody has a
    time-of-day or curvature label."""
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0]]),
            "classes": torch.tensor([0, 1]),
            "has_boxes": True,
            "cls_weather": 1,
            "cls_scene": -1,
            "cls_timeofday": -1,
            "reg_curvature": math.nan,
        },
        {
            "boxes": torch.zeros(0, 4),
            "classes": torch.zeros(0, dtype=torch.long),
            "has_boxes": False,
            "cls_weather": -1,
            "cls_scene": 2,
            "cls_timeofday": -1,
            "reg_curvature": math.nan,
        },
    ]


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = config_from_dict(tiny_cfg_dict())
    return cfg, MultiTaskModel(cfg.model).eval()


def test_a_task_without_labels_adds_zero_loss_and_zero_gradient(tiny_model):
    cfg, model = tiny_model
    targets = _mixed_targets()
    loss_fn = MultiTaskLoss(cfg.model, {}, torch.device("cpu"))
    assert loss_fn.labelled(targets) == {"det", "weather", "scene"}
    model.zero_grad()
    total, parts = loss_fn(model(torch.randn(2, 3, *cfg.model.input_hw)), targets)
    total.backward()
    assert parts["timeofday"] == 0.0 and parts["curvature"] == 0.0
    assert parts["det"] > 0 and parts["weather"] > 0 and parts["scene"] > 0
    unlabelled = [
        *model.heads["regress"].parameters(),
        *model.heads["classify"].out["timeofday"].parameters(),
    ]
    assert all(p.grad is not None and not p.grad.any() for p in unlabelled)
    assert model.heads["classify"].out["weather"].weight.grad.abs().sum() > 0


def test_detection_skips_images_without_boxes_exactly(tiny_model):
    cfg, model = tiny_model
    with torch.no_grad():
        out = model(torch.randn(2, 3, *cfg.model.input_hw))
    out = {k: v.clone().requires_grad_() for k, v in out.items()}
    loss_fn = MultiTaskLoss(cfg.model, {}, torch.device("cpu"))
    targets = _mixed_targets()
    det = loss_fn.task_losses(out, targets)["det"]
    det.backward()
    for k in ("det_logits", "det_boxes", "det_ctr"):
        assert not out[k].grad[1].any(), k  # image 1 has no box labels: no gradient at all
    assert out["det_logits"].grad[0].abs().sum() > 0
    alone = loss_fn.task_losses({k: v[:1] for k, v in out.items()}, targets[:1])["det"]
    torch.testing.assert_close(det, alone, rtol=1e-6, atol=0)


def test_a_batch_without_any_boxes_gives_every_detection_parameter_a_zero_gradient(tiny_model):
    cfg, model = tiny_model
    targets = [dict(t, has_boxes=False) for t in _mixed_targets()]
    loss_fn = MultiTaskLoss(cfg.model, {}, torch.device("cpu"))
    model.zero_grad()
    parts = loss_fn.task_losses(model(torch.randn(2, 3, *cfg.model.input_hw)), targets)
    assert float(parts["det"].detach()) == 0.0
    parts["det"].backward()
    grads = [p.grad for p in model.heads["detect"].parameters()]
    assert all(g is not None and not g.any() for g in grads)
