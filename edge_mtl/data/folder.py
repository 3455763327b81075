"""Class-per-folder image trees for one classification task: ``ROOT/<class name>/<image>``.

Folder names match the task's class names case-insensitively; a source's ``categories`` maps
other folder names (``dusk`` -> ``dawn/dusk``: a class name with a slash cannot be a folder).
Such images carry a label for that one task only: no boxes, no other task's labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edge_mtl.data.bdd import Record
from edge_mtl.data.categories import CategoryMap
from edge_mtl.data.malformed import BadEntries, image_problem
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES


def read_folder(
    root: str | Path,
    task: str,
    classify: dict[str, tuple[str, ...]],
    categories: Mapping[str, str] | None = None,
    ignored: Counter | None = None,
    bad: BadEntries | None = None,
) -> tuple[list[Record], Counter]:
    """One Record per image file in ``root/<class>/`` (sorted by folder, then file name).

    ``classify`` is the model's task -> class names; records are labelled for ``task`` and -1
    for every other task, with ``has_boxes`` False. Images in folders that name no class of
    ``task`` are skipped and counted (per folder name) in the returned Counter; folders mapped to
    ``ignore`` are counted in ``ignored`` when given. An image file that is empty or a broken
    link goes to ``bad`` (an InputError naming it by default, else skipped and counted). Raises
    InputError naming the directory when it is missing or holds no images.
    """
    bad = bad if bad is not None else BadEntries()
    root = Path(root)
    if task not in classify:
        raise InputError(f"{root}: task {task!r} is not a classification task {sorted(classify)}")
    if not root.is_dir():
        raise InputError(f"{root}: class folder directory not found")
    cmap = CategoryMap(classify[task], overrides=categories)
    no_boxes = np.zeros((0, 4), np.float32)
    no_classes = np.zeros(0, np.int64)
    no_boxes.flags.writeable = no_classes.flags.writeable = False  # shared by all records
    records = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        files = sorted(  # broken links too: a missing image is reported, not passed over
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()
        )
        if not files:
            continue
        c = cmap.index(folder.name, count=len(files))
        if c is None:
            continue
        for f in files:
            problem = image_problem(f)
            if problem:
                bad.add(f, None, problem)
                continue
            labels = {t: (c if t == task else -1) for t in classify}
            records.append(Record(f, no_boxes, no_classes, labels, has_boxes=False))
    if not records and not cmap.unknown and not cmap.ignored and not bad.count:
        raise InputError(f"{root}: no images in class folders (expected {root}/<class>/*.jpg)")
    if ignored is not None:
        ignored.update(cmap.ignored)
    return records, cmap.unknown
