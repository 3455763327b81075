"""A labelled set given by its path alone, in any format the training side reads, so ``eval``,
``bench --accuracy`` and ``quantize --eval`` take a folder without a config. Torch-free.

The layout tells the format (first match):

- a ``.json`` file: a list of frames (or a Scalabel ``{"frames": ...}``) is BDD100K (images in
  ``images/`` beside it or where BDD100K ships them, :mod:`edge_mtl.data.bdd_layout`), another
  object is COCO (images in ``images/`` beside it);
- a folder with ``labels.json``: BDD100K; with ``label_2/`` and ``image_2/``: KITTI;
- a BDD100K dataset root (``labels/`` with ``det_20/det_val.json``, ``bdd100k_labels_images_val
  .json`` or ``100k/val/``): its val labels, images in ``images/100k/val``;
- a folder with one ``.json`` file: COCO (images in the folder's ``images/``); with more:
  BDD100K's per-image label files;
- a folder of class folders (``ROOT/<class>/<image>``): the class-folder format, labelling the
  classification task whose class names the folder names match.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edge_mtl.config import SourceConfig, SourceKind
from edge_mtl.data.bdd import Record, read_bdd
from edge_mtl.data.bdd_layout import root_labels
from edge_mtl.data.bdd_masks import KINDS, MaskOptions
from edge_mtl.data.coco import read_coco
from edge_mtl.data.folder import read_folder
from edge_mtl.data.kitti import read_kitti
from edge_mtl.data.malformed import BadEntries
from edge_mtl.runtime.errors import InputError

LAYOUTS = (
    "a BDD100K folder (labels.json + images/), dataset root or label file, a COCO .json, "
    "a KITTI folder (label_2/ + image_2/) or class folders (<class>/<image>)"
)


def source_for(path: str | Path, classify: dict[str, tuple[str, ...]]) -> SourceConfig:
    """The data source ``path`` is, by its layout (see the module docstring); ``classify``
    (task -> class names) picks the task of a class-folder tree. InputError naming ``path``
    when it is missing or in no known layout."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: evaluation data not found")
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise InputError(f"{p}: not a label file; expected {LAYOUTS}")
        coco = _first_char(p) == "{" and '"frames"' not in _head(p)
        return SourceConfig(kind=SourceKind.COCO if coco else SourceKind.BDD100K, path=str(p))
    if (p / "labels.json").is_file():
        return SourceConfig(kind=SourceKind.BDD100K, path=str(p))
    bdd = root_labels(p) if (p / "labels").is_dir() else None
    if bdd is not None:
        return SourceConfig(kind=SourceKind.BDD100K, path=str(bdd))
    if (p / "label_2").is_dir() and (p / "image_2").is_dir():
        return SourceConfig(kind=SourceKind.KITTI, path=str(p))
    jsons = sorted(p.glob("*.json"))
    if len(jsons) == 1 and _first_char(jsons[0]) == "{":
        return SourceConfig(kind=SourceKind.COCO, path=str(jsons[0]), images=str(p / "images"))
    if len(jsons) > 1:
        return SourceConfig(kind=SourceKind.BDD100K, path=str(p))
    folders = {d.name.lower() for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")}
    hits = {t: len(folders & {c.lower() for c in names}) for t, names in classify.items()}
    task = max(hits, key=lambda t: hits[t], default=None)
    if task is not None and hits[task] > 0:
        return SourceConfig(kind=SourceKind.FOLDER, path=str(p), task=task)
    raise InputError(f"{p}: not a labelled set the model's tasks can read; expected {LAYOUTS}")


def read_source(
    s: SourceConfig,
    det_classes: tuple[str, ...],
    classify: dict[str, tuple[str, ...]],
    regress: tuple[str, ...],
    ignored: Counter | None = None,
    bad: BadEntries | None = None,
    mask_kinds: tuple[str, ...] = KINDS,
) -> tuple[list[Record], Counter]:
    """Records of one file-based source (not synthetic) and the categories mapping to no class;
    ``ignored`` counts categories dropped on purpose, ``bad`` collects skipped malformed entries
    (the training side's report; ``None``: not kept); ``mask_kinds``: the pixel label kinds to
    look for (a model's segment tasks; BDD100K-format sources only carry them)."""
    path = s.path or ""
    if s.kind == SourceKind.KITTI:
        return read_kitti(path, det_classes, s.categories, ignored, bad)
    if s.kind == SourceKind.COCO:
        return read_coco(path, det_classes, s.images, s.categories, ignored, bad)
    if s.kind == SourceKind.FOLDER:
        return read_folder(path, s.task or "", classify, s.categories, ignored, bad)
    masks = MaskOptions(mask_kinds, s.drivable, s.lanes, s.lane_width)
    return read_bdd(
        path, det_classes, classify, regress, bad, s.categories, ignored, s.images, masks
    )


def read_labelled(
    root: str | Path,
    det_classes: tuple[str, ...],
    classify: dict[str, tuple[str, ...]],
    regress: tuple[str, ...],
) -> tuple[list[Record], Counter]:
    """The records of the labelled set at ``root`` in whatever layout it has, read for the
    given tasks (the ``LabelReader`` of :mod:`edge_mtl.bench.accuracy`)."""
    return read_source(source_for(root, classify), det_classes, classify, regress)


def _head(path: Path) -> str:
    """The first 4 KiB of a text file, without a UTF-8 BOM and leading blanks (a COCO file can
    be hundreds of MB: the format is told without parsing it)."""
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()  # a UTF-8 BOM first
    return head.decode("utf-8", "replace")


def _first_char(path: Path) -> str:
    """The first non-blank character of a text file ("" when there is none)."""
    return _head(path)[:1]
