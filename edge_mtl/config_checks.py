"""Checks of one data source's config (``data.train[i]`` / ``data.val[i]``) against the model,
called from :func:`edge_mtl.config.validate`; here so the config module stays one idea."""

from __future__ import annotations

import math

from edge_mtl.config import IGNORE, ConfigError, ModelConfig, SourceConfig

# keys that only a BDD100K-format source reads: where its pixel labels are and how lanes draw
BDD_ONLY = ("drivable", "lanes")


def validate_source(where: str, s: SourceConfig, m: ModelConfig) -> None:
    """ConfigError, ``where`` first, for a source whose keys do not fit its kind or the model."""
    if s.kind != "synthetic" and not s.path:
        raise ConfigError(f"{where}: needs a path")
    if s.weight < 0:
        raise ConfigError(f"{where}: weight must be >= 0, got {s.weight}")
    if s.kind in ("kitti", "coco") and not m.detect:
        raise ConfigError(f"{where}: {s.kind} has only box labels, and model.detect is empty")
    if s.kind == "coco" and not str(s.path).lower().endswith(".json"):
        raise ConfigError(f"{where}: path must be the COCO JSON file, got {s.path!r}")
    if s.images is not None and s.kind not in ("coco", "bdd100k"):
        raise ConfigError(f"{where}: images is only for kinds coco and bdd100k")
    _validate_masks(where, s)
    if s.kind == "folder":
        if s.task not in m.classify:
            raise ConfigError(
                f"{where}: task must name a model.classify task {sorted(m.classify)}, "
                f"got {s.task!r}"
            )
        classes = m.classify[s.task]
    elif s.task is not None:
        raise ConfigError(f"{where}: task is only for kind folder")
    else:
        classes = m.detect
    known = {c.casefold() for c in classes}
    for name, target in s.categories.items():
        if target != IGNORE and target.casefold() not in known:
            raise ConfigError(
                f"{where}: categories.{name}: {target!r} is not a model class "
                f"({', '.join(classes)}) nor {IGNORE!r}"
            )


def _validate_masks(where: str, s: SourceConfig) -> None:
    """``drivable`` / ``lanes`` folders only for bdd100k; ``lane_width`` a positive number."""
    for key in BDD_ONLY:
        if getattr(s, key) is not None and s.kind != "bdd100k":
            raise ConfigError(f"{where}: {key} is only for kind bdd100k")
    if not (math.isfinite(s.lane_width) and s.lane_width > 0):
        raise ConfigError(f"{where}: lane_width must be a positive width in px, got {s.lane_width}")
