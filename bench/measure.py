"""``edge-mtl bench``: latency, throughput and memory of exported models, comparable across
models, providers, batch sizes and machines.

Every combination model x provider x batch becomes one :class:`Row`: after ``warmup`` untimed
calls, ``Engine.run`` (the bare ``session.run``, I/O binding included on GPUs) is timed ``runs``
times or for ``seconds``. With an e2e source, batch-1 rows also go through the real
:class:`~runtime.pipeline.Pipeline` (decode, preprocess, inference, postprocess overlapped on
threads), so end-to-end FPS can be set against bare inference FPS; with ``e2e_streams``, N
copies of the source also go through :class:`~runtime.multistream.MultiStream`, batched into
one inference call, against 1 stream in the same run. Results form one JSON document (schema
in docs/bench.md, version :data:`SCHEMA_VERSION`); several documents taken on different
machines merge into one. Rendering (table, markdown, plot) lives in
:mod:`edge_mtl.bench.report`. Nothing here imports torch; the torch baseline row is built by
``edge_mtl.export.torch_baseline`` with the same :func:`time_calls` and :func:`latency_stats`.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from edge_mtl.runtime.errors import EdgeMTLError, InputError
from edge_mtl.runtime.files import (
    check_model_file,
    invalid_model_error,
    read_json,
    write_json_atomic,
)
from edge_mtl.runtime.hardware import cpu_model, has_vnni, isa_features, isa_summary
from edge_mtl.runtime.metadata import METADATA_KEY, Precision

SCHEMA_VERSION = 2
GPU_PROVIDERS = ("cuda", "tensorrt")


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. ``runs`` timed calls per row, or (``seconds`` set) as many as fit in
    ``seconds`` wall-clock seconds (at least one). ``threads=0`` lets onnxruntime choose.
    ``imgsz`` (H, W) pixels applies only to models without edge-mtl metadata. ``e2e_source`` is
    a video file, stream URL, camera index or image folder; ``e2e_frames`` caps its frames (per
    stream). ``e2e_streams``: numbers of copies of the e2e source to batch through one engine
    (:mod:`edge_mtl.runtime.multistream`), each measured after 1 stream in the same run."""

    providers: tuple[str, ...] = ("auto",)
    batches: tuple[int, ...] = (1,)
    imgsz: tuple[int, int] | None = None
    runs: int = 100
    seconds: float | None = None
    warmup: int = 10
    threads: int = 0
    e2e_source: str | None = None
    e2e_frames: int = 300
    e2e_streams: tuple[int, ...] = ()
    ov_device: str = "CPU"  # OpenVINO rows: device, precision hint, compiled-model cache
    ov_precision: str = "auto"
    ov_cache_dir: str | None = None
    turns: bool = False


def own_pass(settings: BenchSettings) -> BenchSettings:
    """The settings of each row's own pass. With ``turns`` its latency and e2e are measured
    again in turns with the other rows (:func:`retime_in_turns`), so the own pass only warms
    up and takes the memory figures: it times at most 10 calls or 1 second, and runs no e2e."""
    if not settings.turns:
        return settings
    seconds = None if settings.seconds is None else min(settings.seconds, 1.0)
    return replace(settings, runs=min(settings.runs, 10), seconds=seconds)


@dataclass(frozen=True)
class LatencyStats:
    """Latency over the timed calls of one row, milliseconds per call (one call = one batch)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float


@dataclass
class E2E:
    """The real pipeline on a source at batch 1, over :data:`E2E_ROUNDS` rounds. ``stage_ms``:
    mean milliseconds per frame for decode, preprocess, inference, postprocess; ``fps`` frames/s
    from first frame taken to last result, summed over the rounds; ``bare_fps`` bare
    ``session.run`` calls/s on the same engine, measured in turns with the pipeline passes;
    ``ratio`` = fps / bare_fps; ``streams`` one :class:`StreamsE2E` dict per stream count
    (``None`` without ``e2e_streams``)."""

    source: str
    frames: int
    seconds: float
    fps: float
    bare_fps: float
    ratio: float
    stage_ms: dict[str, float]
    latency_p50_ms: float
    latency_p99_ms: float
    streams: list[dict[str, Any]] | None = None


@dataclass
class StreamsE2E:
    """``streams`` copies of the e2e source through one engine, the newest frame of each stream
    batched into one inference call. ``frames`` over all streams and rounds; ``seconds`` start
    to last result, summed over the rounds; ``fps`` aggregate frames/s; ``stream_fps`` each
    stream's frames/s; ``mean_batch`` frames per inference call; ``inference_ms`` mean ms per
    call; ``speedup`` = ``fps`` / the 1-stream ``fps`` measured in the same rounds."""

    streams: int
    frames: int
    seconds: float
    fps: float
    stream_fps: list[float]
    mean_batch: float
    inference_ms: float
    speedup: float


@dataclass
class Row:
    """One benchmarked variant (a line of the table). Units: ms, MB (10^6 bytes), images/s.
    ``status`` is ``"ok"`` or ``"skipped"`` (then ``reason`` says why and the measurements are
    ``None``). ``session`` indexes the document's ``sessions`` (the machine it ran on)."""

    session: int
    device: str
    runtime: str
    model: str
    model_path: str
    model_size_mb: float | None
    precision: str | None
    provider_requested: str
    provider: str | None
    fallback_reasons: list[str]
    batch: int
    input_hw: list[int] | None
    status: str
    reason: str | None
    runs: int
    warmup: int
    threads: int
    latency_ms: dict[str, float] | None
    throughput_ips: float | None
    peak_rss_mb: float | None
    gpu_memory_mb: float | None
    e2e: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- statistics and timing ---------------------------------------------------------------


def latency_stats(ms: Sequence[float]) -> LatencyStats:
    """Percentiles (linear interpolation, numpy's default), mean, population std, min and max
    of latencies in milliseconds. Raises ValueError on an empty sequence."""
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("latency_stats: no timings")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        float(p50), float(p90), float(p99), float(a.mean()), float(a.std()), float(a.min()),
        float(a.max()),
    )  # fmt: skip


def time_calls(
    fn: Callable[[], object], runs: int, seconds: float | None, warmup: int
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then time each call: ``runs`` calls, or when
    ``seconds`` is set as many as start within ``seconds`` (at least one). Milliseconds."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    deadline = None if seconds is None else time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if (len(out) >= runs) if deadline is None else (time.perf_counter() >= deadline):
            return out


TURN_BLOCK_S = 0.5  # --seconds: each row's turn is about this long
TURN_ROUNDS = 10  # --runs: the calls are split into at most this many turns per row


def turn_blocks(runs: int, seconds: float | None) -> list[tuple[int, float | None]]:
    """How :func:`time_in_turns` splits one row's budget: one ``(runs, seconds)`` amount per
    round, in :func:`time_calls`' terms. ``seconds`` is cut into rounds of about
    :data:`TURN_BLOCK_S`; ``runs`` into at most :data:`TURN_ROUNDS` near-equal parts. The
    amounts add up to the budget: ``runs`` calls, or ``seconds`` of timed calls."""
    if seconds is not None:
        rounds = max(1, math.ceil(seconds / TURN_BLOCK_S - 1e-9))
        return [(1, seconds / rounds)] * rounds
    rounds = max(1, min(runs, TURN_ROUNDS))
    q, extra = divmod(runs, rounds)
    return [(q + (i < extra), None) for i in range(rounds)]


def turn_order(k: int, n: int) -> list[int]:
    """Who goes when in round ``k`` of ``n`` takers of turns: 0..n-1 rotated by ``k``, so no
    taker always follows the same one."""
    return [(k + j) % n for j in range(n)]


def time_in_turns(
    calls: Sequence[Callable[[], object]],
    blocks: Sequence[tuple[int, float | None]],
    warmup: int,
    on_round: Callable[[int, list[list[float]]], None] | None = None,
) -> list[list[float]]:
    """Time several callables in turns, so drift in the machine's speed (other tenants, turbo,
    thermal limits) hits them alike rather than whichever ran while it happened. After
    ``warmup`` untimed calls each, round k gives every callable one turn of ``blocks[k]``
    (``(runs, seconds)`` as in :func:`time_calls`); the order rotates by one each round, so no
    callable always follows the same one. Each turn starts with one untimed call, which absorbs
    the switch (caches, thread pools spinning down). ``on_round(k, ms)`` is called after each
    round. Returns the milliseconds per call, one list per callable."""
    for fn in calls:
        for _ in range(warmup):
            fn()
    ms: list[list[float]] = [[] for _ in calls]
    for k, (runs, seconds) in enumerate(blocks):
        for i in turn_order(k, len(calls)):
            ms[i] += time_calls(calls[i], runs, seconds, 1)
        if on_round is not None:
            on_round(k, ms)
    return ms


def throughput(ms: Sequence[float], batch: int) -> float:
    """Images per second over the timed calls: ``batch`` images per call."""
    total_s = float(np.sum(ms)) / 1e3
    return batch * len(ms) / total_s if total_s > 0 else 0.0


# ---- memory ------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux ``clear_refs`` 5). False if unable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: ``VmHWM`` (since the last
    :func:`reset_peak_rss`) where /proc exists, else ``ru_maxrss`` (since start)."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) * 1024 / 1e6
    except OSError:
        pass
    import resource  # POSIX only; reached where /proc is missing (macOS)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6  # bytes vs KiB


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    """Rows of an ``nvidia-smi --query-*`` CSV, or None when nvidia-smi is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, *query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_memory_mb(pid: int | None = None) -> tuple[float | None, str | None]:
    """GPU memory this process holds, MB, as nvidia-smi reports it; (None, why) if unknown."""
    rows = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if rows is None:
        return None, "GPU memory not measured: nvidia-smi not found or failed"
    pid = os.getpid() if pid is None else pid
    used = [_num(r[1]) for r in rows if len(r) == 2 and r[0] == str(pid)]
    if not used or None in used:
        return None, "GPU memory not measured: nvidia-smi lists no process with this pid"
    return sum(used) * 1.048576, None  # MiB -> MB


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:  # nvidia-smi prints "[N/A]" for what it cannot read
        return None


# ---- the machine -------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: CPU, ISA, OS, onnxruntime and its providers, GPUs."""
    notes: list[str] = []
    gpus: list[dict[str, Any]] = []
    rows = _nvidia_smi("--query-gpu=name,memory.total,driver_version")
    if rows is None:
        notes.append("nvidia-smi not found: no GPU description")
    for r in rows or []:
        if len(r) == 3:
            mib = _num(r[1])
            mem = None if mib is None else mib * 1.048576
            gpus.append({"name": r[0], "memory_total_mb": mem, "driver": r[2]})
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_affinity": affinity,
        "isa": isa_summary(),
        "isa_features": isa_features(),
        "onnxruntime": ort.__version__,
        "providers_available": list(ort.get_available_providers()),
        "gpus": gpus,
        "notes": notes,
    }


def device_label(machine: dict[str, Any], provider: str | None) -> str:
    """Short name of the hardware a row ran on: the GPU for CUDA/TensorRT, else the CPU."""
    if provider in GPU_PROVIDERS and machine["gpus"]:
        return str(machine["gpus"][0]["name"])
    return f"{machine['cpu_model']} ({machine['cpu_affinity']} cores)"


def new_session(settings: BenchSettings, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The ``sessions[]`` entry for this invocation: when, how, on what."""
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["edge-mtl", "bench", *(argv or [])]),
        "machine": machine_info(),
        "settings": asdict(settings),
    }


def document(sessions: list[dict[str, Any]], rows: Sequence[Row]) -> dict[str, Any]:
    """The JSON document: ``schema_version``, ``sessions`` (machines), ``results`` (rows)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "sessions": sessions,
        "results": [r.to_dict() for r in rows],
    }


# ---- ONNX models ---------------------------------------------------------------------------


def _model_info(path: Path, imgsz: tuple[int, int] | None) -> tuple[bool, list[str]]:
    """Validate ``path`` once on CPU (raises InputError/MetadataError for the user) and say
    whether it carries edge-mtl metadata. Notes say when ``--imgsz`` does not apply."""
    from edge_mtl.runtime.engine import Engine, EngineConfig

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


def _precision(engine: Any, has_meta: bool, notes: list[str]) -> str:
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


def _skipped(base: dict[str, Any], batch: int, reason: str, **extra: Any) -> Row:
    return Row(
        **{**base, **extra}, batch=batch, status="skipped", reason=reason, latency_ms=None,
        throughput_ips=None, peak_rss_mb=None, gpu_memory_mb=None, e2e=None,
    )  # fmt: skip


def bench_model(
    path: str | os.PathLike[str],
    settings: BenchSettings,
    machine: dict[str, Any],
    session_index: int = 0,
    log: Callable[[str], None] = lambda s: None,
) -> list[Row]:
    """All rows of one ONNX model: each provider x batch, measured or skipped with a reason.
    A missing or invalid model raises :class:`InputError`/:class:`MetadataError`."""
    from edge_mtl.runtime.engine import Engine

    p = Path(path)
    has_meta, model_notes = _model_info(p, settings.imgsz)
    config = _engine_config(None if has_meta else settings.imgsz, settings)
    rows: list[Row] = []
    for requested in settings.providers:
        base: dict[str, Any] = dict(
            session=session_index, device=device_label(machine, None), runtime="onnxruntime",
            model=p.name, model_path=str(p), model_size_mb=p.stat().st_size / 1e6,
            precision=None, provider_requested=requested, provider=None, fallback_reasons=[],
            input_hw=None, runs=0, warmup=settings.warmup, threads=settings.threads,
        )  # fmt: skip
        can_reset = reset_peak_rss()
        try:
            engine = Engine(p, requested, config)
        except EdgeMTLError as e:  # the model loaded on CPU above, so this is the provider
            why = str(e).removeprefix(f"{p}: ")
            rows += [_skipped(base, b, why, notes=list(model_notes)) for b in settings.batches]
            log(f"{p.name} [{requested}]: skipped ({why})")
            continue
        base.update(
            provider=engine.provider.value,
            fallback_reasons=list(engine.fallback_reasons),
            device=device_label(machine, engine.provider.value),
            input_hw=list(engine.meta.input_hw),
        )
        for batch in settings.batches:
            notes = list(model_notes)
            base["precision"] = _precision(engine, has_meta, notes)
            fixed = engine.meta.batch
            if fixed is not None and batch != fixed:
                reason = f"the model has a fixed batch of {fixed}; export with a dynamic batch"
                rows.append(_skipped(base, batch, reason, notes=notes))
                continue
            if not can_reset:
                notes.append("peak RSS is the process peak since start (cannot reset it here)")
            log(f"{p.name} [{engine.provider.value}] batch {batch}: measuring")
            rows.append(_measure(engine, base, batch, settings, notes))
            can_reset = reset_peak_rss()
        del engine
        gc.collect()
    return rows


def _engine_config(imgsz: tuple[int, int] | None, settings: BenchSettings) -> Any:
    """The bench's engine settings; ``imgsz`` overrides the metadata's input size."""
    from edge_mtl.runtime.engine import EngineConfig, OVPrecision

    return EngineConfig(
        imgsz=imgsz,
        intra_op_threads=settings.threads,
        ov_device=settings.ov_device,
        ov_precision=OVPrecision(settings.ov_precision),
        ov_cache_dir=settings.ov_cache_dir,
        warmup_runs=0,
    )


def bench_input(engine: Any, batch: int) -> Any:
    """The timed input: ``batch`` seeded noise frames, preprocessed to (batch, 3, H, W) in the
    model's input dtype."""
    h, w = engine.meta.input_hw
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
    return engine.preprocess(frames)[0]


def _measure(
    engine: Any, base: dict[str, Any], batch: int, s: BenchSettings, notes: list[str]
) -> Row:
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


def _streams(engine: Any, s: BenchSettings, notes: list[str]) -> list[dict[str, Any]] | None:
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
    torch_call: Callable[[Row, BenchSettings], Callable[[], object]] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> None:
    """Measure the latency of every ``ok`` row again, all of them in turns
    (:func:`time_in_turns` over :func:`turn_blocks` of the settings' ``runs`` or ``seconds``),
    and replace each row's ``latency_ms``, ``throughput_ips`` and ``runs`` with it. All the
    rows' models are loaded at once for this; memory figures stay those of each row's own pass.
    ONNX rows reopen their model on the provider that ran it; torch rows (``runtime ==
    "torch"``) get their call from ``torch_call(row, settings)``, since runtime never imports
    torch. With an e2e source, the batch-1 ONNX rows' e2e then runs in turns too
    (:func:`e2e_in_turns`) on the same engines."""
    from edge_mtl.runtime.engine import Engine

    live = [r for r in rows if r.status == "ok"]
    if not live:
        return
    engines: dict[tuple[str, str], Any] = {}
    calls: list[Callable[[], object]] = []
    piped: list[tuple[Row, Any]] = []  # batch-1 ONNX rows and their engines, for e2e
    for r in live:
        if r.runtime == "torch":
            if torch_call is None:
                raise ValueError("retime_in_turns: a torch row needs torch_call")
            calls.append(torch_call(r, settings))
            continue
        key = (r.model_path, str(r.provider))
        if key not in engines:
            # the row's own input size: the metadata's, or --imgsz for a model without it
            config = _engine_config(tuple(r.input_hw or ()) or None, settings)
            engines[key] = Engine(Path(r.model_path), str(r.provider), config)
        eng = engines[key]
        x = bench_input(eng, r.batch)
        calls.append(lambda e=eng, x=x: e.run(x))
        if r.batch == 1:
            piped.append((r, eng))
    blocks = turn_blocks(settings.runs, settings.seconds)
    log(f"timing {len(live)} row(s) in turns: {len(blocks)} rounds")

    def progress(k: int, ms: list[list[float]]) -> None:
        if k + 1 == len(blocks) or (k + 1) % max(1, len(blocks) // 4) == 0:
            medians = ", ".join(f"{r.model} {np.median(m):.1f} ms" for r, m in zip(live, ms))
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


def e2e_in_turns(
    rows: Sequence[tuple[Row, Any]], settings: BenchSettings, log: Callable[[str], None]
) -> None:
    """Set each ``(row, engine)``'s ``e2e`` from :class:`E2ERounds` of its engine, all rows in
    turns: round k runs one e2e round of every row in :func:`turn_order`, as
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


# ---- end to end ----------------------------------------------------------------------------


class TimedSource:
    """Wraps a frame source and records how long each ``read()`` took (milliseconds): the
    decode time for files; for live sources, the wait for the next frame."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.live, self.fps = inner.name, inner.live, inner.fps
        self.read_ms: list[float] = []

    @property
    def drops(self) -> int:
        return int(self.inner.drops)

    @property
    def reconnects(self) -> int:
        return int(self.inner.reconnects)

    @property
    def stalls(self) -> int:
        return int(self.inner.stalls)

    @property
    def corrupt(self) -> int:
        return int(self.inner.corrupt)

    def read(self) -> Any:
        t0 = time.perf_counter_ns()
        frame = self.inner.read()
        if frame is not None:
            self.read_ms.append((time.perf_counter_ns() - t0) / 1e6)
        return frame

    def close(self) -> None:
        self.inner.close()


E2E_ROUNDS = 3  # e2e passes and bare runs take turns this many times (see E2ERounds)


class E2ERounds:
    """End-to-end rounds of one engine on a source, against bare ``engine.run(x)`` calls. Each
    :meth:`round` times as many bare calls as the round has frames, then runs one pass of
    ``max_frames / E2E_ROUNDS`` frames (at least 1) through the real pipeline (no sinks) on a
    freshly opened source. :meth:`result` sums all rounds: ``fps`` and ``bare_fps`` each over
    all of them, so a change in the machine's load hits both alike and their ratio stays a
    side-by-side figure."""

    def __init__(self, engine: Any, source_spec: str, max_frames: int, x: Any) -> None:
        self.engine, self.source_spec, self.x = engine, source_spec, x
        self.per_round = max(1, max_frames // E2E_ROUNDS)
        self.totals: list[float] = []
        self.sums = np.zeros(3)
        self.decode_ms: list[float] = []
        self.seconds = self.bare_s = 0.0
        self.bare_calls = 0

    def _on_result(self, frame: Any, result: Any, times: Any) -> None:
        self.totals.append(times.total)
        self.sums[:] += (times.preprocess, times.inference, times.postprocess)

    def round(self) -> None:
        from edge_mtl.runtime.pipeline import Pipeline
        from edge_mtl.runtime.sources import open_source

        ms = time_calls(lambda: self.engine.run(self.x), self.per_round, None, 0)
        self.bare_s += sum(ms) / 1e3
        self.bare_calls += len(ms)
        source = TimedSource(open_source(self.source_spec))
        pipe = Pipeline(self.engine, source, max_frames=self.per_round, on_result=self._on_result)
        summary = pipe.run()
        if summary.interrupted:
            raise KeyboardInterrupt
        if summary.frames == 0:
            raise InputError(f"--e2e {self.source_spec}: the source gave no frames")
        self.seconds += summary.seconds
        self.decode_ms += source.read_ms

    def result(self) -> E2E:
        """All rounds so far (at least one: :meth:`round` refuses a source without frames)."""
        frames = len(self.totals)
        fps = frames / self.seconds if self.seconds > 0 else 0.0
        bare_fps = self.bare_calls / self.bare_s if self.bare_s > 0 else 0.0
        stages = {"decode": float(np.mean(self.decode_ms)) if self.decode_ms else 0.0}
        means = (self.sums / frames).tolist()
        stages.update(zip(("preprocess", "inference", "postprocess"), means))
        p50, p99 = np.percentile(self.totals, [50, 99])
        return E2E(
            source=self.source_spec, frames=frames, seconds=self.seconds, fps=fps,
            bare_fps=bare_fps, ratio=fps / bare_fps if bare_fps > 0 else 0.0, stage_ms=stages,
            latency_p50_ms=float(p50), latency_p99_ms=float(p99),
        )  # fmt: skip


def run_e2e(engine: Any, source_spec: str, max_frames: int, x: Any) -> E2E:
    """:data:`E2E_ROUNDS` rounds of :class:`E2ERounds` of one engine, one after another."""
    rounds = E2ERounds(engine, source_spec, max_frames, x)
    for _ in range(E2E_ROUNDS):
        rounds.round()
    return rounds.result()


STREAM_ROUNDS = 3  # stream counts take turns this many times, so drifting load hits all alike


def run_streams(
    engine: Any, source_spec: str, counts: Sequence[int], max_frames: int
) -> list[StreamsE2E]:
    """Open ``source_spec`` N times for each N in ``counts`` (and 1, the baseline) and run the
    copies through :class:`~runtime.multistream.MultiStream` (no sinks). The counts take turns
    over :data:`STREAM_ROUNDS` rounds of ``max_frames / STREAM_ROUNDS`` frames per stream (at
    least 1), each round reopening the source; one result per N, ascending, over all rounds."""
    order = sorted({1, *counts})
    per_round = max(1, max_frames // STREAM_ROUNDS)
    runs: dict[int, list[Any]] = {n: [] for n in order}
    for _ in range(STREAM_ROUNDS):
        for n in order:
            runs[n].append(_run_copies(engine, source_spec, n, per_round))
    out = [_combine(n, runs[n]) for n in order]
    base = out[0].fps  # the 1-stream run
    for r in out:
        r.speedup = r.fps / base if base > 0 else 0.0
    return out


def _combine(n: int, summaries: Sequence[Any]) -> StreamsE2E:
    """One :class:`StreamsE2E` over the rounds of ``n`` streams (frames and seconds summed)."""
    frames = sum(s.frames for s in summaries)
    seconds = sum(s.seconds for s in summaries)
    batches = sum(s.batches for s in summaries)
    per_stream = []
    for i in range(n):
        f = sum(s.streams[i].frames for s in summaries)
        sec = sum(s.streams[i].seconds for s in summaries)
        per_stream.append(f / sec if sec > 0 else 0.0)
    inference_ms = sum(s.inference_mean_ms * s.batches for s in summaries) / batches
    fps = frames / seconds if seconds > 0 else 0.0
    return StreamsE2E(n, frames, seconds, fps, per_stream, frames / batches, inference_ms, 0.0)


def _run_copies(engine: Any, source_spec: str, n: int, max_frames: int) -> Any:
    """One :class:`~runtime.multistream.MultiStreamSummary` of ``n`` copies of the source."""
    from edge_mtl.runtime.multistream import MultiStream, MultiStreamConfig, StreamState
    from edge_mtl.runtime.sources import open_source

    sources: list[Any] = []
    try:
        for _ in range(n):
            sources.append(open_source(source_spec))
    except BaseException:
        for src in sources:
            src.close()
        raise
    summary = MultiStream(engine, sources, config=MultiStreamConfig(max_frames=max_frames)).run()
    if summary.interrupted:
        raise KeyboardInterrupt
    bad = next((s for s in summary.streams if s.state is not StreamState.ENDED), None)
    if bad is not None or summary.frames == 0:
        why = f"stream {bad.index} {bad.state.value}: {bad.error}" if bad else "no frames"
        raise InputError(f"--e2e {source_spec} x{n}: {why}")
    return summary


# ---- documents -----------------------------------------------------------------------------


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a bench JSON file, checking its schema version."""
    p = Path(path)
    doc = read_json(p, "bench result file")
    if not isinstance(doc, dict) or doc.get("schema_version") != SCHEMA_VERSION:
        found = doc.get("schema_version") if isinstance(doc, dict) else None
        raise InputError(
            f"{p}: expected an edge-mtl bench result with schema_version {SCHEMA_VERSION}, "
            f"found {found!r}"
        )
    if not isinstance(doc.get("sessions"), list) or not isinstance(doc.get("results"), list):
        raise InputError(f"{p}: bench result lacks 'sessions' or 'results' lists")
    return doc


def merge_documents(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One document holding every session and row of ``docs``, rows re-pointed at their
    session in the merged list."""
    sessions: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for doc in docs:
        offset = len(sessions)
        sessions += doc["sessions"]
        results += [{**r, "session": int(r["session"]) + offset} for r in doc["results"]]
    return {"schema_version": SCHEMA_VERSION, "sessions": sessions, "results": results}


def write_json(doc: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``doc`` as indented JSON (parent folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(p, doc, indent=2)
