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
from runtime.errors import InputError

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
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FIELDS = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom")
FIELDS += ("height", "width", "length", "x", "y", "z", "rotation_y")


def read_kitti(
    root: str | Path,
    det_classes: tuple[str, ...],
    categories: Mapping[str, str] | None = None,
    ignored: Counter | None = None,
) -> tuple[list[Record], Counter]:
    """Parse every ``label_2/*.txt`` under ``root`` (sorted by name) into one Record each.

    Boxes of types that map to no class in ``det_classes`` are skipped and counted in the
    returned Counter; types mapped to ``ignore`` (DontCare by default) are added to ``ignored``
    when given. Raises InputError naming the file (and line) for a missing directory or image,
    a malformed line or a degenerate box.
    """
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
            raise InputError(f"{lf}: no image {lf.stem}.png in {image_dir}")
        boxes, classes = _read_label_file(lf, cmap)
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


def _read_label_file(path: Path, cmap: CategoryMap) -> tuple[list[list[float]], list[int]]:
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    boxes, classes = [], []
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{n}"
        if len(fields) not in (15, 16):
            raise InputError(f"{where}: expected 15 fields ({' '.join(FIELDS)}), got {len(fields)}")
        values = []
        for name, text in zip(FIELDS[1:], fields[1:15]):
            try:
                values.append(float(text))
            except ValueError:
                raise InputError(f"{where}: {name} is not a number: {text!r}") from None
        c = cmap.index(fields[0])
        if c is None:
            continue
        box = values[3:7]  # left, top, right, bottom
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise InputError(f"{where}: degenerate box {box} (left top right bottom)")
        boxes.append(box)
        classes.append(c)
    return boxes, classes
