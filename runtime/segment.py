"""The ``segment`` kind on the runtime side: a class map per pixel task (drivable area, lanes).

The model outputs ``seg_<task>``: a uint8 class map (N, H, W) at the model input's resolution
(argmax taken in the graph), or float logits (N, K, H, W) when exported with ``--seg-logits``.
:class:`SegmentDecoder` cuts the letterbox padding away (a view, no copy) and returns a
:class:`SegMap`; nothing is resized to the frame until a sink asks (:meth:`SegMap.at_frame_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.preprocess import Letterbox


@dataclass(frozen=True)
class SegMap:
    """One pixel task's answer for one frame. ``classes`` uint8 (h, w): class index per map
    pixel over the frame's content (padding cut away), at the map's resolution; ``labels`` the
    class names (index 0 the background); ``frame_hw`` the frame's (H, W): map pixel (i, j)
    covers frame rows ``i * H / h`` onwards and columns ``j * W / w`` onwards."""

    classes: np.ndarray
    labels: tuple[str, ...]
    frame_hw: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(frame rows per map row, frame columns per map column)."""
        h, w = self.classes.shape
        return self.frame_hw[0] / h, self.frame_hw[1] / w

    def at_frame_size(self) -> np.ndarray:
        """The class map resized to the frame (nearest neighbour: classes stay classes)."""
        h, w = self.frame_hw
        if self.classes.shape == (h, w):
            return self.classes
        return cv2.resize(self.classes, (w, h), interpolation=cv2.INTER_NEAREST)

    def fractions(self) -> dict[str, float]:
        """Share of the frame each class covers, by name."""
        counts = np.bincount(self.classes.ravel(), minlength=len(self.labels))
        total = max(int(self.classes.size), 1)
        return {name: float(counts[k]) / total for k, name in enumerate(self.labels)}


class SegmentDecoder:
    """Class map (H, W) uint8 or logits (K, H, W) -> :class:`SegMap` over the frame's content."""

    kind = TaskKind.SEGMENT.value
    prefix = "seg_"

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return (f"{self.prefix}{task}",)

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts
    ) -> dict[str, Any]:
        out = raw[t.outputs[0]]
        if out.ndim == 3:  # logits (K, H, W)
            out = out.argmax(0).astype(np.uint8)
        s = t.map_stride
        fh, fw = lb.frame_hw
        y0, x0 = round(lb.pad_y / s), round(lb.pad_x / s)
        y1 = y0 + max(1, round(fh * lb.scale / s))
        x1 = x0 + max(1, round(fw * lb.scale / s))
        return {"segmentations": {t.name: SegMap(out[y0:y1, x0:x1], t.classes, (fh, fw))}}

    def check(self, t: TaskMeta) -> str | None:
        if len(t.classes) < 2:
            return f"task {t.name!r} needs at least two class names"
        return None if t.map_stride >= 1 else f"task {t.name!r} has map_stride {t.map_stride}"

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        metas = []
        for name, shape in outs.items():
            if not name.startswith(self.prefix):
                continue
            logits = len(shape) == 4
            k = shape[1] if logits and isinstance(shape[1], int) else 2
            classes = tuple(str(i) for i in range(k))
            metas.append(TaskMeta(name[len(self.prefix) :], TaskKind.SEGMENT, (name,), classes,
                                  logits=logits))  # fmt: skip
        return metas
