"""``Trainer``: one training run, from data and model set-up through steps, evaluation and
checkpoints to the final metrics. ``edge_mtl.train.train`` is the entry point that builds one.

A step: resize the batch (progressive resizing), forward and backward in ``train.accumulate``
passes under autocast, then, if the loss and gradient norm are finite, clip, step AdamW, update
the EMA and the task weighting; otherwise the step is skipped and leaves no trace. Under
``torchrun`` every process runs the same Trainer on its slice of each global batch; rank 0 alone
logs, evaluates and writes files, and every stop decision is taken alike on all ranks."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from edge_mtl import checkpoint
from edge_mtl import distributed as ddp
from edge_mtl.config import Config
from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
from edge_mtl.data.sampling import epoch_batches, mix_summary, source_probabilities
from edge_mtl.evaluate import evaluate, is_breakdown, jsonable, score
from edge_mtl.losses import MultiTaskLoss
from edge_mtl.model import MultiTaskModel, count_parameters
from edge_mtl.progressive import resize_batch, train_hw
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.hardware import cpu_model
from edge_mtl.tasks import task_names
from edge_mtl.train_parts import (
    EMA,
    RunState,
    append_jsonl,
    end_line,
    label_counts,
    length_line,
    lr_factor,
    nonfinite_loss,
    pace_line,
    param_groups,
    pick_autocast,
    pixel_label_line,
    threads_while_others_wait,
    why_hw,
)
from edge_mtl.weighting import build_weighting

Log = Callable[..., None]
PACE_STEPS = 20  # steps timed before the log says whether epochs or the time limit end the run


class Trainer:
    """Trains ``cfg`` into the run folder ``out`` on ``dev`` (this rank's device).

    ``setup`` (called by the constructor) loads the data and builds the model, optimizer and
    loss; ``resume`` restores ``out/last.pt``; ``fit`` trains to the end of ``train.epochs`` or
    ``train.time_limit_min`` and returns the last evaluation's metrics (empty on ranks > 0)."""

    def __init__(
        self,
        cfg: Config,
        out: Path,
        dev: torch.device,
        info: ddp.DistInfo,
        progress: bool,
        data_root: Path,
        log: Log,
    ) -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.out, self.dev, self.info = out, dev, info
        self.progress, self.data_root, self.log = progress, data_root, log
        self.st = RunState()
        self.metrics: dict = {}  # the last evaluation's
        self.stop_requested = False  # Ctrl-C / SIGTERM seen: save and stop after this step
        self.shown_hw: tuple[int, int] | None = None  # the training input size last logged
        self.pace_from: tuple[int, float] | None = None  # (step, elapsed s) pace is timed from
        self.setup()

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        """Seed, pick the precision, load the data, build model, optimizer and loss."""
        tc, info = self.tc, self.info
        self.micro = ddp.check_batch(tc.batch_size, tc.accumulate, info, self.cfg.source)
        torch.manual_seed(tc.seed)
        self.amp_dtype, amp_why = pick_autocast(tc.amp, self.dev)
        name = cpu_model() if self.dev.type == "cpu" else torch.cuda.get_device_name(self.dev)
        self.log(
            f"device {self.dev} ({name}), precision: {amp_why}, threads {torch.get_num_threads()}"
            + (
                f", {info.world} processes x {self.micro} images x {tc.accumulate} passes per step"
                if info.enabled or tc.accumulate > 1
                else ""
            )
        )
        self._setup_data()
        self._setup_model()

    def _setup_data(self) -> None:
        """Records of every source, the mixing probabilities, train and val datasets."""
        cfg, info = self.cfg, self.info
        # The first process on each machine reads (and renders synthetic data into the cache)
        # first; the others then read the finished cache. Only rank 0 says what it does.
        if not info.is_local_main:
            ddp.barrier(info)
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet) if not info.is_main else contextlib.nullcontext():
            train_recs = records_for(cfg.data.train, cfg, self.data_root, self.progress)
            val_recs = records_for(cfg.data.val, cfg, self.data_root, self.progress)
        if info.is_local_main:
            ddp.barrier(info)
        if not train_recs:
            raise InputError(f"{cfg.source}: data.train has no images")
        names = [s.display_name(i) for i, s in enumerate(cfg.data.train)]
        self.sizes = [sum(1 for r in train_recs if r.source == n) for n in names]
        self.src_weights = [s.weight for s in cfg.data.train]
        probs = source_probabilities(self.sizes, self.src_weights, cfg.data.temperature)
        if len(names) > 1:
            counts = [label_counts([r for r in train_recs if r.source == n], cfg) for n in names]
            self.log(f"sources (temperature {cfg.data.temperature}):")
            self.log(mix_summary(names, counts, self.sizes, probs))
        self.train_ds = MultiTaskDataset(train_recs, cfg, train=True)
        self.val_ds = MultiTaskDataset(val_recs, cfg, train=False)
        self.log(
            f"data: {len(self.train_ds)} train, {len(self.val_ds)} val images; "
            f"{sum(len(r.boxes) for r in train_recs)} train boxes"
        )
        if line := pixel_label_line(train_recs, cfg):
            self.log(line)
        self.steps_per_epoch = len(self.train_ds) // self.tc.batch_size  # len(train_ds) images
        if self.steps_per_epoch == 0:
            raise InputError(
                f"{cfg.source}: batch_size {self.tc.batch_size} > {len(self.train_ds)} images"
            )

    def _setup_model(self) -> None:
        """Model (channels-last), task weighting, the DDP wrapper, AdamW, scaler, EMA, loss."""
        cfg, tc, dev = self.cfg, self.tc, self.dev
        model = MultiTaskModel(cfg.model).to(dev).to(memory_format=torch.channels_last)
        self.log(
            f"model: {cfg.model.backbone} + FPN({cfg.model.neck_channels}), "
            f"{count_parameters(model) / 1e6:.2f} M parameters, input {cfg.model.input_hw}"
        )
        self.weighting = build_weighting(tc, task_names(cfg.model), model.shared_parameter())
        self.weighting = self.weighting.to(dev)
        self.model, self.net = self._wrap(model)
        self.opt = torch.optim.AdamW(
            param_groups(self.model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.99)
        )
        if self.weighting.trainable():  # e.g. uncertainty's log-variances: no weight decay
            self.opt.add_param_group({"params": self.weighting.trainable(), "weight_decay": 0.0})
        self.stepped = [p for g in self.opt.param_groups for p in g["params"]]
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype is torch.float16)
        self.ema = EMA(self.model)
        self.loss_fn = MultiTaskLoss(cfg.model, self.weighting, dev)
        self.total_steps = self.steps_per_epoch * tc.epochs

    def _wrap(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(the model, what the forward pass runs): the DDP wrapper when distributed."""
        if not self.info.enabled:
            return model, model
        if self.tc.sync_bn and self.dev.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.tc.sync_bn:
            self.log(
                "train.sync_bn: ignored on CPU (SyncBatchNorm needs CUDA); BN stays per process"
            )
        ids = [self.dev.index] if self.dev.type == "cuda" else None
        return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def resume(self) -> None:
        """Continue from ``out/last.pt`` when there is one (same config up to its length). Rank
        0 reads it and sends it to the other ranks, which may run on machines without it."""
        path = self.out / "last.pt"
        found = self._read_last(path) if self.info.is_main else (None, None)
        ck, problem = ddp.broadcast_object(found, self.info)
        if problem:
            raise InputError(problem)
        if ck is None:
            self.log(f"--resume: no {path} yet, starting fresh")
            return
        self.model.load_state_dict(ck["model"])
        self.ema.model.load_state_dict(ck["ema"])
        self.ema.updates = ck["ema_updates"]
        self.opt.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.weighting.load_state_dict(ck["weighting"])
        self.st = RunState(**ck["state"])
        torch.set_rng_state(ck["rng"])
        self.log(f"resumed from {path} at epoch {self.st.epoch}, step {self.st.step}")

    def _read_last(self, path: Path) -> tuple[dict | None, str | None]:
        """(the checkpoint at ``path`` or None when there is none, why it cannot resume)."""
        if not path.is_file():
            return None, None
        try:
            ck = checkpoint.load_checkpoint(path)
            checkpoint.check_resumable(ck, path, self.cfg.to_dict())
        except InputError as e:
            return None, str(e)
        return ck, None

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict:
        """Train to the end; a best.pt exists afterwards (rank 0) even without evaluation."""
        self.log(length_line(self.tc, self.steps_per_epoch))
        with self._signals():
            while self.st.epoch < self.tc.epochs and not self.st.time_up(self.tc):
                self.run_epoch()
        if self.tc.time_limit_min > 0:
            self.log(end_line(self.st, self.tc))
        if self.info.is_main and not (self.out / "best.pt").exists():
            self.save_best(self.metrics)
        return self.metrics

    def run_epoch(self) -> None:
        """Train the rest of the current epoch (from ``st.batch``), then close it."""
        st, tc = self.st, self.tc
        self.train_ds.set_epoch(st.epoch)
        temperature = self.cfg.data.temperature
        batches = epoch_batches(
            self.sizes, self.src_weights, temperature, tc.batch_size, tc.seed, st.epoch
        )
        self.net.train()
        bar = tqdm(
            self._loader(batches[st.batch :]),
            desc=f"epoch {st.epoch + 1}/{tc.epochs}",
            initial=st.batch,
            total=len(batches),
            disable=not self.progress,
            leave=False,
        )
        sums: dict[str, float] = {}
        count = 0
        t_last = time.perf_counter()
        for images, targets in bar:
            parts, applied = self.step(images, targets)
            now = time.perf_counter()
            st.elapsed += now - t_last
            t_last = now
            self._agree_on_stopping()
            self._note_pace()
            if applied:
                count += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
            if not self.progress and st.step % 50 == 0:
                self.log(
                    f"step {st.step} ({st.elapsed / 60:.1f} min) "
                    + " ".join(f"{k} {v / count:.3f}" for k, v in sums.items())
                )
            if self.stop_requested:
                bar.close()
                self._save_and_stop()
            if st.time_up(tc):
                break
        bar.close()
        self.end_epoch(len(batches), sums, count)

    def _note_pace(self) -> None:
        """With a time limit, once per process: which bound ends the run, timed over up to
        ``PACE_STEPS`` steps after this process's first (its start-up cost left out)."""
        st, tc = self.st, self.tc
        if self.pace_from is None:
            self.pace_from = (st.step, st.elapsed)
        elif tc.time_limit_min > 0 and st.step - self.pace_from[0] == min(
            PACE_STEPS, self.steps_per_epoch
        ):
            rate = (st.elapsed - self.pace_from[1]) / (st.step - self.pace_from[0])
            self.log(pace_line(st, tc, self.steps_per_epoch, rate))

    def _loader(self, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        """This rank's slices of ``batches``; shuffling by its own generator, not the global
        RNG (which a resume restores)."""
        return torch.utils.data.DataLoader(
            self.train_ds,
            batch_sampler=[ddp.rank_slice(b, self.info) for b in batches],
            collate_fn=collate,
            num_workers=self.cfg.data.workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.tc.seed + self.st.epoch),
        )

    def step(self, images: torch.Tensor, targets: list[dict]) -> tuple[dict[str, float], bool]:
        """One optimizer step on this rank's slice of a global batch, ``images`` (B, 3, H, W)
        normalised float. Returns the per-task losses and whether the step was applied."""
        fraction = self.st.fraction(self.tc, self.total_steps)
        hw = train_hw(fraction, self.cfg.model, self.tc)
        if hw != self.shown_hw and (why := why_hw(fraction, self.cfg)):
            self.log(f"step {self.st.step}: training at {hw[0]}x{hw[1]} {why}")
            self.shown_hw = hw
        images, targets = resize_batch(images, targets, hw)
        images = images.to(self.dev, non_blocking=True)
        images = images.contiguous(memory_format=torch.channels_last)
        for g in self.opt.param_groups:
            g["lr"] = self.tc.lr * self.lr_factor()
        self.opt.zero_grad(set_to_none=True)
        problem, parts = self._forward_backward(images, targets, hw)
        if ddp.any_rank(problem is not None, self.info):  # skipped on every rank alike
            problem = problem or "non-finite loss on another process"
        self._apply(problem)
        self.st.step += 1
        self.st.batch += 1
        return parts, problem is None

    def lr_factor(self) -> float:
        fraction = self.st.fraction(self.tc, self.total_steps)
        return lr_factor(self.st.step, fraction, self.tc.warmup_steps)

    def _forward_backward(
        self, images: torch.Tensor, targets: list[dict], hw: tuple[int, int]
    ) -> tuple[str | None, dict[str, float]]:
        """``train.accumulate`` forward/backward passes of ``micro`` images each; returns what
        was not finite (or None) and the per-task losses averaged over the passes."""
        tc, micro, info = self.tc, self.micro, self.info
        problem, parts = None, {}
        for j in range(tc.accumulate):
            x, tg = images[j * micro : (j + 1) * micro], targets[j * micro : (j + 1) * micro]
            last = j == tc.accumulate - 1  # DDP all-reduces gradients on the last pass
            with self.net.no_sync() if info.enabled and not last else contextlib.nullcontext():
                with torch.autocast(
                    self.dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                ):
                    out = self.net(x)
                loss, p = self.loss_fn(out, tg, hw)
                problem = problem or nonfinite_loss(loss, p)
                # always backward: every rank must join the gradient all-reduce; a non-finite
                # loss then shows as a non-finite gradient norm
                self.scaler.scale(loss / tc.accumulate).backward()
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v / tc.accumulate
        return problem, parts

    def _apply(self, problem: str | None) -> None:
        """Clip and step when everything is finite; a non-finite step changes nothing (no
        optimizer, EMA or weighting update) and is counted."""
        overflow = False  # fp16 gradients overflowed: the scaler's business, not ours
        if problem is None:
            self.scaler.unscale_(self.opt)
            # learned task weights live outside the DDP module: average them by hand
            ddp.average_grads(self.weighting.parameters(), self.info)
            norm = torch.nn.utils.clip_grad_norm_(self.stepped, self.tc.grad_clip)
            if not torch.isfinite(norm):
                problem = "non-finite gradient (loss finite)"
                overflow = self.scaler.is_enabled()
        if problem is None:
            self.scaler.step(self.opt)
            self.scaler.update()
            self.ema.update(self.model)
            self.weighting.after_step()
            # GradNorm/DWA update from local statistics: rank 0's state wins
            w = self.weighting
            ddp.broadcast_from_main([*w.parameters(), *w.buffers()], self.info)
            self.st.bad_in_a_row = 0
        elif overflow:
            self.scaler.update()  # lowers the loss scale; the next step tries again
            self.st.skipped += 1
        else:
            self.st.skip(problem, self.tc.max_nonfinite_steps, self.out / "last.pt", self.log)

    def end_epoch(self, n_batches: int, sums: dict[str, float], count: int) -> None:
        """After the loop over an epoch's batches (finished, or stopped by the time limit):
        close the epoch, then evaluate and save when due (rank 0; the others wait)."""
        st, tc, info = self.st, self.tc, self.info
        done_epoch = st.batch >= n_batches
        sums = ddp.mean_over_ranks(sums, info)  # the logged losses are the whole batch's
        weights = self.weighting.weights()  # what this epoch trained with (before DWA's update)
        if done_epoch:
            st.epoch += 1
            st.batch = 0
            self.weighting.end_epoch()
        due = st.epoch % tc.eval_every == 0 or st.epoch >= tc.epochs or st.time_up(tc)
        if done_epoch and not due:
            if info.is_main:
                self.save_last()
            ddp.barrier(info)
            return
        if info.is_main:  # rank 0 evaluates and writes; the others wait for it
            self.evaluate()
            self._record(weights, {k: v / max(count, 1) for k, v in sums.items()})
            if score(self.metrics) > st.best:
                st.best = score(self.metrics)
                self.save_best(self.metrics)
            self.save_last(self.metrics)
        ddp.barrier(info)

    # ------------------------------------------------------------------ evaluation and files

    def evaluate(self) -> dict:
        """Metrics of the EMA weights on the validation set (empty without one), on the threads
        of the processes waiting for rank 0."""
        loader = torch.utils.data.DataLoader(
            self.val_ds,
            batch_size=self.tc.batch_size,
            shuffle=False,
            collate_fn=collate,
            num_workers=self.cfg.data.workers,
            generator=torch.Generator().manual_seed(0),
        )
        with threads_while_others_wait(self.info, self.dev):
            self.metrics = (
                evaluate(self.ema.model, loader, self.cfg, self.dev, self.amp_dtype, self.progress)
                if len(self.val_ds)
                else {}
            )
        return self.metrics

    def _record(self, weights: dict[str, float], losses: dict[str, float]) -> None:
        """One ``metrics.jsonl`` line and one log line for the evaluation just done."""
        st, metrics = self.st, self.metrics
        rec = {
            "epoch": st.epoch,
            "step": st.step,
            "time_s": round(st.elapsed, 1),
            "lr": self.tc.lr * self.lr_factor(),
            "weights": weights,
            "skipped_steps": st.skipped,
            **{f"loss/{k}": v for k, v in losses.items()},
            **jsonable(metrics),
        }
        append_jsonl(self.out / "metrics.jsonl", rec)
        self.log(
            f"epoch {st.epoch} step {st.step} {st.elapsed / 60:.1f} min | "
            + " ".join(f"{k} {v:.3f}" for k, v in metrics.items() if not is_breakdown(k))
            + f" | {self.tc.weighting} weights "
            + " ".join(f"{k} {v:.3f}" for k, v in weights.items())
            + (f" | {st.skipped} steps skipped" if st.skipped else "")
        )

    def save_last(self, metrics: dict | None = None) -> None:
        """``out/last.pt``: everything a resume needs."""
        record = checkpoint.resumable(
            self.cfg.to_dict(),
            dataclasses.asdict(self.st),
            model=self.model.state_dict(),
            ema=self.ema.model.state_dict(),
            ema_updates=self.ema.updates,
            optimizer=self.opt.state_dict(),
            scaler=self.scaler.state_dict(),
            weighting=self.weighting.state_dict(),
            rng=torch.get_rng_state(),
            metrics=metrics,
        )
        checkpoint.save_atomic(record, self.out / "last.pt")

    def save_best(self, metrics: dict | None = None) -> None:
        """``out/best.pt``: the deployable file, EMA weights as the model."""
        record = checkpoint.deployable(
            self.cfg.to_dict(), self.ema.model.state_dict(), dataclasses.asdict(self.st), metrics
        )
        checkpoint.save_atomic(record, self.out / "best.pt")

    # ------------------------------------------------------------------ stopping

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM: finish the current step, save a resumable last.pt, stop. A second
        Ctrl-C aborts at once (last.pt then stays at the previous save, never half-written)."""

        def on_signal(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.log("\nstopping after this step; Ctrl-C again to abort at once")

        in_main = threading.current_thread() is threading.main_thread()
        sigs = (signal.SIGINT, signal.SIGTERM) if in_main else ()
        prev = {s: signal.signal(s, on_signal) for s in sigs}
        try:
            yield
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)

    def _agree_on_stopping(self) -> None:
        """Every rank takes the same stop / time-up decision: the maximum over ranks."""
        if self.info.enabled:
            requested, self.st.elapsed = ddp.max_over_ranks(
                [float(self.stop_requested), self.st.elapsed], self.info
            )
            self.stop_requested = bool(requested)

    def _save_and_stop(self) -> None:
        """A stop was requested: rank 0 saves last.pt, then every rank raises KeyboardInterrupt."""
        if self.info.is_main:
            self.save_last(self.metrics)
        ddp.barrier(self.info)
        self.log(
            f"interrupted: saved {self.out / 'last.pt'} (epoch {self.st.epoch}, step "
            f"{self.st.step}); continue with --resume"
        )
        raise KeyboardInterrupt
