"""MOTChallenge text files: the ground truth a clip comes with and the tracks a run produced.

One line per box, comma-separated, frames numbered from 1 (MOT16/17 ``gt.txt`` layout)::

    frame, id, x, y, w, h, conf, class, visibility

``x, y`` is the box's top-left corner and ``w, h`` its size, in frame pixels. In ground truth
``conf`` is 1 (0 marks a box to ignore), ``class`` is the detection class index + 1 (the
clip's class names are in its frames file) and ``visibility`` the visible share of the object
in [0, 1]. Tracker output uses the same columns with ``conf`` the detection score and -1 for
class and visibility when unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import write_text_atomic


@dataclass(frozen=True)
class MotBoxes:
    """Rows of a MOT file as arrays (N rows): ``frame`` int64 (from 1), ``ids`` int64,
    ``boxes`` float64 (N, 4) x, y, w, h pixels, ``conf`` float64, ``classes`` int64 (class
    index + 1, -1 unknown), ``visibility`` float64 (-1 unknown)."""

    frame: np.ndarray
    ids: np.ndarray
    boxes: np.ndarray
    conf: np.ndarray
    classes: np.ndarray
    visibility: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def rows(self, keep: np.ndarray) -> MotBoxes:
        """The rows where the bool mask ``keep`` (N,) is True."""
        return MotBoxes(*(getattr(self, f)[keep] for f in _FIELDS))

    def at(self, frame: int) -> MotBoxes:
        """The rows of one frame (numbered from 1)."""
        return self.rows(self.frame == frame)

    @staticmethod
    def concat(parts: list[MotBoxes]) -> MotBoxes:
        if not parts:
            return empty_mot()
        return MotBoxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("frame", "ids", "boxes", "conf", "classes", "visibility")


def empty_mot() -> MotBoxes:
    z = np.zeros(0)
    return MotBoxes(z.astype(np.int64), z.astype(np.int64), np.zeros((0, 4)), z,
                    z.astype(np.int64), z)  # fmt: skip


def mot_rows(
    frame: int,
    ids: np.ndarray,
    xyxy: np.ndarray,
    conf: np.ndarray | float = 1.0,
    classes: np.ndarray | int = -1,
    visibility: np.ndarray | float = -1.0,
) -> MotBoxes:
    """One frame's rows from xyxy boxes (K, 4); scalars broadcast to every box."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    k = len(b)
    return MotBoxes(
        np.full(k, frame, np.int64),
        np.asarray(ids, np.int64).reshape(k),
        np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1),
        np.broadcast_to(np.asarray(conf, np.float64), (k,)).copy(),
        np.broadcast_to(np.asarray(classes, np.int64), (k,)).copy(),
        np.broadcast_to(np.asarray(visibility, np.float64), (k,)).copy(),
    )


def write_mot(path: str | os.PathLike[str], rows: MotBoxes) -> Path:
    """Write ``rows`` sorted by frame then id (2 decimals for pixels, 4 for conf and
    visibility), atomically."""
    path = Path(path)
    order = np.lexsort((rows.ids, rows.frame))
    lines = []
    for i in order.tolist():
        x, y, w, h = rows.boxes[i]
        lines.append(
            f"{rows.frame[i]},{rows.ids[i]},{x:.2f},{y:.2f},{w:.2f},{h:.2f},"
            f"{rows.conf[i]:.4g},{rows.classes[i]},{rows.visibility[i]:.4g}\n"
        )
    write_text_atomic(path, "".join(lines))
    return path


def read_mot(path: str | os.PathLike[str]) -> MotBoxes:
    """Read a MOT file (7 to 10 columns; missing class/visibility read as -1)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(f"{path}: cannot read a MOTChallenge file ({why})") from None
    rows = [ln.split(",") for ln in text.splitlines() if ln.strip()]
    if not rows:
        return empty_mot()
    bad = next((n for n, r in enumerate(rows, 1) if len(r) < 7), None)
    if bad is not None:
        raise InputError(f"{path}: line {bad} has fewer than 7 comma-separated columns")
    try:
        a = np.array([[float(v) for v in ([*r, "-1", "-1", "-1"])[:9]] for r in rows])
    except ValueError:
        raise InputError(f"{path}: not a MOTChallenge file (a column is not a number)") from None
    return MotBoxes(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6], a[:, 6],
                    a[:, 7].astype(np.int64), a[:, 8])  # fmt: skip
