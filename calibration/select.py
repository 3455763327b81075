"""Which images calibrate an INT8 model: a deterministic, condition-balanced subset.

Activation ranges are set by the images the calibrator sees. A subset drawn only from sunny
daytime scenes clips the dark, low-contrast activations of night and fog, so when the data has
BDD100K-style labels (``DIR/labels.json`` + ``DIR/images/``) the subset is stratified by
(timeofday, weather): every condition present gets at least one image (when ``size`` allows),
the rest are shared in proportion to how common each condition is. A plain folder of images is
sampled uniformly. The same data, size and seed always give the same subset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES, read_json

DEFAULT_SIZE = 300
STRATUM_KEYS = ("timeofday", "weather")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Selection:
    """The chosen images (sorted paths) and a JSON-ready ``summary``: ``source`` ("labels" or
    "folder"), ``path``, ``size`` (images chosen), ``available`` (readable images found),
    ``seed``, and ``strata`` (``"timeofday/weather"`` -> images chosen; labelled data only)."""

    paths: tuple[Path, ...]
    summary: dict[str, Any] = field(default_factory=dict)


def select_calibration(data: str | Path, size: int = DEFAULT_SIZE, seed: int = 0) -> Selection:
    """Pick up to ``size`` calibration images from ``data``.

    ``data``: a folder with ``labels.json`` (BDD format; stratified), the ``labels.json`` itself,
    or any folder of images (searched recursively; uniform sample). Only files OpenCV can decode
    by their header count. Raises :class:`InputError` when nothing readable is found.
    """
    if size < 1:
        raise InputError(f"--calib-size {size}: must be at least 1")
    root = Path(data)
    labels = root / "labels.json" if root.is_dir() else root
    if labels.name == "labels.json" and labels.is_file():
        return _from_labels(labels, size, seed)
    if not root.is_dir():
        raise InputError(f"{root}: calibration data not found (expected a folder of images)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise InputError(f"{root}: cannot read the calibration folder (permission denied)")
    paths = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and _readable(p)
    )
    if not paths:
        raise InputError(f"{root}: no readable images for calibration")
    rng = np.random.default_rng(seed)
    chosen = sorted(paths[i] for i in rng.permutation(len(paths))[:size])
    summary = {
        "source": "folder",
        "path": str(root),
        "size": len(chosen),
        "available": len(paths),
        "seed": seed,
    }
    return Selection(tuple(chosen), summary)


def _from_labels(labels: Path, size: int, seed: int) -> Selection:
    frames = read_json(labels, "label file")
    if not isinstance(frames, list):
        raise InputError(f"{labels}: expected a list of frames")
    image_dir = labels.parent / "images"
    strata: dict[str, list[Path]] = {}
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or not isinstance(fr.get("name"), str):
            raise InputError(f"{labels}: frame {i} has no image 'name'")
        path = image_dir / fr["name"]
        if not _readable(path):
            continue
        attrs = fr.get("attributes") or {}
        key = "/".join(str(attrs.get(k) or UNKNOWN) for k in STRATUM_KEYS)
        strata.setdefault(key, []).append(path)
    available = sum(len(v) for v in strata.values())
    if not available:
        raise InputError(f"{labels}: no readable images for calibration under {image_dir}")
    quota = allocate({k: len(v) for k, v in strata.items()}, size)
    rng = np.random.default_rng(seed)
    chosen: list[Path] = []
    for key in sorted(strata):  # sorted: the rng draws in the same order on every run
        members = strata[key]
        chosen += [members[i] for i in rng.permutation(len(members))[: quota[key]]]
    summary = {
        "source": "labels",
        "path": str(labels.parent),
        "size": len(chosen),
        "available": available,
        "seed": seed,
        "stratified_by": list(STRATUM_KEYS),
        "strata": {k: quota[k] for k in sorted(quota) if quota[k]},
    }
    return Selection(tuple(sorted(chosen)), summary)


def allocate(counts: dict[str, int], size: int) -> dict[str, int]:
    """Share ``size`` picks among strata with ``counts`` members: one each first (largest strata
    first when ``size`` is smaller than the number of strata), the rest in proportion to the
    members left, by largest remainder. Never more than a stratum has; ties break by name."""
    total = sum(counts.values())
    if size >= total:
        return dict(counts)
    order = sorted(counts, key=lambda k: (-counts[k], k))
    quota = {k: 0 for k in counts}
    for k in order[:size]:
        quota[k] = 1
    left = size - sum(quota.values())
    if left <= 0:
        return quota
    room = {k: counts[k] - quota[k] for k in counts}
    pool = sum(room.values())
    exact = {k: left * room[k] / pool for k in counts}
    for k in counts:
        quota[k] += int(exact[k])
    short = size - sum(quota.values())
    by_remainder = sorted(counts, key=lambda k: (-(exact[k] - int(exact[k])), k))
    for k in by_remainder:
        if short == 0:
            break
        if quota[k] < counts[k]:
            quota[k] += 1
            short -= 1
    return quota


def _readable(path: Path) -> bool:
    """True when ``path`` is a file whose header OpenCV recognises (no full decode)."""
    return path.is_file() and cv2.haveImageReader(str(path))
