"""Distributed data-parallel training, launched the standard way (``torchrun``).

``torchrun --nproc_per_node N -m edge_mtl train ...`` (or ``edge-mtl train --devices N``, which
runs exactly that) starts N processes with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set. Each
process trains on its slice of every global batch; DistributedDataParallel averages gradients,
so a step sees the same ``train.batch_size`` images as a single-process run. Rank 0 alone logs,
evaluates and writes files. gloo on CPU (testable anywhere), NCCL on CUDA.

Several machines run the same command under one torchrun launcher each, joined by its
rendezvous (``--nnodes M --node-rank i --rdzv-endpoint host:port``, see the README). Nothing
else changes: each machine reads its own copy of the data (the first process per machine
prepares it), and a resume reads ``last.pt`` on rank 0's machine and sends it to the others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from edge_mtl.runtime.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``world == 1``: an ordinary single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1  # processes on this machine

    @property
    def is_local_main(self) -> bool:
        """The first process on this machine (prepares the machine's data cache)."""
        return self.local_rank == 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> DistInfo:
    """The job layout torchrun put in the environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def init(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank), for logging."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t)}


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a stop request seen by one)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def rank_slice(batch: Sequence[int], info: DistInfo) -> list[int]:
    """This rank's share of one global batch (the global batch size must divide evenly)."""
    per = len(batch) // info.world
    return list(batch[info.rank * per : (info.rank + 1) * per])


def check_batch(batch_size: int, accumulate: int, info: DistInfo, source: str) -> int:
    """Images per forward pass on this rank; raises when the global batch does not split."""
    parts = info.world * accumulate
    if batch_size % parts:
        raise InputError(
            f"{source}: train.batch_size {batch_size} must be a multiple of processes x "
            f"train.accumulate = {info.world} x {accumulate}"
        )
    return batch_size // parts


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run this ``train`` command under torchrun with ``nproc`` processes on this machine."""
    if nproc < 1:
        raise InputError(f"--devices {nproc}: must be at least 1")
    if shutil.which(sys.executable) is None:
        raise InputError(f"{sys.executable}: cannot start the worker processes")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "edge_mtl",
        *argv,
    ]
    return subprocess.call(cmd)


def max_over_ranks(values: Sequence[float], info: DistInfo) -> list[float]:
    """Element-wise maximum over ranks (e.g. [stop requested, elapsed seconds]), so every rank
    takes the same decision."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def average_grads(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of parameters DDP does not manage (they live outside its module)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= info.world


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; e.g. a checkpoint only rank 0's disk holds)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_from_main(tensors: Iterable[torch.Tensor], info: DistInfo) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's values."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, 0)
