"""``edge-mtl bench --openvino-runtime``: the same ONNX file through OpenVINO's own runtime (the
``openvino`` package), timed beside the onnxruntime rows.

ONNX Runtime's OpenVINO plugin serves Intel hardware only; on other CPUs (AMD EPYC/Ryzen) the
plugin offers no device, yet OpenVINO's runtime reads the ONNX file itself and runs its INT8
ops with VNNI. These rows use bench's own input, threads, warm-up and timing helpers
(:mod:`edge_mtl.bench.timing`), and each carries a parity note: its outputs against the
onnxruntime CPU provider's on the same input. ``openvino`` is imported here only, when asked.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_mtl.bench.baseline import Log
from edge_mtl.bench.machine import device_label, peak_rss_mb, reset_peak_rss
from edge_mtl.bench.metrics import match_count
from edge_mtl.bench.schema import BenchSettings, Row, own_pass, skipped_row
from edge_mtl.bench.stats import latency_stats, throughput
from edge_mtl.bench.timing import bench_input, time_calls
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult
from edge_mtl.runtime.options import OVPrecision
from edge_mtl.runtime.sources import iter_frames, open_source

RUNTIME = "openvino"  # Row.runtime of these rows
PROVIDER = "openvino-runtime"  # their provider column: not an onnxruntime execution provider
NOT_INSTALLED = (
    "openvino runtime: package openvino not installed (pip install 'edge-mtl[openvino]')"
)
PARITY_FRAMES = 8  # frames of the --e2e source the parity note compares on
_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}  # OpenVINO's names -> ours


def import_openvino() -> Any | None:
    """The ``openvino`` module, or None when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino


class OVModel:
    """An ONNX file compiled by OpenVINO for ``device`` at a fixed input ``shape``
    (N, 3, H, W): the batch a row times, as an OpenVINO deployment fixes it.
    ``threads`` > 0 sets ``INFERENCE_NUM_THREADS`` on CPUs; ``hint`` the inference precision
    (``auto``: OpenVINO's default, bf16 on CPUs with native bf16)."""

    def __init__(
        self,
        ov: Any,
        path: Path,
        input_name: str,
        shape: Sequence[int],
        device: str = "CPU",
        threads: int = 0,
        hint: OVPrecision = OVPrecision.AUTO,
        cache_dir: str | None = None,
    ) -> None:
        core = ov.Core()
        model = core.read_model(str(path))
        model.reshape({input_name: list(shape)})
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}  # one request at a time
        if threads > 0 and device.upper().startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if OVPrecision(hint) is not OVPrecision.AUTO:
            config["INFERENCE_PRECISION_HINT"] = OVPrecision(hint).value
        if cache_dir:
            config["CACHE_DIR"] = str(cache_dir)
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.input_name = input_name
        self.outputs = [(o.get_any_name(), o) for o in self.compiled.outputs]
        kind = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.float_precision = _PRECISION.get(kind, kind)  # what its float ops compute in

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Model input (N, 3, H, W) -> raw outputs by ONNX name (copies, as onnxruntime's)."""
        res = self.request.infer({self.input_name: x}, share_inputs=True)
        return {name: res[port] for name, port in self.outputs}


def openvino_error(e: BaseException) -> str:
    """OpenVINO nests its exceptions ("Exception from core.cpp: / ..."): the innermost, last
    line says what went wrong."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


@dataclass(frozen=True)
class Parity:
    """OpenVINO's answers against onnxruntime CPU's on the same inputs. ``prob_diff``: max abs
    difference of class probabilities (softmax, 0-1) over every classification task;
    ``top1``: share of (frame, task) pairs with the same top class; detections above each
    task's score threshold: ``matched`` pairs (same class, IoU >= bench.metrics.MATCH_IOU), of
    ``ref`` (onnxruntime) and ``other`` (OpenVINO)."""

    frames: int
    prob_diff: float
    top1: float
    matched: int
    ref: int
    other: int

    def note(self) -> str:
        """One line for the row's notes."""
        return (
            f"parity with onnxruntime cpu on {self.frames} frame(s): class probabilities max "
            f"|diff| {self.prob_diff:.4f}, top-1 agree {100 * self.top1:.0f}%, detections "
            f"{self.matched} matched of {self.ref} (onnxruntime) / {self.other} (openvino)"
        )


def compare(ref: Sequence[FrameResult], other: Sequence[FrameResult]) -> Parity:
    """:class:`Parity` of two runs' results over the same frames, in order."""
    diffs, same, matched, n_ref, n_other = [0.0], [], 0, 0, 0
    for a, b in zip(ref, other):
        for task, c in a.classifications.items():
            d = b.classifications[task]
            diffs.append(float(np.abs(c.probs - d.probs).max()))
            same.append(c.index == d.index)
        matched += match_count(a.detections, b.detections)
        n_ref, n_other = n_ref + len(a.detections), n_other + len(b.detections)
    top1 = float(np.mean(same)) if same else 1.0
    return Parity(len(ref), max(diffs), top1, matched, n_ref, n_other)


def parity(engine: Engine, model: OVModel, frames: Sequence[np.ndarray], batch: int) -> Parity:
    """``frames`` (uint8 BGR HWC) through ``engine`` (onnxruntime) and ``model`` (OpenVINO,
    compiled for ``batch``), ``batch`` at a time (the last chunk padded), decoded alike."""
    ref: list[FrameResult] = []
    other: list[FrameResult] = []
    for i in range(0, len(frames), batch):
        chunk = list(frames[i : i + batch])
        n = len(chunk)
        x, lbs = engine.preprocess(chunk + [chunk[-1]] * (batch - n))
        ref += engine.postprocess(engine.run(x), lbs)[:n]
        other += engine.postprocess(model.run(x), lbs)[:n]
    return compare(ref, other)


def parity_frames(engine: Engine, source: str | None) -> list[np.ndarray]:
    """The frames parity is checked on: the first :data:`PARITY_FRAMES` of ``source`` (the
    bench's ``--e2e`` source), else the timed input's seeded noise frames."""
    if source is None:
        h, w = engine.meta.input_hw
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(PARITY_FRAMES)]
    src = open_source(source)
    try:
        return [f.image for f in itertools.islice(iter_frames(src), PARITY_FRAMES)]
    finally:
        src.close()


def _compile(ov: Any, engine: Engine, batch: int, s: BenchSettings) -> OVModel:
    """The row's model: the engine's file and input name at ``batch`` x its input size."""
    h, w = engine.meta.input_hw
    return OVModel(
        ov, engine.path, engine.meta.input_name, (batch, 3, h, w), s.ov_device, s.threads,
        OVPrecision(s.ov_precision), s.ov_cache_dir,
    )  # fmt: skip


def openvino_rows(
    path: str | os.PathLike[str],
    settings: BenchSettings,
    machine: dict[str, Any],
    session_index: int = 0,
    log: Log | None = None,
    imgsz: tuple[int, int] | None = None,
) -> list[Row]:
    """One row per batch size of ``settings``: ``path`` compiled by OpenVINO's runtime, timed
    on the input the onnxruntime rows get. Skipped rows say why (``openvino`` not installed,
    OpenVINO cannot compile the file). ``imgsz`` (H, W): for a model without metadata."""
    p = Path(path)
    log = log or (lambda msg: None)
    base: dict[str, Any] = dict(
        session=session_index, device=device_label(machine, None), runtime=RUNTIME,
        model=p.name, model_path=str(p), model_size_mb=p.stat().st_size / 1e6, precision=None,
        provider_requested=PROVIDER, provider=PROVIDER, fallback_reasons=[], input_hw=None,
        runs=0, warmup=settings.warmup, threads=settings.threads,
    )  # fmt: skip
    ov = import_openvino()
    if ov is None:
        log(f"{p.name} [{PROVIDER}]: skipped ({NOT_INSTALLED})")
        return [skipped_row(base, b, NOT_INSTALLED) for b in settings.batches]
    engine = Engine(p, "cpu", EngineConfig(imgsz=imgsz, intra_op_threads=settings.threads))
    base["input_hw"] = list(engine.meta.input_hw)
    frames = parity_frames(engine, settings.e2e_source)
    rows = []
    for batch in settings.batches:
        if engine.meta.batch is not None and batch != engine.meta.batch:
            why = f"the model has a fixed batch of {engine.meta.batch}"
            rows.append(skipped_row(base, batch, why))
            continue
        can_reset = reset_peak_rss()
        try:
            model = _compile(ov, engine, batch, settings)
        except Exception as e:  # OpenVINO's own exception types
            why = f"openvino runtime: cannot compile {p.name} ({openvino_error(e)})"
            log(f"{p.name} [{PROVIDER}] batch {batch}: skipped ({why})")
            rows.append(skipped_row(base, batch, why))
            continue
        log(f"{p.name} [{PROVIDER}] batch {batch}: measuring")
        rows.append(_measure(ov, engine, model, base, batch, settings, frames, can_reset))
        del model
    return rows


def _measure(
    ov: Any,
    engine: Engine,
    model: OVModel,
    base: dict[str, Any],
    batch: int,
    s: BenchSettings,
    frames: list[np.ndarray],
    can_reset: bool,
) -> Row:
    """One ``ok`` row: the own pass's latency and memory, its precision and parity notes."""
    x = bench_input(engine, batch)
    own = own_pass(s)
    ms = time_calls(lambda: model.run(x), own.runs, own.seconds, own.warmup)
    stored = engine.meta.precision.value
    precision = "int8" if stored == "int8" else model.float_precision
    rest = "quantized ops int8, the rest " if stored == "int8" else ""
    h, w = engine.meta.input_hw
    notes = [
        f"OpenVINO {ov.__version__.split('-')[0]} runtime on {s.ov_device.upper()}, input "
        f"fixed at {batch}x3x{h}x{w}; {stored} file runs {rest}{model.float_precision} "
        f"(precision hint {s.ov_precision})",
        parity(engine, model, frames, batch).note(),
    ]
    if not can_reset:
        notes.append("peak RSS is the process peak since start (cannot reset it here)")
    stats = latency_stats(ms)
    row = Row(
        **{**base, "precision": precision}, batch=batch, status="ok", reason=None,
        latency_ms=asdict(stats), throughput_ips=throughput(ms, batch),
        peak_rss_mb=peak_rss_mb(), gpu_memory_mb=None, e2e=None, notes=notes,
    )  # fmt: skip
    row.runs = len(ms)
    return row


def timed_call(engine: Engine, batch: int, settings: BenchSettings) -> Callable[[], object]:
    """The timed call of an OpenVINO row for timing in turns with the others
    (:func:`edge_mtl.bench.measure.retime_in_turns`): ``engine``'s file compiled again at
    ``batch``, run on the same input as the onnxruntime rows (``engine`` preprocesses it)."""
    ov = import_openvino()
    if ov is None:  # the row was measured, so openvino was importable a moment ago
        raise RuntimeError(NOT_INSTALLED)
    model = _compile(ov, engine, batch, settings)
    x = bench_input(engine, batch)
    return lambda: model.run(x)
