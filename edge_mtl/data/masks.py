"""Pixel labels: drivable area and lane markings, as loaders find them and the model learns them.

Every source speaks in *canonical* classes per label kind (:data:`MASK_CLASSES`): drivable area
``0 background, 1 direct, 2 alternative`` and lanes ``0 background, 1 lane``; a segment task of the
model config takes a subset of these names (background first) and :func:`to_task` maps canonical
values onto its class indices. :data:`IGNORE` (255) marks pixels with no label (letterbox padding,
unlabelled parts) that no loss or metric counts.

On disk, masks follow BDD100K's own conventions (``labels/drivable/masks/<split>/<id>.png`` with
``0 direct, 1 alternative, 2 background``; ``labels/lane/masks/<split>/<id>.png`` with 255 for
background and ``category + (style << 4) + (direction << 5)`` on lane pixels, category 8 meaning
background), and lane labels may also be ``poly2d`` polylines rasterised at a chosen width.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.preprocess import Letterbox

IGNORE = 255
MASK_CLASSES: dict[str, tuple[str, ...]] = {
    "drivable": ("background", "direct", "alternative"),
    "lanes": ("background", "lane"),
}
LANE_WIDTH = 8.0  # px at the label's frame size: how wide poly2d lane lines are drawn (YOLOP: 8)

# BDD100K drivable PNG value -> canonical class (0 direct, 1 alternative, 2 background)
_DRIVABLE_FROM_BDD = np.full(256, IGNORE, np.uint8)
_DRIVABLE_FROM_BDD[[0, 1, 2]] = [1, 2, 0]
_DRIVABLE_TO_BDD = np.array([2, 0, 1], np.uint8)
# BDD100K lane PNG value -> canonical: 255 and category 8 (bits 0-3) are background
_LANES_FROM_BDD = np.where((np.arange(256) & 15) < 8, 1, 0).astype(np.uint8)
_LANES_FROM_BDD[255] = 0
LANE_SINGLE_WHITE = 6  # BDD100K lane category of the synthetic markings
LANE_DASHED = 1 << 4  # BDD100K lane style bit: dashed (0 = solid)


def segment_problem(task: str, classes: tuple[str, ...]) -> str | None:
    """What is wrong with segment task ``task`` of ``classes`` (None when fine): its name must
    be a label kind the loaders read, its classes that kind's, background first."""
    known = MASK_CLASSES.get(task)
    if known is None:
        return f"no dataset labels such a task; segment tasks are {', '.join(MASK_CLASSES)}"
    if len(classes) < 2 or classes[0] != known[0] or not set(classes) <= set(known):
        want = f"{known[0]!r} first, then some of {', '.join(known[1:])}"
        return f"expected {want}; got {list(classes)}"
    return None


def drivable_to_bdd(mask: np.ndarray) -> np.ndarray:
    """Canonical drivable mask (0 bg, 1 direct, 2 alternative) -> BDD100K's PNG values."""
    return _DRIVABLE_TO_BDD[mask]


def lanes_to_bdd(mask: np.ndarray, dashed: np.ndarray | None = None) -> np.ndarray:
    """Canonical lane mask (0/1) -> BDD100K's lane PNG values: 255 background, ``single white``
    on lane pixels, with the dashed style bit where ``dashed`` (bool (H, W)) is set."""
    out = np.full(mask.shape, 255, np.uint8)
    lane = mask == 1
    out[lane] = LANE_SINGLE_WHITE
    if dashed is not None:
        out[lane & dashed] |= LANE_DASHED
    return out


def from_bdd(kind: str, png: np.ndarray) -> np.ndarray:
    """A BDD100K mask PNG's values -> canonical classes of label kind ``kind``."""
    return (_DRIVABLE_FROM_BDD if kind == "drivable" else _LANES_FROM_BDD)[png]


def draw_lines(
    hw: tuple[int, int], lines: tuple[np.ndarray, ...], width: float = LANE_WIDTH
) -> np.ndarray:
    """Rasterise polylines (each float (P, 2) x, y frame pixels) as class 1 on 0, ``width`` px
    wide, into a uint8 (H, W) mask."""
    out = np.zeros(hw, np.uint8)
    pts = [np.round(np.asarray(p, np.float64) * 16).astype(np.int32) for p in lines if len(p) > 1]
    if pts:
        cv2.polylines(out, pts, False, 1, max(1, round(width)), cv2.LINE_8, shift=4)
    return out


@dataclass(frozen=True)
class MaskLabel:
    """Where one image's label of one kind comes from: a BDD100K-convention ``png``, or
    ``lines`` (lane polylines, float (P, 2) frame pixels, drawn ``width`` px wide), or
    ``polygons`` (closed polygons, float (P, 2), each with its canonical class)."""

    kind: str
    png: Path | None = None
    lines: tuple[np.ndarray, ...] = ()
    polygons: tuple[tuple[np.ndarray, int], ...] = ()
    width: float = LANE_WIDTH

    def load(self, frame_hw: tuple[int, int]) -> np.ndarray:
        """The canonical uint8 (H, W) mask at the image's size ``frame_hw``; InputError naming
        the PNG when it is unreadable or of another size."""
        if self.png is not None:
            png = cv2.imread(str(self.png), cv2.IMREAD_UNCHANGED)
            if png is None or png.ndim != 2:
                raise InputError(f"{self.png}: not a readable single-channel mask PNG")
            if png.shape != tuple(frame_hw):
                raise InputError(
                    f"{self.png}: mask is {png.shape[1]}x{png.shape[0]}, its image "
                    f"{frame_hw[1]}x{frame_hw[0]}"
                )
            return from_bdd(self.kind, png)
        if self.lines:
            return draw_lines(frame_hw, self.lines, self.width)
        out = np.zeros(frame_hw, np.uint8)
        for poly, cls in self.polygons:
            pts = np.round(np.asarray(poly, np.float64) * 16).astype(np.int32)
            cv2.fillPoly(out, [pts], int(cls), cv2.LINE_8, shift=4)
        return out


@cache
def _task_lut(kind: str, classes: tuple[str, ...]) -> np.ndarray:
    """The 256-entry canonical -> task class table of :func:`to_task`, built once per task."""
    lut = np.zeros(256, np.uint8)
    lut[IGNORE] = IGNORE
    for i, name in enumerate(MASK_CLASSES[kind]):
        lut[i] = classes.index(name) if name in classes else 0
    lut.flags.writeable = False
    return lut


def to_task(mask: np.ndarray, kind: str, classes: tuple[str, ...]) -> np.ndarray:
    """Canonical mask of label kind ``kind`` -> class indices of a task with ``classes`` (a
    canonical class the task leaves out becomes its background, 0); IGNORE stays."""
    return _task_lut(kind, tuple(classes))[mask]


def letterbox_mask(mask: np.ndarray, lb: Letterbox, input_hw: tuple[int, int]) -> np.ndarray:
    """A frame-sized mask placed like its image by ``lb``: nearest-neighbour resize (classes
    stay classes) and IGNORE on the padding; uint8 ``input_hw``."""
    h, w = input_hw
    nh, nw = max(1, round(mask.shape[0] * lb.scale)), max(1, round(mask.shape[1] * lb.scale))
    small = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
    out = np.full((h, w), IGNORE, np.uint8)
    y, x = round(lb.pad_y), round(lb.pad_x)
    out[y : y + nh, x : x + nw] = small[: h - y, : w - x]
    return out
