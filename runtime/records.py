"""The records of ``edge-mtl run --jsonl``: one JSON object per line, a header then one per frame.

The format is named ``edge-mtl.jsonl`` and versioned by :data:`JSONL_SCHEMA_VERSION`; it is
described in docs/jsonl.md and, for validators, by the JSON Schema :data:`SCHEMA_PATH` shipped in
the package. Adding a field keeps the version; renaming, removing or retyping one bumps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.sources import Frame, ImageFilesSource, VideoFileSource

JSONL_SCHEMA = "edge-mtl.jsonl"  # the "schema" of every header record
JSONL_SCHEMA_VERSION = 1  # its "version"
SCHEMA_PATH = Path(__file__).with_name("jsonl.schema.json")  # JSON Schema of both record types


def task_entries(tasks: tuple[TaskMeta, ...]) -> list[dict[str, Any]]:
    """The header's ``tasks``: ``{name, kind, classes}`` per task, plus ``unit`` for regression
    tasks ("" when unitless), in the model's task order."""
    out: list[dict[str, Any]] = []
    for t in tasks:
        entry: dict[str, Any] = {"name": t.name, "kind": t.kind_name, "classes": list(t.classes)}
        if t.kind is TaskKind.REGRESS:
            entry["unit"] = t.unit
        out.append(entry)
    return out


def source_kind(source: Any) -> str:
    """``"video"`` (a video file: ``source_time`` is the video time), ``"images"`` (image files:
    no source time), ``"live"`` (camera or stream: ``source_time`` is the capture time) or
    ``"other"`` (a source of another type)."""
    if getattr(source, "live", False):
        return "live"
    if isinstance(source, VideoFileSource):
        return "video"
    return "images" if isinstance(source, ImageFilesSource) else "other"


def run_header(engine: Any, source: Any, stream: str) -> dict[str, Any]:
    """What one stream's header record says about the run: ``engine`` (:class:`Engine`) gives
    the model and its tasks, ``source`` (a ``FrameSource``) its name, kind and frame rate
    (``None`` when unknown), ``stream`` the stream's name. :class:`JsonlSink` adds the record
    type, schema, version and the frame size (:func:`header_record`)."""
    meta = engine.meta
    det = meta.detect
    return {
        "model": str(engine.path),
        "provider": engine.provider.value,
        "precision": str(getattr(engine.precision, "value", engine.precision)),
        "tasks": task_entries(meta.tasks),
        "det_classes": list(det.classes) if det is not None else [],
        "source": str(source.name),
        "source_kind": source_kind(source),
        "stream": stream,
        "fps": getattr(source, "fps", None),
    }


def header_record(
    header: dict[str, Any] | None, frame_size: tuple[int, int] | None
) -> dict[str, Any]:
    """The first line: type, schema and version, then ``header`` (:func:`run_header`, may be
    ``None`` for a sink built without one) and ``frame_size`` [H, W] pixels of the first frame
    (left out when the run had no frame)."""
    record: dict[str, Any] = {
        "type": "header",
        "schema": JSONL_SCHEMA,
        "version": JSONL_SCHEMA_VERSION,
        **(header or {}),
    }
    if frame_size is not None:
        record["frame_size"] = [int(frame_size[0]), int(frame_size[1])]
    return record


def frame_record(
    n: int,
    frame: Frame,
    result: FrameResult,
    latency_ms: dict[str, float],
    tasks: dict[str, dict[str, Any]] | None = None,
    topk: int | None = None,
) -> dict[str, Any]:
    """The record of the ``n``-th frame written: ``latency_ms`` per stage (``total`` = the
    frame's age at its result), answers rendered by :meth:`FrameResult.to_record` with the
    header's ``tasks`` entries by name (class names, units, kinds) and ``topk``."""
    st = frame.source_time
    return {
        "type": "frame",
        "frame": n,
        "source_frame": frame.index,
        "source_time": None if st is None else round(st, 6),
        "wall_time": round(frame.timestamp, 6),
        "age_ms": latency_ms.get("total", 0.0),
        "file": frame.name,
        **result.to_record(topk=topk, tasks=tasks),
        "latency_ms": latency_ms,
    }
