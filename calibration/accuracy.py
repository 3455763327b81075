"""What quantization costs, measured through the runtime engine on one execution provider.

Every model (FP32, INT8, optionally FP16) runs over the same images through :class:`Engine` with
the evaluation thresholds on the same provider (CPU unless told; INT8 kernels differ between
providers), so the figures are what a deployment sees: detection mAP@0.5 and
mAP@0.5:0.95 (COCO protocol), accuracy per classification task, MAE per regression task, and
how often the cheaper model agrees with the reference (FP32) output by output.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_mtl.bench.metrics import accuracy_f1, coco_map, match_count
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.metadata import ModelMeta, TaskKind
from edge_mtl.runtime.postprocess import (
    EVAL_CONF,
    EVAL_IOU,
    EVAL_MAX_DET,
    Detections,
)
from edge_mtl.runtime.providers import Provider

BATCH = 8


class LabelReader(Protocol):
    """Reads a labelled BDD-format folder for the given tasks (``edge_mtl.data.bdd.read_bdd``,
    handed in by the composition root: calibration never imports the training side). Returns
    records with ``image`` (path), ``boxes`` (K, 4) xyxy frame pixels, ``classes`` (K,) class
    indices, ``labels`` (task -> class index) and ``targets`` (task -> value), and a Counter of
    the categories that map to no detection class."""

    def __call__(
        self,
        root: str | Path,
        det_classes: tuple[str, ...],
        classify: dict[str, tuple[str, ...]],
        regress: tuple[str, ...],
    ) -> tuple[list[Any], Counter]: ...


@dataclass(frozen=True)
class EvalSet:
    """Images to compare models on. ``records`` (``edge_mtl.data.bdd.Record``) when labelled,
    else ``None`` and only agreement between models is reported."""

    images: tuple[Path, ...]
    records: tuple | None = None
    source: str = ""

    @staticmethod
    def labelled(root: str | Path, meta: ModelMeta, read_labels: LabelReader | None) -> EvalSet:
        """A BDD-format folder (``labels.json`` + ``images/``) read with the model's class names
        by ``read_labels`` (ValueError without one)."""
        if read_labels is None:
            raise ValueError(f"{root}: evaluation data needs a label reader (read_labels)")
        det = meta.detect
        classify = {t.name: t.classes for t in meta.tasks if t.kind is TaskKind.CLASSIFY}
        regress = tuple(t.name for t in meta.tasks if t.kind is TaskKind.REGRESS)
        records, _ = read_labels(root, det.classes if det else (), classify, regress)
        if not records:
            raise InputError(f"{root}: the evaluation set has no images")
        return EvalSet(tuple(r.image for r in records), tuple(records), str(root))


@dataclass
class Predictions:
    """One model's answers on an :class:`EvalSet`: detections per image (frame pixels, scores
    down to ``EVAL_CONF``), class index per classification task (N,), value per regression task."""

    dets: list[Detections] = field(default_factory=list)
    cls: dict[str, list[int]] = field(default_factory=dict)
    reg: dict[str, list[float]] = field(default_factory=dict)
    frame_hw: list[tuple[int, int]] = field(default_factory=list)

    def add(self, r: FrameResult, hw: tuple[int, int]) -> None:
        self.dets.append(r.detections)
        self.frame_hw.append(hw)
        for name, c in r.classifications.items():
            self.cls.setdefault(name, []).append(c.index)
        for name, v in r.regressions.items():
            self.reg.setdefault(name, []).append(v)


def eval_engine(path: str | Path, provider: Provider = Provider.CPU, threads: int = 2) -> Engine:
    """``path`` on ``provider`` alone with evaluation thresholds and ``threads`` intra-op threads.
    Strict, as a named provider is in ``edge-mtl run``: raises :class:`RuntimeFailure` when the
    provider cannot run here (:class:`InputError` when its plugin is not installed)."""
    cfg = EngineConfig(
        conf_threshold=EVAL_CONF,
        iou_threshold=EVAL_IOU,
        max_det=EVAL_MAX_DET,
        intra_op_threads=threads,
    )
    return Engine(path, providers=provider, config=cfg)


def predict_all(engines: dict[str, Engine], data: EvalSet) -> dict[str, Predictions]:
    """Run every engine over ``data`` (each image decoded once for all models)."""
    preds = {label: Predictions() for label in engines}
    for i in range(0, len(data.images), BATCH):
        frames = [_read(p) for p in data.images[i : i + BATCH]]
        for label, eng in engines.items():
            for f, r in zip(frames, eng.infer_batch(frames)):
                preds[label].add(r, f.shape[:2])
    return preds


def task_metrics(pred: Predictions, data: EvalSet, meta: ModelMeta) -> dict[str, float]:
    """Metrics against labels, in points (0-100) for mAP/accuracy, label units for MAE."""
    out: dict[str, float] = {}
    recs = data.records
    if recs is None:
        return out
    for t in meta.tasks:
        if t.kind is TaskKind.DETECT:
            gts = [(r.boxes, r.classes) for r in recs]
            dets = [(d.boxes, d.scores, d.classes) for d in pred.dets]
            m = coco_map(gts, dets, len(t.classes), pred.frame_hw)
            out["det mAP@0.5"], out["det mAP@0.5:0.95"] = 100 * m["map50"], 100 * m["map"]
        elif t.kind is TaskKind.CLASSIFY:
            true = np.array([r.labels.get(t.name, -1) for r in recs])
            acc, _ = accuracy_f1(np.array(pred.cls[t.name]), true, len(t.classes))
            out[f"{t.name} acc"] = 100 * acc
        elif t.kind is TaskKind.REGRESS:
            y = np.array([r.targets.get(t.name, math.nan) for r in recs])
            p, ok = np.array(pred.reg[t.name]), np.isfinite(y)
            out[f"{t.name} MAE"] = float(np.abs(p[ok] - y[ok]).mean()) if ok.any() else math.nan
    return out


def agreement(ref: Predictions, other: Predictions, meta: ModelMeta) -> dict[str, float]:
    """How often ``other`` says what ``ref`` says, in percent (regression: mean |difference|).

    Detections above the model's deployment score threshold agree when they have the same class
    and IoU >= ``MATCH_IOU`` (greedy, highest score first); the rate is 2 x matched / (count in
    ref + count in other), 100 when neither has any. Classification: top-1 agreement.
    """
    out: dict[str, float] = {}
    for t in meta.tasks:
        if t.kind is TaskKind.DETECT:
            matched = total = 0
            for a, b in zip(ref.dets, other.dets):
                a, b = _above(a, t.score_threshold), _above(b, t.score_threshold)
                matched += match_count(a, b)
                total += len(a) + len(b)
            out["det agreement"] = 100.0 * (2 * matched / total if total else 1.0)
        elif t.kind is TaskKind.CLASSIFY:
            same = np.array(ref.cls[t.name]) == np.array(other.cls[t.name])
            out[f"{t.name} top-1 agreement"] = 100.0 * float(same.mean())
        elif t.kind is TaskKind.REGRESS:
            diff = np.abs(np.array(ref.reg[t.name]) - np.array(other.reg[t.name]))
            out[f"{t.name} mean abs diff"] = float(diff.mean())
    return out


@dataclass
class AccuracyReport:
    """``table``: row name -> {model label: value}; ``reference`` is the label others are
    compared with; ``provider`` ran every model. Metric rows come first, agreement rows
    (reference column empty) after."""

    table: dict[str, dict[str, float]]
    labels: tuple[str, ...]
    reference: str
    images: int
    provider: Provider

    def max_drop(self, label: str) -> float:
        """Largest loss of ``label`` against the reference over detection mAP@0.5 and the
        classification accuracies, in points; without labels 100 minus the lowest agreement."""
        gated = [r for r in self.table if r == "det mAP@0.5" or r.endswith(" acc")]
        if gated:
            drops = [self.table[r][self.reference] - self.table[r][label] for r in gated]
            return max([d for d in drops if not math.isnan(d)] or [0.0])
        agree = [self.table[r][label] for r in self.table if "agreement" in r]
        return 100.0 - min(agree) if agree else 0.0

    def markdown(self) -> str:
        """A markdown table: one row per metric, one column per model, then deltas vs reference."""
        others = [x for x in self.labels if x != self.reference]
        head = ["metric", *self.labels, *(f"{x} - {self.reference}" for x in others)]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, vals in self.table.items():
            cells = [row] + [_fmt(vals.get(x)) for x in self.labels]
            for x in others:
                a, b = vals.get(x), vals.get(self.reference)
                cells.append("" if a is None or b is None else _fmt(a - b, signed=True))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "provider": self.provider.value,
            "reference": self.reference,
            "images": self.images,
            "table": self.table,
        }


def compare(
    models: dict[str, str | Path],
    data: EvalSet,
    reference: str = "fp32",
    threads: int = 2,
    cache: dict[str, Predictions] | None = None,
    provider: Provider = Provider.CPU,
) -> AccuracyReport:
    """Run ``models`` (label -> ONNX path, including ``reference``) over ``data`` on
    ``provider`` (see :func:`eval_engine`) and tabulate metrics (labelled data) and agreement
    with the reference. ``cache`` (label -> predictions, all from ``provider``) skips models
    already run, and is filled with the new ones."""
    cache = {} if cache is None else cache
    todo = {k: eval_engine(p, provider, threads) for k, p in models.items() if k not in cache}
    cache.update(predict_all(todo, data) if todo else {})
    # Every model carries the reference's tasks and thresholds (an INT8 file keeps the FP32
    # metadata), so a cached reference needs no session of its own (on TensorRT, an engine load).
    made = todo.get(reference) or next(iter(todo.values()), None)
    meta = (made or eval_engine(models[reference], provider, threads)).meta
    labels = tuple(models)
    table: dict[str, dict[str, float]] = {}
    for label in labels:
        for row, v in task_metrics(cache[label], data, meta).items():
            table.setdefault(row, {})[label] = v
    for label in labels:
        if label == reference:
            continue
        for row, v in agreement(cache[reference], cache[label], meta).items():
            table.setdefault(row, {})[label] = v
    return AccuracyReport(table, labels, reference, len(data.images), provider)


def _above(d: Detections, threshold: float) -> Detections:
    keep = d.scores > threshold
    return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])


def _read(path: Path) -> np.ndarray:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise InputError(f"{path}: cannot decode the evaluation image")
    return frame


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "n/a"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def image_list(paths: Sequence[Path]) -> EvalSet:
    """Unlabelled images (e.g. the calibration set): agreement only."""
    return EvalSet(tuple(paths), None, "calibration images")
