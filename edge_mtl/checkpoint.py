"""The checkpoint format, in one place. Two kinds of file, both a dict saved by ``torch.save``:

- resumable (``last.pt``, :func:`resumable`): everything a resume needs: config, raw and EMA
  weights, optimizer, grad scaler, task weighting, run state, RNG, last metrics;
- deployable (``best.pt``, :func:`deployable`): what eval, export and compare read: config, the
  EMA weights as ``model``, run state, metrics.

Files are written through the project's one atomic writer (``edge_mtl.runtime.files``: temp
file, fsync, rename), so a crash mid-write never leaves a corrupt ``last.pt``. A checkpoint
carries its config, so export and evaluation need nothing but the file."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from edge_mtl.config import Config, config_from_dict
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import atomic_write

CHECKPOINT_VERSION = 2
# Version 1 shared one BatchNorm over the pyramid levels in the detection towers; version 2 has
# one per level (edge_mtl.tasks.detect.LevelTower). Version 1 weights still load for eval and
# export.
READABLE_VERSIONS = (1, 2)
_OLD_TOWER = re.compile(r"^(heads\.detect\.(?:cls|reg)_tower)\.(\d+)\.([01])\.(.+)$")


FORMAT = "edge-mtl"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """``torch.save(obj)`` into ``path`` atomically: the old file stays until the new one is
    complete on disk."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def resumable(
    config: dict[str, Any],
    state: dict[str, Any],
    *,
    model: dict[str, Any],
    ema: dict[str, Any],
    ema_updates: int,
    optimizer: dict[str, Any],
    scaler: dict[str, Any],
    weighting: dict[str, Any],
    rng: torch.Tensor,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``last.pt`` record: ``config`` (``Config.to_dict()``), ``state`` (the run's progress,
    ``RunState`` as a dict), state dicts of the parts and the CPU RNG state."""
    return {
        "format": FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "model": model,
        "ema": ema,
        "ema_updates": ema_updates,
        "optimizer": optimizer,
        "scaler": scaler,
        "weighting": weighting,
        "state": state,
        "rng": rng,
        "metrics": metrics or {},
    }


def deployable(
    config: dict[str, Any],
    model: dict[str, Any],
    state: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    version: int = CHECKPOINT_VERSION,
) -> dict[str, Any]:
    """A ``best.pt`` record: only what eval, export and compare read, with the EMA weights as
    ``model``. AdamW's two moments and the raw weights would make it 4x larger for nothing: a
    run resumes from ``last.pt``. ``version`` other than the current one is for tests of old
    files."""
    return {
        "format": FORMAT,
        "version": version,
        "config": config,
        "model": model,
        "weights": "ema",
        "state": state or {},
        "metrics": metrics or {},
    }


def check_resumable(ckpt: dict[str, Any], path: Path, config: dict[str, Any]) -> None:
    """Raise InputError unless ``ckpt`` (a ``last.pt`` at ``path``) can continue a run of
    ``config``: same format version and the same config up to the length of training."""
    if ckpt["version"] != CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: written by an older edge-mtl (checkpoint version "
            f"{ckpt['version']}) and cannot be resumed; start a new --out (its best.pt still "
            "evaluates and exports)"
        )
    was, now = _resume_key(ckpt["config"]), _resume_key(config)
    if was != now and {**was, "classify_order": 0} == {**now, "classify_order": 0}:
        raise InputError(
            f"{path}: was trained with the classify tasks in the order "
            f"{', '.join(was['classify_order'])}; list them in that order, or use a new --out"
        )
    if was != now:
        raise InputError(
            f"{path}: was trained with a different config; use a new --out or the same config"
        )


def _resume_key(config: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: everything but the length of training (more epochs or
    minutes may be asked for when continuing) and keys since retired, plus the order of the
    classification tasks (it orders the parameters, and so the optimizer's saved state)."""
    config = _without_retired(config)
    train = {k: v for k, v in config["train"].items() if k not in ("epochs", "time_limit_min")}
    order = list(config.get("model", {}).get("classify", {}))
    return {**config, "train": train, "classify_order": order}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint (tensors and plain data only: ``weights_only=True``)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a checkpoint file")
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"{p}: cannot read the checkpoint ({e.strerror or e})") from None
    if size == 0:
        raise InputError(f"{p}: not a readable checkpoint (the file is empty)")
    if not head.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        raise InputError(f"{p}: not a readable checkpoint ({_what_it_is(head)})")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"{p}: not a readable checkpoint (it holds objects other than tensors and plain "
            "data; refused, since loading them would run code)"
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... on a damaged archive
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{p}: not a readable checkpoint (damaged: {first[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise InputError(f"{p}: not an edge-mtl checkpoint")
    if ckpt.get("version") not in READABLE_VERSIONS:
        raise InputError(f"{p}: checkpoint version {ckpt.get('version')} is not supported")
    return ckpt


def _what_it_is(head: bytes) -> str:
    """A guess at what a file that is not a torch zip archive is, from its first bytes."""
    if head[:1] == b"\x08":
        return "it looks like an ONNX model; give the .pt checkpoint it was exported from"
    if head[:1] == b"\x80":
        return "a legacy pickle file; only zip checkpoints written by torch.save are read"
    return "not a torch.save zip archive"


# Config keys older versions wrote into checkpoints and this one no longer has (cache_images did
# nothing; channels_last is always on; det_object_balance lost its side-by-side run): dropped
# from an embedded config so old checkpoints still load and resume.
RETIRED_KEYS = {"data": ("cache_images",), "train": ("channels_last", "det_object_balance")}


def _without_retired(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    for section, keys in RETIRED_KEYS.items():
        if isinstance(config.get(section), dict):
            config[section] = {k: v for k, v in config[section].items() if k not in keys}
    return config


def config_of(ckpt: dict[str, Any], source: str) -> Config:
    """The checkpoint's embedded config, validated (keys since retired are dropped)."""
    return config_from_dict(_without_retired(ckpt["config"]), f"{source} (embedded config)")


def load_model(path: str | Path):
    """Rebuild the model of a checkpoint with its weights (EMA weights when present), in eval
    mode. Returns (model, config, checkpoint)."""
    from edge_mtl.model import MultiTaskModel

    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt, str(path))
    model = MultiTaskModel(cfg.model)
    state = ckpt.get("ema") or ckpt["model"]
    if ckpt["version"] == 1:
        state = upgrade_v1_state(state, len(cfg.model.strides))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # shapes or names differ: made by another version of the model
        detail = str(e).strip().splitlines()[-1].strip()
        raise InputError(
            f"{path}: weights do not fit this edge-mtl model ({detail[:160]})"
        ) from None
    return model.eval(), cfg, ckpt


def upgrade_v1_state(state: dict[str, Any], levels: int) -> dict[str, Any]:
    """A version-1 state dict in version-2 names: each detection-tower block's conv becomes
    ``convs.<i>`` and its one BatchNorm is copied to every level's ``norms.<level>.<i>``, so an
    old model computes exactly what it computed before."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        m = _OLD_TOWER.match(key)
        if m is None:
            out[key] = value
        elif m[3] == "0":
            out[f"{m[1]}.convs.{m[2]}.{m[4]}"] = value
        else:
            for level in range(levels):
                out[f"{m[1]}.norms.{level}.{m[2]}.{m[4]}"] = value.clone()
    return out
