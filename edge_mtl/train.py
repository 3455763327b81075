"""The training entry point: ``train(cfg, out_dir)`` runs one :class:`edge_mtl.trainer.Trainer`.

The loop: multi-task loss weighted by a strategy (``edge_mtl.weighting``), AdamW + warm-up +
cosine, autocast where the hardware has fast low precision, gradient clipping, EMA weights,
per-epoch evaluation, ``metrics.jsonl``, atomic ``last.pt``/``best.pt`` (``edge_mtl.checkpoint``)
and exact resume (mid-epoch too). A step whose loss or gradient is not finite is skipped (no
optimizer, EMA or weighting update) with a warning; ``train.max_nonfinite_steps`` in a row stop
the run.

Several sources mix by per-source sampling (``edge_mtl.data.sampling``); under ``torchrun`` (one
machine or several, see ``edge_mtl.distributed``) the same loop runs data-parallel: every rank
takes its slice of each global batch, rank 0 alone logs, evaluates and writes."""

from __future__ import annotations

import sys
from pathlib import Path

from edge_mtl import checkpoint
from edge_mtl import distributed as ddp
from edge_mtl.config import Config
from edge_mtl.data.cache import default_data_root
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import check_writable_dir
from edge_mtl.train_parts import EMA, RunState, label_counts, pick_autocast, pick_device
from edge_mtl.trainer import Trainer

__all__ = ["EMA", "Trainer", "label_counts", "pick_autocast", "pick_device", "train"]


# The files that make a folder hold a run: a fresh run there would overwrite or append to them.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")


def train(
    cfg: Config,
    out_dir: str | Path,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    data_root: str | Path | None = None,
    log=print,
    exist_ok: bool = False,
) -> dict:
    """Train ``cfg`` into ``out_dir`` (``last.pt``, ``best.pt``, ``metrics.jsonl``); returns the
    final evaluation metrics (rank 0's; other ranks of a distributed run return an empty dict).
    ``device``: auto, cpu, cuda or cuda:N; ``resume`` continues from ``out_dir/last.pt`` (a run
    already at its end returns its last metrics and trains nothing); a folder that holds a run
    is refused unless ``resume`` or ``exist_ok`` (which deletes that run's files first).
    ``data_root``: the synthetic-data cache (default :func:`default_data_root`)."""
    info = ddp.from_env()
    if not info.is_main:
        log, progress = (lambda *a, **k: None), False
    # a progress bar only on a terminal; in a log file, a line every 50 steps instead
    progress = progress and sys.stderr.isatty()
    out = check_writable_dir(out_dir, "run folder")
    dev = ddp.init(info, pick_device(device))
    try:
        # rank 0 alone looks at the folder, before anyone writes; every rank gets its answer
        found = _prepare_folder(cfg, out, resume, exist_ok) if info.is_main else (None, None)
        problem, finished = ddp.broadcast_object(found, info)
        if problem:
            raise InputError(problem)
        if finished:
            log(finished[0])
            return finished[1] if info.is_main else {}
        root = Path(data_root) if data_root is not None else default_data_root()
        trainer = Trainer(cfg, out, dev, info, progress, root, log)
        if resume:
            trainer.resume()
        return trainer.fit()
    finally:
        ddp.shutdown(info)


def check_run_folder(out: Path, resume: bool, exist_ok: bool) -> None:
    """Raise InputError when ``out`` holds a run (any of ``RUN_FILES``) that a fresh run would
    overwrite: allowed only to continue it (``resume``) or with ``exist_ok``."""
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resume and not exist_ok:
        raise InputError(
            f"{out}: already holds a run ({', '.join(held)}); continue it with --resume, "
            "overwrite it with --exist-ok, or choose another --out"
        )


def finished_note(cfg: Config, out: Path) -> tuple[str, dict] | None:
    """When ``out/last.pt`` is a run of ``cfg`` already at its end (``train.epochs`` done or the
    time limit reached), the line that says so and the run's last metrics; else None. Raises
    InputError when ``last.pt`` cannot continue ``cfg``."""
    path = out / "last.pt"
    if not path.is_file():
        return None
    ck = checkpoint.load_checkpoint(path)
    checkpoint.check_resumable(ck, path, cfg.to_dict())
    st, tc = RunState(**ck["state"]), cfg.train
    by_epochs, by_time = st.epoch >= tc.epochs, st.time_up(tc)
    if not (by_epochs or by_time):
        return None
    why = [f"{st.epoch}/{tc.epochs} epochs"] if by_epochs else []
    if by_time:
        why.append(f"time limit reached: {st.elapsed / 60:.1f} of {tc.time_limit_min:g} min")
    flags = " and ".join(["--epochs"] * by_epochs + ["--time-limit"] * by_time)
    note = (
        f"{out} already finished ({'; '.join(why)}); nothing to resume. Raise {flags} to "
        "train further"
    )
    return note, ck.get("metrics") or {}


def _prepare_folder(
    cfg: Config, out: Path, resume: bool, exist_ok: bool
) -> tuple[str | None, tuple[str, dict] | None]:
    """(why the run cannot start in ``out`` or None, :func:`finished_note` when resuming). A
    fresh run with ``exist_ok`` first deletes the earlier run's files, so none of them mixes
    with the new run's (``metrics.jsonl`` is appended to)."""
    try:
        check_run_folder(out, resume, exist_ok)
        if resume:
            return None, finished_note(cfg, out)
    except InputError as e:
        return str(e), None
    if exist_ok:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    return None, None
