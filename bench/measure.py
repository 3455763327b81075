"""``edge-mtl bench``: latency, throughput and memory of exported models, comparable across
models, providers, batch sizes and machines.

Every combination model x provider x batch becomes one :class:`~edge_mtl.bench.schema.Row`:
after ``warmup`` untimed calls, ``Engine.run`` (the bare ``session.run``, I/O binding included on
GPUs) is timed ``runs`` times or for ``seconds``. With an e2e source, batch-1 rows also go
through the real pipeline (:mod:`edge_mtl.bench.e2e`), so end-to-end FPS can be set against bare
inference FPS. With ``turns``, :func:`retime_in_turns` then times all rows again in turns. Nothing
here imports torch; torch rows come from a :class:`~edge_mtl.bench.baseline.Baseline`.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_mtl.bench.baseline import Baseline, Log
from edge_mtl.bench.e2e import E2E_ROUNDS, E2ERounds, run_e2e, run_streams
from edge_mtl.bench.machine import (
    GPU_PROVIDERS,
    device_label,
    gpu_memory_mb,
    peak_rss_mb,
    reset_peak_rss,
)
from edge_mtl.bench.openvino_runtime import RUNTIME as OV_RUNTIME
from edge_mtl.bench.openvino_runtime import openvino_rows
from edge_mtl.bench.openvino_runtime import timed_call as openvino_timed_call
from edge_mtl.bench.schema import BenchSettings, Row, own_pass, skipped_row
from edge_mtl.bench.stats import latency_stats, throughput
from edge_mtl.bench.timing import bench_input, time_calls, time_in_turns, turn_blocks, turn_order
from edge_mtl.runtime.engine import Engine, EngineConfig, OVPrecision
from edge_mtl.runtime.errors import EdgeMTLError
from edge_mtl.runtime.files import check_model_file, invalid_model_error
from edge_mtl.runtime.hardware import has_vnni
from edge_mtl.runtime.metadata import METADATA_KEY, Precision
from edge_mtl.runtime.providers import Provider, fallback_summary


def _quiet(msg: str) -> None:
    """The default ``log``: progress goes nowhere."""


def _model_info(path: Path, imgsz: tuple[int, int] | None) -> tuple[bool, list[str]]:
    """Validate ``path`` once on CPU (raises InputError/MetadataError for the user) and say
    whether it carries edge-mtl metadata. Notes say when ``--imgsz`` does not apply."""
    check_model_file(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's InvalidProtobuf/Fail/... types
        raise invalid_model_error(path, e) from None
    has_meta = METADATA_KEY in sess.get_modelmeta().custom_metadata_map
    del sess
    config = EngineConfig(imgsz=None if has_meta else imgsz, warmup_runs=0)
    engine = Engine(path, "cpu", config)  # checks metadata against the graph
    notes = []
    if has_meta and imgsz is not None and tuple(imgsz) != engine.meta.input_hw:
        h, w = engine.meta.input_hw
        notes.append(f"--imgsz ignored: the export fixes the input at {h}x{w}")
    return has_meta, notes


def _precision(engine: Engine, has_meta: bool, notes: list[str]) -> str:
    """The precision the row really executes in (``Engine.precision``: OpenVINO runs fp32 files
    in bf16 on CPUs with native bf16), with notes where the provider changes the story."""
    if has_meta:
        p = engine.meta.precision
    else:
        inp = next(i for i in engine.session.get_inputs() if i.name == engine.meta.input_name)
        p = Precision.FP16 if inp.type == "tensor(float16)" else Precision.FP32
        notes.append("no edge-mtl metadata: precision inferred from the input type")
    if engine.provider.value == "cpu" and p is Precision.FP16:
        notes.append("CPU provider: ops without fp16 kernels run in fp32 behind inserted casts")
    if engine.provider.value == "cpu" and p is Precision.INT8 and not has_vnni():
        notes.append("CPU has no VNNI/AMX int8 instructions: int8 kernels take a slower path")
    if engine.precision != p.value or engine.provider.value == "openvino":
        notes.append(f"{p.value} file runs in {engine.precision}: {engine.precision_reason}")
    ov_nodes = engine.nodes.get("OpenVINOExecutionProvider", 0)
    if engine.nodes and ov_nodes < sum(engine.nodes.values()):
        notes.append(
            f"OpenVINO took {ov_nodes} of {sum(engine.nodes.values())} nodes; the rest ran on "
            "the CPU provider"
        )
    return str(engine.precision)


def bench_model(
    path: str | os.PathLike[str],
    settings: BenchSettings,
    machine: dict[str, Any],
    session_index: int = 0,
    log: Log = _quiet,
    openvino_runtime: bool = False,
) -> list[Row]:
    """All rows of one ONNX model: each provider x batch, measured or skipped with a reason;
    ``openvino_runtime`` adds the file through OpenVINO's own runtime, one row per batch
    (:mod:`edge_mtl.bench.openvino_runtime`). A missing or invalid model raises
    :class:`InputError`/:class:`MetadataError`."""
    p = Path(path)
    has_meta, model_notes = _model_info(p, settings.imgsz)
    config = engine_config(None if has_meta else settings.imgsz, settings)
    rows: list[Row] = []
    for requested in settings.providers:
        base: dict[str, Any] = dict(
            session=session_index, device=device_label(machine, None), runtime="onnxruntime",
            model=p.name, model_path=str(p), model_size_mb=p.stat().st_size / 1e6,
            precision=None, provider_requested=requested, provider=None, fallback_reasons=[],
            input_hw=None, runs=0, warmup=settings.warmup, threads=settings.threads,
        )  # fmt: skip
        can_reset = reset_peak_rss()
        t0 = time.perf_counter()
        try:
            engine = Engine(p, requested, config)
        except EdgeMTLError as e:  # the model loaded on CPU above, so this is the provider
            why = str(e).removeprefix(f"{p}: ")
            rows += [skipped_row(base, b, why, notes=list(model_notes)) for b in settings.batches]
            log(f"{p.name} [{requested}]: skipped ({why})")
            continue
        base.update(
            provider=engine.provider.value,
            fallback_reasons=list(engine.fallback_reasons),
            fallback=fallback_summary(engine.skipped),
            device=device_label(machine, engine.provider.value),
            input_hw=list(engine.meta.input_hw),
        )
        built = time.perf_counter() - t0
        session_notes = []
        if engine.provider is Provider.TENSORRT:  # the first session of the file builds it
            session_notes.append(f"TensorRT session build (or engine cache load): {built:.1f} s")
        for batch in settings.batches:
            notes = [*model_notes, *session_notes]
            base["precision"] = _precision(engine, has_meta, notes)
            fixed = engine.meta.batch
            if fixed is not None and batch != fixed:
                reason = f"the model has a fixed batch of {fixed}; export with a dynamic batch"
                rows.append(skipped_row(base, batch, reason, notes=notes))
                continue
            if not can_reset:
                notes.append("peak RSS is the process peak since start (cannot reset it here)")
            log(f"{p.name} [{engine.provider.value}] batch {batch}: measuring")
            rows.append(_measure(engine, base, batch, settings, notes))
            can_reset = reset_peak_rss()
        del engine
        gc.collect()
    if openvino_runtime:
        imgsz = None if has_meta else settings.imgsz
        rows += openvino_rows(p, settings, machine, session_index, log, imgsz)
        gc.collect()
    return rows


def engine_config(imgsz: tuple[int, int] | None, settings: BenchSettings) -> EngineConfig:
    """The bench's engine settings; ``imgsz`` overrides the metadata's input size."""
    return EngineConfig(
        imgsz=imgsz,
        intra_op_threads=settings.threads,
        ov_device=settings.ov_device,
        ov_precision=OVPrecision(settings.ov_precision),
        ov_cache_dir=settings.ov_cache_dir,
        warmup_runs=0,
    )


def _measure(
    engine: Engine, base: dict[str, Any], batch: int, s: BenchSettings, notes: list[str]
) -> Row:
    """One ``ok`` row: the own pass's latency and memory (and e2e unless in turns)."""
    x = bench_input(engine, batch)
    own = own_pass(s)
    ms = time_calls(lambda: engine.run(x), own.runs, own.seconds, own.warmup)
    rss = peak_rss_mb()
    gpu_mb = None
    if engine.provider.value in GPU_PROVIDERS:
        gpu_mb, why = gpu_memory_mb()
        if why:
            notes.append(why)
    stats = latency_stats(ms)
    row = Row(
        **base, batch=batch, status="ok", reason=None, latency_ms=asdict(stats),
        throughput_ips=throughput(ms, batch), peak_rss_mb=rss, gpu_memory_mb=gpu_mb, e2e=None,
        notes=notes,
    )  # fmt: skip
    row.runs = len(ms)
    if s.e2e_source is not None and batch == 1 and not s.turns:  # in turns: retime_in_turns
        e2e = run_e2e(engine, s.e2e_source, s.e2e_frames, x)
        e2e.streams = _streams(engine, s, notes)
        row.e2e = asdict(e2e)
    return row


def _streams(engine: Engine, s: BenchSettings, notes: list[str]) -> list[dict[str, Any]] | None:
    """:func:`run_streams` of the settings' ``e2e_streams`` as dicts (``None`` without them)."""
    if not s.e2e_streams:
        return None
    if engine.meta.batch is not None and max(s.e2e_streams) > 1:
        notes.append(
            f"fixed batch of {engine.meta.batch}: streams are run {engine.meta.batch} "
            "frame(s) per call (export with --dynamic-batch to batch them)"
        )
    return [asdict(r) for r in run_streams(engine, s.e2e_source or "", s.e2e_streams, s.e2e_frames)]


# ---- timing in turns -----------------------------------------------------------------------


def retime_in_turns(
    rows: Sequence[Row],
    settings: BenchSettings,
    baseline: Baseline | None = None,
    log: Log = _quiet,
) -> None:
    """Measure the latency of every ``ok`` row again, all of them in turns
    (:func:`time_in_turns` over :func:`turn_blocks` of the settings' ``runs`` or ``seconds``),
    and replace each row's ``latency_ms``, ``throughput_ips`` and ``runs`` with it. All the
    rows' models are loaded at once for this; memory figures stay those of each row's own pass.
    ONNX rows reopen their model on the provider that ran it; torch rows (``runtime ==
    "torch"``) get their call from ``baseline.call(row, settings)``, since bench never imports
    torch. With an e2e source, the batch-1 ONNX rows' e2e then runs in turns too
    (:func:`e2e_in_turns`) on the same engines."""
    live = [r for r in rows if r.status == "ok"]
    if not live:
        return
    engines: dict[tuple[str, str], Engine] = {}
    calls: list[Callable[[], object]] = []
    piped: list[tuple[Row, Engine]] = []  # batch-1 ONNX rows and their engines, for e2e

    def engine(r: Row, provider: str) -> Engine:
        key = (r.model_path, provider)
        if key not in engines:
            # the row's own input size: the metadata's, or --imgsz for a model without it
            config = engine_config(tuple(r.input_hw or ()) or None, settings)
            engines[key] = Engine(Path(r.model_path), provider, config)
        return engines[key]

    for r in live:
        if r.runtime == "torch":
            if baseline is None:
                raise ValueError("retime_in_turns: a torch row needs a baseline")
            calls.append(baseline.call(r, settings))
            continue
        if r.runtime == OV_RUNTIME:  # the onnxruntime CPU engine preprocesses its input
            calls.append(openvino_timed_call(engine(r, "cpu"), r.batch, settings))
            continue
        eng = engine(r, str(r.provider))
        x = bench_input(eng, r.batch)
        calls.append(lambda e=eng, x=x: e.run(x))
        if r.batch == 1:
            piped.append((r, eng))
    blocks = turn_blocks(settings.runs, settings.seconds)
    log(f"timing {len(live)} row(s) in turns: {len(blocks)} rounds")

    def progress(k: int, ms: list[list[float]]) -> None:
        if k + 1 == len(blocks) or (k + 1) % max(1, len(blocks) // 4) == 0:
            medians = ", ".join(
                f"{r.model} [{r.provider}] {np.median(m):.1f} ms" for r, m in zip(live, ms)
            )
            log(f"round {k + 1}/{len(blocks)}: p50 so far {medians}")

    try:
        timings = time_in_turns(calls, blocks, settings.warmup, progress)
        for r, ms in zip(live, timings):
            r.latency_ms = asdict(latency_stats(ms))
            r.throughput_ips = throughput(ms, r.batch)
            r.runs = len(ms)
        if settings.e2e_source is not None:
            e2e_in_turns(piped, settings, log)
    finally:
        calls.clear()
        engines.clear()
        piped.clear()
        gc.collect()


def e2e_in_turns(rows: Sequence[tuple[Row, Engine]], settings: BenchSettings, log: Log) -> None:
    """Set each ``(row, engine)``'s ``e2e`` from :class:`~edge_mtl.bench.e2e.E2ERounds` of its
    engine, all rows in turns: round k runs one e2e round of every row in :func:`turn_order`, as
    :func:`time_in_turns` does, so a slow stretch of the machine lands in every row's e2e
    figure rather than in one row's. Stream counts (``e2e_streams``) then run row by row."""
    if not rows:
        return
    src = settings.e2e_source or ""
    acc = [E2ERounds(e, src, settings.e2e_frames, bench_input(e, 1)) for _, e in rows]
    log(f"end to end in turns: {len(rows)} row(s), {E2E_ROUNDS} rounds")
    for k in range(E2E_ROUNDS):
        for i in turn_order(k, len(acc)):
            acc[i].round()
    for (r, e), a in zip(rows, acc):
        result = a.result()
        result.streams = _streams(e, settings, r.notes)
        r.e2e = asdict(result)
