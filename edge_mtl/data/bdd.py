"""BDD100K-format labels: the synthetic generator writes them, the loader reads them.

edge-mtl's layout: ``DIR/labels.json`` (a list of frames) and images under ``DIR/images/``;
BDD100K's own layouts and label files are read as they ship (:mod:`edge_mtl.data.bdd_layout`).
A frame:
``{"name": "000001.jpg", "attributes": {"weather": ..., "scene": ..., "timeofday": ...},
"labels": [{"id": 0, "category": "car", "box2d": {"x1":..,"y1":..,"x2":..,"y2":..}}]}``.
Numeric attributes (``curvature``) are regression targets; BDD's own files have none.
Pixel labels (drivable-area and lane masks, ``poly2d`` lanes) are found beside the labels by
:mod:`edge_mtl.data.bdd_masks` and travel in ``Record.masks``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mtl.data.bdd_layout import (
    bdd_categories,
    check_labels,
    image_dir_for,
    image_name,
    label_frames,
)
from edge_mtl.data.bdd_masks import MaskFinder, MaskOptions
from edge_mtl.data.categories import CategoryMap
from edge_mtl.data.malformed import MALFORMED, BadEntries, EntryError, image_problem
from edge_mtl.data.masks import MaskLabel


@dataclass(frozen=True)
class Record:
    """One labelled image. ``boxes`` float32 (K, 4) xyxy frame pixels; ``classes`` int64 (K,)
    model class indices; ``labels`` task -> class index (classification, -1 = unlabelled);
    ``targets`` task -> float (regression, NaN = unlabelled); ``has_boxes`` False when the source
    has no box labels at all (no detection loss, not "no objects"); ``source`` the source's name;
    ``masks`` its pixel labels (:mod:`edge_mtl.data.masks`)."""

    image: Path
    boxes: np.ndarray
    classes: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    has_boxes: bool = True
    source: str = ""
    # pixel labels by label kind (``drivable``, ``lanes``): where to read them, none when the
    # source has no such label for this image
    masks: dict[str, MaskLabel] = field(default_factory=dict)


def frame_entry(name: str, boxes, classes, class_names, attributes: dict[str, Any]) -> dict:
    labels = [
        {
            "id": i,
            "category": class_names[int(c)],
            "box2d": {k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), b)},
        }
        for i, (b, c) in enumerate(zip(boxes, classes))
    ]
    return {"name": name, "attributes": attributes, "labels": labels}


def read_bdd(
    root: str | Path,
    det_classes: tuple[str, ...],
    classify: dict[str, tuple[str, ...]],
    regress: tuple[str, ...],
    bad: BadEntries | None = None,
    categories: Mapping[str, str] | None = None,
    ignored: Counter | None = None,
    images: str | Path | None = None,
    masks: MaskOptions | None = None,
) -> tuple[list[Record], Counter]:
    """Parse ``root/labels.json``, the label file ``root`` or the folder ``root`` of per-image
    label files into one Record per frame, with images in ``images`` (default: found where the
    dataset publishes them, :func:`~edge_mtl.data.bdd_layout.image_dir_for`).

    Returns the records and a Counter of categories that map to no class in ``det_classes``
    (reported, never silently dropped); BDD100K's names map by default (``pedestrian`` ->
    ``person``, :func:`~edge_mtl.data.bdd_layout.bdd_categories`); ``categories`` maps other
    names onto model classes, and those mapped to ``ignore`` are counted in ``ignored`` when
    given. Categories are counted only for frames that are kept. Malformed entries go to ``bad`` (an
    InputError naming the file and the frame by default, else skipped and counted): a frame with a
    missing key or whose image file is missing or empty, and a label with a missing key or a
    degenerate or non-finite box. Either way the whole frame is skipped: kept without a bad label,
    the object's pixels would train as background. A label file that is missing or not a JSON list
    of frames is always an InputError.

    Each record's ``masks`` holds the pixel labels of ``masks.kinds`` its image has (default
    every kind, found where the dataset publishes them: :mod:`edge_mtl.data.bdd_masks`); a
    malformed ``poly2d`` label or a mask PNG that is unreadable or of another size than its image
    is a bad entry of its frame, the message naming the PNG."""
    bad = bad if bad is not None else BadEntries()
    root = Path(root)
    label = root / "labels.json" if (root / "labels.json").is_file() else root
    check_labels(label)
    image_dir = image_dir_for(label, images)
    cmap = CategoryMap(det_classes, bdd_categories(det_classes), categories)
    finder = MaskFinder(label, masks or MaskOptions(), bad)
    records = []
    for label_file, entry, fr in label_frames(label):
        try:
            image, objects, labels, targets = _frame(fr, image_dir, classify, regress)
        except MALFORMED as e:
            bad.add(label_file, entry, e)
            continue
        kept = _read_labels(label_file, entry, objects, image, cmap, bad)
        if kept is None:
            continue
        boxes, classes, unmapped = kept
        try:
            pixels = finder.masks(fr["name"], image, objects)
        except EntryError as e:
            bad.add(label_file, entry, e)
            continue
        cmap.tally(unmapped)
        records.append(
            Record(
                image=image,
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                classes=np.asarray(classes, np.int64),
                labels=labels,
                targets=targets,
                masks=pixels,
            )
        )
    finder.finish()
    if ignored is not None:
        ignored.update(cmap.ignored)
    return records, cmap.unknown


def _frame(
    fr: dict,
    image_dir: Path,
    classify: dict[str, tuple[str, ...]],
    regress: tuple[str, ...],
) -> tuple[Path, list, dict[str, int], dict[str, float]]:
    """(image path, the frame's label list, classification labels, regression targets) of one
    frame whose image file looks usable."""
    name = fr["name"]
    if not isinstance(name, str):
        raise EntryError(f"name {name!r} is not a string")
    attrs = fr.get("attributes") or {}
    objects = fr.get("labels") or []
    if not isinstance(objects, list):
        raise EntryError(f"labels is a {type(objects).__name__}, not a list")
    labels = {
        t: (names.index(attrs[t]) if attrs.get(t) in names else -1) for t, names in classify.items()
    }
    targets = {}
    for t in regress:
        v = attrs.get(t)
        targets[t] = float(v) if isinstance(v, (int, float)) else float("nan")
    name = image_name(name)
    image = image_dir / name
    problem = image_problem(image)
    if problem:
        raise EntryError(f"{problem} ({image_dir.name}/{name})")
    return image, objects, labels, targets


def _read_labels(
    label_file: Path, entry: str, objects: list, image: Path, cmap: CategoryMap, bad: BadEntries
) -> tuple[list[list[float]], list[int], Counter] | None:
    """Boxes (xyxy frame pixels), classes and the categories mapped to no class (for the caller
    to tally) of one frame's labels; None when a label is malformed (each bad label goes to
    ``bad`` as an object of ``image``, and the caller drops the frame)."""
    boxes, classes, unmapped = [], [], Counter()
    ok = True
    for j, lab in enumerate(objects):
        try:
            if "box2d" not in lab:
                continue  # lane / drivable-area polygons
            cat = lab["category"]
            c = cmap.index(cat, count=0)
            if c is None:
                unmapped[cat] += 1
                continue
            b = lab["box2d"]
            box = [float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])]
            if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
                raise EntryError(f"degenerate box {box}")
        except MALFORMED as e:
            bad.add(label_file, f"{entry}, labels[{j}]", e, image=image)
            ok = False
            continue
        boxes.append(box)
        classes.append(c)
    return (boxes, classes, unmapped) if ok else None
