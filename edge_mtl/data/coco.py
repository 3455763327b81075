"""COCO detection JSON: ``{"images": [...], "annotations": [...], "categories": [...]}``.

An image: ``{"id", "file_name", "width", "height"}`` (``file_name`` relative to the images
directory); an annotation: ``{"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"}``
with the box in frame pixels, top-left corner plus size; a category: ``{"id", "name"}``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_mtl.data.bdd import Record
from edge_mtl.data.categories import CategoryMap
from edge_mtl.data.malformed import MALFORMED, BadEntries, EntryError, image_problem
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import read_json

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
    bad: BadEntries | None = None,
) -> tuple[list[Record], Counter]:
    """Parse a COCO detection file into one Record per image (in file order).

    ``images`` is the directory the ``file_name`` entries are relative to (default: ``images/``
    beside the JSON file). Crowd annotations and zero-size boxes are skipped and, like
    categories mapped to ``ignore``, counted in ``ignored`` when given; categories that map to
    no class in ``det_classes`` are counted in the returned Counter. A box partly past the image
    edge is clipped to it. Malformed entries go to ``bad`` (an InputError naming the file and
    the entry by default, else skipped and counted): an image entry with missing fields or whose
    file is missing or empty (the image and its annotations are skipped), an annotation with an
    unknown image or category id, an invalid box or one wholly outside its image (the whole
    image it belongs to is dropped, so the object is not learnt as background). What is counted
    in ``ignored`` or the returned Counter comes from kept images only. Bad JSON, a missing
    images directory, a malformed ``categories`` list and duplicate image ids are always an
    InputError.
    """
    bad = bad if bad is not None else BadEntries()
    json_path = Path(json_path)
    image_dir = Path(images) if images is not None else json_path.parent / "images"
    data = read_json(json_path, "COCO annotation file")
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: images directory not found (for {json_path})")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{json_path}: expected a COCO object with an 'images' list")
    cat_names = _category_names(json_path, data.get("categories"))
    frames: dict[int, tuple[str, float, float]] = {}
    dropped: set[int] = set()  # ids of bad image entries: their annotations go with them
    for i, im in enumerate(data["images"]):
        image_id = im.get("id") if isinstance(im, dict) else None
        entry = f"images[{i}]" + (f" (id {image_id})" if isinstance(im, dict) else "")
        if isinstance(image_id, Hashable) and (image_id in frames or image_id in dropped):
            raise InputError(f"{json_path}: {entry}: duplicate image id")
        try:
            frames[im["id"]] = _image_entry(im, image_dir)
        except MALFORMED as e:
            bad.add(json_path, entry, e)
            if image_id is not None and isinstance(image_id, Hashable):
                dropped.add(image_id)

    cmap = CategoryMap(det_classes, COCO_CATEGORIES, categories)
    objects = {k: _Objects() for k in frames}
    spoilt: set[int] = set()  # ids of images with a malformed annotation: dropped whole
    for i, ann in enumerate(data.get("annotations") or []):
        entry = f"annotations[{i}]" + (f" (id {ann.get('id')})" if isinstance(ann, dict) else "")
        try:
            _annotation(ann, frames, dropped, cat_names, cmap, objects)
        except MALFORMED as e:
            owner = ann.get("image_id") if isinstance(ann, dict) else None
            if isinstance(owner, Hashable) and owner in frames:
                bad.add(json_path, entry, e, image=image_dir / frames[owner][0])
                spoilt.add(owner)
            else:
                bad.add(json_path, entry, e)

    records = []
    skipped: Counter = Counter()
    for k, (name, _, _) in frames.items():
        if k in spoilt:
            continue
        obj = objects[k]
        cmap.tally(obj.unmapped)
        skipped.update(obj.skipped)
        records.append(
            Record(
                image=image_dir / name,
                boxes=np.asarray(obj.boxes, np.float32).reshape(-1, 4),
                classes=np.asarray(obj.classes, np.int64),
            )
        )
    if ignored is not None:
        ignored.update(cmap.ignored)
        ignored.update(skipped)
    return records, cmap.unknown


def _image_entry(im: dict, image_dir: Path) -> tuple[str, float, float]:
    """(file_name, width, height) of one ``images`` entry whose file exists."""
    name, fw, fh = im["file_name"], float(im["width"]), float(im["height"])
    if not isinstance(name, str):
        raise EntryError(f"file_name {name!r} is not a string")
    if not (fw > 0 and fh > 0 and math.isfinite(fw * fh)):
        raise EntryError(f"width and height must be positive, got {fw:g}x{fh:g}")
    problem = image_problem(image_dir / name)
    if problem:
        raise EntryError(f"{problem} ({image_dir / name})")
    return name, fw, fh


@dataclass
class _Objects:
    """The annotations of one image: boxes kept, and those set aside on purpose (tallied only
    if the image is kept)."""

    boxes: list[list[float]] = field(default_factory=list)  # xyxy frame pixels
    classes: list[int] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # category name -> annotations
    skipped: Counter = field(default_factory=Counter)  # CROWD / EMPTY -> annotations


def _annotation(
    ann: dict,
    frames: dict[int, tuple[str, float, float]],
    dropped: set[int],
    cat_names: dict[int, str],
    cmap: CategoryMap,
    objects: dict[int, _Objects],
) -> None:
    """Add one annotation to its image's ``objects``: its box clipped to the image, or what set
    it aside (crowd, zero size, unmapped category). Nothing for an image skipped as bad."""
    image_id, cat_id = ann["image_id"], ann["category_id"]
    if image_id in dropped:
        return
    if image_id not in frames:
        raise EntryError(f"image_id {image_id!r} is not in images")
    if cat_id not in cat_names:
        raise EntryError(f"category_id {cat_id!r} is not in categories")
    obj = objects[image_id]
    if ann.get("iscrowd", 0):
        obj.skipped[CROWD] += 1
        return
    c = cmap.index(cat_names[cat_id], count=0)
    if c is None:
        obj.unmapped[cat_names[cat_id]] += 1
        return
    x, y, w, h = (float(v) for v in ann["bbox"])
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise EntryError(f"invalid bbox {[x, y, w, h]} (x y width height)")
    if w == 0 or h == 0:
        obj.skipped[EMPTY] += 1
        return
    name, fw, fh = frames[image_id]
    box = [max(x, 0.0), max(y, 0.0), min(x + w, fw), min(y + h, fh)]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise EntryError(f"bbox {[x, y, w, h]} lies outside the {fw:g}x{fh:g} image {name}")
    obj.boxes.append(box)
    obj.classes.append(c)


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
