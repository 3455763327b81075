"""edge-mtl runtime: the deployable engine (numpy + OpenCV + ONNX Runtime only, never torch)."""

from runtime.errors import EdgeMTLError, InputError, MetadataError, RuntimeFailure
from runtime.metadata import ModelMeta, Precision, TaskKind, TaskMeta
from runtime.postprocess import Detections, postprocess_detections
from runtime.preprocess import Letterbox, letterbox, normalize, preprocess

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
