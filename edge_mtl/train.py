"""The training loop: weighted multi-task loss, AdamW + warm-up + cosine, autocast where the
hardware has fast low precision, gradient clipping, EMA weights, per-epoch evaluation,
``metrics.jsonl``, atomic ``last.pt``/``best.pt`` and exact resume (mid-epoch too)."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from edge_mtl.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_atomic
from edge_mtl.config import Config
from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
from edge_mtl.evaluate import evaluate, score
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel, count_parameters
from runtime.errors import InputError
from runtime.hardware import cpu_model, has_native_bf16, isa_summary


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise InputError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def pick_autocast(amp: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for this device and the reason, e.g. (bfloat16, 'CPU has AMX')."""
    if amp == "off":
        return None, "amp off in config"
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16, "CUDA fp16 autocast"
        return torch.bfloat16, "CUDA bf16 autocast"
    if amp == "fp16":
        raise InputError("train.amp: fp16 autocast is for CUDA; use bf16 or off on CPU")
    if amp == "bf16" or has_native_bf16():
        why = "forced by config" if amp == "bf16" else "CPU has native bf16 (AMX/AVX512-BF16)"
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
class _State:
    epoch: int = 0
    batch: int = 0  # next batch index within ``epoch``
    step: int = 0
    elapsed: float = 0.0  # training seconds, summed over resumes
    best: float = -math.inf


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _param_groups(model: torch.nn.Module, wd: float):
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    cfg: Config,
    out_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    data_root: str | Path = "data",
    log=print,
) -> dict:
    """Train ``cfg`` into ``out_dir``; returns the final evaluation metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: output directory is not writable")
    tc = cfg.train
    dev = pick_device(device)
    torch.manual_seed(tc.seed)
    amp_dtype, amp_why = pick_autocast(tc.amp, dev)
    log(
        f"device {dev} ({cpu_model() if dev.type == 'cpu' else torch.cuda.get_device_name(dev)})"
        f", precision: {amp_why}, threads {torch.get_num_threads()}"
    )

    train_recs = records_for(cfg.data.train, cfg, Path(data_root), progress)
    val_recs = records_for(cfg.data.val, cfg, Path(data_root), progress)
    if not train_recs:
        raise InputError(f"{cfg.source}: data.train has no images")
    train_ds = MultiTaskDataset(train_recs, cfg, train=True)
    val_ds = MultiTaskDataset(val_recs, cfg, train=False)
    log(
        f"data: {len(train_ds)} train, {len(val_ds)} val images; "
        f"{sum(len(r.boxes) for r in train_recs)} train boxes"
    )

    model = MultiTaskModel(cfg.model).to(dev)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    log(
        f"model: {cfg.model.backbone} + FPN({cfg.model.neck_channels}), "
        f"{count_parameters(model) / 1e6:.2f} M parameters, input {cfg.model.input_hw}"
    )
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.99))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype is torch.float16)
    ema = EMA(model)
    loss_fn = MultiTaskLoss(cfg.model, tc.loss_weights, dev)
    steps_per_epoch = len(train_ds) // tc.batch_size
    if steps_per_epoch == 0:
        raise InputError(f"{cfg.source}: batch_size {tc.batch_size} > {len(train_ds)} images")
    total_steps = steps_per_epoch * tc.epochs
    st = _State()

    if resume and (out / "last.pt").is_file():
        ck = load_checkpoint(out / "last.pt")
        if ck["config"] != cfg.to_dict():
            raise InputError(
                f"{out / 'last.pt'}: was trained with a different config; "
                "use a new --out or the same config"
            )
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        ema.updates = ck["ema_updates"]
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        st = _State(**ck["state"])
        torch.set_rng_state(ck["rng"])
        log(f"resumed from {out / 'last.pt'} at epoch {st.epoch}, step {st.step}")
    elif resume:
        log(f"--resume: no {out / 'last.pt'} yet, starting fresh")

    def lr_factor() -> float:
        p = st.step / max(total_steps, 1)
        if tc.time_limit_min > 0:
            p = max(p, st.elapsed / (tc.time_limit_min * 60))
        warm = min(1.0, (st.step + 1) / max(tc.warmup_steps, 1))
        return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))

    def checkpoint(path: Path, metrics: dict | None = None) -> None:
        save_atomic(
            {
                "format": "edge-mtl",
                "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "ema": ema.model.state_dict(),
                "ema_updates": ema.updates,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "state": st.__dict__.copy(),
                "rng": torch.get_rng_state(),
                "metrics": metrics or {},
            },
            path,
        )

    def time_up() -> bool:
        return tc.time_limit_min > 0 and st.elapsed >= tc.time_limit_min * 60

    # Ctrl-C / SIGTERM: finish the current step, save a resumable last.pt, stop. A second
    # Ctrl-C aborts at once (last.pt then stays at the previous save, never half-written).
    stop = {"requested": False}

    def on_signal(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        log("\nstopping after this step; Ctrl-C again to abort at once")

    in_main = threading.current_thread() is threading.main_thread()
    prev = (
        {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    )
    metrics: dict = {}
    try:
        while st.epoch < tc.epochs and not time_up():
            train_ds.set_epoch(st.epoch)
            batches = _batches(len(train_ds), tc.batch_size, tc.seed, st.epoch)
            loader = torch.utils.data.DataLoader(
                train_ds,
                batch_sampler=batches[st.batch :],
                collate_fn=collate,
                num_workers=cfg.data.workers,
                persistent_workers=False,
                generator=torch.Generator().manual_seed(tc.seed + st.epoch),
            )  # not the global RNG
            model.train()
            bar = tqdm(
                loader,
                desc=f"epoch {st.epoch + 1}/{tc.epochs}",
                initial=st.batch,
                total=len(batches),
                disable=not progress,
                leave=False,
            )
            sums: dict[str, float] = {}
            count = 0
            t_last = time.perf_counter()
            for images, targets in bar:
                images = images.to(dev, non_blocking=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                for g in opt.param_groups:
                    g["lr"] = tc.lr * lr_factor()
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out_t = model(images)
                loss, parts = loss_fn(out_t, targets)
                if not torch.isfinite(loss):
                    raise InputError(
                        f"loss became {float(loss)} at step {st.step} ({parts}); "
                        "lower train.lr or check the labels"
                    )
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(opt)
                scaler.update()
                ema.update(model)
                st.step += 1
                st.batch += 1
                now = time.perf_counter()
                st.elapsed += now - t_last
                t_last = now
                count += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
                if not progress and st.step % 50 == 0:
                    log(
                        f"step {st.step} ({st.elapsed / 60:.1f} min) "
                        + " ".join(f"{k} {v / count:.3f}" for k, v in sums.items())
                    )
                if stop["requested"]:
                    bar.close()
                    checkpoint(out / "last.pt", metrics)
                    log(
                        f"interrupted: saved {out / 'last.pt'} (epoch {st.epoch}, step "
                        f"{st.step}); continue with --resume"
                    )
                    raise KeyboardInterrupt
                if time_up():
                    break
            bar.close()
            done_epoch = st.batch >= len(batches)
            n = max(count, 1)
            if done_epoch:
                st.epoch += 1
                st.batch = 0
            if (
                done_epoch
                and st.epoch % tc.eval_every != 0
                and st.epoch < tc.epochs
                and not time_up()
            ):
                checkpoint(out / "last.pt")
                continue
            metrics = (
                evaluate(ema.model, _val_loader(val_ds, cfg), cfg, dev, amp_dtype, progress)
                if len(val_ds)
                else {}
            )
            rec = {
                "epoch": st.epoch,
                "step": st.step,
                "time_s": round(st.elapsed, 1),
                "lr": tc.lr * lr_factor(),
                "weights": loss_fn.weights,
                **{f"loss/{k}": v / n for k, v in sums.items()},
                **metrics,
            }
            _append_jsonl(out / "metrics.jsonl", rec)
            s = score(metrics)
            log(
                f"epoch {st.epoch} step {st.step} {st.elapsed / 60:.1f} min | "
                + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not k.endswith("/std"))
            )
            if s > st.best:
                st.best = s
                checkpoint(out / "best.pt", metrics)
            checkpoint(out / "last.pt", metrics)
    finally:
        for sig, handler in prev.items():
            signal.signal(sig, handler)
    if not (out / "best.pt").exists():
        checkpoint(out / "best.pt", metrics)
    return metrics


def _val_loader(ds: MultiTaskDataset, cfg: Config):
    return torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.train.batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=cfg.data.workers,
        generator=torch.Generator().manual_seed(0),
    )


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
