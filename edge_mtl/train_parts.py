"""The pieces a training run is made of, each small enough to test alone: the device and
autocast choice, EMA weights, the run's progress record, the learning-rate schedule, the
non-finite checks, label counts for the source mix, and the ``metrics.jsonl`` append."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from edge_mtl import distributed as ddp
from edge_mtl.config import Amp, Config, TrainConfig
from edge_mtl.data.bdd import Record
from edge_mtl.progressive import active, stage_at
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.hardware import has_native_bf16, isa_summary


def pick_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def pick_autocast(amp: Amp | str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for this device and the reason, e.g. (bfloat16, 'CPU has AMX')."""
    if amp == Amp.OFF:
        return None, "amp off in config"
    if device.type == "cuda":
        if amp == Amp.FP16 or (amp == Amp.AUTO and not torch.cuda.is_bf16_supported()):
            return torch.float16, "CUDA fp16 autocast"
        return torch.bfloat16, "CUDA bf16 autocast"
    if amp == Amp.FP16:
        raise InputError("train.amp: fp16 autocast is for CUDA; use bf16 or off on CPU")
    if amp == Amp.BF16 or has_native_bf16():
        why = "forced by config" if amp == Amp.BF16 else "CPU has native bf16 (AMX/AVX512-BF16)"
        return torch.bfloat16, f"bf16 autocast ({why})"
    return None, f"fp32 (CPU without native bf16: {isa_summary()})"


class EMA:
    """Exponential moving average of weights; decay ramps up so early epochs are not frozen."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9995, updates: int = 0):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, updates
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 300))
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src[k].detach(), alpha=1 - d)
            else:
                v.copy_(src[k])


@dataclass
class RunState:
    """How far a run is; saved in every checkpoint (``state``) and restored on resume."""

    epoch: int = 0
    batch: int = 0  # next global batch index within ``epoch`` (any process count resumes)
    step: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumes
    best: float = -math.inf
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    bad_in_a_row: int = 0

    def fraction(self, tc: TrainConfig, total_steps: int) -> float:
        """How far the run is, 0..1: by steps, or by the time limit when that is further."""
        p = self.step / max(total_steps, 1)
        if tc.time_limit_min > 0:
            p = max(p, self.elapsed / (tc.time_limit_min * 60))
        return min(p, 1.0)

    def time_up(self, tc: TrainConfig) -> bool:
        return tc.time_limit_min > 0 and self.elapsed >= tc.time_limit_min * 60

    def skip(self, problem: str, limit: int, last: Path, log) -> None:
        """Count a skipped step and warn; stop the run after ``limit`` in a row. The model is
        never saved from here: ``last`` keeps the last good state."""
        self.skipped += 1
        self.bad_in_a_row += 1
        log(f"warning: step {self.step} skipped, {problem} ({self.skipped} skipped so far)")
        if self.bad_in_a_row >= limit:
            kept = f"{last} holds the last good state" if last.is_file() else "no checkpoint yet"
            raise RuntimeFailure(
                f"training stopped at step {self.step}: {self.bad_in_a_row} steps in a row had a "
                f"non-finite loss or gradient (last: {problem}); {kept}; "
                "lower train.lr, check the labels, or raise train.max_nonfinite_steps"
            )


def length_line(tc: TrainConfig, steps_per_epoch: int) -> str:
    """The log line at the start of a run: what bounds it, from what is known before a step."""
    steps = f"{_epochs(tc)} of {steps_per_epoch} steps ({tc.epochs * steps_per_epoch} steps)"
    if tc.time_limit_min <= 0:
        return f"run length: {steps}, no time limit"
    return (
        f"run length: {steps} or {tc.time_limit_min:g} min of training, whichever ends first "
        "(the learning rate anneals to fit that one); which one, the log says once steps are timed"
    )


def pace_line(st: RunState, tc: TrainConfig, steps_per_epoch: int, s_per_step: float) -> str:
    """Which bound of a time-limited run ends it first at ``s_per_step`` (measured seconds per
    step), and what that means for the user; ``st`` is where the run is now."""
    total = tc.epochs * steps_per_epoch
    left_s = tc.time_limit_min * 60 - st.elapsed
    need_s = (total - st.step) * s_per_step
    pace = f"at {s_per_step:.2f} s/step"
    if active(tc):  # progressive resizing: the first steps run at a smaller size
        pace += " (so far, at the smaller early size: later steps are slower)"
    pace += f", {_epochs(tc)} would take ~{(st.elapsed + need_s) / 60:.1f} min"
    if need_s <= left_s:
        return (
            f"{pace}, within the {tc.time_limit_min:g} min time limit: the epochs end the run; "
            "raise --epochs to use the time"
        )
    reach = st.step + left_s / s_per_step
    return (
        f"{pace}: the {tc.time_limit_min:g} min time limit ends the run at ~epoch "
        f"{reach / steps_per_epoch:.1f} (step ~{reach:.0f} of {total})"
    )


def end_line(st: RunState, tc: TrainConfig) -> str:
    """The log line at the end of a time-limited run: which bound ended it."""
    if st.time_up(tc):
        return (
            f"run ended by the {tc.time_limit_min:g} min time limit after {st.epoch} of "
            f"{_epochs(tc)}, at step {st.step}"
        )
    return (
        f"run ended after {_epochs(tc)}, at {st.elapsed / 60:.1f} min of the "
        f"{tc.time_limit_min:g} min time limit: raise --epochs to use the rest"
    )


def _epochs(tc: TrainConfig) -> str:
    return f"{tc.epochs} epoch{'s' if tc.epochs != 1 else ''}"


def lr_factor(step: int, fraction: float, warmup_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from 1 to 0.02 over the run."""
    warm = min(1.0, (step + 1) / max(warmup_steps, 1))
    return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * fraction)))


def param_groups(model: torch.nn.Module, wd: float) -> list[dict]:
    """AdamW groups: weight decay on weights (ndim > 1), none on biases and norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def nonfinite_loss(loss: torch.Tensor, parts: dict[str, float]) -> str | None:
    """None when the loss is finite, else what was not, e.g. 'non-finite loss: det=nan'."""
    bad = [f"{k}={v}" for k, v in parts.items() if not math.isfinite(v)]
    if bad:
        return "non-finite loss: " + ", ".join(bad)
    if not torch.isfinite(loss):
        return f"non-finite weighted total loss ({float(loss)})"
    return None


def why_hw(fraction: float, cfg: Config) -> str:
    """Why a step at ``fraction`` of the run trains at its size, for the log line that
    announces a size; empty when the run does not resize (nothing to announce)."""
    if not active(cfg.train):
        return ""
    stage = stage_at(fraction, cfg.train)
    if stage is None:
        return "(the model's input size, for the rest of the run)"
    return f"(train.low_res_scale {stage[0]} until {stage[1]:.0%} of the run)"


def label_counts(records: list[Record], cfg: Config) -> dict[str, int]:
    """How many of ``records`` carry a label of each task (the rest are masked out)."""
    m = cfg.model
    counts = {"det": sum(r.has_boxes for r in records)} if m.detect else {}
    for t in m.classify:
        counts[t] = sum(r.labels.get(t, -1) >= 0 for r in records)
    for t in m.regress:
        counts[t] = sum(math.isfinite(r.targets.get(t, math.nan)) for r in records)
    for t in m.segment:
        counts[t] = sum(t in r.masks for r in records)
    return counts


def pixel_label_line(records: list[Record], cfg: Config) -> str | None:
    """``pixel labels: drivable 4000 of 4000 images, lanes 0 of 4000 (none: this task learns
    nothing)`` for a model with segment tasks, else None."""
    if not cfg.model.segment:
        return None
    counts = label_counts(records, cfg)
    parts = [
        f"{t} {counts[t]} of {len(records)} images"
        + ("" if counts[t] else " (none: it learns nothing)")
        for t in cfg.model.segment
    ]
    return "pixel labels: " + ", ".join(parts)


@contextlib.contextmanager
def threads_while_others_wait(info: ddp.DistInfo, dev: torch.device):
    """On CPU, rank 0 evaluates alone while the other processes wait at a barrier doing no
    work: let it use their threads too (those on its machine), then give them back."""
    before = torch.get_num_threads()
    if info.local_world > 1 and dev.type == "cpu":
        torch.set_num_threads(min(before * info.local_world, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def append_jsonl(path: Path, record: dict) -> None:
    """One JSON line appended and fsynced, so a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
