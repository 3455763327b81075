import json
import os
import signal

import pytest
import torch

from edge_mtl.checkpoint import load_checkpoint, load_model
from edge_mtl.config import config_from_dict
from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel
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

    def interrupt_on_step_six(self, out, targets):
        calls["n"] += 1
        if calls["n"] == 6:  # Ctrl-C arrives in the middle of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_call(self, out, targets)

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
