"""The bench's JSON document (schema in docs/bench.md, version :data:`SCHEMA_VERSION`): what was
asked (:class:`BenchSettings`), one :class:`Row` per measured variant, the ``sessions`` (the
machines the rows ran on), and reading, merging and writing documents. Documents taken on
different machines merge into one; :mod:`edge_mtl.bench.report` renders them."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_mtl.bench.machine import machine_info
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import read_json, write_json_atomic

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. ``runs`` timed calls per row, or (``seconds`` set) as many as fit in
    ``seconds`` wall-clock seconds (at least one). ``threads=0`` lets onnxruntime choose.
    ``imgsz`` (H, W) pixels applies only to models without edge-mtl metadata. ``e2e_source`` is
    a video file, stream URL, camera index or image folder; ``e2e_frames`` caps its frames (per
    stream). ``e2e_streams``: numbers of copies of the e2e source to batch through one engine
    (:mod:`edge_mtl.runtime.multistream`), each measured after 1 stream in the same run.
    ``turns``: every row is timed again in turns with the others (the default of the CLI).
    ``accuracy_data`` / ``profile``: after the timing, each ONNX row is also scored on that
    labelled set (``Row.accuracy``) / profiled (``Row.profile``)."""

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
    accuracy_data: str | None = None  # --accuracy: the labelled set the rows were scored on
    profile: bool = False  # --profile: the rows' top operators, from a separate pass


def own_pass(settings: BenchSettings) -> BenchSettings:
    """The settings of each row's own pass. With ``turns`` its latency and e2e are measured
    again in turns with the other rows (:func:`edge_mtl.bench.measure.retime_in_turns`), so the
    own pass only warms up and takes the memory figures: it times at most 10 calls or 1 second,
    and runs no e2e."""
    if not settings.turns:
        return settings
    seconds = None if settings.seconds is None else min(settings.seconds, 1.0)
    return replace(settings, runs=min(settings.runs, 10), seconds=seconds)


@dataclass
class Row:
    """One benchmarked variant (a line of the table). Units: ms, MB (10^6 bytes), images/s.
    ``status`` is ``"ok"`` or ``"skipped"`` (then ``reason`` says why and the measurements are
    ``None``). ``session`` indexes the document's ``sessions`` (the machine it ran on).
    ``latency_ms`` holds :class:`~edge_mtl.bench.stats.LatencyStats` fields; ``e2e`` an
    :class:`~edge_mtl.bench.e2e.E2E` as a dict (batch-1 rows with an e2e source only)."""

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
    # fallback_reasons in brief, as the engine's one line says them ("tensorrt, cuda: no NVIDIA
    # GPU; openvino: not installed"); the notes print this, the full reasons stay in the JSON
    fallback: str = ""
    # bench --accuracy: metric -> value, named as bench.accuracy.task_metrics names them ("det
    # mAP@0.5", "det mAP@0.5:0.95", "<task> acc", "<task> mIoU", "<task> IoU" in points 0-100,
    # "<task> MAE" in the task's unit; None: no labels for the task)
    accuracy: dict[str, float | None] | None = None
    # bench --profile: the top operators by time, each {"op", "ms" per call, "share" 0-1}
    profile: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The row as the JSON document holds it (field names as keys)."""
        return asdict(self)


def skipped_row(base: dict[str, Any], batch: int, reason: str, **extra: Any) -> Row:
    """A ``skipped`` row at ``batch``: ``base``'s identity fields (and ``extra``), ``reason``,
    every measurement ``None``."""
    return Row(
        **{**base, **extra}, batch=batch, status="skipped", reason=reason, latency_ms=None,
        throughput_ips=None, peak_rss_mb=None, gpu_memory_mb=None, e2e=None,
    )  # fmt: skip


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


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a bench JSON file, checking its schema version (InputError naming the file)."""
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
