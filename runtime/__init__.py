"""edge-mtl runtime: the deployable engine (numpy + OpenCV + ONNX Runtime only, never torch)."""

from edge_mtl.runtime.errors import EdgeMTLError, InputError, MetadataError, RuntimeFailure
from edge_mtl.runtime.metadata import ModelMeta, Precision, TaskKind, TaskMeta
from edge_mtl.runtime.postprocess import Detections, postprocess_detections
from edge_mtl.runtime.preprocess import Letterbox, letterbox, normalize, preprocess

__all__ = [
    "Detections",
    "EdgeMTLError",
    "InputError",
    "Letterbox",
    "MetadataError",
    "ModelMeta",
    "Precision",
    "RuntimeFailure",
    "TaskKind",
    "TaskMeta",
    "letterbox",
    "normalize",
    "postprocess_detections",
    "preprocess",
]
