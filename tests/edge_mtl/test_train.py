import json
import math
import os
import re
import signal

import pytest
import torch

from edge_mtl.checkpoint import load_checkpoint, load_model
from edge_mtl.config import config_from_dict
from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel
from edge_mtl.runtime.errors import RuntimeFailure
from edge_mtl.train import train
from tests.edge_mtl.conftest import tiny_cfg_dict


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    cfg = config_from_dict(tiny_cfg_dict())
    recs = records_for(cfg.data.train, cfg, tmp_path)
    images, targets = collate([MultiTaskDataset(recs, cfg, train=False)[i] for i in range(8)])
    model = MultiTaskModel(cfg.model).train()
    loss_fn = MultiTaskLoss(cfg.model, {}, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, parts = loss_fn(model(images), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"det", "weather", "scene", "timeofday", "curvature"}
    assert losses[-1] < 0.7 * losses[0]


def test_interrupted_run_resumes_to_the_same_step_and_weights(tmp_path, monkeypatch):
    cfg = config_from_dict(tiny_cfg_dict())  # 2 epochs x 4 steps
    quiet = {"progress": False, "data_root": tmp_path / "data", "log": lambda *_: None}
    train(cfg, tmp_path / "straight", **quiet)
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "det/map50" in json.loads(lines[-1])

    calls = {"n": 0}
    real_call = MultiTaskLoss.__call__

    def interrupt_on_step_six(self, out, targets, hw=None):
        calls["n"] += 1
        if calls["n"] == 6:  # Ctrl-C arrives in the middle of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_call(self, out, targets, hw)

    monkeypatch.setattr(MultiTaskLoss, "__call__", interrupt_on_step_six)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", **quiet)
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert (saved["state"]["epoch"], saved["state"]["batch"], saved["state"]["step"]) == (1, 2, 6)
    monkeypatch.setattr(MultiTaskLoss, "__call__", real_call)

    train(cfg, tmp_path / "resumed", resume=True, **quiet)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 8
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=1e-5, atol=1e-6)
    for k, v in a["ema"].items():
        torch.testing.assert_close(v, b["ema"][k], rtol=1e-5, atol=1e-6)
    model, loaded_cfg, _ = load_model(tmp_path / "resumed" / "best.pt")
    assert loaded_cfg.model == cfg.model and not model.training
    # best.pt is the deployable file: the EMA weights as the model, no optimizer, no raw weights
    best = load_checkpoint(tmp_path / "straight" / "best.pt")
    assert best["weights"] == "ema" and not {"ema", "optimizer", "rng"} & best.keys()
    assert best["model"].keys() == a["ema"].keys()
    if best["state"]["step"] == a["state"]["step"]:  # the last epoch scored best
        for k, v in a["ema"].items():
            torch.testing.assert_close(best["model"][k], v)
    last_size = (tmp_path / "straight" / "last.pt").stat().st_size
    assert (tmp_path / "straight" / "best.pt").stat().st_size < last_size / 3


def _poison_task_losses(monkeypatch, poison):
    """Make ``poison(call_number, parts)`` see every batch's per-task losses in training."""
    real = MultiTaskLoss.task_losses
    calls = {"n": 0}

    def task_losses(self, out, targets, hw=None):
        parts = real(self, out, targets, hw)
        calls["n"] += 1
        poison(calls["n"], parts)
        return parts

    monkeypatch.setattr(MultiTaskLoss, "task_losses", task_losses)


def test_non_finite_steps_are_skipped_and_training_goes_on(tmp_path, monkeypatch):
    cfg = config_from_dict(tiny_cfg_dict(n_train=8, n_val=4))  # 2 epochs x 2 steps

    def poison(n, parts):
        if n == 2:
            parts["det"] = parts["det"] * math.nan
        if n == 3:  # the loss stays finite, its gradient does not
            parts["weather"].register_hook(lambda g: g * math.inf)

    _poison_task_losses(monkeypatch, poison)
    lines: list[str] = []
    quiet = {"progress": False, "data_root": tmp_path / "data", "log": lines.append}
    train(cfg, tmp_path / "run", **quiet)
    assert "warning: step 1 skipped, non-finite loss: det=nan (1 skipped so far)" in lines
    assert "warning: step 2 skipped, non-finite gradient (loss finite) (2 skipped so far)" in lines
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["state"]["step"] == 4 and ck["state"]["skipped"] == 2
    assert ck["ema_updates"] == 2  # only the two good steps moved the EMA ...
    steps = {int(s["step"]) for s in ck["optimizer"]["state"].values()}
    assert steps == {2}  # ... and the optimizer
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["skipped_steps"] == 2 and rec["weights"]["det"] == 1.0


def test_too_many_non_finite_steps_in_a_row_stop_the_run(tmp_path, monkeypatch):
    d = tiny_cfg_dict(n_train=8, n_val=4)  # 2 epochs x 2 steps
    d["train"]["max_nonfinite_steps"] = 3
    cfg = config_from_dict(d)

    def poison(n, parts):
        if n >= 2:
            parts["scene"] = parts["scene"] + math.inf

    _poison_task_losses(monkeypatch, poison)
    lines: list[str] = []
    quiet = {"progress": False, "data_root": tmp_path / "data", "log": lines.append}
    with pytest.raises(RuntimeFailure, match="3 steps in a row had a non-finite loss") as e:
        train(cfg, tmp_path / "run", **quiet)
    assert "(last: non-finite loss: scene=inf)" in str(e.value)
    assert f"{tmp_path / 'run' / 'last.pt'} holds the last good state" in str(e.value)
    assert sum(line.startswith("warning: step") for line in lines) == 3
    ck = load_checkpoint(tmp_path / "run" / "last.pt")  # saved after epoch 1, never after
    assert (ck["state"]["step"], ck["state"]["skipped"], ck["ema_updates"]) == (2, 1, 1)


@pytest.mark.parametrize("weighting", ["uncertainty", "gradnorm", "dwa"])
def test_dynamic_weights_are_logged_and_resume_exactly(tmp_path, monkeypatch, weighting):
    d = tiny_cfg_dict(n_train=8, n_val=4)
    d["train"].update(epochs=3, weighting=weighting)  # 3 epochs x 2 steps
    cfg = config_from_dict(d)
    lines: list[str] = []
    quiet = {"progress": False, "data_root": tmp_path / "data", "log": lines.append}
    train(cfg, tmp_path / "straight", **quiet)
    recs = [
        json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [set(r["weights"]) for r in recs] == [
        {"det", "weather", "scene", "timeofday", "curvature"}
    ] * 3
    assert recs[-1]["weights"] != dict.fromkeys(recs[-1]["weights"], 1.0)
    assert any(f"| {weighting} weights det " in line for line in lines)
    if weighting == "gradnorm":
        assert sum(recs[-1]["weights"].values()) == pytest.approx(5.0, abs=1e-4)

    def interrupt(n, parts):
        if n == 3:  # first step of epoch 2
            os.kill(os.getpid(), signal.SIGINT)

    _poison_task_losses(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", **quiet)
    monkeypatch.undo()
    train(cfg, tmp_path / "resumed", resume=True, **quiet)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for k, v in a["weighting"].items():
        if isinstance(v, torch.Tensor):
            torch.testing.assert_close(v, b["weighting"][k], rtol=1e-5, atol=1e-6, equal_nan=True)
    for k, v in a["model"].items():
        torch.testing.assert_close(v, b["model"][k], rtol=1e-5, atol=1e-6)


def test_a_version_1_checkpoint_still_evaluates_with_the_same_outputs(tmp_path):
    """Version 1 shared one BatchNorm across the detection levels; its weights load into the
    per-level layout (each level gets a copy) and the model computes what it computed before."""
    from edge_mtl.checkpoint import deployable, load_model, save_atomic

    cfg = config_from_dict(tiny_cfg_dict())
    model = MultiTaskModel(cfg.model).eval()
    for tower in (model.heads["detect"].cls_tower, model.heads["detect"].reg_tower):
        for level_norms in tower.norms:  # version 1 could only hold one set of statistics
            for norm, first in zip(level_norms, tower.norms[0]):
                norm.load_state_dict(first.state_dict())
    # the version-1 names: block i of a tower was Sequential(conv, bn) -> "<tower>.<i>.0|1.*"
    new_name = re.compile(r"^(heads\.detect\.\w+_tower)\.(?:convs|norms\.(\d+))\.(\d+)\.(.+)$")
    state = {}
    for key, value in model.state_dict().items():
        m = new_name.match(key)
        if m is None:
            state[key] = value
        elif m[2] is None:  # a shared conv
            state[f"{m[1]}.{m[3]}.0.{m[4]}"] = value
        elif m[2] == "0":  # level 0's norm stands for the one norm version 1 had
            state[f"{m[1]}.{m[3]}.1.{m[4]}"] = value
    config = cfg.to_dict()
    config["data"]["cache_images"] = True  # version 1 wrote this key (since retired)
    path = tmp_path / "v1.pt"
    save_atomic(deployable(config, state, version=1), path)
    loaded, _, _ = load_model(path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in model.output_names():
        assert torch.allclose(a[k], b[k], atol=1e-5), k
