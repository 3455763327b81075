"""Pixel labels of a BDD100K-format source: where each image's drivable-area and lane labels are.

Looked for beside the label file, newest release first (``A`` is a folder above the label file,
``<split>`` the split its name gives, ``<stem>`` the image's name without extension):

- drivable-area PNGs (BDD100K values, :func:`edge_mtl.data.masks.from_bdd`): the folder named by
  the source's ``drivable`` key, else ``A/labels/drivable/masks/<split>/<stem>.png`` (2020),
  ``A/drivable_maps/labels/<split>/<stem>_drivable_id.png`` (2018), ``labels/drivable/masks/
  <stem>.png`` beside ``labels.json`` (edge-mtl's layout, what ``synth`` writes);
- lane PNGs: the ``lanes`` key, else ``A/labels/lane/masks/<split>/<stem>.png``, ``labels/lane/
  masks/<stem>.png`` beside ``labels.json``;
- lane polylines (drawn ``lane_width`` px wide): ``A/labels/lane/polygons/lane_<split>.json``
  (2020: one frame per image, labels of the lane categories) and ``poly2d`` labels of category
  ``lane`` (2018 single list) or a lane category in the label file itself; a lane PNG wins;
- drivable polygons: ``poly2d`` labels of category ``drivable area`` (2018, ``attributes.areaType``
  direct | alternative; direct when missing) or ``direct`` / ``alternative``, where no PNG is.

Each mask folder is looked up once per source and listed once, never stat-ed per image. A source
whose labels carry lane (drivable) polylines anywhere labels every frame: a frame without any
has no lanes (drivable area), an all-background mask. Frames with no label of a kind have no
entry in ``Record.masks`` (the task's loss is an exact zero for them).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mtl.data.bdd_layout import ANCESTORS, image_name, label_frames, split_of
from edge_mtl.data.headers import PNG_GRAY, image_hw, png_header
from edge_mtl.data.malformed import MALFORMED, BadEntries, EntryError
from edge_mtl.data.masks import LANE_WIDTH, MASK_CLASSES, MaskLabel
from edge_mtl.data.poly2d import shapes
from edge_mtl.runtime.errors import InputError

KINDS = tuple(MASK_CLASSES)  # label kinds: drivable, lanes
# BDD100K's lane categories (2020 lane JSON; the lane PNG's category bits 0..7, in this order)
LANE_CATEGORIES = (
    "crosswalk", "double other", "double white", "double yellow",
    "road curb", "single other", "single white", "single yellow",
)  # fmt: skip
DRIVABLE_CATEGORIES = {"direct": 1, "alternative": 2}  # category / areaType -> canonical class
PNG_SUFFIXES = ("_drivable_id",)  # a 2018 drivable PNG is <stem>_drivable_id.png
NOUNS = {"drivable": "drivable-area", "lanes": "lane"}


@dataclass(frozen=True)
class MaskOptions:
    """Which pixel labels a BDD100K-format source reads: ``kinds`` (label kinds, e.g. the
    model's segment tasks; others are not looked for), the ``drivable`` / ``lanes`` PNG folders
    that override the published layout, and the width (px at frame size) lane lines draw at."""

    kinds: tuple[str, ...] = KINDS
    drivable: str | Path | None = None
    lanes: str | Path | None = None
    lane_width: float = LANE_WIDTH


def png_dir_candidates(kind: str, label: Path) -> list[Path]:
    """Where the ``kind`` mask PNGs of label file (or per-image folder) ``label`` may be, in the
    order looked in (see the module docstring)."""
    base = label if label.is_dir() else label.parent
    sub = ("labels", "drivable", "masks") if kind == "drivable" else ("labels", "lane", "masks")
    split = split_of(label)
    out = []
    if split is not None:
        for a in [base, *base.parents][:ANCESTORS]:
            out.append(a.joinpath(*sub, split))
            if kind == "drivable":
                out.append(a / "drivable_maps" / "labels" / split)
    return [*out, base.joinpath(*sub)]


def list_pngs(folder: Path) -> dict[str, Path]:
    """Image stem -> mask PNG of one folder, listed once (``_drivable_id`` suffixes dropped)."""
    out = {}
    with os.scandir(folder) as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            if ext.lower() != ".png":
                continue
            for suffix in PNG_SUFFIXES:
                stem = stem.removesuffix(suffix)
            out[stem] = folder / e.name
    return out


class MaskFinder:
    """The pixel labels of one BDD100K-format source's frames (``label``: its label file or
    per-image folder). Construction looks up each PNG folder once and lists it, and reads the
    2020 lane polyline JSON when there is one (its bad frames go to ``bad``)."""

    def __init__(self, label: Path, opts: MaskOptions, bad: BadEntries) -> None:
        self.opts = opts
        self.pngs: dict[str, dict[str, Path]] = {}
        for kind in opts.kinds:
            folder = self._png_dir(kind, label, getattr(opts, kind, None))
            if folder is not None:
                self.pngs[kind] = list_pngs(folder)
        self.lane_lines: dict[str, list[np.ndarray]] = {}
        if "lanes" in opts.kinds:
            self._read_lane_json(label, bad)
        self.polylines: set[str] = set()  # kinds some frame labels with poly2d
        self._frames: list[dict[str, MaskLabel]] = []

    @staticmethod
    def _png_dir(kind: str, label: Path, explicit: str | Path | None) -> Path | None:
        if explicit is not None:
            if not Path(explicit).is_dir():
                raise InputError(f"{explicit}: {NOUNS[kind]} mask folder not found (for {label})")
            return Path(explicit)
        return next((d for d in png_dir_candidates(kind, label) if d.is_dir()), None)

    def _read_lane_json(self, label: Path, bad: BadEntries) -> None:
        split = split_of(label)
        if split is None:
            return
        base = label if label.is_dir() else label.parent
        for a in [base, *base.parents][:ANCESTORS]:
            path = a / "labels" / "lane" / "polygons" / f"lane_{split}.json"
            if path == label:
                return  # the label file itself: its lanes come with its frames
            if path.is_file():
                break
        else:
            return
        for file, entry, fr in label_frames(path):
            try:
                stem = Path(image_name(fr["name"])).stem
                self.lane_lines[stem] = frame_shapes(fr.get("labels") or [])[0]
            except MALFORMED as e:
                bad.add(file, entry, e)

    def masks(self, name: str, image: Path, objects: list) -> dict[str, MaskLabel]:
        """Label kind -> MaskLabel of the frame ``name`` (image file ``image``, label list
        ``objects``). EntryError when a poly2d label is malformed or a mask PNG is unreadable or
        of another size than the image, naming the PNG."""
        stem = Path(image_name(name)).stem
        kinds = self.opts.kinds
        lines, areas = frame_shapes(objects, kinds)
        self.polylines.update(k for k, v in (("lanes", lines), ("drivable", areas)) if v)
        out: dict[str, MaskLabel] = {}
        for kind, pngs in self.pngs.items():
            if stem in pngs:
                out[kind] = MaskLabel(kind, png=pngs[stem])
        self._check_sizes(out, image)
        if "lanes" in kinds and "lanes" not in out:
            drawn = self.lane_lines.get(stem, lines or None)  # the lane JSON labels its frames
            if drawn is not None:
                out["lanes"] = MaskLabel("lanes", lines=tuple(drawn), width=self.opts.lane_width)
        if "drivable" in kinds and "drivable" not in out and areas:
            out["drivable"] = MaskLabel("drivable", polygons=tuple(areas))
        self._frames.append(out)
        return out

    def finish(self) -> None:
        """Give the frames of a source that labels a kind by polylines an empty (all background)
        label of that kind where they have none: no polyline there means nothing to draw."""
        for kind in self.polylines & set(self.opts.kinds):
            for frame in self._frames:
                frame.setdefault(kind, MaskLabel(kind, width=self.opts.lane_width))

    @staticmethod
    def _check_sizes(found: dict[str, MaskLabel], image: Path) -> None:
        if not found:
            return
        hw = image_hw(image)
        for label in found.values():
            head = png_header(label.png)
            if head is None or head[2] != 8 or head[3] != PNG_GRAY:
                raise EntryError(f"{label.png}: not a readable 8-bit single-channel mask PNG")
            if hw is not None and head[:2] != hw:
                raise EntryError(
                    f"{label.png}: mask is {head[1]}x{head[0]}, its image {hw[1]}x{hw[0]}"
                )


def frame_shapes(
    objects: list, kinds: tuple[str, ...] = KINDS
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, int]]]:
    """(lane polylines, drivable polygons with their canonical class) of one frame's labels,
    each float64 (P, 2) frame pixels, for the label ``kinds`` asked for (the others stay empty
    and unparsed); EntryError when a poly2d label is malformed."""
    lines, areas = [], []
    for j, lab in enumerate(objects):
        if not isinstance(lab, dict) or "poly2d" not in lab:
            continue
        cat = lab.get("category")
        try:
            if "lanes" in kinds and (cat == "lane" or cat in LANE_CATEGORIES):
                lines += shapes(lab)
            elif "drivable" in kinds and (cat in DRIVABLE_CATEGORIES or cat == "drivable area"):
                attrs = lab.get("attributes") or {}
                cls = DRIVABLE_CATEGORIES.get(cat) or DRIVABLE_CATEGORIES.get(
                    attrs.get("areaType", "direct")
                )
                if cls is None:
                    raise EntryError(
                        f"areaType {attrs.get('areaType')!r} is not direct/alternative"
                    )
                areas += [(p, cls) for p in shapes(lab)]
        except EntryError as e:
            raise EntryError(f"labels[{j}] ({cat}): {e}") from None
    return lines, areas


def mask_counts(recs) -> str:
    """``, 2 with drivable-area labels, 1 with lane labels`` for a source's records (each kind
    some image has), "" when none has any: the report line's part on pixel labels."""
    counts = Counter(kind for r in recs for kind in r.masks)
    return "".join(f", {counts[k]} with {NOUNS[k]} labels" for k in KINDS if counts[k])
