"""Training survives faults: SIGTERM from a supervisor saves a resumable last.pt, and a crash
while a checkpoint is being written never leaves a corrupt one behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edge_mtl.checkpoint import load_checkpoint  # noqa: E402
from edge_mtl.config import config_from_dict  # noqa: E402
from edge_mtl.train import train  # noqa: E402
from tests.edge_mtl.conftest import tiny_cfg_dict  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    import yaml

    d = tiny_cfg_dict(n_train=16, n_val=4)
    d["train"].update(epochs=200, batch_size=4)  # far longer than the test waits
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edge_mtl", "train", "--config", str(cfg), "--out", str(run)]
    cmd += ["--data-root", str(tmp_path / "data"), "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").is_file():  # at least one epoch done: training is running
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert b"continue with --resume" in out
    saved = load_checkpoint(run / "last.pt")
    assert saved["state"]["step"] >= 4  # past the first epoch's save: the signal's own save


def test_a_crash_while_saving_keeps_the_previous_last_pt(tmp_path, monkeypatch):
    d = tiny_cfg_dict(n_train=8, n_val=4)
    d["train"].update(epochs=2, batch_size=4)
    cfg = config_from_dict(d, "tiny")
    quiet = {"progress": False, "data_root": tmp_path / "data", "log": lambda *_: None}
    train(cfg, tmp_path / "run", **dict(quiet))
    good = load_checkpoint(tmp_path / "run" / "last.pt")

    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")  # the bytes a real crash would leave
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    d["train"]["epochs"] = 3  # continue the same run for one more epoch: its save crashes
    with pytest.raises(OSError):
        train(config_from_dict(d, "tiny"), tmp_path / "run", resume=True, **dict(quiet))
    monkeypatch.setattr(torch, "save", real_save)
    after = load_checkpoint(tmp_path / "run" / "last.pt")  # still the complete old file
    assert after["state"] == good["state"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]
