"""The training loop: multi-task loss weighted by a strategy (``edge_mtl.weighting``), AdamW +
warm-up + cosine, autocast where the hardware has fast low precision, gradient clipping, EMA
weights, per-epoch evaluation, ``metrics.jsonl``, atomic ``last.pt``/``best.pt`` and exact resume
(mid-epoch too). A step whose loss or gradient is not finite is skipped (no optimizer, EMA or
weighting update) with a warning; ``train.max_nonfinite_steps`` in a row stop the run.

Several sources mix by per-source sampling (``edge_mtl.data.sampling``); under ``torchrun`` the
same loop runs data-parallel (``edge_mtl.distributed``): every rank takes its slice of each
global batch, rank 0 alone logs, evaluates and writes."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from edge_mtl import distributed as ddp
from edge_mtl.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_atomic
from edge_mtl.config import Config
from edge_mtl.data.bdd import Record
from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
from edge_mtl.data.sampling import epoch_batches, mix_summary, source_probabilities
from edge_mtl.evaluate import evaluate, is_breakdown, jsonable, score
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel, count_parameters
from edge_mtl.progressive import active, resize_batch, stage_at, train_hw
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import check_writable_dir
from edge_mtl.runtime.hardware import cpu_model, has_native_bf16, isa_summary
from edge_mtl.tasks import task_names
from edge_mtl.weighting import build_weighting


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
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    bad_in_a_row: int = 0


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
    """Train ``cfg`` into ``out_dir``; returns the final evaluation metrics (rank 0's; other
    ranks of a distributed run return an empty dict)."""
    info = ddp.from_env()
    if not info.is_main:
        log, progress = (lambda *a, **k: None), False
    # a progress bar only on a terminal; in a log file, a line every 50 steps instead
    progress = progress and sys.stderr.isatty()
    out = check_writable_dir(out_dir, "run folder")
    dev = ddp.init(info, pick_device(device))
    try:
        return _train(cfg, out, dev, info, resume, progress, Path(data_root), log)
    finally:
        ddp.shutdown(info)


def _train(
    cfg: Config,
    out: Path,
    dev: torch.device,
    info: ddp.DistInfo,
    resume: bool,
    progress: bool,
    data_root: Path,
    log,
) -> dict:
    tc = cfg.train
    micro = ddp.check_batch(tc.batch_size, tc.accumulate, info, cfg.source)
    torch.manual_seed(tc.seed)
    amp_dtype, amp_why = pick_autocast(tc.amp, dev)
    log(
        f"device {dev} ({cpu_model() if dev.type == 'cpu' else torch.cuda.get_device_name(dev)})"
        f", precision: {amp_why}, threads {torch.get_num_threads()}"
        + (
            f", {info.world} processes x {micro} images x {tc.accumulate} passes per step"
            if info.enabled or tc.accumulate > 1
            else ""
        )
    )

    # Rank 0 reads (and renders synthetic data into the cache) first; the others then read
    # the finished cache quietly.
    if not info.is_main:
        ddp.barrier(info)
    quiet = (
        contextlib.redirect_stdout(io.StringIO()) if not info.is_main else contextlib.nullcontext()
    )
    with quiet:
        train_recs = records_for(cfg.data.train, cfg, data_root, progress)
        val_recs = records_for(cfg.data.val, cfg, data_root, progress)
    if info.is_main:
        ddp.barrier(info)
    if not train_recs:
        raise InputError(f"{cfg.source}: data.train has no images")
    names = [s.display_name(i) for i, s in enumerate(cfg.data.train)]
    sizes = [sum(1 for r in train_recs if r.source == n) for n in names]
    src_weights = [s.weight for s in cfg.data.train]
    probs = source_probabilities(sizes, src_weights, cfg.data.temperature)
    if len(names) > 1:
        counts = [label_counts([r for r in train_recs if r.source == n], cfg) for n in names]
        log(f"sources (temperature {cfg.data.temperature}):")
        log(mix_summary(names, counts, sizes, probs))
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
    weighting = build_weighting(tc, task_names(cfg.model), model.shared_parameter()).to(dev)
    net: torch.nn.Module = model  # what the forward pass runs: the DDP wrapper when distributed
    if info.enabled:
        if tc.sync_bn and dev.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif tc.sync_bn:
            log("train.sync_bn: ignored on CPU (SyncBatchNorm needs CUDA); BN stays per process")
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    opt = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.99))
    if weighting.trainable():  # e.g. uncertainty's log-variances: same schedule, no decay
        opt.add_param_group({"params": weighting.trainable(), "weight_decay": 0.0})
    stepped = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype is torch.float16)
    ema = EMA(model)
    loss_fn = MultiTaskLoss(cfg.model, weighting, dev)
    steps_per_epoch = len(train_ds) // tc.batch_size  # an epoch visits len(train_ds) images
    if steps_per_epoch == 0:
        raise InputError(f"{cfg.source}: batch_size {tc.batch_size} > {len(train_ds)} images")
    total_steps = steps_per_epoch * tc.epochs
    st = _State()

    if resume and (out / "last.pt").is_file():
        ck = load_checkpoint(out / "last.pt")
        if ck["version"] != CHECKPOINT_VERSION:
            raise InputError(
                f"{out / 'last.pt'}: written by an older edge-mtl (checkpoint version "
                f"{ck['version']}) and cannot be resumed; start a new --out (its best.pt still "
                "evaluates and exports)"
            )
        if _resume_key(ck["config"]) != _resume_key(cfg.to_dict()):
            raise InputError(
                f"{out / 'last.pt'}: was trained with a different config; "
                "use a new --out or the same config"
            )
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        ema.updates = ck["ema_updates"]
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        weighting.load_state_dict(ck["weighting"])
        st = _State(**ck["state"])  # st.batch counts global batches: any process count resumes
        torch.set_rng_state(ck["rng"])
        log(f"resumed from {out / 'last.pt'} at epoch {st.epoch}, step {st.step}")
    elif resume:
        log(f"--resume: no {out / 'last.pt'} yet, starting fresh")

    def run_fraction() -> float:
        """How far the run is, 0..1: by steps, or by the time limit when that is further."""
        p = st.step / max(total_steps, 1)
        if tc.time_limit_min > 0:
            p = max(p, st.elapsed / (tc.time_limit_min * 60))
        return min(p, 1.0)

    def lr_factor() -> float:
        warm = min(1.0, (st.step + 1) / max(tc.warmup_steps, 1))
        return warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * run_fraction())))

    def checkpoint(path: Path, metrics: dict | None = None) -> None:
        """``last.pt``: everything a resume needs (weights, EMA, optimizer, RNG, ...)."""
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
                "weighting": weighting.state_dict(),
                "state": st.__dict__.copy(),
                "rng": torch.get_rng_state(),
                "metrics": metrics or {},
            },
            path,
        )

    def deployable(path: Path, metrics: dict | None = None) -> None:
        """``best.pt``: only what eval, export and compare read, the EMA weights as the model.
        AdamW's two moments and the raw weights would make it 4x larger for nothing: a run
        resumes from ``last.pt``."""
        save_atomic(
            {
                "format": "edge-mtl",
                "version": CHECKPOINT_VERSION,
                "config": cfg.to_dict(),
                "model": ema.model.state_dict(),
                "weights": "ema",
                "state": st.__dict__.copy(),
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
    shown_hw: tuple[int, int] | None = None  # the training input size last logged
    try:
        while st.epoch < tc.epochs and not time_up():
            train_ds.set_epoch(st.epoch)
            batches = epoch_batches(
                sizes, src_weights, cfg.data.temperature, tc.batch_size, tc.seed, st.epoch
            )
            loader = torch.utils.data.DataLoader(
                train_ds,
                batch_sampler=[ddp.rank_slice(b, info) for b in batches[st.batch :]],
                collate_fn=collate,
                num_workers=cfg.data.workers,
                persistent_workers=False,
                generator=torch.Generator().manual_seed(tc.seed + st.epoch),
            )  # not the global RNG
            net.train()
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
                fraction = run_fraction()
                hw = train_hw(fraction, cfg.model, tc)
                if hw != shown_hw and (why := _why_hw(fraction, cfg)):
                    log(f"step {st.step}: training at {hw[0]}x{hw[1]} {why}")
                    shown_hw = hw
                images, targets = resize_batch(images, targets, hw)
                images = images.to(dev, non_blocking=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                for g in opt.param_groups:
                    g["lr"] = tc.lr * lr_factor()
                opt.zero_grad(set_to_none=True)
                problem, parts = None, {}
                for j in range(tc.accumulate):
                    x, tg = (
                        images[j * micro : (j + 1) * micro],
                        targets[j * micro : (j + 1) * micro],
                    )
                    last = j == tc.accumulate - 1  # DDP all-reduces gradients on the last pass
                    with net.no_sync() if info.enabled and not last else contextlib.nullcontext():
                        with torch.autocast(
                            dev.type, dtype=amp_dtype, enabled=amp_dtype is not None
                        ):
                            out_t = net(x)
                        loss, p = loss_fn(out_t, tg, hw)
                        problem = problem or _nonfinite_loss(loss, p)
                        # always backward: every rank must join the gradient all-reduce; a
                        # non-finite loss then shows as a non-finite gradient norm below
                        scaler.scale(loss / tc.accumulate).backward()
                    for k, v in p.items():
                        parts[k] = parts.get(k, 0.0) + v / tc.accumulate
                if ddp.any_rank(problem is not None, info):  # skipped on every rank alike
                    problem = problem or "non-finite loss on another process"
                overflow = False  # fp16 gradients overflowed: the scaler's business, not ours
                if problem is None:
                    scaler.unscale_(opt)
                    # learned task weights live outside the DDP module: average them by hand
                    ddp.average_grads(weighting.parameters(), info)
                    norm = torch.nn.utils.clip_grad_norm_(stepped, tc.grad_clip)
                    if not torch.isfinite(norm):
                        problem = "non-finite gradient (loss finite)"
                        overflow = scaler.is_enabled()
                # A non-finite step changes nothing: no optimizer, EMA or weighting update.
                if problem is None:
                    scaler.step(opt)
                    scaler.update()
                    ema.update(model)
                    weighting.after_step()
                    # GradNorm/DWA update from local statistics: rank 0's state wins
                    ddp.broadcast_from_main([*weighting.parameters(), *weighting.buffers()], info)
                    st.bad_in_a_row = 0
                elif overflow:
                    scaler.update()  # lowers the loss scale; the next step tries again
                    st.skipped += 1
                else:
                    _skip_step(st, problem, tc.max_nonfinite_steps, out / "last.pt", log)
                st.step += 1
                st.batch += 1
                now = time.perf_counter()
                st.elapsed += now - t_last
                t_last = now
                if info.enabled:  # every rank must take the same stop / time-up decision
                    requested, st.elapsed = ddp.max_over_ranks(
                        [float(stop["requested"]), st.elapsed], info
                    )
                    stop["requested"] = bool(requested)
                if problem is None:
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
                    if info.is_main:
                        checkpoint(out / "last.pt", metrics)
                    ddp.barrier(info)
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
            sums = ddp.mean_over_ranks(sums, info)  # the logged losses are the whole batch's
            weights = weighting.weights()  # what this epoch trained with (before DWA's update)
            if done_epoch:
                st.epoch += 1
                st.batch = 0
                weighting.end_epoch()
            if (
                done_epoch
                and st.epoch % tc.eval_every != 0
                and st.epoch < tc.epochs
                and not time_up()
            ):
                if info.is_main:
                    checkpoint(out / "last.pt")
                ddp.barrier(info)
                continue
            if not info.is_main:  # rank 0 evaluates and writes; the others wait for it
                ddp.barrier(info)
                continue
            with _threads_while_others_wait(info, dev):
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
                "weights": weights,
                "skipped_steps": st.skipped,
                **{f"loss/{k}": v / n for k, v in sums.items()},
                **jsonable(metrics),
            }
            _append_jsonl(out / "metrics.jsonl", rec)
            s = score(metrics)
            log(
                f"epoch {st.epoch} step {st.step} {st.elapsed / 60:.1f} min | "
                + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not is_breakdown(k))
                + f" | {tc.weighting} weights "
                + " ".join(f"{k} {v:.3f}" for k, v in weights.items())
                + (f" | {st.skipped} steps skipped" if st.skipped else "")
            )
            if s > st.best:
                st.best = s
                deployable(out / "best.pt", metrics)
            checkpoint(out / "last.pt", metrics)
            ddp.barrier(info)
    finally:
        for sig, handler in prev.items():
            signal.signal(sig, handler)
    if info.is_main and not (out / "best.pt").exists():
        deployable(out / "best.pt", metrics)
    return metrics


@contextlib.contextmanager
def _threads_while_others_wait(info: ddp.DistInfo, dev: torch.device):
    """On CPU, rank 0 evaluates alone while the other processes wait at a barrier doing no
    work: let it use their threads too, then give them back."""
    before = torch.get_num_threads()
    if info.enabled and dev.type == "cpu":
        torch.set_num_threads(min(before * info.world, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _why_hw(fraction: float, cfg: Config) -> str:
    """Why a step at ``fraction`` of the run trains at its size, for the log line that
    announces a size; empty when the run does not resize (nothing to announce)."""
    if not active(cfg.train):
        return ""
    stage = stage_at(fraction, cfg.train)
    if stage is None:
        return "(the model's input size, for the rest of the run)"
    return f"(train.low_res_scale {stage[0]} until {stage[1]:.0%} of the run)"


def _resume_key(config: dict) -> dict:
    """What must match to resume: everything but the length of training (more epochs or
    minutes may be asked for when continuing)."""
    train = {k: v for k, v in config["train"].items() if k not in ("epochs", "time_limit_min")}
    return {**config, "train": train}


def label_counts(records: list[Record], cfg: Config) -> dict[str, int]:
    """How many of ``records`` carry a label of each task (the rest are masked out)."""
    m = cfg.model
    counts = {"det": sum(r.has_boxes for r in records)} if m.detect else {}
    for t in m.classify:
        counts[t] = sum(r.labels.get(t, -1) >= 0 for r in records)
    for t in m.regress:
        counts[t] = sum(math.isfinite(r.targets.get(t, math.nan)) for r in records)
    return counts


def _nonfinite_loss(loss: torch.Tensor, parts: dict[str, float]) -> str | None:
    """None when the loss is finite, else what was not, e.g. 'non-finite loss: det=nan'."""
    bad = [f"{k}={v}" for k, v in parts.items() if not math.isfinite(v)]
    if bad:
        return "non-finite loss: " + ", ".join(bad)
    if not torch.isfinite(loss):
        return f"non-finite weighted total loss ({float(loss)})"
    return None


def _skip_step(st: _State, problem: str, limit: int, last: Path, log) -> None:
    """Count a skipped step and warn; stop the run after ``limit`` in a row. The model is never
    saved from here: ``last`` keeps the last good state."""
    st.skipped += 1
    st.bad_in_a_row += 1
    log(f"warning: step {st.step} skipped, {problem} ({st.skipped} skipped so far)")
    if st.bad_in_a_row >= limit:
        kept = f"{last} holds the last good state" if last.is_file() else "no checkpoint yet"
        raise RuntimeFailure(
            f"training stopped at step {st.step}: {st.bad_in_a_row} steps in a row had a "
            f"non-finite loss or gradient (last: {problem}); {kept}; "
            "lower train.lr, check the labels, or raise train.max_nonfinite_steps"
        )


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
