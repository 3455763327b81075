"""KITTI object labels: ``ROOT/label_2/<id>.txt`` with images ``ROOT/image_2/<id>.png``.

One object per line, 15 space-separated fields (a 16th, the score, in result files):
``type truncated occluded alpha left top right bottom height width length x y z rotation_y``.
Only the type and the 2D box (fields 4-7, frame pixels) are used; KITTI has no image attributes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_mtl.config import IGNORE
from edge_mtl.data.bdd import Record
from edge_mtl.data.categories import CategoryMap
from edge_mtl.data.malformed import BadEntries, EntryError, image_problem
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES

# KITTI type -> BDD100K-style model class. Misc is left unmapped on purpose: it is reported.
KITTI_CATEGORIES = {
    "Car": "car",
    "Van": "car",
    "Truck": "truck",
    "Pedestrian": "person",
    "Person_sitting": "person",
    "Cyclist": "rider",
    "Tram": "train",
    "DontCare": IGNORE,  # regions KITTI leaves unlabelled; not objects
}
FIELDS = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom")
FIELDS += ("height", "width", "length", "x", "y", "z", "rotation_y")


def read_kitti(
    root: str | Path,
    det_classes: tuple[str, ...],
    categories: Mapping[str, str] | None = None,
    ignored: Counter | None = None,
    bad: BadEntries | None = None,
) -> tuple[list[Record], Counter]:
    """Parse every ``label_2/*.txt`` under ``root`` (sorted by name) into one Record each.

    Boxes of types that map to no class in ``det_classes`` are skipped and counted in the
    returned Counter; types mapped to ``ignore`` (DontCare by default) are added to ``ignored``
    when given. Malformed entries go to ``bad`` (an InputError naming the file and line by
    default, else skipped and counted): a line with the wrong number of fields, a field that is
    not a number or a degenerate box (the whole image is dropped, so the object is not learnt as
    background; types are tallied only for images kept), a label file that is not text or whose
    image is missing or empty (that image). A missing directory or no label files is always an
    InputError.
    """
    bad = bad if bad is not None else BadEntries()
    root = Path(root)
    label_dir, image_dir = root / "label_2", root / "image_2"
    for d in (label_dir, image_dir):
        if not d.is_dir():
            raise InputError(f"{d}: directory not found (KITTI layout: label_2/*.txt, image_2/)")
    images = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    label_files = sorted(label_dir.glob("*.txt"))
    if not label_files:
        raise InputError(f"{label_dir}: no label files (*.txt)")
    cmap = CategoryMap(det_classes, KITTI_CATEGORIES, categories)
    records = []
    for lf in label_files:
        if lf.stem not in images:
            bad.add(lf, None, f"no image {lf.stem}.png in {image_dir}")
            continue
        problem = image_problem(images[lf.stem])
        if problem:
            bad.add(images[lf.stem], None, problem)
            continue
        try:
            lines = lf.read_text().splitlines()
        except UnicodeDecodeError:
            bad.add(lf, None, "not a text file")
            continue
        objects = _read_lines(lf, lines, images[lf.stem], cmap, bad)
        if objects is None:
            continue
        boxes, classes, unmapped = objects
        cmap.tally(unmapped)
        records.append(
            Record(
                image=images[lf.stem],
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                classes=np.asarray(classes, np.int64),
            )
        )
    if ignored is not None:
        ignored.update(cmap.ignored)
    return records, cmap.unknown


def _read_lines(
    path: Path, lines: list[str], image: Path, cmap: CategoryMap, bad: BadEntries
) -> tuple[list[list[float]], list[int], Counter] | None:
    """Boxes, classes and the types mapped to no class (for the caller to tally) of one label
    file; None when a line is malformed (each bad line goes to ``bad`` as an object of
    ``image``, and the caller drops the image)."""
    boxes, classes, unmapped = [], [], Counter()
    ok = True
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            box = _line_box(fields)
        except EntryError as e:
            bad.add(path, n, e, image=image)
            ok = False
            continue
        c = cmap.index(fields[0], count=0)
        if c is None:
            unmapped[fields[0]] += 1
            continue
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            bad.add(path, n, f"degenerate box {box} (left top right bottom)", image=image)
            ok = False
            continue
        boxes.append(box)
        classes.append(c)
    return (boxes, classes, unmapped) if ok else None


def _line_box(fields: list[str]) -> list[float]:
    """The 2D box (left, top, right, bottom) of one label line; every numeric field must parse."""
    if len(fields) not in (15, 16):
        raise EntryError(f"expected 15 fields ({' '.join(FIELDS)}), got {len(fields)}")
    values = []
    for name, text in zip(FIELDS[1:], fields[1:15]):
        try:
            values.append(float(text))
        except ValueError:
            raise EntryError(f"{name} is not a number: {text!r}") from None
    return values[3:7]
