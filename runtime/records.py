"""What a run's JSON lines say about the run itself: the header record of a stream (the model,
its tasks and classes, the source). Per-frame records are built by :mod:`edge_mtl.runtime.sinks`."""

from __future__ import annotations

from typing import Any


def run_header(engine: Any, source: Any, stream: str) -> dict[str, Any]:
    """The header of one stream's JSON lines: ``engine`` (:class:`Engine`) gives the model and
    its tasks, ``source`` (a ``FrameSource``) its name and frame rate (``None`` when unknown),
    ``stream`` the stream's name."""
    meta = engine.meta
    return {
        "model": str(engine.path),
        "provider": engine.provider.value,
        "precision": engine.precision,
        "tasks": [
            {"name": t.name, "kind": t.kind_name, "classes": list(t.classes)} for t in meta.tasks
        ],
        "source": str(source.name),
        "stream": stream,
        "fps": getattr(source, "fps", None),
    }
