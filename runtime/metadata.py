"""The ``edge_mtl`` metadata carried in every exported ONNX file, and its validating reader.

The runtime needs nothing but the ONNX file: input size, normalisation, letterbox settings,
tasks with class names, strides, default thresholds, precision and calibration live here as
JSON under ``metadata_props["edge_mtl"]``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from edge_mtl.runtime.errors import MetadataError

METADATA_KEY = "edge_mtl"
FORMAT_VERSION = 1


class TaskKind(str, Enum):
    """The built-in task kinds. A task's ``kind`` is one of these or the name of a kind
    registered with :func:`edge_mtl.runtime.decoders.register_decoder`."""

    DETECT = "detect"
    CLASSIFY = "classify"
    REGRESS = "regress"
    SEGMENT = "segment"


def task_kind(name: str) -> TaskKind | str:
    """``"detect"`` -> ``TaskKind.DETECT``; a registered kind's name stays a plain string."""
    return TaskKind(name) if name in TaskKind._value2member_map_ else name


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


@dataclass(frozen=True)
class TaskMeta:
    """One task of the model. ``outputs`` are the ONNX output names that belong to it;
    ``kind`` names its decoder (a :class:`TaskKind` for the built-in kinds)."""

    name: str
    kind: TaskKind | str
    outputs: tuple[str, ...]
    classes: tuple[str, ...] = ()
    strides: tuple[int, ...] = ()
    score_threshold: float = 0.25
    iou_threshold: float = 0.5
    nms_in_graph: bool = False
    max_det: int = 300  # detections kept per image; baked into the graph when nms_in_graph
    unit: str = ""  # regression tasks: the unit of the value (e.g. "1/m"), "" when unitless
    # segment tasks: the output is float logits (K, h, w) instead of a uint8 class map (h, w);
    # ``map_stride`` model-input pixels per map pixel, ``note`` why the map has that resolution
    logits: bool = False
    map_stride: int = 1
    note: str = ""

    @property
    def kind_name(self) -> str:
        """``kind`` as plain text (``"detect"``, or a registered kind's name)."""
        return str(getattr(self.kind, "value", self.kind))


@dataclass(frozen=True)
class ModelMeta:
    """Everything the runtime needs to feed a model and read its answers."""

    input_name: str
    input_hw: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pad_value: int
    tasks: tuple[TaskMeta, ...]
    precision: Precision = Precision.FP32
    input_dtype: str = "float32"
    batch: int | None = None  # None = dynamic batch
    config_hash: str = ""
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    @property
    def detect(self) -> TaskMeta | None:
        return next((t for t in self.tasks if t.kind is TaskKind.DETECT), None)

    def to_json(self) -> str:
        d = asdict(self)
        d["precision"] = self.precision.value
        for t, task in zip(d["tasks"], self.tasks):
            t["kind"] = task.kind_name
        return json.dumps(d, sort_keys=True)

    def replace(self, **changes: Any) -> ModelMeta:
        return dataclasses.replace(self, **changes)

    @staticmethod
    def from_json(text: str, source: str = "model") -> ModelMeta:
        """Parse and validate; raises :class:`MetadataError` naming ``source`` and the problem."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise MetadataError(f"{source}: edge_mtl metadata is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise MetadataError(f"{source}: edge_mtl metadata must be a JSON object")
        version = d.get("version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise MetadataError(
                f"{source}: edge_mtl metadata version {version!r} is not supported "
                f"(this runtime reads version {FORMAT_VERSION}"
                + ("; upgrade edge-mtl)" if newer else "; re-export the model)")
            )
        try:
            tasks = tuple(
                TaskMeta(
                    name=str(t["name"]),
                    kind=task_kind(str(t["kind"])),
                    outputs=tuple(t["outputs"]),
                    classes=tuple(t.get("classes", ())),
                    strides=tuple(int(s) for s in t.get("strides", ())),
                    score_threshold=float(t.get("score_threshold", 0.25)),
                    iou_threshold=float(t.get("iou_threshold", 0.5)),
                    nms_in_graph=bool(t.get("nms_in_graph", False)),
                    max_det=int(t.get("max_det", 300)),
                    unit=str(t.get("unit", "")),
                    logits=bool(t.get("logits", False)),
                    map_stride=int(t.get("map_stride", 1)),
                    note=str(t.get("note", "")),
                )
                for t in d["tasks"]
            )
            h, w = (int(v) for v in d["input_hw"])
            meta = ModelMeta(
                input_name=str(d["input_name"]),
                input_hw=(h, w),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                pad_value=int(d["pad_value"]),
                tasks=tasks,
                precision=Precision(d.get("precision", "fp32")),
                input_dtype=str(d.get("input_dtype", "float32")),
                batch=None if d.get("batch") is None else int(d["batch"]),
                config_hash=str(d.get("config_hash", "")),
                calibration=d.get("calibration"),
                extra=dict(d.get("extra") or {}),
            )
        except KeyError as e:
            raise MetadataError(
                f"{source}: edge_mtl metadata is malformed (missing key {e.args[0]!r})"
            ) from None
        except (TypeError, ValueError) as e:
            raise MetadataError(f"{source}: edge_mtl metadata is malformed ({e})") from None
        if not tasks:
            raise MetadataError(f"{source}: edge_mtl metadata lists no tasks")
        if len(meta.mean) != 3 or len(meta.std) != 3 or min(meta.std) <= 0:
            raise MetadataError(f"{source}: edge_mtl metadata mean/std must be 3 values, std > 0")
        if h <= 0 or w <= 0:
            raise MetadataError(f"{source}: edge_mtl metadata input_hw must be positive")
        from edge_mtl.runtime.decoders import decoder_for  # decoders import this module

        for t in tasks:
            try:
                problem = decoder_for(t).check(t)
            except MetadataError as e:
                problem = str(e)
            if problem:
                raise MetadataError(f"{source}: {problem}")
        return meta
