"""What quantization costs, measured through the runtime engine on one execution provider.

Every model (FP32, INT8, optionally FP16) runs over the same images on the same provider (CPU
unless told; INT8 kernels differ between providers) with the metrics of
:mod:`edge_mtl.bench.accuracy`, the code ``edge-mtl eval --model`` and ``bench --accuracy`` use,
so the figures are what a deployment sees; this module adds how often the cheaper model agrees
with the reference (FP32) output by output, and flags metrics that drop past a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_mtl.bench.accuracy import (
    EvalSet,
    Predictions,
    eval_engine,
    label_std,
    predict_all,
    task_metrics,
)
from edge_mtl.bench.metrics import match_count
from edge_mtl.runtime.metadata import ModelMeta, TaskKind
from edge_mtl.runtime.postprocess import Detections
from edge_mtl.runtime.providers import Provider


def agreement(ref: Predictions, other: Predictions, meta: ModelMeta) -> dict[str, float]:
    """How often ``other`` says what ``ref`` says, in percent (regression: mean |difference|).

    Detections above the model's deployment score threshold agree when they have the same class
    and IoU >= ``MATCH_IOU`` (greedy, highest score first); the rate is 2 x matched / (count in
    ref + count in other), 100 when neither has any. Classification: top-1 agreement. Segment
    tasks: the share of class-map pixels where both say the same class, over all images.
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
        elif t.kind is TaskKind.SEGMENT:
            same = total = 0
            for i in range(len(ref.seg.get(t.name, ()))):
                a, b = ref.seg_map(t.name, i), other.seg_map(t.name, i)
                same, total = same + int((a == b).sum()), total + a.size
            out[f"{t.name} pixel agreement"] = 100.0 * (same / total if total else 1.0)
    return out


_POINTS = (" acc", " mIoU", " IoU")  # metric rows in points where higher is better
_METRICS = (*_POINTS, " MAE")  # every task metric row besides detection's


@dataclass
class AccuracyReport:
    """``table``: row name -> {model label: value}; ``reference`` is the label others are
    compared with; ``provider`` ran every model. Metric rows come first, agreement rows
    (reference column empty) after. ``tolerance`` (points, None: no flags) marks the metrics
    a model loses more than that on (:meth:`loss`); ``label_std`` (regression task -> label
    standard deviation) scales an MAE increase into points."""

    table: dict[str, dict[str, float]]
    labels: tuple[str, ...]
    reference: str
    images: int
    provider: Provider
    tolerance: float | None = None
    label_std: dict[str, float] = field(default_factory=dict)

    def max_drop(self, label: str) -> float:
        """Largest loss of ``label`` against the reference over every metric :meth:`flagged`
        judges (detection mAP, accuracies, IoUs, MAE as a share of the label's spread), in
        points; without labels 100 minus the lowest agreement."""
        gated = [r for r in self.table if r.startswith("det mAP@") or r.endswith(_METRICS)]
        if gated:
            drops = [self.loss(r, label) for r in gated]
            return max([d for d in drops if d is not None] or [0.0])
        agree = [self.table[r][label] for r in self.table if "agreement" in r]
        return 100.0 - min(agree) if agree else 0.0

    def loss(self, row: str, label: str) -> float | None:
        """What ``label`` loses against the reference on metric ``row``, in points (positive =
        worse): the drop of mAP, accuracy or IoU, or for ``<task> MAE`` the increase as a percentage
        of the task's label standard deviation (the points it costs training's score, 1 -
        MAE/std). None for agreement rows, a missing value or NaN."""
        vals = self.table.get(row, {})
        ref, got = vals.get(self.reference), vals.get(label)
        if ref is None or got is None or math.isnan(ref) or math.isnan(got):
            return None
        if row.startswith("det mAP@") or row.endswith(_POINTS):
            return ref - got
        if row.endswith(" MAE"):
            std = self.label_std.get(row.removesuffix(" MAE"), math.nan)
            return 100.0 * (got - ref) / std if std > 0 else None
        return None

    def flagged(self) -> dict[str, list[str]]:
        """Model label -> the metric rows it loses more than ``tolerance`` points on (empty
        without a tolerance)."""
        if self.tolerance is None:
            return {}
        out: dict[str, list[str]] = {}
        for label in self.labels:
            if label == self.reference:
                continue
            rows = [r for r in self.table if (self.loss(r, label) or 0.0) > self.tolerance]
            if rows:
                out[label] = rows
        return out

    def warning(self) -> str | None:
        """One line naming every flagged metric with its change, or None."""
        flags = self.flagged()
        if not flags:
            return None
        parts = []
        for label, rows in flags.items():
            deltas = ", ".join(self._change(r, label) for r in rows)
            parts.append(f"{label}: {deltas}")
        return (
            f"warning: past --tolerance {self.tolerance:g} pts against {self.reference}: "
            + "; ".join(parts)
        )

    def _change(self, row: str, label: str) -> str:
        """``row``'s change for ``label``, e.g. ``weather acc -3.30`` or ``curvature MAE +0.0412
        (+6.8% of the label std)``."""
        delta = self.table[row][label] - self.table[row][self.reference]
        if row.endswith(" MAE"):  # label units: any scale
            return f"{row} {delta:+.3g} ({self.loss(row, label):+.1f}% of the label std)"
        return f"{row} {delta:+.2f}"

    def markdown(self) -> str:
        """A markdown table: one row per metric, one column per model, then deltas vs
        reference, and a last column marking the metrics past ``tolerance`` (when any is)."""
        others = [x for x in self.labels if x != self.reference]
        flags = self.flagged()
        head = ["metric", *self.labels, *(f"{x} - {self.reference}" for x in others)]
        head += ["flag"] if flags else []
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, vals in self.table.items():
            digits = 4 if row.endswith(("MAE", "mean abs diff")) else 2  # label units, not points
            cells = [row] + [_fmt(vals.get(x), digits=digits) for x in self.labels]
            for x in others:
                a, b = vals.get(x), vals.get(self.reference)
                cells.append("" if a is None or b is None else _fmt(a - b, True, digits))
            if flags:
                who = [x for x in others if row in flags.get(x, [])]
                named = f" ({', '.join(who)})" if len(others) > 1 else ""
                cells.append(f"⚠ past tolerance {self.tolerance:g}{named}" if who else "")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "provider": self.provider.value,
            "reference": self.reference,
            "images": self.images,
            "table": self.table,
            "tolerance": self.tolerance,
            "label_std": self.label_std,
            "flagged": self.flagged(),
        }


def compare(
    models: dict[str, str | Path],
    data: EvalSet,
    reference: str = "fp32",
    threads: int = 2,
    cache: dict[str, Predictions] | None = None,
    provider: Provider = Provider.CPU,
    tolerance: float | None = None,
) -> AccuracyReport:
    """Run ``models`` (label -> ONNX path, including ``reference``) over ``data`` on
    ``provider`` (see :func:`eval_engine`) and tabulate metrics (labelled data) and agreement
    with the reference, flagging losses past ``tolerance`` points. ``cache`` (label ->
    predictions, all from ``provider``) skips models already run, and is filled with the new
    ones."""
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
    stds = label_std(data, meta)
    return AccuracyReport(table, labels, reference, len(data.images), provider, tolerance, stds)


def _above(d: Detections, threshold: float) -> Detections:
    keep = d.scores > threshold
    return Detections(d.boxes[keep], d.scores[keep], d.classes[keep])


def _fmt(v: float | None, signed: bool = False, digits: int = 2) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
