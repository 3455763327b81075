"""Data-parallel training: 2 gloo processes on the CPU against one process with the same
global batch, rank-0-only files, and resume across a change in process count."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_mtl import distributed as ddp
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.conftest import tiny_cfg_dict

REPO = Path(__file__).resolve().parents[2]


def test_rank_slices_cover_the_global_batch():
    batch = list(range(8))
    parts = [ddp.rank_slice(batch, ddp.DistInfo(rank=r, world=2)) for r in range(2)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ddp.check_batch(16, 2, ddp.DistInfo(world=4), "c") == 2
    with pytest.raises(InputError, match=r"multiple of processes x train\.accumulate = 3 x 1"):
        ddp.check_batch(16, 1, ddp.DistInfo(world=3), "c.yaml")


def _train(cfg: Path, out: Path, devices: int, *extra: str) -> None:
    cmd = [sys.executable, "-m", "edge_mtl", "train", "--config", str(cfg), "--out", str(out)]
    cmd += ["--data-root", str(cfg.parent / "data"), "--quiet", "--device", "cpu"]
    cmd += ["--devices", str(devices), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _losses(run: Path) -> list[float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [sum(v for k, v in r.items() if k.startswith("loss/")) for r in recs]


@pytest.mark.slow  # torchrun with two processes: about 45 s on 2 cores
def test_two_processes_follow_the_single_process_loss_curve(tmp_path):
    d = tiny_cfg_dict(n_train=16, n_val=4)
    d["train"].update(batch_size=8, epochs=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(d))
    _train(cfg, tmp_path / "one", 1)
    _train(cfg, tmp_path / "two", 2)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 2  # rank 0 alone appends: one record per epoch
    # same images per step, same initial weights: only per-process BatchNorm statistics differ
    assert two == pytest.approx(one, rel=0.05)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "best.pt",
        "last.pt",
        "metrics.jsonl",
    ]

    # resume across a change in process count: 2 processes for epoch 1, then 1 for epoch 2
    _train(cfg, tmp_path / "mixed", 2, "--epochs", "1")
    _train(cfg, tmp_path / "mixed", 1, "--resume")
    mixed = _losses(tmp_path / "mixed")
    assert len(mixed) == 2
    assert mixed == pytest.approx(one, rel=0.05)
    import torch

    last = torch.load(tmp_path / "mixed" / "last.pt", weights_only=True)
    assert last["state"]["step"] == 4 and last["state"]["epoch"] == 2


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    import dataclasses

    from edge_mtl.config import config_from_dict
    from edge_mtl.train import train

    d = tiny_cfg_dict(n_train=16, n_val=4)
    d["train"].update(batch_size=8, epochs=1)
    full = config_from_dict(d, "full")
    halves = dataclasses.replace(full, train=dataclasses.replace(full.train, accumulate=2))
    for name, cfg in (("full", full), ("halves", halves)):
        train(cfg, tmp_path / name, "cpu", progress=False, data_root=tmp_path / "data", log=print)
    assert _losses(tmp_path / "halves") == pytest.approx(_losses(tmp_path / "full"), rel=0.05)


def test_rank_zero_evaluates_on_the_threads_of_the_waiting_processes():
    import torch

    from edge_mtl.train_parts import threads_while_others_wait

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu = torch.device("cpu")
        with threads_while_others_wait(ddp.DistInfo(world=2, local_world=2), cpu):
            assert torch.get_num_threads() == min(2, os.cpu_count() or 1)
        assert torch.get_num_threads() == 1
        with threads_while_others_wait(ddp.DistInfo(world=2, local_world=1), cpu):
            assert torch.get_num_threads() == 1  # the waiting process is on another machine
        with threads_while_others_wait(ddp.DistInfo(), cpu):  # single process: unchanged
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(cfg: Path, out: Path, backend: str) -> list[str]:
    """Two torchrun launchers on 127.0.0.1, one process each, joined by the rendezvous
    ``backend`` (static: each launcher names its --node-rank); returns their outputs."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    train = ["-m", "edge_mtl", "train", "--config", str(cfg), "--out", str(out)]
    train += ["--data-root", str(cfg.parent / "data"), "--quiet", "--device", "cpu"]
    nodes = []
    for node_rank in range(2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2"]
        launcher += ["--nproc-per-node", "1", "--rdzv-backend", backend]
        launcher += ["--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "edge-mtl-test"]
        launcher += ["--node-rank", str(node_rank)] if backend == "static" else []
        launcher += ["--local-addr", "127.0.0.1"]
        nodes.append(
            subprocess.Popen(
                launcher + train,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [node.communicate(timeout=300)[0].decode() for node in nodes]
    for node, text in zip(nodes, outputs):
        assert node.returncode == 0, text[-3000:]
    assert sum("done: " in text for text in outputs) == 1  # rank 0 alone reports
    assert sum("2 processes x 4 images x 1 passes per step" in t for t in outputs) == 1
    return outputs


@pytest.mark.slow
def test_two_nodes_under_torchrun_rendezvous_match_one_node(tmp_path):
    """Two torchrun launchers on 127.0.0.1 (two "machines", one process each, gloo), joined by
    the c10d and by the static rendezvous, train bit-identical weights and log identical losses
    to one launcher with two processes: the same ranks take the same slices, and a sum of two
    gradients does not depend on which machine adds them. One thread per process keeps every
    kernel deterministic."""
    import torch

    d = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    d["data"]["train"][0]["n"], d["data"]["val"][0]["n"] = 32, 8  # 4 steps of 8 images
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(d))
    _train(cfg, tmp_path / "one", 2)  # also renders the data the other runs read
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    for backend in ("c10d", "static"):
        outputs = _two_nodes(cfg, tmp_path / backend, backend)
        if backend == "static":  # --node-rank 0 is rank 0: it logs and writes the files
            assert "done: " in outputs[0]
        assert _losses(tmp_path / backend) == _losses(tmp_path / "one")
        two = torch.load(tmp_path / backend / "last.pt", weights_only=True)
        assert one["state"]["step"] == two["state"]["step"] == 4
        for part in ("model", "ema"):
            for k, v in one[part].items():
                assert torch.equal(v, two[part][k]), f"{backend}: {part}.{k}"
