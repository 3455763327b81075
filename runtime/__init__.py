"""edge-mtl runtime: the deployable engine (numpy + OpenCV + ONNX Runtime only, never torch).

Everything a program embedding the engine needs is importable from here::

    from edge_mtl.runtime import Engine, open_source, Pipeline, JsonlSink

Frames are uint8 BGR HWC arrays; boxes are xyxy frame pixels; probabilities are 0-1; times are
milliseconds. Names that need onnxruntime (``Engine``, the pipelines, the sinks) load on first
use, so ``import edge_mtl.runtime`` stays cheap for tools that only want the errors or metadata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge_mtl.runtime.errors import EdgeMTLError, InputError, MetadataError, RuntimeFailure
from edge_mtl.runtime.metadata import ModelMeta, Precision, TaskKind, TaskMeta
from edge_mtl.runtime.options import GraphOptLevel, OVPrecision, Provider
from edge_mtl.runtime.postprocess import Detections, postprocess_detections
from edge_mtl.runtime.preprocess import Letterbox, letterbox, normalize, preprocess
from edge_mtl.runtime.segment import SegMap

if TYPE_CHECKING:
    from edge_mtl.runtime.engine import Classification, Engine, EngineConfig, FrameResult
    from edge_mtl.runtime.multistream import (
        MultiStream,
        MultiStreamConfig,
        MultiStreamSummary,
        StreamState,
        StreamSummary,
    )
    from edge_mtl.runtime.overlay import draw_overlay
    from edge_mtl.runtime.pipeline import Pipeline, RunSummary
    from edge_mtl.runtime.sinks import (
        JsonlSink,
        Sink,
        StageTimes,
        VideoSink,
        WindowSink,
    )
    from edge_mtl.runtime.smooth import Smoother
    from edge_mtl.runtime.sources import Frame, FrameSource, iter_frames, open_source
    from edge_mtl.runtime.stabilize import StabilizeConfig, StabilizedSinks, Stabilizer
    from edge_mtl.runtime.track import Tracker, TrackerConfig, TrackInfo

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "Classification": "engine",
    "Engine": "engine",
    "EngineConfig": "engine",
    "FrameResult": "engine",
    "MultiStream": "multistream",
    "MultiStreamConfig": "multistream",
    "MultiStreamSummary": "multistream",
    "StreamState": "multistream",
    "StreamSummary": "multistream",
    "Pipeline": "pipeline",
    "RunSummary": "pipeline",
    "JsonlSink": "sinks",
    "Sink": "sinks",
    "StageTimes": "sinks",
    "VideoSink": "sinks",
    "WindowSink": "sinks",
    "draw_overlay": "overlay",
    "Frame": "sources",
    "FrameSource": "sources",
    "iter_frames": "sources",
    "open_source": "sources",
    "Smoother": "smooth",
    "StabilizeConfig": "stabilize",
    "StabilizedSinks": "stabilize",
    "Stabilizer": "stabilize",
    "TrackInfo": "track",
    "Tracker": "track",
    "TrackerConfig": "track",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_mtl.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edge_mtl.runtime.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Classification",
    "Detections",
    "EdgeMTLError",
    "Engine",
    "EngineConfig",
    "Frame",
    "FrameResult",
    "FrameSource",
    "GraphOptLevel",
    "InputError",
    "JsonlSink",
    "Letterbox",
    "MetadataError",
    "ModelMeta",
    "MultiStream",
    "MultiStreamConfig",
    "MultiStreamSummary",
    "OVPrecision",
    "Pipeline",
    "Precision",
    "Provider",
    "RunSummary",
    "RuntimeFailure",
    "SegMap",
    "Sink",
    "Smoother",
    "StabilizeConfig",
    "StabilizedSinks",
    "Stabilizer",
    "StageTimes",
    "StreamState",
    "StreamSummary",
    "TaskKind",
    "TaskMeta",
    "TrackInfo",
    "Tracker",
    "TrackerConfig",
    "VideoSink",
    "WindowSink",
    "draw_overlay",
    "iter_frames",
    "letterbox",
    "normalize",
    "open_source",
    "postprocess_detections",
    "preprocess",
]
