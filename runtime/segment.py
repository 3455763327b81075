"""The ``segment`` kind on the runtime side: a class map per pixel task (drivable area, lanes).

The model outputs ``seg_<task>``: a uint8 class map (N, H, W) at the model input's resolution
(argmax taken in the graph), or float logits (N, K, H, W) when exported with ``--seg-logits``.
:class:`SegmentDecoder` cuts the letterbox padding away (a view, no copy) and returns a
:class:`SegMap`; nothing is resized to the frame until a sink asks (:meth:`SegMap.at_frame_size`).

JSON lines carry each map compactly (:func:`segment_record`): COCO's uncompressed run-length
encoding per foreground class at the map's resolution, the scale to the frame, and a summary
(share of the frame and pixels per class). :func:`rle_decode` turns an RLE back into a mask.
Everything per frame is numpy-vectorised: one pass over the pixels, then work on the runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from edge_mtl.runtime.errors import InputError
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

    def names(self, k: int) -> tuple[str, ...]:
        """The first ``k`` class names: ``labels``, then the index as text for a class the
        labels do not name (a model without metadata)."""
        return tuple(self.labels[:k]) + tuple(str(i) for i in range(len(self.labels), k))

    @cached_property
    def _counts(self) -> list[int]:
        """Map pixels per class index, counted once per frame however many sinks ask (the
        overlay's panel and the console line both do)."""
        c, k = self.classes, len(self.labels)
        if 2 <= k <= 8:  # a compare per class beats bincount's scatter over every pixel
            return [int(np.count_nonzero(c == i)) for i in range(k)]
        return np.bincount(c.ravel(), minlength=k).tolist()

    def pixels(self) -> dict[str, int]:
        """Map pixels per class, by name (every label, also those with none)."""
        return dict(zip(self.names(len(self._counts)), self._counts))

    def fractions(self) -> dict[str, float]:
        """Share of the frame each class covers, by name."""
        total = max(int(self.classes.size), 1)
        return {name: n / total for name, n in self.pixels().items()}

    def foreground(self) -> tuple[float, int]:
        """(share of the frame, map pixels) of every class but the background (index 0)."""
        fg = int(self.classes.size) - (self._counts[0] if self._counts else 0)
        return fg / max(int(self.classes.size), 1), fg


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal values in a 1-D array: (value of each run, index where each run starts,
    with the array's length appended)."""
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], starts, [flat.size]))
    return flat[bounds[:-1]], bounds


def _class_counts(values: np.ndarray, bounds: np.ndarray, k: int) -> list[int]:
    """COCO RLE counts of class ``k`` from the class map's runs (:func:`_runs`): runs of
    ``== k`` and ``!= k`` alternate, starting with a run of zeros (0 long if the first pixel is
    ``k``). Works on the runs, not the pixels."""
    hit = values == k
    change = np.flatnonzero(hit[1:] != hit[:-1]) + 1
    edges = bounds[np.concatenate(([0], change, [len(values)]))]
    counts = np.diff(edges)
    return ([0] if hit[0] else []) + counts.tolist()


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE of a (h, w) mask (bool, or nonzero = set): ``{"size": [h, w],
    "counts": [...]}``, pixels in column-major order (down each column, then the next column,
    as pycocotools reads them), alternating runs of unset and set pixels, the first one unset
    (0 long when the first pixel is set). The counts sum to h * w."""
    h, w = mask.shape
    if mask.size == 0:
        return {"size": [h, w], "counts": []}
    values, bounds = _runs(np.ravel(mask, order="F").astype(bool))
    return {"size": [h, w], "counts": _class_counts(values, bounds, True)}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO uncompressed RLE (:func:`rle_encode`, or a ``segment`` record's ``rle`` entry) ->
    bool mask (h, w). Raises :class:`InputError` for an RLE that is not ``{"size": [h, w],
    "counts": [non-negative integers summing to h * w]}``."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], np.int64).reshape(-1)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f'RLE: expected {{"size": [h, w], "counts": [...]}} ({e})') from None
    if (counts < 0).any():
        raise InputError("RLE: counts must not be negative")
    if int(counts.sum()) != h * w:
        raise InputError(f"RLE: counts sum to {int(counts.sum())} pixels, size {h}x{w} has {h * w}")
    on = (np.arange(len(counts)) % 2).astype(bool)  # runs alternate unset, set, unset, ...
    return np.repeat(on, counts).reshape(w, h).T


def segment_record(m: SegMap) -> dict[str, Any]:
    """One pixel task's JSON-lines answer (docs/jsonl.md): ``kind``, ``size`` [h, w] of the map,
    ``scale`` [sy, sx] frame pixels per map pixel, ``fractions`` (share of the frame) and
    ``pixels`` (map pixels) per class by name, and ``rle``: one COCO RLE (:func:`rle_encode`)
    per class but the background, ``{"class", "size", "counts"}``. One pass over the pixels
    (column-major order) finds the runs of the class map; the counts per class and the pixels
    per class come from those runs."""
    h, w = m.classes.shape
    if m.classes.size == 0:
        values, bounds = np.zeros(0, np.uint8), np.zeros(1, np.int64)
    else:  # cv2.transpose: column-major order at a tenth of np.ravel(order="F")'s cost
        values, bounds = _runs(cv2.transpose(m.classes).ravel())
    lengths = np.diff(bounds)
    counts = np.bincount(values, weights=lengths, minlength=len(m.labels)).astype(np.int64)
    names = m.names(len(counts))
    total = max(h * w, 1)
    rle = [{"class": names[k], "size": [h, w], "counts": _class_counts(values, bounds, k)}
           for k in range(1, len(names)) if len(values)]  # fmt: skip
    sy, sx = m.scale if h * w else (0.0, 0.0)
    return {
        "kind": TaskKind.SEGMENT.value,
        "size": [h, w],
        "scale": [round(sy, 6), round(sx, 6)],
        "fractions": {n: round(c / total, 6) for n, c in zip(names, counts.tolist())},
        "pixels": dict(zip(names, counts.tolist())),
        "rle": rle,
    }


def segment_records(segmentations: dict[str, SegMap]) -> dict[str, dict[str, Any]]:
    """:func:`segment_record` of each pixel task, by task name (``FrameResult.to_record``)."""
    return {name: segment_record(m) for name, m in segmentations.items()}


class SegmentDecoder:
    """Class map (H, W) uint8 or logits (K, H, W) -> :class:`SegMap` over the frame's content."""

    kind = TaskKind.SEGMENT.value
    prefix = "seg_"

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return (f"{self.prefix}{task}",)

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts
    ) -> dict[str, Any]:
        """The frame's content of ``seg_<task>``: rows and columns of the letterbox padding cut
        away (``map_stride`` input pixels per map pixel); logits (K, H, W) are cut first, then
        reduced to their argmax (uint8)."""
        out = raw[t.outputs[0]]
        s = t.map_stride
        fh, fw = lb.frame_hw
        y0, x0 = round(lb.pad_y / s), round(lb.pad_x / s)
        y1 = y0 + max(1, round(fh * lb.scale / s))
        x1 = x0 + max(1, round(fw * lb.scale / s))
        if out.ndim == 3:  # logits (K, H, W)
            classes = out[:, y0:y1, x0:x1].argmax(0).astype(np.uint8)
        else:
            classes = out[y0:y1, x0:x1]
        return {"segmentations": {t.name: SegMap(classes, t.classes, (fh, fw))}}

    def check(self, t: TaskMeta) -> str | None:
        """No classes means classes named by index (a guessed class map); one is an error."""
        if len(t.classes) == 1:
            return f"task {t.name!r} needs at least two class names"
        return None if t.map_stride >= 1 else f"task {t.name!r} has map_stride {t.map_stride}"

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        """``seg_<task>`` outputs: logits (N, K, H, W) get classes "0".."K-1"; a class map
        (N, H, W) does not say how many classes it has, so its classes are named by the indices
        found in each frame (``classes`` empty)."""
        metas = []
        for name, shape in outs.items():
            if not name.startswith(self.prefix):
                continue
            logits = len(shape) == 4
            k = shape[1] if logits and isinstance(shape[1], int) else 0
            classes = tuple(str(i) for i in range(k))
            metas.append(TaskMeta(name[len(self.prefix) :], TaskKind.SEGMENT, (name,), classes,
                                  logits=logits))  # fmt: skip
        return metas
