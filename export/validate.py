"""Checks every exported graph must pass: ONNX checker, shape inference, a clean op set, and
parity between torch and ONNX Runtime (CPU) on synthetic driving scenes.

Parity compares every dense output elementwise (``|onnx - torch| <= atol + rtol * |torch|``,
the numpy ``allclose`` rule) and, for detection, the boxes that survive NMS: each detection must
find a same-class partner with IoU >= ``match_iou`` on the other side, up to a small allowance
for detections whose score sits on the threshold. A segment task's uint8 class map is compared
as pixel agreement: the share of pixels where ONNX's class equals torch's argmax (a logit pair
within rounding of a tie may flip; a class-index difference has no magnitude to bound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edge_mtl.data.synthetic import render_scene
from edge_mtl.model import MultiTaskModel
from edge_mtl.runtime.decoders import DET_BOXES, DET_CLASSES, DET_NUM, DET_SCORES, NMS_OUTPUTS
from edge_mtl.runtime.errors import RuntimeFailure
from edge_mtl.runtime.metadata import ModelMeta, TaskKind
from edge_mtl.runtime.postprocess import Detections, box_iou_one_to_many, postprocess_detections
from edge_mtl.runtime.preprocess import preprocess

STANDARD_DOMAINS = ("", "ai.onnx")
TRAINING_OPS = ("Dropout",)  # in eval export there is no reason for one to survive
FRAME_HW = (360, 640)  # rendered camera frames, letterboxed into the model input


@dataclass(frozen=True)
class Tolerance:
    """Parity limits. ``rtol``/``atol`` as in ``numpy.allclose`` (boxes in input pixels, scores
    and logits unitless); ``match_iou``: IoU for two detections to count as the same;
    ``box_atol``: pixels within which two boxes are the same even when IoU is undefined
    (zero-area boxes); ``unmatched``: fraction of detections (at least one) allowed without a
    partner; ``pixel_agreement``: least share (0-1) of class-map pixels equal to torch's."""

    name: str
    rtol: float
    atol: float
    match_iou: float
    box_atol: float
    unmatched: float
    pixel_agreement: float

    def atol_for(self, output: str) -> float:
        """Absolute tolerance in the output's own unit: boxes are pixels (near x=400 one fp16
        ulp is 0.25 px), everything else is unitless."""
        return max(self.atol, self.box_atol) if output == DET_BOXES else self.atol


# FP32: ORT and torch use different conv algorithms; differences are float rounding only. A
# trained model's scores (sqrt of a product of sigmoids, steep near 0) drift by up to ~2e-4
# from that alone; 1e-3 of a probability is still far below any threshold a user sets.
FP32_TOLERANCE = Tolerance(
    "fp32", rtol=1e-3, atol=1e-3, match_iou=0.99, box_atol=0.01, unmatched=0.01,
    pixel_agreement=0.995,
)  # fmt: skip
# FP16: weights and activations rounded to 11-bit mantissas through ~20 layers.
FP16_TOLERANCE = Tolerance(
    "fp16", rtol=2e-2, atol=3e-2, match_iou=0.9, box_atol=0.5, unmatched=0.05,
    pixel_agreement=0.99,
)  # fmt: skip


@dataclass
class ParityReport:
    """Measured agreement. ``max_abs``: output name -> max |onnx - torch|; ``pixel_agreement``:
    class-map output -> least share (0-1) of pixels equal to torch's argmax over the batch
    sizes; ``det_*``: detection counts after NMS summed over images (None without a detection
    task)."""

    tolerance: Tolerance
    images: int
    batches: tuple[int, ...]
    max_abs: dict[str, float] = field(default_factory=dict)
    pixel_agreement: dict[str, float] = field(default_factory=dict)
    det_torch: int | None = None
    det_onnx: int | None = None
    det_matched: int | None = None

    def summary(self) -> dict:
        """JSON-ready figures (stored in the metadata's ``extra.parity``)."""
        d: dict = {
            "tolerance": self.tolerance.name,
            "images": self.images,
            "batches": list(self.batches),
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in self.max_abs.items()},
        }
        if self.pixel_agreement:
            d["pixel_agreement"] = {k: round(v, 6) for k, v in self.pixel_agreement.items()}
        if self.det_torch is not None:
            d["detections"] = {
                "torch": self.det_torch,
                "onnx": self.det_onnx,
                "matched": self.det_matched,
            }
        return d

    def lines(self) -> list[str]:
        """Human-readable lines for the CLI."""
        t = self.tolerance
        out = [
            f"parity vs torch on {self.images} synthetic images (batches "
            f"{', '.join(map(str, self.batches))}), {t.name} tolerance rtol {t.rtol:g} "
            f"atol {t.atol:g}:"
        ]
        out += [f"  {name:<20} max |diff| {v:.3g}" for name, v in self.max_abs.items()]
        out += [
            f"  {name:<20} pixel agreement {100 * v:.3f}% (>= {100 * t.pixel_agreement:g}%)"
            for name, v in self.pixel_agreement.items()
        ]
        if self.det_torch is not None:
            out.append(
                f"  detections after NMS: torch {self.det_torch}, onnx {self.det_onnx}, "
                f"matched {self.det_matched} (same class, IoU >= {t.match_iou:g})"
            )
        return out


def foreign_nodes(proto: onnx.ModelProto) -> list[str]:
    """Nodes that do not belong in a deployable graph: non-standard domains (torch custom ops,
    local functions) and training-only ops (Dropout, BatchNormalization in training mode)."""
    bad = []
    for n in proto.graph.node:
        if n.domain not in STANDARD_DOMAINS:
            bad.append(f"{n.name or n.op_type} ({n.domain}::{n.op_type})")
        elif n.op_type in TRAINING_OPS:
            bad.append(f"{n.name or n.op_type} ({n.op_type}, training-only)")
        elif n.op_type == "BatchNormalization" and any(
            a.name == "training_mode" and a.i == 1 for a in n.attribute
        ):
            bad.append(f"{n.name or n.op_type} (BatchNormalization training_mode=1)")
    bad += [f"function {f.domain}::{f.name}" for f in proto.functions]
    return bad


def check_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Full ONNX checker, strict shape inference and the clean-op check; returns the model with
    inferred shapes. Raises RuntimeFailure naming the first problem."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = (str(e).strip().splitlines() or ["?"])[0]
        raise RuntimeFailure(f"exported graph is invalid: {first[:200]}") from None
    bad = foreign_nodes(proto)
    if bad:
        raise RuntimeFailure(
            f"exported graph has {len(bad)} non-deployable node(s), e.g. {', '.join(bad[:3])}"
        )
    return inferred


def synthetic_inputs(meta: ModelMeta, n: int, seed: int = 1000) -> np.ndarray:
    """``n`` rendered driving scenes, letterboxed and normalised as the runtime does:
    float32 (n, 3, H, W)."""
    frames = [render_scene(seed + i, FRAME_HW).image for i in range(n)]
    x, _ = preprocess(frames, meta.input_hw, meta.mean, meta.std, meta.pad_value)
    return x


def ort_session(proto: onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    """A CPU session on an in-memory model."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(
            proto.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeFailure(f"ONNX Runtime cannot load the exported graph: {first[:200]}") from e


def run_onnx(sess: ort.InferenceSession, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """Run ``x`` (N, 3, H, W) through ``sess`` in chunks of ``batch`` (None = all at once; a short
    last chunk is padded by repetition and trimmed)."""
    names = [o.name for o in sess.get_outputs()]
    inp = sess.get_inputs()[0].name
    step = batch or len(x)
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        real = len(chunk)
        if batch and real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, 0)])
        parts.append([o[:real] for o in sess.run(names, {inp: chunk})])
    return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}


def run_torch(
    model: MultiTaskModel, x: np.ndarray, meta: ModelMeta | None = None
) -> dict[str, np.ndarray]:
    """The contract outputs of the float32 torch model on ``x`` as numpy arrays: float32, and
    uint8 class maps (N, H, W) for segment tasks, or their float32 logits (N, K, H, W) where
    ``meta`` says the export carries logits (``TaskMeta.logits``)."""
    logits = {t.outputs[0] for t in meta.tasks if t.logits} if meta is not None else set()
    with torch.no_grad():
        out = model.eval().float()(torch.from_numpy(x))
    return {
        n: out[n + "_logits" if n in logits else n].numpy(force=True) for n in model.output_names()
    }


def class_map_outputs(meta: ModelMeta) -> set[str]:
    """The outputs of ``meta`` that are uint8 class maps (segment tasks exported without
    ``--seg-logits``)."""
    return {t.outputs[0] for t in meta.tasks if t.kind is TaskKind.SEGMENT and not t.logits}


def nms_detections(outputs: dict[str, np.ndarray], i: int) -> Detections:
    """Image ``i``'s detections from the in-graph NMS outputs (rows below ``det_num``)."""
    n = int(outputs[DET_NUM][i])
    return Detections(
        outputs[DET_BOXES][i, :n].astype(np.float32),
        outputs[DET_SCORES][i, :n].astype(np.float32),
        outputs[DET_CLASSES][i, :n].astype(np.int64),
    )


def match_detections(a: Detections, b: Detections, min_iou: float, box_atol: float) -> int:
    """Greedy one-to-one matching, ``a`` by descending score: a pair needs the same class and
    IoU >= ``min_iou`` or every coordinate within ``box_atol`` pixels (degenerate boxes have
    IoU 0 even with themselves). Returns the number of matched pairs."""
    used = np.zeros(len(b), bool)
    matched = 0
    for k in np.argsort(-a.scores, kind="stable"):
        free = np.flatnonzero(~used & (b.classes == a.classes[k]))
        if free.size == 0:
            continue
        ious = box_iou_one_to_many(a.boxes[k], b.boxes[free])
        close = np.abs(b.boxes[free] - a.boxes[k]).max(axis=1) <= box_atol
        ious = np.where(close, np.maximum(ious, 1.0), ious)
        j = int(np.argmax(ious))
        if ious[j] >= min_iou:
            used[free[j]] = True
            matched += 1
    return matched


def check_parity(
    model: MultiTaskModel,
    proto: onnx.ModelProto,
    meta: ModelMeta,
    tol: Tolerance,
    n_images: int = 4,
    batches: Sequence[int] | None = None,
) -> ParityReport:
    """Run torch (float32) and ONNX Runtime CPU on ``n_images`` synthetic scenes and compare.

    ``batches``: batch sizes to run the ONNX model at; default (1, n_images) for a dynamic-batch
    model, (meta.batch,) for a fixed one. Raises RuntimeFailure when any output is out of
    tolerance or too many detections lack a partner; returns the figures otherwise.
    """
    if batches is None:
        batches = (meta.batch,) if meta.batch else tuple(dict.fromkeys((1, n_images)))
    x = synthetic_inputs(meta, n_images)
    ref = run_torch(model, x, meta)
    maps = class_map_outputs(meta)
    sess = ort_session(proto)
    report = ParityReport(tol, n_images, tuple(batches))
    det = meta.detect
    nms = det is not None and det.nms_in_graph
    onnx_out: dict[str, np.ndarray] = {}
    for b in batches:
        onnx_out = run_onnx(sess, x, b)
        for name, got in onnx_out.items():
            if nms and name in NMS_OUTPUTS:
                continue
            want = ref[name]
            if got.shape != want.shape:
                raise RuntimeFailure(
                    f"parity: output {name!r} has shape {got.shape}, torch gives {want.shape}"
                )
            if name in maps:
                _check_class_map(report, name, got, want, b)
                continue
            diff = np.abs(got.astype(np.float64) - want)
            report.max_abs[name] = max(report.max_abs.get(name, 0.0), float(diff.max()))
            atol = tol.atol_for(name)
            bad = diff > atol + tol.rtol * np.abs(want)
            if bad.any() or not np.isfinite(got).all():
                raise RuntimeFailure(
                    f"parity broken at batch {b}: {name} differs from torch by up to "
                    f"{diff.max():.3g} ({int(bad.sum())} values beyond rtol {tol.rtol:g} "
                    f"atol {atol:g})"
                )
    if det is not None:
        _check_detections(report, ref, onnx_out, meta, tol, nms)
    return report


def _check_class_map(
    report: ParityReport, name: str, got: np.ndarray, want: np.ndarray, batch: int
) -> None:
    """Pixel agreement of a class map (uint8 (N, H, W)) with torch's; RuntimeFailure below the
    tolerance's ``pixel_agreement``."""
    share = float((got == want).mean())
    report.pixel_agreement[name] = min(report.pixel_agreement.get(name, 1.0), share)
    need = report.tolerance.pixel_agreement
    if share < need:
        raise RuntimeFailure(
            f"parity broken at batch {batch}: {name} agrees with torch's argmax on "
            f"{100 * share:.2f}% of pixels (need >= {100 * need:g}%)"
        )


def _check_detections(
    report: ParityReport,
    ref: dict[str, np.ndarray],
    onnx_out: dict[str, np.ndarray],
    meta: ModelMeta,
    tol: Tolerance,
    nms: bool,
) -> None:
    det = meta.detect
    assert det is not None
    max_det = det.max_det
    n_t = n_o = n_m = 0
    for i in range(len(ref[DET_BOXES])):
        want = postprocess_detections(
            ref[DET_BOXES][i],
            ref[DET_SCORES][i],
            det.score_threshold,
            det.iou_threshold,
            max_det,
        )
        if nms:
            got = nms_detections(onnx_out, i)
        else:
            got = postprocess_detections(
                onnx_out[DET_BOXES][i],
                onnx_out[DET_SCORES][i],
                det.score_threshold,
                det.iou_threshold,
                max_det,
            )
        n_t, n_o = n_t + len(want), n_o + len(got)
        n_m += match_detections(want, got, tol.match_iou, tol.box_atol)
    report.det_torch, report.det_onnx, report.det_matched = n_t, n_o, n_m
    allowed = max(1, int(tol.unmatched * max(n_t, n_o))) if tol.unmatched > 0 else 0
    if max(n_t, n_o) - n_m > allowed:
        raise RuntimeFailure(
            f"parity broken: after NMS torch has {n_t} detections, onnx {n_o}, only {n_m} "
            f"match (same class, IoU >= {tol.match_iou:g}; {allowed} may differ)"
        )
