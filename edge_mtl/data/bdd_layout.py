"""BDD100K as it ships: where its images are, which label format a file is, its category names.

The dataset unpacks into ``bdd100k/images/100k/{train,val,test}/*.jpg`` and, over the years, has
published its box labels in three forms, all read as they are (the format is told by the content,
not the file name):

- the single-list JSON ``labels/bdd100k_labels_images_{train,val}.json`` (2018): a list of frames
  ``{name, attributes, labels: [{category, box2d: {x1, y1, x2, y2}}]}``;
- the detection JSON ``labels/det_20/det_{train,val}.json`` (2020): the same list of frames, where
  a frame without objects may have ``labels`` missing or ``null``; also the Scalabel object
  ``{"frames": [<those frames>], "config": ...}``;
- one JSON per image ``labels/100k/{train,val}/<id>.json``: ``{name, attributes, frames:
  [{objects: [{category, box2d}]}]}``, ``name`` without the ``.jpg``.

edge-mtl's own layout (``labels.json`` beside ``images/``, what ``synth`` writes) is the first
place looked in. Category names changed too (``person`` -> ``pedestrian``, ``motor`` ->
``motorcycle``, ``bike`` -> ``bicycle``): both spellings map (:func:`bdd_categories`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edge_mtl.data.malformed import EntryError
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import read_json

SPLITS = ("train", "val", "test")
ANCESTORS = 4  # how far above the label file the dataset root may be (labels/det_20/x.json: 3)
# Spellings of one class across BDD100K's releases; the first is the one a model names by default.
SYNONYMS = (("person", "pedestrian"), ("motorcycle", "motor"), ("bicycle", "bike"))
# Mapped to person unless the model has a class of the same name.
TO_PERSON = ("rider", "other person")


def bdd_categories(classes: Iterable[str]) -> dict[str, str]:
    """Default BDD100K category -> model class map for a model with ``classes``.

    Each spelling of :data:`SYNONYMS` maps to the one the model has (``pedestrian`` -> ``person``
    for a model with ``person``; ``motor`` -> ``motor`` for a model with ``motor``), else to the
    group's first name, which a model without it reports as unknown. ``rider`` and ``other
    person`` map to ``person`` unless the model has them as classes. Names a model class equals
    are never remapped."""
    have = {c.casefold(): c for c in classes}
    out: dict[str, str] = {}
    for group in SYNONYMS:
        target = next((have[n] for n in group if n in have), group[0])
        out.update({n: target for n in group if n not in have})
    if "person" in have:
        out.update({n: have["person"] for n in TO_PERSON if n not in have})
    return out


def split_of(path: Path) -> str | None:
    """The split (train/val/test) a label file or folder names: the last of its name's words
    (split at ``_ - .``) that is one; None when it names none."""
    words = [w for w in re.split(r"[_\-.]", path.name.lower()) if w in SPLITS]
    return words[-1] if words else None


def check_labels(label: Path) -> None:
    """InputError unless ``label`` is a file or a folder with .json files (per-image labels)."""
    if not label.exists():
        raise InputError(f"{label}: label file not found")
    if label.is_dir() and not any(label.glob("*.json")):
        raise InputError(
            f"{label}: no labels.json nor per-image .json label files; for a BDD100K root name "
            "its label file as path (e.g. labels/det_20/det_train.json)"
        )


def image_dir_for(label: Path, images: str | Path | None = None) -> Path:
    """The image folder of the label file or per-image label folder ``label``: ``images`` when
    given (it must exist), else the first existing of ``images/`` beside the label file, and
    ``A/images/100k/<split>`` for the folders ``A`` above it (split from the name). InputError,
    one line naming the label file, every place looked in and the ``images:`` key, when none
    exists."""
    if images is not None:
        if not Path(images).is_dir():
            raise InputError(f"{images}: images directory not found (for {label})")
        return Path(images)
    base = label if label.is_dir() else label.parent
    looked = [base / "images"]
    split = split_of(label)
    if split is not None:
        ups = [base, *base.parents][:ANCESTORS]
        looked += [a / "images" / "100k" / split for a in ups]
    for d in looked:
        if d.is_dir():
            return d
    raise InputError(
        f"{label}: images not found in {', '.join(str(d) for d in looked)}; "
        "name the folder with images: in the bdd100k source"
    )


def root_labels(root: Path, split: str = "val") -> Path | None:
    """The ``split`` labels of a BDD100K dataset root (a folder with ``labels/``), newest
    release first: ``labels/det_20/det_<split>.json``, ``labels/bdd100k_labels_images_<split>
    .json``, ``labels/100k/<split>/``; None when the root has none of them."""
    lab = root / "labels"
    for p in (
        lab / "det_20" / f"det_{split}.json",
        lab / f"bdd100k_labels_images_{split}.json",
        lab / "100k" / split,
    ):
        if p.exists():
            return p
    return None


def label_frames(label: Path) -> Iterator[tuple[Path, str, Any]]:
    """(file, entry, frame) for every frame of the label file or per-image folder ``label``,
    each frame in the single-list form ``{name, attributes, labels}``; ``entry`` names it in
    errors (``frame 3 (x.jpg)``). A per-image file that is not one becomes a frame raising
    EntryError (skippable); a label file that is not a list of frames is an InputError."""
    if label.is_dir():
        for f in sorted(label.glob("*.json")):
            yield f, f"frame 0 ({f.stem})", _PerImage(read_json(f, "label file"))
        return
    data = read_json(label, "label file")
    if isinstance(data, dict) and isinstance(data.get("frames"), list) and "name" not in data:
        data = data["frames"]  # Scalabel: {"frames": [...], "config": ...}
    elif isinstance(data, dict) and "frames" in data:
        data = [_PerImage(data)]
    if not isinstance(data, list):
        raise InputError(f"{label}: expected a list of frames")
    for i, fr in enumerate(data):
        name = fr.get("name") if isinstance(fr, dict) else None
        yield label, f"frame {i}" + (f" ({name})" if isinstance(name, str) else ""), fr


class _PerImage(dict):
    """A per-image label file seen as a single-list frame; what is wrong with it is raised as an
    EntryError when the frame is read (``labels`` of its one frame's ``objects``)."""

    def __init__(self, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
            super().__init__(problem="not a per-image label file {name, frames: [...]}")
            return
        frames = data["frames"]
        if len(frames) != 1 or not isinstance(frames[0], dict):
            super().__init__(problem=f"expected one frame, got {len(frames)}")
            return
        super().__init__(
            name=data.get("name"),
            attributes=data.get("attributes"),
            labels=frames[0].get("objects"),
        )

    def __getitem__(self, key: str) -> Any:
        if "problem" in self:
            raise EntryError(dict.__getitem__(self, "problem"))
        return super().__getitem__(key)


def image_name(name: str) -> str:
    """The image file of a frame ``name``: per-image files name it without ``.jpg``."""
    return name if Path(name).suffix else f"{name}.jpg"
