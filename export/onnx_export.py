"""Checkpoint -> self-describing ONNX file: graph export, optional in-graph NMS, metadata, parity.

The graph comes from ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter):
it keeps static dimensions static, emits only standard ``ai.onnx`` ops and no shape-computation
chains, where the TorchScript exporter leaves Shape/Gather/Concat subgraphs and loses the static
anchor count. BatchNorm is folded into the preceding convolutions in torch before export, and the
model is in eval mode, so Dropout and BatchNormalization never reach the graph.

Nothing is written unless the exported graph passes the checker and the parity run against torch
(:mod:`edge_mtl.export.validate`); the file then lands atomically (temp file + rename).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from edge_mtl.checkpoint import load_model
from edge_mtl.config import Config
from edge_mtl.export.fp16 import check_half_graph, to_half
from edge_mtl.export.nms import MAX_DET, PRE_NMS_TOPK, add_nms
from edge_mtl.export.validate import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    ParityReport,
    check_graph,
    check_parity,
)
from edge_mtl.model import MultiTaskModel
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import atomic_write, check_writable
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision, TaskKind
from edge_mtl.runtime.preprocess import PAD_VALUE
from edge_mtl.tasks import KINDS, declared
from edge_mtl.tasks.detect import IOU_THRESHOLD as DEFAULT_IOU_THRESHOLD
from edge_mtl.tasks.detect import SCORE_THRESHOLD as DEFAULT_SCORE_THRESHOLD
from edge_mtl.tasks.segment import SegmentHead

INPUT_NAME = "images"
DEFAULT_OPSET = 18  # the dynamo exporter's native opset; others go through onnx.version_converter
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how. ``imgsz`` None = the training ``input_hw``; ``batch`` None =
    dynamic batch dimension. ``conf`` (score threshold, [0, 1)), ``iou`` ([0, 1]) and
    ``max_det`` (>= 1): baked into the in-graph NMS with ``nms``, else the defaults the runtime
    reads from the metadata; None = the trained defaults (0.25, 0.5, 300). ``seg_logits``: each
    segment task's ``seg_<task>`` carries float logits (N, K, H, W) instead of the in-graph
    argmax's uint8 class map (N, H, W)."""

    weights: str
    out: str
    imgsz: tuple[int, int] | None = None
    batch: int | None = None
    half: bool = False
    nms: bool = False
    opset: int = DEFAULT_OPSET
    simplify: bool = False
    parity_images: int = 4
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    seg_logits: bool = False  # seg_<task> as float logits (N, K, H, W), not a uint8 class map

    def detect_defaults(self) -> dict[str, Any]:
        """The detection task's ``score_threshold``, ``iou_threshold`` and ``max_det`` for the
        metadata (and the NMS tail); InputError naming the flag when one is out of range."""
        conf = DEFAULT_SCORE_THRESHOLD if self.conf is None else self.conf
        iou = DEFAULT_IOU_THRESHOLD if self.iou is None else self.iou
        max_det = MAX_DET if self.max_det is None else self.max_det
        if not 0.0 <= conf < 1.0:
            raise InputError(f"--conf {conf:g}: must be in [0, 1) (a score threshold)")
        if not 0.0 <= iou <= 1.0:
            raise InputError(f"--iou {iou:g}: must be in [0, 1]")
        if max_det < 1:
            raise InputError(f"--max-det {max_det}: must be at least 1")
        return {"score_threshold": float(conf), "iou_threshold": float(iou), "max_det": max_det}


@dataclass(frozen=True)
class ExportResult:
    """The written file, its metadata and the parity figures measured on it."""

    path: Path
    meta: ModelMeta
    report: ParityReport
    nodes: int


class ContractOutputs(nn.Module):
    """Wraps :class:`MultiTaskModel` so forward returns the ONNX contract outputs as a tuple in
    ``output_names()`` order. With ``half`` the wrapped model runs in float16 and the wrapper
    casts at the boundaries: input float32 (N, 3, H, W) in, float32 outputs out."""

    def __init__(self, model: MultiTaskModel, half: bool = False) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(model.output_names())
        self.half = half

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.half() if self.half else images
        out = self.model(x)
        # float16 outputs go back to float32; integer ones (class maps) stay as they are
        return tuple(
            out[n].float() if self.half and out[n].is_floating_point() else out[n]
            for n in self.names
        )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm2d merged into the Conv2d registered
    right before it in the same parent (``nn.Sequential`` pairs, torchvision ``convK``/``bnK``).

    Folding in float32 before any cast to float16 keeps the fp16 weights as exact as possible.
    The parity check after export catches a model whose forward order differs from registration.
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (cname, conv), (bname, bn) in itertools.pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                fused = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
                setattr(parent, cname, fused)
                setattr(parent, bname, nn.Identity())
    for module in model.modules():
        if hasattr(module, "fold_norms"):  # e.g. a detection LevelTower: a BatchNorm per level
            module.fold_norms()
    return model


def check_imgsz(imgsz: tuple[int, int], strides: tuple[int, ...]) -> tuple[int, int]:
    """Raise InputError unless both sides are positive multiples of the largest stride."""
    largest = max(strides)
    h, w = imgsz
    if h <= 0 or w <= 0 or h % largest or w % largest:
        raise InputError(
            f"--imgsz {h} {w}: height and width must be positive multiples of {largest} "
            f"(the model's largest stride)"
        )
    return int(h), int(w)


def check_out_path(out: str | os.PathLike[str]) -> Path:
    """Make sure ``out`` can be written (creating missing parent folders) before spending time on
    the export; raise InputError naming the path otherwise."""
    return check_writable(out, "ONNX model")


def torch_to_onnx(
    model: MultiTaskModel,
    imgsz: tuple[int, int],
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    half: bool = False,
    seg_logits: bool = False,
) -> onnx.ModelProto:
    """Export the contract graph: input ``images`` float32 (N, 3, H, W) normalised RGB, outputs
    ``model.output_names()``: float32, except each ``seg_<task>``, a uint8 class map (N, H, W)
    from an in-graph ArgMax, or float32 logits (N, K, H, W) with ``seg_logits``. ``batch`` None
    makes N dynamic (named ``batch``)."""
    net = fold_batchnorm(model)  # a copy: the caller's model keeps its class-map outputs
    for m in net.modules():
        if isinstance(m, SegmentHead):
            m.emit_logits = seg_logits
    if half:
        net = to_half(net)
    wrapper = ContractOutputs(net, half=half).eval()
    example = torch.zeros(2 if batch is None else batch, 3, *imgsz)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1)}} if batch is None else None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter chatter; problems surface in validation
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(wrapper.names),
                dynamic_shapes=dynamic,
                opset_version=max(opset, DEFAULT_OPSET),  # lower opsets: converted below
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; the user needs the first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeFailure(f"torch.onnx.export failed: {first[:200]}") from e
    proto = program.model_proto
    if _default_opset(proto) != opset:
        # The exporter targets opset 18 and its own down-conversion runs before constant folding
        # (reduction axes are not constants yet), so convert the optimised graph instead.
        try:
            proto = onnx.version_converter.convert_version(proto, opset)
        except Exception as e:  # the converter raises RuntimeError/ValidationError/...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RuntimeFailure(f"cannot convert the graph to opset {opset}: {first[:200]}") from e
        _drop_noop_attribute(proto)
    proto.producer_name = "edge-mtl"
    return proto


def _drop_noop_attribute(proto: onnx.ModelProto) -> None:
    """onnx's 18 -> 17 converter moves reduction axes back into attributes but leaves the
    opset-18 ``noop_with_empty_axes`` behind, which opset 17 rejects. Its default 0 is the
    opset-17 behaviour, so dropping it is exact; a 1 has no opset-17 equivalent."""
    if _default_opset(proto) >= 18:
        return
    for node in proto.graph.node:
        if not node.op_type.startswith("Reduce") or node.op_type == "ReduceSum":
            continue
        for attr in list(node.attribute):
            if attr.name == "noop_with_empty_axes":
                if attr.i:
                    raise RuntimeFailure(f"{node.name}: no opset-{_default_opset(proto)} form")
                node.attribute.remove(attr)


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def build_metadata(
    cfg: Config,
    imgsz: tuple[int, int],
    batch: int | None,
    precision: Precision,
    nms: bool,
    extra: dict | None = None,
    detect: dict[str, Any] | None = None,
    seg_logits: bool = False,
) -> ModelMeta:
    """The ``edge_mtl`` metadata for an export of ``cfg.model`` at ``imgsz`` (H, W pixels): each
    declared task described by its kind (``nms``: in-graph NMS replaced the detection outputs).
    ``detect``: TaskMeta fields to set on the detection task (``ExportConfig.detect_defaults``);
    ``seg_logits``: the segment tasks' outputs are logits (``TaskMeta.logits``)."""
    m = cfg.model
    tasks = [KINDS[name].export_meta(t, m, nms) for name, ts in declared(m).items() for t in ts]
    if detect:
        tasks = [
            dataclasses.replace(t, **detect) if t.kind is TaskKind.DETECT else t for t in tasks
        ]
    if seg_logits:
        tasks = [
            dataclasses.replace(t, logits=True) if t.kind is TaskKind.SEGMENT else t for t in tasks
        ]
    return ModelMeta(
        input_name=INPUT_NAME,
        input_hw=imgsz,
        mean=tuple(m.mean),
        std=tuple(m.std),
        pad_value=PAD_VALUE,
        tasks=tuple(tasks),
        precision=precision,
        input_dtype="float32",
        batch=batch,
        config_hash=cfg.hash(),
        extra=dict(extra or {}),
    )


def set_metadata(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    """Write ``meta`` as JSON under ``metadata_props["edge_mtl"]``, replacing any earlier entry."""
    keep = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    proto.metadata_props.add(key=METADATA_KEY, value=meta.to_json())


def export(ec: ExportConfig) -> ExportResult:
    """Run a whole export: load, export, (NMS), (simplify), metadata, validate, write."""
    if ec.batch is not None and ec.batch < 1:
        raise InputError(f"--batch {ec.batch}: must be at least 1")
    if not MIN_OPSET <= ec.opset <= onnx.defs.onnx_opset_version():
        raise InputError(
            f"--opset {ec.opset}: expected {MIN_OPSET}..{onnx.defs.onnx_opset_version()}"
        )
    detect = ec.detect_defaults()  # before loading: a bad flag fails in a second
    model, cfg, _ = load_model(ec.weights)
    imgsz = check_imgsz(ec.imgsz or cfg.model.input_hw, cfg.model.strides)
    if ec.nms and not cfg.model.detect:
        raise InputError(f"{ec.weights}: --nms needs a model with a detection head")
    if ec.seg_logits and not cfg.model.segment:
        raise InputError(f"{ec.weights}: --seg-logits needs a model with segment tasks")
    out = check_out_path(ec.out)  # before the slow part, so a bad path fails in a second

    proto = torch_to_onnx(model, imgsz, ec.batch, ec.opset, ec.half, ec.seg_logits)
    if ec.nms:
        proto = add_nms(
            proto, detect["score_threshold"], detect["iou_threshold"], detect["max_det"]
        )
    if ec.simplify:
        from edge_mtl.export.simplify import simplify

        proto = simplify(proto)

    precision = Precision.FP16 if ec.half else Precision.FP32
    extra = {"opset": ec.opset, "exporter": f"torch.onnx dynamo (torch {torch.__version__})"}
    if ec.nms:
        extra.update(pre_nms_topk=PRE_NMS_TOPK)
    meta = build_metadata(cfg, imgsz, ec.batch, precision, ec.nms, extra, detect, ec.seg_logits)
    set_metadata(proto, meta)

    check_graph(proto)
    if ec.half:
        check_half_graph(proto)
    tol = FP16_TOLERANCE if ec.half else FP32_TOLERANCE
    report = check_parity(model, proto, meta, tol, n_images=ec.parity_images)
    meta = meta.replace(extra={**meta.extra, "parity": report.summary()})
    set_metadata(proto, meta)
    with atomic_write(out) as f:
        f.write(proto.SerializeToString())
    return ExportResult(out, meta, report, len(proto.graph.node))
