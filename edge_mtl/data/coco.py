"""COCO detection JSON: ``{"images": [...], "annotations": [...], "categories": [...]}``.

An image: ``{"id", "file_name", "width", "height"}`` (``file_name`` relative to the images
directory); an annotation: ``{"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"}``
with the box in frame pixels, top-left corner plus size; a category: ``{"id", "name"}``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_mtl.data.bdd import Record
from edge_mtl.data.categories import CategoryMap
from runtime.errors import InputError
from runtime.files import read_json

# COCO name -> BDD100K-style model class, where the names differ; the rest (car, truck, bus,
# person, traffic light, train) match as they are, and animals or furniture are reported.
COCO_CATEGORIES = {
    "stop sign": "traffic sign",
    "bicycle": "bike",
    "motorcycle": "motor",
}
CROWD = "iscrowd"  # key in ``ignored`` for crowd annotations (one box over many objects)
EMPTY = "empty box"  # key in ``ignored`` for zero-width or zero-height boxes


def read_coco(
    json_path: str | Path,
    det_classes: tuple[str, ...],
    images: str | Path | None = None,
    categories: Mapping[str, str] | None = None,
    ignored: Counter | None = None,
) -> tuple[list[Record], Counter]:
    """Parse a COCO detection file into one Record per image (in file order).

    ``images`` is the directory the ``file_name`` entries are relative to (default: ``images/``
    beside the JSON file). Crowd annotations and zero-size boxes are skipped and, like
    categories mapped to ``ignore``, counted in ``ignored`` when given; categories that map to
    no class in ``det_classes`` are counted in the returned Counter. A box slightly past the
    image edge is clipped to it. Raises InputError naming the file and the entry.
    """
    json_path = Path(json_path)
    image_dir = Path(images) if images is not None else json_path.parent / "images"
    data = read_json(json_path, "COCO annotation file")
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: images directory not found (for {json_path})")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{json_path}: expected a COCO object with an 'images' list")
    cat_names = _category_names(json_path, data.get("categories"))
    frames: dict[int, tuple[str, float, float]] = {}
    for i, im in enumerate(data["images"]):
        try:
            frames[im["id"]] = (im["file_name"], float(im["width"]), float(im["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{json_path}: images[{i}]: malformed entry ({e!r})") from None
    if len(frames) != len(data["images"]):
        raise InputError(f"{json_path}: images: duplicate image ids")

    cmap = CategoryMap(det_classes, COCO_CATEGORIES, categories)
    skipped: Counter = Counter()
    boxes: dict[int, list[list[float]]] = {k: [] for k in frames}
    classes: dict[int, list[int]] = {k: [] for k in frames}
    for i, ann in enumerate(data.get("annotations") or []):
        where = f"{json_path}: annotations[{i}]"
        try:
            where += f" (id {ann.get('id')})"
            image_id, cat_id = ann["image_id"], ann["category_id"]
            if image_id not in frames:
                raise InputError(f"{where}: image_id {image_id!r} is not in images")
            if cat_id not in cat_names:
                raise InputError(f"{where}: category_id {cat_id!r} is not in categories")
            if ann.get("iscrowd", 0):
                skipped[CROWD] += 1
                continue
            c = cmap.index(cat_names[cat_id])
            if c is None:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{where}: malformed entry ({e!r})") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            raise InputError(f"{where}: invalid bbox {[x, y, w, h]} (x y width height)")
        name, fw, fh = frames[image_id]
        box = [max(x, 0.0), max(y, 0.0), min(x + w, fw), min(y + h, fh)]
        if w == 0 or h == 0:
            skipped[EMPTY] += 1
            continue
        if box[2] <= box[0] or box[3] <= box[1]:
            raise InputError(
                f"{where}: bbox {[x, y, w, h]} lies outside the {fw:g}x{fh:g} image {name}"
            )
        boxes[image_id].append(box)
        classes[image_id].append(c)

    records = [
        Record(
            image=image_dir / name,
            boxes=np.asarray(boxes[k], np.float32).reshape(-1, 4),
            classes=np.asarray(classes[k], np.int64),
        )
        for k, (name, _, _) in frames.items()
    ]
    if ignored is not None:
        ignored.update(cmap.ignored)
        ignored.update(skipped)
    return records, cmap.unknown


def _category_names(json_path: Path, cats) -> dict[int, str]:
    if not isinstance(cats, list):
        raise InputError(f"{json_path}: expected a 'categories' list")
    names = {}
    for i, c in enumerate(cats):
        try:
            names[c["id"]] = str(c["name"])
        except (KeyError, TypeError) as e:
            raise InputError(f"{json_path}: categories[{i}]: malformed entry ({e!r})") from None
    return names
