"""One decoder per task kind: raw ONNX outputs of one image -> what :class:`FrameResult` carries.

``DECODERS`` maps a kind name (the ``kind`` of a task in the ``edge_mtl`` metadata) to its
decoder. A decoder also owns its kind's ONNX output names (the contract both the exporter and
this runtime read), checks a task's metadata, and recognises its outputs in a model exported
without metadata. The torch side (``edge_mtl.tasks``) asks the decoder for the names, so each
kind spells them here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge_mtl.runtime.errors import InputError, MetadataError
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.postprocess import (
    Detections,
    detections_to_frame,
    postprocess_detections,
    softmax,
)
from edge_mtl.runtime.preprocess import Letterbox
from edge_mtl.runtime.segment import SegmentDecoder

DET_BOXES = "det_boxes"  # (N, A, 4) float32 xyxy input pixels; (N, M, 4) after in-graph NMS
DET_SCORES = "det_scores"  # (N, A, C) float32 per-class probabilities; (N, M) after NMS
DET_NUM = "det_num"  # (N,) int64 detections kept per image by in-graph NMS
DET_CLASSES = "det_classes"  # (N, M) int64 class ids after in-graph NMS (-1 past det_num)
DETECT_OUTPUTS = (DET_BOXES, DET_SCORES)
NMS_OUTPUTS = (DET_NUM, DET_BOXES, DET_SCORES, DET_CLASSES)


@dataclass(frozen=True)
class Classification:
    """One classification task's answer: best ``label`` (index ``index``) with probability
    ``prob`` in [0, 1], and ``probs`` float32 (K,) over all classes (softmax of the logits)."""

    label: str
    index: int
    prob: float
    probs: np.ndarray


@dataclass(frozen=True)
class DecodeOptions:
    """The engine's overrides: ``None`` means "the default stored in the model" (thresholds,
    ``max_det`` detections per frame); ``classes``: only these detection class ids are kept
    (None = all); ``agnostic_nms``: one NMS across classes instead of one per class."""

    conf_threshold: float | None = None
    iou_threshold: float | None = None
    max_det: int | None = None
    classes: tuple[int, ...] | None = None
    agnostic_nms: bool = False


class Decoder(Protocol):
    """A task kind on the runtime side.

    ``decode`` gets one image's outputs of one task (``raw``: output name -> that image's slice,
    batch axis removed) and returns :class:`FrameResult` fields to fill: a dict-valued field
    (``classifications``, ``regressions``, ``segmentations``, ``others``) is merged by task
    name, any other field is set. ``check`` returns what is wrong with a task's metadata (None
    when fine). ``guess`` finds this kind's tasks among the outputs (name -> shape) of a model
    without metadata.
    """

    kind: str

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]: ...

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts: DecodeOptions
    ) -> dict[str, Any]: ...

    def check(self, t: TaskMeta) -> str | None: ...

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]: ...


def label(t: TaskMeta, k: int) -> str:
    """Class name ``k`` of task ``t``; the id as text when the metadata has no such name."""
    return t.classes[k] if 0 <= k < len(t.classes) else str(k)


def _role(output_name: str) -> str:
    """``det_boxes`` -> ``boxes``: which part of a detection task an output is."""
    for role in ("boxes", "scores", "classes", "num"):
        if output_name.endswith(role):
            return role
    raise MetadataError(f"detection output {output_name!r} is not *_boxes/_scores/_classes/_num")


class DetectDecoder:
    """Dense boxes and scores -> score filter, per-class (or agnostic) NMS, letterbox undone
    (frame pixels); with in-graph NMS only the score and class filters and ``max_det``."""

    kind = TaskKind.DETECT.value

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return NMS_OUTPUTS if nms else DETECT_OUTPUTS

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts: DecodeOptions
    ) -> dict[str, Any]:
        conf = t.score_threshold if opts.conf_threshold is None else opts.conf_threshold
        max_det = t.max_det if opts.max_det is None else opts.max_det
        named = {_role(o): raw[o] for o in t.outputs}
        if not t.nms_in_graph:
            iou = t.iou_threshold if opts.iou_threshold is None else opts.iou_threshold
            dets = postprocess_detections(
                named["boxes"], named["scores"], conf, iou, max_det,
                classes=opts.classes, agnostic=opts.agnostic_nms,
            )  # fmt: skip
        else:  # ranked by score in the graph: filters and the cap apply to its rows
            n = int(named["num"])
            scores = named["scores"][:n].astype(np.float32)
            classes = named["classes"][:n].astype(np.int64)
            keep = scores > conf
            if opts.classes is not None:
                keep &= np.isin(classes, opts.classes)
            keep = np.flatnonzero(keep)[:max_det]
            dets = Detections(named["boxes"][keep].astype(np.float32), scores[keep], classes[keep])
        dets = detections_to_frame(dets, lb)
        return {"detections": dets, "det_labels": tuple(label(t, int(c)) for c in dets.classes)}

    def check(self, t: TaskMeta) -> str | None:
        if not t.classes:
            return f"task {t.name!r} has no class names"
        need = {"num", "boxes", "scores", "classes"} if t.nms_in_graph else {"boxes", "scores"}
        try:
            roles = {_role(o) for o in t.outputs}
        except MetadataError as e:
            return str(e)
        if not need <= roles:
            return (
                f"detection task {t.name!r} needs outputs for {sorted(need)}, "
                f"metadata lists {list(t.outputs)}"
            )
        return None

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        if DET_BOXES not in outs or DET_SCORES not in outs:
            return []
        nms = DET_NUM in outs and DET_CLASSES in outs
        c = outs[DET_SCORES][-1]
        if not nms and not isinstance(c, int):
            raise MetadataError(f"{DET_SCORES} has a dynamic class dimension; cannot label classes")
        # In-graph NMS outputs carry class ids only; labels fall back to the id (see label).
        labels = tuple(str(k) for k in range(1 if nms else c))
        return [
            TaskMeta("det", TaskKind.DETECT, self.outputs("det", nms), labels, nms_in_graph=nms)
        ]


def class_ids(t: TaskMeta, wanted: Sequence[int | str], source: str) -> tuple[int, ...]:
    """Class names or ids (``"car"``, ``2``, ``"2"``) -> ids of detection task ``t``, in the
    order given, without repeats. A name is looked up first, so a class named "0" stays a name.
    Raises :class:`InputError` naming an unknown one and listing the model's classes."""
    names = ", ".join(t.classes)
    ids: list[int] = []
    for c in wanted:
        if isinstance(c, str) and c in t.classes:
            ids.append(t.classes.index(c))
            continue
        k = int(c) if isinstance(c, int) or (isinstance(c, str) and c.isdigit()) else None
        if k is None or not 0 <= k < len(t.classes):
            raise InputError(
                f"{source}: --classes {c}: not a class of this model (its classes: {names}; "
                f"ids 0-{len(t.classes) - 1})"
            )
        ids.append(k)
    return tuple(dict.fromkeys(ids))


def check_detect_options(t: TaskMeta, opts: DecodeOptions, source: str) -> None:
    """Raise :class:`InputError` for options detection task ``t`` cannot honour, never
    ignoring one. Ranges: thresholds in [0, 1], ``max_det`` >= 1. With in-graph NMS the graph
    has already thresholded and suppressed, so only filters of its outputs can apply: a score
    threshold at or above the baked one, ``max_det`` up to the baked one, ``classes``; a lower
    score threshold, another IoU threshold or agnostic NMS need a new export."""
    for flag, v in (("--conf", opts.conf_threshold), ("--iou", opts.iou_threshold)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise InputError(f"{source}: {flag} must be in [0, 1], got {v:g}")
    if opts.max_det is not None and opts.max_det < 1:
        raise InputError(f"{source}: --max-det must be >= 1, got {opts.max_det}")
    if not t.nms_in_graph:
        return
    baked = "baked into its NMS; re-export with `edge-mtl export --nms"
    plain = "the plain export (edge-mtl export without --nms)"
    conf, iou, max_det = opts.conf_threshold, opts.iou_threshold, opts.max_det
    if conf is not None and conf < t.score_threshold:
        raise InputError(
            f"{source}: --conf {conf:g} is below the score threshold {t.score_threshold:g} "
            f"{baked} --conf {conf:g}` or use {plain}"
        )
    if iou is not None and iou != t.iou_threshold:
        raise InputError(
            f"{source}: --iou {iou:g} differs from the IoU threshold {t.iou_threshold:g} "
            f"{baked} --iou {iou:g}` or use {plain}"
        )
    if max_det is not None and max_det > t.max_det:
        raise InputError(
            f"{source}: --max-det {max_det} is above the {t.max_det} detections {baked} "
            f"--max-det {max_det}` or use {plain}"
        )
    if opts.agnostic_nms:
        raise InputError(
            f"{source}: --agnostic-nms cannot apply: the model's NMS is in the graph and per "
            f"class; run {plain} with --agnostic-nms"
        )


class ClassifyDecoder:
    """Logits (K,) -> softmax -> best class with its probability."""

    kind = TaskKind.CLASSIFY.value
    prefix = "cls_"

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return (f"{self.prefix}{task}",)  # (N, K) float32 logits

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts: DecodeOptions
    ) -> dict[str, Any]:
        probs = softmax(raw[t.outputs[0]][None].astype(np.float32))[0]
        k = int(np.argmax(probs))
        return {"classifications": {t.name: Classification(label(t, k), k, float(probs[k]), probs)}}

    def check(self, t: TaskMeta) -> str | None:
        return None if t.classes else f"task {t.name!r} has no class names"

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        return [
            TaskMeta(name[len(self.prefix) :], TaskKind.CLASSIFY, (name,), _ids(shape[-1]))
            for name, shape in outs.items()
            if name.startswith(self.prefix) and isinstance(shape[-1], int)
        ]


class RegressDecoder:
    """One value (1,) -> a float in the unit the task was trained on."""

    kind = TaskKind.REGRESS.value
    prefix = "reg_"

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return (f"{self.prefix}{task}",)  # (N, 1) float32

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts: DecodeOptions
    ) -> dict[str, Any]:
        return {"regressions": {t.name: float(np.asarray(raw[t.outputs[0]]).reshape(-1)[0])}}

    def check(self, t: TaskMeta) -> str | None:
        return None

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        return [
            TaskMeta(name[len(self.prefix) :], TaskKind.REGRESS, (name,))
            for name in outs
            if name.startswith(self.prefix)
        ]


def _ids(k: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(k))


DECODERS: dict[str, Decoder] = {
    "detect": DetectDecoder(),
    "classify": ClassifyDecoder(),
    "regress": RegressDecoder(),
    "segment": SegmentDecoder(),
}


def register_decoder(decoder: Decoder) -> None:
    """Add a decoder for a new task kind; a kind already registered is an error."""
    if decoder.kind in DECODERS:
        raise ValueError(f"task kind {decoder.kind!r} already has a decoder")
    DECODERS[decoder.kind] = decoder


def unregister_decoder(kind: str) -> None:
    """Remove a kind added with :func:`register_decoder` (the built-in kinds stay)."""
    if kind in (k.value for k in TaskKind):
        raise ValueError(f"task kind {kind!r} is built in and cannot be removed")
    del DECODERS[kind]


@contextmanager
def decoder_registered(decoder: Decoder) -> Iterator[Decoder]:
    """``register_decoder`` for the duration of a ``with`` block (tests, plugins)."""
    register_decoder(decoder)
    try:
        yield decoder
    finally:
        unregister_decoder(decoder.kind)


def decoder_for(t: TaskMeta) -> Decoder:
    """The decoder of ``t``'s kind; MetadataError when this runtime has none."""
    d = DECODERS.get(t.kind_name)
    if d is None:
        raise MetadataError(
            f"task {t.name!r} has kind {t.kind!r}, which this runtime cannot decode "
            f"(known kinds: {', '.join(DECODERS)})"
        )
    return d
