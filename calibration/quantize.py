"""FP32 ONNX -> INT8 QDQ ONNX with ONNX Runtime's static quantizer, calibrated on real images.

Steps: refuse a model that is already quantized; pick a condition-balanced calibration subset
(:mod:`edge_mtl.calibration.select`); ``quant_pre_process`` (ORT optimisation + shape inference);
``quantize_static`` in QDQ format, calibrating once and caching the activation ranges so later
passes (the sensitivity search, :mod:`edge_mtl.calibration.search`) only re-quantize. The
decode tail - every node after the last Conv/Gemm on the way to an output (reshape, sigmoid, box
arithmetic, concat; a segment task's upsampling and argmax) - stays float: it costs nothing to
run and 8 bits cannot hold pixel coordinates up to the input width. So does a softmax whose
output weights a sum (attention pooling): its few hundred weights of about 1/400 each fall
below an 8-bit step of 1/255. Weights always have a scale per output channel: against one per
tensor it kept more accuracy at the same or lower latency on AVX2 and VNNI CPUs
(docs/results.md).

The same QDQ file serves TensorRT (explicit quantization) when quantized with
``Target.TENSORRT`` (symmetric int8 activations, which TensorRT requires). Accuracy (and the
search that reuses it) is measured on ``eval_provider``, since INT8 kernels differ between
providers; latency is always measured on CPU. Nothing here imports torch: ``edge-mtl quantize``
runs where only ``pip install edge-mtl[quantize]`` is installed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_mtl.bench.accuracy import (
    EvalSet,
    LabelReader,
    MaskReader,
    Predictions,
    eval_engine,
    image_list,
)
from edge_mtl.bench.timing import time_engines
from edge_mtl.calibration.accuracy import AccuracyReport, compare
from edge_mtl.calibration.quiet import library_quiet
from edge_mtl.calibration.reader import CalibrationReader
from edge_mtl.calibration.search import WEIGHTED_OPS, consumers_of, search_exclusions
from edge_mtl.calibration.select import DEFAULT_SIZE, select_calibration
from edge_mtl.runtime.errors import EdgeMTLError, InputError, MetadataError, RuntimeFailure
from edge_mtl.runtime.files import (
    atomic_write,
    check_model_file,
    check_writable,
    invalid_model_error,
)
from edge_mtl.runtime.hardware import has_vnni
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision
from edge_mtl.runtime.providers import Provider, first_line

log = logging.getLogger("edge_mtl.calibration")

MAX_IR_VERSION = 10  # onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads up to 13
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
     "MatMulInteger"}
)  # fmt: skip
AUTO_AGREEMENT_IMAGES = 32
# Images per calibration pass: ORT keeps every intermediate tensor of a pass in memory (about
# 80 MB an image at 256x448 for the histogram methods), so 300 images in one pass ran a 24 GB
# machine out of memory; ranges and histograms merge across passes.
CALIBRATION_PASS = 16


def calibration_stride(n: int) -> int:
    """Images per pass for ``n`` images: the largest divisor of ``n`` up to
    :data:`CALIBRATION_PASS` (ORT's strided calibration needs the passes to divide ``n``)."""
    return max(d for d in range(1, min(n, CALIBRATION_PASS) + 1) if n % d == 0)


class Method(str, Enum):
    """Calibration methods (``--method``), mapped to ORT's :class:`CalibrationMethod`."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    @property
    def ort(self) -> CalibrationMethod:
        return {
            Method.MINMAX: CalibrationMethod.MinMax,
            Method.ENTROPY: CalibrationMethod.Entropy,
            Method.PERCENTILE: CalibrationMethod.Percentile,
        }[self]


class ReduceRange(str, Enum):
    """7-bit weights (``on``) avoid int16 saturation in the u8 x s8 kernels of CPUs without VNNI;
    ``auto`` turns it on exactly there."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    def resolve(self) -> bool:
        return not has_vnni() if self is ReduceRange.AUTO else self is ReduceRange.ON


class Target(str, Enum):
    """CPU: uint8 asymmetric activations, int8 symmetric weights (ORT's x86 recommendation).
    TensorRT: int8 symmetric activations and weights (the only int8 TensorRT accepts)."""

    CPU = "cpu"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class QuantizeConfig:
    """One quantization run. ``exclude``: node names kept float, or ``("auto",)`` for the
    sensitivity search; ``tolerance`` in points (metric drop on ``eval_data``, or 100 minus
    output agreement on calibration images without it); ``eval_provider`` runs FP32 and INT8
    for the accuracy report and the search; ``threads`` for evaluation and timing."""

    onnx: str
    calib: str
    out: str
    method: Method = Method.MINMAX
    reduce_range: ReduceRange = ReduceRange.AUTO
    target: Target = Target.CPU
    exclude: tuple[str, ...] = ()
    eval_data: str | None = None
    calib_size: int = DEFAULT_SIZE
    seed: int = 0
    tolerance: float = 1.0
    max_auto_exclude: int = 32
    eval_provider: Provider = Provider.CPU
    threads: int = 2
    latency_seconds: float = 3.0

    @property
    def auto(self) -> bool:
        return self.exclude == ("auto",)


@dataclass
class QuantizeResult:
    """The written model and what it cost: ``kept_float`` auto/explicit exclusions (beyond the
    float tail), ``search`` the sensitivity steps as (nodes kept, drop in points), ``latency_ms``
    label -> p50 ms at batch 1, ``accuracy`` the FP32 vs INT8 table when eval data was given."""

    path: Path
    meta: ModelMeta
    kept_float: list[str]
    float_tail: list[str]
    search: list[tuple[int, float]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    accuracy: AccuracyReport | None = None
    drop: float | None = None


def load_fp32(path: str | Path) -> tuple[onnx.ModelProto, ModelMeta]:
    """Load an FP32 edge-mtl export; raise InputError for anything else (missing, not ONNX, no
    metadata, FP16, already quantized) with one line naming the file."""
    p = check_model_file(path)
    try:
        proto = onnx.load(str(p))
    except Exception as e:  # onnx raises DecodeError/ValueError/... on a non-ONNX file
        raise invalid_model_error(p, e) from None
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise invalid_model_error(p, e) from None
    text = next((m.value for m in proto.metadata_props if m.key == METADATA_KEY), None)
    if text is None:
        raise MetadataError(f"{p}: has no '{METADATA_KEY}' metadata; quantize an edge-mtl export")
    meta = ModelMeta.from_json(text, str(p))
    check_not_quantized(proto, meta, p)
    check_no_nms(proto, meta, p)
    if meta.precision is not Precision.FP32 or meta.input_dtype != "float32":
        raise InputError(
            f"{p}: precision {meta.precision.value} with {meta.input_dtype} input; "
            "quantize the FP32 export (float32 input)"
        )
    return proto, meta


def check_not_quantized(proto: onnx.ModelProto, meta: ModelMeta | None, path: Path) -> None:
    """Raise InputError if ``proto`` has quantization nodes or its metadata says int8."""
    ops = {n.op_type for n in proto.graph.node}
    found = sorted(o for o in ops if o in QUANTIZED_OPS or o.startswith("QLinear"))
    if found or (meta is not None and meta.precision is Precision.INT8):
        what = ", ".join(found) if found else "metadata precision int8"
        raise InputError(f"{path}: model is already quantized ({what}); give the FP32 export")


def check_no_nms(proto: onnx.ModelProto, meta: ModelMeta, path: Path) -> None:
    """Raise InputError for a model with in-graph NMS. Its data-dependent NonMaxSuppression
    shapes break ORT's pre-processing, and the plain export quantized gives the same detections
    once the runtime runs the same NMS on its outputs (and keeps --conf/--iou adjustable)."""
    det = meta.detect
    if (det is not None and det.nms_in_graph) or any(
        n.op_type == "NonMaxSuppression" for n in proto.graph.node
    ):
        raise InputError(
            f"{path} has in-graph NMS: quantize the plain export (edge-mtl export without "
            "--nms), then run the INT8 model as it is: the runtime applies the same NMS"
        )


def attention_softmax(proto: onnx.ModelProto) -> list[str]:
    """Names of Softmax nodes read by a weighted op (MatMul/Einsum/Gemm): attention weights,
    kept float (see the module docstring) for a few microseconds."""
    consumers = consumers_of(proto)
    return [
        n.name
        for n in proto.graph.node
        if n.op_type == "Softmax"
        and any(c.op_type in WEIGHTED_OPS for c in consumers.get(n.output[0], []))
    ]


def float_tail(proto: onnx.ModelProto) -> list[str]:
    """Names of nodes after the last weighted op (Conv/Gemm/MatMul) on every path to a graph
    output: they only reshape, activate and decode, so they stay float at no speed cost."""
    consumers = consumers_of(proto)
    outputs = {o.name for o in proto.graph.output}
    tail: set[str] = set()
    for n in reversed(proto.graph.node):  # topological order reversed: consumers first
        if n.op_type in WEIGHTED_OPS:
            continue
        users = [c for t in n.output for c in consumers.get(t, [])]
        feeds_output = any(t in outputs for t in n.output)
        if (users or feeds_output) and all(c.name in tail for c in users):
            tail.add(n.name)
    return [n.name for n in proto.graph.node if n.name in tail]


class Quantizer:
    """A pre-processed FP32 model plus cached calibration ranges: ``build(exclude, out)`` makes
    one QDQ model in seconds, so the sensitivity search can try many exclusion sets."""

    def __init__(self, qc: QuantizeConfig, fp32: Path, reader: CalibrationReader, work: Path):
        self.qc, self.reader, self.work = qc, reader, work
        self.pre = work / "pre.onnx"
        try:
            with library_quiet():
                quant_pre_process(str(fp32), str(self.pre), skip_symbolic_shape=False)
        except Exception as e:  # ORT/onnx raise many types; the first line tells the story
            raise RuntimeFailure(
                f"{fp32}: quantization pre-processing failed ({first_line(e)})"
            ) from e
        self.pre_proto = onnx.load(str(self.pre))
        self.node_names = {n.name for n in self.pre_proto.graph.node}
        self.cache = work / "ranges.json"
        self.reduce_range = qc.reduce_range.resolve() and qc.target is Target.CPU

    def build(self, exclude: list[str], out: Path) -> Path:
        """Quantize with ``exclude`` kept float; calibrates on the first call, then reuses."""
        qc = self.qc
        cpu = qc.target is Target.CPU
        n = len(self.reader.paths)
        self.reader.set_range(0, n)  # rewound to all images: calibration leaves its last pass set
        try:
            with library_quiet():
                quantize_static(
                    str(self.pre),
                    str(out),
                    self.reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=self.reduce_range,
                    activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(exclude),
                    calibrate_method=qc.method.ort,
                    extra_options={
                        "ActivationSymmetric": not cpu,
                        "WeightSymmetric": True,
                        "CalibStridedMinMax": calibration_stride(n),  # any method, in passes
                    },
                    calibration_cache_path=str(self.cache),
                )
        except EdgeMTLError:  # our calibration reader's own message (an undecodable image)
            raise
        except Exception as e:  # onnxruntime's own error types
            raise RuntimeFailure(f"quantize_static failed ({first_line(e)})") from e
        return out


def quantize(
    qc: QuantizeConfig,
    read_labels: LabelReader | None = None,
    read_mask: MaskReader | None = None,
) -> QuantizeResult:
    """Run a whole quantization (see the module docstring) and measure it; writes ``qc.out``.
    ``read_labels`` reads ``qc.eval_data`` (needed with it; ``edge_mtl.data.bdd.read_bdd``),
    ``read_mask`` its pixel labels for segment tasks."""
    fp32 = Path(qc.onnx)
    _, meta = load_fp32(fp32)
    out = check_writable(qc.out, "INT8 model")
    if qc.threads < 1:
        raise InputError(f"--threads {qc.threads}: must be at least 1")
    selection = select_calibration(qc.calib, qc.calib_size, qc.seed)
    reader = CalibrationReader.from_meta(selection.paths, meta)
    eval_set = (
        EvalSet.labelled(qc.eval_data, meta, read_labels, read_mask) if qc.eval_data else None
    )
    if eval_set is not None or qc.auto:
        check_eval_provider(fp32, qc)

    with tempfile.TemporaryDirectory(prefix="edge_mtl_quant.") as tmp:
        work = Path(tmp)
        q = Quantizer(qc, fp32, reader, work)
        tail = float_tail(q.pre_proto) + attention_softmax(q.pre_proto)
        explicit = [] if qc.auto else list(qc.exclude)
        unknown = [n for n in explicit if n not in q.node_names]
        if unknown:
            raise InputError(
                f"--exclude: no node named {', '.join(map(repr, unknown))} in {fp32} "
                f"(e.g. {', '.join(sorted(q.node_names)[:3])})"
            )
        log.info("calibrating on %d images (%s)", len(selection.paths), qc.method.value)
        base = q.build(tail + explicit, work / "int8.onnx")
        preds: dict[str, Predictions] = {}
        judge = eval_set or image_list(selection.paths[:AUTO_AGREEMENT_IMAGES])
        report = None
        if eval_set is not None or qc.auto:
            log.info("FP32 and INT8 on %d images (%s)", len(judge.images), qc.eval_provider.value)
            report = compare(
                {"fp32": fp32, "int8": base}, judge, threads=qc.threads, cache=preds,
                provider=qc.eval_provider,
            )  # fmt: skip
        chosen, kept, search = base, explicit, []
        if qc.auto and report is not None:
            chosen, kept, report, search = search_exclusions(
                q, meta, base, tail, judge, fp32, preds, report
            )
        final = _finish(chosen, out, meta, qc, selection.summary, q.reduce_range, kept, tail)
        timed = {"fp32": fp32, "int8": out}
        if kept and qc.auto:
            timed["int8 (no exclusions)"] = base
        log.info("latency of %s in turns on CPU", ", ".join(timed))
        latency = measure_latency(timed, meta, reader, qc.threads, qc.latency_seconds)
    drop = report.max_drop("int8") if report is not None else None
    accuracy = report if eval_set is not None else None
    return QuantizeResult(out, final, kept, tail, search, latency, accuracy, drop)


def check_eval_provider(fp32: Path, qc: QuantizeConfig) -> None:
    """Fail in seconds rather than after calibration: a strict session of the FP32 model on
    ``qc.eval_provider``. Raises the runtime's error (one line naming the provider and why it
    cannot run here: :class:`RuntimeFailure`, or :class:`InputError` for a missing plugin)."""
    try:
        eval_engine(fp32, qc.eval_provider, qc.threads)
    except EdgeMTLError as e:
        raise type(e)(f"--eval-provider: {e}") from None


def _finish(
    qdq: Path,
    out: Path,
    meta: ModelMeta,
    qc: QuantizeConfig,
    selection: dict[str, Any],
    reduce_range: bool,
    kept: list[str],
    tail: list[str],
) -> ModelMeta:
    """Add metadata (precision int8 + calibration summary), check, write ``out`` atomically."""
    proto = onnx.load(str(qdq))
    cpu = qc.target is Target.CPU
    calibration = {
        "format": "QDQ",
        "target": qc.target.value,
        "method": qc.method.value,
        "per_channel": True,
        "reduce_range": reduce_range,
        "activations": "uint8 asymmetric" if cpu else "int8 symmetric",
        "weights": "int8 symmetric per-channel",
        "images": selection["size"],
        "selection": selection,
        "strata": selection.get("strata", {}),
        "exclude_mode": "auto" if qc.auto else ("explicit" if kept else "none"),
        "excluded_nodes": list(kept),
        "float_tail": list(tail),
    }
    new = meta.replace(precision=Precision.INT8, calibration=calibration)
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=METADATA_KEY, value=new.to_json())
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise RuntimeFailure(f"quantized model fails the ONNX checker: {str(e)[:200]}") from None
    with atomic_write(out) as f:
        f.write(proto.SerializeToString())
    return new


def measure_latency(
    models: dict[str, Path],
    meta: ModelMeta,
    reader: CalibrationReader,
    threads: int,
    seconds: float,
    rounds: int = 3,
) -> dict[str, float]:
    """Median inference latency (ms, batch 1, CPU, ``threads`` intra-op threads) per model on a
    real calibration image; models alternate in ``rounds`` so drift hits them alike."""
    x = reader.tensor(reader.paths[0])
    engines = {k: eval_engine(p, Provider.CPU, threads) for k, p in models.items()}
    runs = [(eng, x) for eng in engines.values()]
    times = time_engines(runs, [(1, seconds / rounds)] * rounds, warmup=3)
    return {k: float(np.median(v)) for k, v in zip(engines, times)}
