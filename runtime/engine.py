"""The inference engine: one exported ONNX model on the best execution provider that works.

``Engine(path)`` loads the model, reads its ``edge_mtl`` metadata, picks TensorRT > CUDA >
OpenVINO > CPU from what is installed *and* what actually initialises, warms up, and turns
uint8 BGR frames into typed :class:`FrameResult` objects. The three stages (``preprocess``,
``run``, ``postprocess``) are public so the pipeline can overlap them on separate threads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_mtl.runtime.decoders import (
    DECODERS,
    Classification,
    DecodeOptions,
    check_detect_options,
    class_ids,
    decoder_for,
)
from edge_mtl.runtime.errors import InputError, MetadataError, RuntimeFailure
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision, TaskKind, TaskMeta
from edge_mtl.runtime.postprocess import Detections
from edge_mtl.runtime.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_VALUE,
    Letterbox,
    letterbox,
    preprocess,
)
from edge_mtl.runtime.providers import (
    FILE_PRECISION,
    GPU_PROVIDERS,
    GraphOptLevel,
    OVPrecision,
    Provider,
    Skip,
    create_session,
    default_trt_cache_dir,
    executed_precision,
    fallback_summary,
    first_line,
    node_split,
    openvino_options,
    parse_providers,
    session_options,
    stored_precision,
    tensorrt_options,
)
from edge_mtl.runtime.segment import SegMap, segment_records
from edge_mtl.runtime.track import TrackInfo

__all__ = ["Classification", "Engine", "EngineConfig", "FrameResult", "OVPrecision", "Provider"]

log = logging.getLogger("edge_mtl.runtime")


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model. ``None`` thresholds and ``max_det`` mean "the defaults stored in the
    model". ``classes``: keep only these detection classes, by name or id (None = all);
    ``agnostic_nms``: one NMS across classes (one box per object, its best class). On a model
    with in-graph NMS the engine refuses what the graph cannot honour (a ``conf_threshold`` below
    or a ``max_det`` above the baked-in one, another ``iou_threshold``, ``agnostic_nms``) with
    :class:`InputError` when it is built, unless ``within_graph_nms`` (evaluation: "as loose as
    the model allows") raises ``conf_threshold`` to the baked one and takes its IoU and max_det.

    ``imgsz`` (H, W) pixels overrides the metadata input size (and is required for a model
    without ``edge_mtl`` metadata). ``intra_op_threads=0`` lets onnxruntime choose.
    ``trt_fp16``/``trt_int8`` ``None`` follow the model's precision (fp16 for fp16 models,
    fp16 + int8 for int8 models). ``trt_workspace_bytes`` caps TensorRT's scratch memory.
    OpenVINO: ``ov_device`` (``CPU``, ``GPU``, ``GPU.1``, ``NPU``), ``ov_precision`` (its
    inference precision hint; ``auto`` = OpenVINO's default, bf16 on CPUs with native bf16),
    ``intra_op_threads`` also sets its CPU threads, ``ov_cache_dir`` caches compiled models.
    """

    conf_threshold: float | None = None
    iou_threshold: float | None = None
    max_det: int | None = None
    classes: tuple[int | str, ...] | None = None
    agnostic_nms: bool = False
    within_graph_nms: bool = False
    imgsz: tuple[int, int] | None = None
    intra_op_threads: int = 0
    graph_opt: GraphOptLevel = GraphOptLevel.ALL
    device_id: int = 0
    io_binding: bool = True
    trt_fp16: bool | None = None
    trt_int8: bool | None = None
    trt_cache_dir: str | None = None
    trt_workspace_bytes: int = 2 << 30
    ov_device: str = "CPU"
    ov_precision: OVPrecision = OVPrecision.AUTO
    ov_cache_dir: str | None = None
    warmup_runs: int = 1


@dataclass(frozen=True)
class FrameResult:
    """Everything the model says about one frame.

    ``detections``: boxes float32 (K, 4) xyxy in *frame* pixels, scores (K,), class ids (K,);
    ``det_labels``: the K class names; ``classifications``: task name -> answer;
    ``regressions``: task name -> value (in the unit the task was trained on);
    ``segmentations``: task name -> class map over the frame's content (:class:`SegMap`);
    ``others``: task name -> the answer of a task of a registered kind beyond the built-in
    ones (whatever its decoder returns, JSON-ready).
    With ``run --track`` / ``--smooth`` (:mod:`edge_mtl.runtime.stabilize`): ``tracks`` the
    detections' track IDs, ages and trails, aligned with them; ``smoothed_classifications`` and
    ``smoothed_regressions`` the answers averaged over time (the raw ones stay as they are).
    """

    detections: Detections = field(default_factory=Detections.empty)
    det_labels: tuple[str, ...] = ()
    classifications: dict[str, Classification] = field(default_factory=dict)
    regressions: dict[str, float] = field(default_factory=dict)
    segmentations: dict[str, SegMap] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    tracks: TrackInfo | None = None
    smoothed_classifications: dict[str, Classification] = field(default_factory=dict)
    smoothed_regressions: dict[str, float] = field(default_factory=dict)

    def to_record(
        self, topk: int | None = None, tasks: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """JSON-ready answers (docs/jsonl.md): ``detections`` as a list, ``tasks`` by name, each
        an object with its ``kind``. Classifications carry ``probs`` (class name -> probability)
        over all classes, or the ``topk`` most probable; regressions ``value`` and ``unit``.
        ``tasks``: task name -> ``{kind, classes, unit}`` (the JSONL header's task entries,
        :func:`edge_mtl.runtime.records.task_entries`); without it classes are named by index,
        units are "" and a registered kind's answers have kind "". Rounded for compact logs."""
        info = tasks or {}
        d = self.detections
        dets = [
            {
                "box": [round(float(v), 2) for v in d.boxes[k]],
                "score": round(float(d.scores[k]), 4),
                "class_id": int(d.classes[k]),
                "label": self.det_labels[k],
            }
            for k in range(len(d))
        ]
        if self.tracks is not None:
            for det, tid, age in zip(dets, self.tracks.ids.tolist(), self.tracks.ages.tolist()):
                det["track_id"], det["track_age"] = (tid, age) if tid >= 0 else (None, None)
        out: dict[str, Any] = {
            name: _classification_record(c, info.get(name, {}).get("classes", ()), topk)
            for name, c in self.classifications.items()
        }
        for name, c in self.smoothed_classifications.items():
            smooth = _classification_record(c, info.get(name, {}).get("classes", ()), topk)
            out[name]["smoothed"] = {k: v for k, v in smooth.items() if k != "kind"}
        for name, v in self.regressions.items():
            unit = str(info.get(name, {}).get("unit", ""))
            value = round(v, 6) if np.isfinite(v) else None  # JSON has no NaN
            out[name] = {"kind": TaskKind.REGRESS.value, "value": value, "unit": unit}
            if name in self.smoothed_regressions:
                sv = self.smoothed_regressions[name]
                out[name]["smoothed"] = {"value": round(sv, 6) if np.isfinite(sv) else None}
        for name, answer in self.others.items():
            kind = str(info.get(name, {}).get("kind", ""))
            out[name] = (
                {**answer, "kind": kind}
                if isinstance(answer, dict)
                else {"kind": kind, "value": answer}
            )
        out.update(segment_records(self.segmentations))  # pixel tasks: COCO RLE + summary
        return {"detections": dets, "tasks": out}


def _classification_record(
    c: Classification, classes: Sequence[str], topk: int | None
) -> dict[str, Any]:
    """``{kind, label, index, prob, probs}``; ``probs`` in class order, or the ``topk`` most
    probable in descending order."""
    p = np.asarray(c.probs, np.float64).reshape(-1)
    names = list(classes) if len(classes) == len(p) else [str(i) for i in range(len(p))]
    order = range(len(p)) if topk is None else np.argsort(-p, kind="stable")[:topk]
    return {
        "kind": TaskKind.CLASSIFY.value,
        "label": c.label,
        "index": c.index,
        "prob": round(c.prob, 4),
        "probs": {names[i]: round(float(p[i]), 4) for i in order},
    }


class Engine:
    """An ONNX model ready to run on frames.

    ``providers``: ``"auto"`` tries TensorRT, then CUDA, then OpenVINO, then CPU, and uses the
    first that is installed (in ``onnxruntime.get_available_providers()``; for OpenVINO, the
    ``onnxruntime-ep-openvino`` plugin with a device here) and actually initialises (a provider
    whose libraries or device are missing is skipped; the reason is in ``fallback_reasons``,
    in brief in ``skipped`` and in the one line the engine logs). A list is tried in its order
    the same way. A single explicit name (``"tensorrt"``, ``"cuda"``, ``"openvino"``,
    ``"cpu"``) is *strict*: if that provider cannot run the model
    the engine raises :class:`RuntimeFailure` with the reason (:class:`InputError` when its
    plugin is not installed) instead of silently running somewhere slower, because whoever asks
    for TensorRT by name is usually measuring or deploying TensorRT.

    ``precision`` is the precision the model really runs in (``fp32``, ``fp16``, ``bf16``,
    ``int8``), which can differ from the file's (OpenVINO runs fp32 files in bf16 on CPUs with
    native bf16); ``precision_reason`` says why.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        providers: str | Sequence[str | Provider] = "auto",
        config: EngineConfig | None = None,
    ) -> None:
        self.path = Path(model_path)
        self.config = config or EngineConfig()
        candidates, strict = parse_providers(providers)
        c = self.config
        self.session, self.provider, self.skipped = create_session(
            self.path,
            candidates,
            strict,
            lambda: session_options(c.intra_op_threads, c.graph_opt),
            self._provider_options,
        )
        self.fallback_reasons = [s.reason for s in self.skipped]
        self.meta = self._read_meta()
        self._check_io()
        inp = next(i for i in self.session.get_inputs() if i.name == self.meta.input_name)
        self._input_dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(
            inp.type, np.float32
        )
        self.precision, self.precision_reason = self._executed_precision()
        self.nodes = node_split(self.session) if self.provider is Provider.OPENVINO else {}
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._use_binding = c.io_binding and self.provider in GPU_PROVIDERS
        self._decode = self._decode_options()
        self._decoders = [(t, decoder_for(t)) for t in self.meta.tasks]
        for _ in range(self.config.warmup_runs):
            self.run(np.zeros((self.meta.batch or 1, 3, *self.meta.input_hw), self._input_dtype))
        log.log(_describe_level(self.skipped), "%s", self.describe())

    # ---- loading -------------------------------------------------------------------------

    def _provider_options(self, p: Provider) -> dict[str, Any]:
        c = self.config
        if p is Provider.CPU:
            return {}
        if p is Provider.CUDA:
            return {"device_id": c.device_id}
        if p is Provider.OPENVINO:
            cache = Path(c.ov_cache_dir) if c.ov_cache_dir else None
            return openvino_options(c.ov_device, c.ov_precision, c.intra_op_threads, cache)
        fp16, int8 = c.trt_fp16, c.trt_int8
        if fp16 is None or int8 is None:  # follow the precision the model was exported at
            stored = stored_precision(self.path)
            fp16 = stored in (Precision.FP16, Precision.INT8) if fp16 is None else fp16
            int8 = stored is Precision.INT8 if int8 is None else int8
        cache = Path(c.trt_cache_dir) if c.trt_cache_dir else default_trt_cache_dir()
        return tensorrt_options(c.device_id, fp16, int8, cache, c.trt_workspace_bytes)

    def _executed_precision(self) -> tuple[str, str]:
        stored = self.meta.precision
        if self._input_dtype is np.float16 and stored is Precision.FP32:
            stored = Precision.FP16  # a model without metadata: its input type tells
        trt_fp16 = self.config.trt_fp16
        if trt_fp16 is None:
            trt_fp16 = stored in (Precision.FP16, Precision.INT8)
        ov = (self.config.ov_device, self.config.ov_precision)
        return executed_precision(self.provider, stored, trt_fp16, ov)

    def _read_meta(self) -> ModelMeta:
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        imgsz = self.config.imgsz
        if text is None:
            if imgsz is None:
                raise MetadataError(
                    f"{self.path}: has no '{METADATA_KEY}' metadata (not exported by edge-mtl?); "
                    "pass --imgsz H W to run it with generic labels"
                )
            try:
                return generic_meta(self.session, imgsz)
            except MetadataError as e:
                raise MetadataError(f"{self.path}: {e}") from None
        meta = ModelMeta.from_json(text, str(self.path))
        return meta.replace(input_hw=tuple(imgsz)) if imgsz else meta

    def _decode_options(self) -> DecodeOptions:
        """The config's decoding options, class names made ids; :class:`InputError` for any the
        model cannot honour (see :func:`check_detect_options`), so none is silently ignored."""
        c, det, source = self.config, self.meta.detect, str(self.path)
        if det is None:
            if c.classes is not None or c.agnostic_nms:
                flag = "--classes" if c.classes is not None else "--agnostic-nms"
                raise InputError(f"{source}: {flag}: the model has no detection task")
            return DecodeOptions(c.conf_threshold, c.iou_threshold, c.max_det)
        classes = None if c.classes is None else class_ids(det, c.classes, source)
        conf, iou, max_det = c.conf_threshold, c.iou_threshold, c.max_det
        if c.within_graph_nms and det.nms_in_graph:
            conf = None if conf is None else max(conf, det.score_threshold)
            iou, max_det = det.iou_threshold, min(max_det or det.max_det, det.max_det)
        opts = DecodeOptions(conf, iou, max_det, classes, c.agnostic_nms)
        check_detect_options(det, opts, source)
        return opts

    def _check_io(self) -> None:
        m = self.meta
        inputs = {i.name: i for i in self.session.get_inputs()}
        if m.input_name not in inputs:
            raise MetadataError(
                f"{self.path}: metadata names input {m.input_name!r}, the graph has {list(inputs)}"
            )
        shape = inputs[m.input_name].shape
        if len(shape) != 4:
            raise MetadataError(f"{self.path}: input {m.input_name!r} is not NCHW ({shape})")
        want = [shape[1], shape[2], shape[3]]
        got = [3, *m.input_hw]
        if any(isinstance(w, int) and w != g for w, g in zip(want, got)):
            raise InputError(
                f"{self.path}: input {m.input_name!r} expects "
                f"{'x'.join(str(v) for v in want)}, got {'x'.join(str(v) for v in got)}"
            )
        if isinstance(shape[0], int) and m.batch != shape[0]:
            self.meta = m.replace(batch=shape[0])  # the graph's fixed batch wins over metadata
        outputs = {o.name for o in self.session.get_outputs()}
        missing = [o for t in m.tasks for o in t.outputs if o not in outputs]
        if missing:
            raise MetadataError(
                f"{self.path}: metadata lists outputs {missing} the graph does not have "
                f"(it has {sorted(outputs)})"
            )
        for t in m.tasks:  # checked in from_json too; a model without metadata gets it here
            problem = decoder_for(t).check(t)
            if problem:
                raise MetadataError(f"{self.path}: {problem}")

    def describe(self) -> str:
        """One line: model, provider and why others were skipped, input size, tasks."""
        tasks = ", ".join(
            f"{t.name}({t.kind_name}{f', {len(t.classes)} classes' if t.classes else ''})"
            for t in self.meta.tasks
        )
        h, w = self.meta.input_hw
        # in brief: the full reasons are in fallback_reasons (and printed with --debug)
        summary = fallback_summary(self.skipped)
        skipped = f" [skipped {summary}]" if summary else ""
        where = ""
        if self.provider is Provider.OPENVINO:
            mine = self.nodes.get(self.provider.ort_name, 0)
            split = f", {mine} of {sum(self.nodes.values())} nodes" if self.nodes else ""
            where = f" ({self.config.ov_device.upper()}{split})"
        notable = self.precision_reason != FILE_PRECISION  # OpenVINO, TensorRT fp16, int8 on CUDA
        runs = f", runs in {self.precision} ({self.precision_reason})" if notable else ""
        return (
            f"{self.path.name}: provider {self.provider.value}{where}{skipped}; input 3x{h}x{w} "
            f"{self.meta.precision.value}{runs}; tasks: {tasks}"
        )

    # ---- the three stages ------------------------------------------------------------------

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """uint8 BGR HWC frames (any sizes) -> model input (N, 3, H, W) and their letterboxes.

        Float inputs are RGB normalised with the metadata mean/std; a uint8 input (preprocessing
        folded into the graph) gets the letterboxed RGB pixels as they are.
        """
        m = self.meta
        for f in frames:
            check_frame(f)
        if self._input_dtype is not np.uint8:
            x, lbs = preprocess(frames, m.input_hw, m.mean, m.std, m.pad_value)
            return (x if self._input_dtype is np.float32 else x.astype(self._input_dtype)), lbs
        boxed = [letterbox(f, m.input_hw, m.pad_value) for f in frames]
        batch = np.stack([b[0] for b in boxed])  # (N, H, W, 3) uint8 BGR
        return np.ascontiguousarray(batch[..., ::-1].transpose(0, 3, 1, 2)), [b[1] for b in boxed]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Model input (N, 3, H, W) -> raw outputs by name. Splits into the model's fixed batch."""
        b = self.meta.batch
        if b is not None and len(x) != b:
            parts = [self._run(_pad_batch(x[i : i + b], b)) for i in range(0, len(x), b)]
            n = len(x)
            return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}
        return self._run(x)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            if self._use_binding:
                binding = self.session.io_binding()
                binding.bind_cpu_input(self.meta.input_name, x)
                for name in self._output_names:
                    binding.bind_output(name, "cuda", self.config.device_id)
                self.session.run_with_iobinding(binding)
                outs = binding.copy_outputs_to_cpu()
            else:
                outs = self.session.run(self._output_names, {self.meta.input_name: x})
        except Exception as e:  # onnxruntime's own error types
            raise RuntimeFailure(f"{self.path}: inference failed ({first_line(e)})") from None
        return dict(zip(self._output_names, outs))

    def postprocess(
        self, outputs: dict[str, np.ndarray], letterboxes: Sequence[Letterbox]
    ) -> list[FrameResult]:
        """Raw outputs of a batch + the frames' letterboxes -> one :class:`FrameResult` each."""
        return [self._one(outputs, i, lb) for i, lb in enumerate(letterboxes)]

    def _one(self, outputs: dict[str, np.ndarray], i: int, lb: Letterbox) -> FrameResult:
        """Image ``i`` of a batch: every task through its kind's decoder."""
        fields: dict[str, Any] = {name: {} for name in _MERGED}
        for t, decoder in self._decoders:
            raw = {name: outputs[name][i] for name in t.outputs}
            for key, value in decoder.decode(t, raw, lb, self._decode).items():
                if isinstance(fields.get(key), dict):
                    fields[key].update(value)
                else:
                    fields[key] = value
        return FrameResult(**fields)

    # ---- convenience -----------------------------------------------------------------------

    def infer_batch(self, frames: Sequence[np.ndarray]) -> list[FrameResult]:
        """uint8 BGR HWC frames -> results, in order (one session run per model batch)."""
        if len(frames) == 0:
            return []
        x, lbs = self.preprocess(frames)
        return self.postprocess(self.run(x), lbs)

    def __call__(self, frame_bgr: np.ndarray) -> FrameResult:
        """One uint8 BGR HWC frame -> its :class:`FrameResult`."""
        return self.infer_batch([frame_bgr])[0]


_MERGED = ("classifications", "regressions", "segmentations", "others")  # by task name
_WARNED: set[str] = set()  # fallbacks of a broken provider already warned about


def _describe_level(skipped: Sequence[Skip]) -> int:
    """The engine's one line is INFO, or a WARNING when a provider that is here failed to start
    (once per process and fallback: a bench of several models would repeat it per model)."""
    broken = fallback_summary([s for s in skipped if not s.expected])
    if not broken or broken in _WARNED:
        return logging.INFO
    _WARNED.add(broken)
    return logging.WARNING


def check_frame(frame: Any) -> None:
    """Raise :class:`InputError` unless ``frame`` is a non-empty uint8 (H, W, 3) array."""
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[2] != 3
        or frame.size == 0
    ):
        desc = (
            f"{frame.dtype} array of shape {tuple(frame.shape)}"
            if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise InputError(f"frame: expected a uint8 HxWx3 BGR image, got {desc}")


def generic_meta(session: ort.InferenceSession, imgsz: tuple[int, int]) -> ModelMeta:
    """Metadata for a model exported elsewhere: tasks guessed from output names that follow our
    contract (each decoder in ``DECODERS`` recognises its kind's names: ``det_boxes``/
    ``det_scores``, ``cls_<task>``, ``reg_<task>``), labels "0".."K-1", ImageNet normalisation,
    grey padding."""
    outs = {o.name: o.shape for o in session.get_outputs()}
    tasks: list[TaskMeta] = [t for d in DECODERS.values() for t in d.guess(outs)]
    if not tasks:
        raise MetadataError(
            f"no outputs follow the edge-mtl contract of a task kind ({', '.join(DECODERS)}): "
            f"{sorted(outs)}"
        )
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    return ModelMeta(
        input_name=inp.name,
        input_hw=(int(imgsz[0]), int(imgsz[1])),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pad_value=PAD_VALUE,
        tasks=tuple(tasks),
        batch=batch,
    )


def _pad_batch(x: np.ndarray, b: int) -> np.ndarray:
    if len(x) == b:
        return x
    pad = np.zeros((b - len(x), *x.shape[1:]), x.dtype)
    return np.concatenate([x, pad])
