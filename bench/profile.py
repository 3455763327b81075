"""``bench --profile``: where a row's inference time goes, from ONNX Runtime's own profiler.

Each measured onnxruntime row gets a separate pass after the timed ones (profiling slows every
call, so the latency figures never include it): a fresh session on the row's provider with
``SessionOptions.enable_profiling``, ``warmup`` untimed calls, then the profiled calls; the
JSON trace's ``Node`` kernel events (``<node>_kernel_time``) are summed per operator type over
the profiled calls only. On TensorRT the provider runs whole subgraphs as one node
(``TRTKernel_...``), so the split is per subgraph, not per TensorRT layer, as the row's notes
say (the TensorRT session build time is a note of every TensorRT row, see measure.py).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_mtl.bench.measure import engine_config
from edge_mtl.bench.schema import BenchSettings, Row
from edge_mtl.bench.timing import bench_input
from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.errors import EdgeMTLError
from edge_mtl.runtime.providers import Provider, create_session, session_options

TOP = 10  # operator types kept per row, by time
MAX_CALLS = 50  # profiled calls per row: the trace grows by one event per node and call
TRT_LAYERS = (
    "per-layer times: onnxruntime's TensorRT provider reports each TensorRT subgraph as one "
    "operator, not its layers (trtexec --dumpProfile on the engine gives those)"
)


def profile_rows(
    rows: Sequence[Row], settings: BenchSettings, log: Callable[[str], None] = lambda m: None
) -> None:
    """Set ``profile`` (the top :data:`TOP` operator types, ms per call) and add notes to every
    measured onnxruntime row; other rows (torch, OpenVINO's own runtime, skipped) are left
    ``None``."""
    calls = _calls(settings)
    for r in rows:
        if r.status != "ok" or r.runtime != "onnxruntime" or r.provider is None:
            continue
        log(f"{r.model} [{r.provider}] batch {r.batch}: profiling {calls} calls")
        config = engine_config(tuple(r.input_hw or ()) or None, settings)
        try:
            engine = Engine(Path(r.model_path), r.provider, config)
            r.profile = profile_engine(engine, r.batch, calls, settings.warmup)
        except EdgeMTLError as e:  # the provider worked for the timing: say why, keep the rest
            r.notes.append(f"profile: not taken ({str(e).removeprefix(f'{r.model_path}: ')})")
            continue
        if engine.provider is Provider.TENSORRT:
            r.notes.append(TRT_LAYERS)
        del engine


def _calls(settings: BenchSettings) -> int:
    """Profiled calls per row: the timed runs, at most :data:`MAX_CALLS` (20 with --seconds)."""
    return 20 if settings.seconds is not None else max(1, min(settings.runs, MAX_CALLS))


def profile_engine(engine: Engine, batch: int, calls: int, warmup: int) -> list[dict[str, Any]]:
    """The top operator types of ``calls`` profiled ``session.run`` calls at ``batch`` (after
    ``warmup`` untimed ones) in a new profiling session of ``engine``'s file and provider."""
    config = engine.config
    with tempfile.TemporaryDirectory(prefix="edge-mtl-profile-") as tmp:

        def options():
            so = session_options(config.intra_op_threads, config.graph_opt)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            return so

        session = create_session(
            engine.path, [engine.provider], True, options, engine._provider_options
        ).session
        feed = {engine.meta.input_name: bench_input(engine, batch)}
        for _ in range(warmup + calls):
            session.run(None, feed)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        del session
    return top_operators(events, calls, warmup)


def top_operators(events: list[dict[str, Any]], calls: int, skip: int) -> list[dict[str, Any]]:
    """Sum ``dur`` (µs) of the ``Node`` kernel events per ``op_name`` over the last ``calls``
    runs of an onnxruntime trace (the first ``skip`` ``model_run`` events are warm-up): the top
    :data:`TOP` as ``{"op", "ms" (per call), "share" (of all operator time, 0-1)}``, slowest
    first."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    starts = sorted(e["ts"] for e in runs)
    since = starts[skip] if len(starts) > skip else 0
    per_op: Counter = Counter()
    for e in events:
        if e.get("cat") != "Node" or e.get("ts", 0) < since:
            continue
        if not str(e.get("name", "")).endswith("_kernel_time"):
            continue  # fence_before/fence_after: waits around a kernel, not operator time
        per_op[e.get("args", {}).get("op_name", "?")] += float(e.get("dur", 0))
    total = sum(per_op.values())
    return [
        {"op": op, "ms": us / 1000.0 / calls, "share": us / total}
        for op, us in per_op.most_common(TOP)
    ]
