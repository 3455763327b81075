"""In-graph NMS: append ONNX NonMaxSuppression (per class) to a raw contract graph.

The appended tail computes exactly what :func:`~edge_mtl.runtime.postprocess.postprocess_detections`
does
on the raw outputs ``det_boxes`` (N, A, 4) and ``det_scores`` (N, A, C):

1. anchors with a non-finite box coordinate and NaN scores are dropped (score set to 0);
2. only the ``pre_nms_topk`` highest (anchor, class) scores stay candidates;
3. NonMaxSuppression per class: keep ``score > score_threshold``, suppress ``IoU > iou_threshold``;
4. the kept (anchor, class) pairs of each image are ranked by score, highest first, and the first
   ``max_det`` become the outputs.

Outputs: ``det_num`` int64 (N,), ``det_boxes`` float32 (N, M, 4) xyxy input pixels,
``det_scores`` float32 (N, M), ``det_classes`` int64 (N, M), M = min(max_det, A * C); rows past
``det_num`` are zero boxes, zero scores and class -1.

Ties: equal scores rank by anchor then class, as numpy's stable sort of the anchor-major candidate
list does. Two cases may still differ from numpy: candidates tied at the ``pre_nms_topk`` cut-off
(numpy keeps an arbitrary subset, the graph keeps all of them) and IoUs within float rounding of
``iou_threshold`` (numpy computes them in float64 for classes > 0, ONNX Runtime in float32).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_mtl.runtime.decoders import (
    DET_BOXES,
    DET_CLASSES,
    DET_NUM,
    DET_SCORES,
    DETECT_OUTPUTS,
    NMS_OUTPUTS,
)

__all__ = ["MAX_DET", "NMS_OUTPUTS", "PRE_NMS_TOPK", "add_nms"]

MAX_DET = 300  # detections kept per image (the runtime's default max_det)
PRE_NMS_TOPK = 1000  # (anchor, class) candidates kept before NMS (postprocess_detections default)


def _static_dims(proto: onnx.ModelProto, name: str) -> list[int | str]:
    for o in proto.graph.output:
        if o.name == name:
            return [
                d.dim_param if d.HasField("dim_param") else d.dim_value
                for d in o.type.tensor_type.shape.dim
            ]
    raise ValueError(f"graph has no output {name!r}")


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in graph.value_info:
        if vi.name == old:
            vi.name = new


class _Tail:
    """The NMS tail being built: nodes in order and initialisers (added to ``graph`` at once),
    every name under ``nms/``."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.consts: dict[str, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []

    def const(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        if name in self.consts:
            assert np.array_equal(self.consts[name], value), f"constant {name} defined twice"
        else:
            self.consts[name] = value
            self.graph.initializer.append(numpy_helper.from_array(value, f"nms/{name}"))
        return f"nms/{name}"

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(
            helper.make_node(op_type, inputs, [f"nms/{name}"], f"nms/{name}_op", **attrs)
        )
        return f"nms/{name}"

    def column(self, sel: str, i: int) -> str:
        """Column ``i`` of the (K, 3) NonMaxSuppression selection, (K, 1)."""
        return self.op(
            "Slice",
            [
                sel,
                self.const(f"c{i}", np.array([i], np.int64)),
                self.const(f"c{i + 1}", np.array([i + 1], np.int64)),
                self.const(f"cax{i}", np.array([1], np.int64)),
            ],
            f"sel_col{i}",
        )


def add_nms(
    proto: onnx.ModelProto,
    score_threshold: float,
    iou_threshold: float,
    max_det: int = MAX_DET,
    pre_nms_topk: int = PRE_NMS_TOPK,
) -> onnx.ModelProto:
    """Return a copy of ``proto`` whose ``det_boxes``/``det_scores`` outputs are replaced by the
    NMS outputs (first in the output list); classification/regression outputs are unchanged.

    ``score_threshold`` in [0, 1), ``iou_threshold`` in [0, 1]; ``A`` and ``C`` must be static.
    """
    if not 0.0 <= score_threshold < 1.0 or not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"thresholds out of range: score {score_threshold}, iou {iou_threshold}")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    batch_dim, a, _ = _static_dims(out, DET_BOXES)
    _, _, c = _static_dims(out, DET_SCORES)
    if not isinstance(a, int) or not isinstance(c, int) or a <= 0 or c <= 0:
        raise ValueError(f"{DET_SCORES} needs static anchor and class dimensions, got ({a}, {c})")
    m = min(max_det, a * c)

    for name in DETECT_OUTPUTS:
        _rename_tensor(g, name, f"nms/raw_{name}")
    others = [o for o in g.output if o.name not in DETECT_OUTPUTS]

    tail = _Tail(g)
    boxes, scores = _drop_nonfinite(tail, f"nms/raw_{DET_BOXES}", f"nms/raw_{DET_SCORES}")
    flat, scores_t = _keep_top_candidates(tail, scores, a, c, pre_nms_topk)
    top_vals, top_idx = _select_and_rank(
        tail, boxes, scores_t, flat, c, m, max_det, iou_threshold, score_threshold
    )
    final = _final_nodes(tail, boxes, top_vals, top_idx, c)
    g.node.extend(tail.nodes)
    g.node.extend(final)
    n = batch_dim if batch_dim else "batch"
    new_outputs = [
        helper.make_tensor_value_info(DET_NUM, TensorProto.INT64, [n]),
        helper.make_tensor_value_info(DET_BOXES, TensorProto.FLOAT, [n, m, 4]),
        helper.make_tensor_value_info(DET_SCORES, TensorProto.FLOAT, [n, m]),
        helper.make_tensor_value_info(DET_CLASSES, TensorProto.INT64, [n, m]),
    ]
    del g.output[:]
    g.output.extend(new_outputs + others)
    return out


def _drop_nonfinite(tail: _Tail, boxes: str, scores: str) -> tuple[str, str]:
    """Step 1: anchors with a non-finite coordinate get zero boxes and scores, NaN scores 0."""
    op, const = tail.op, tail.const
    zero_f = const("zero_f", np.array(0.0, np.float32))
    # x - x is 0 for finite x and NaN otherwise: flag anchors with any non-finite coordinate.
    finite = op("Equal", [op("Sub", [boxes, boxes], "diff"), zero_f], "finite")
    nonfinite = op(
        "Cast", [op("Not", [finite], "nonfinite_b")], "nonfinite_f", to=TensorProto.FLOAT
    )
    bad_count = op(
        "ReduceSum", [nonfinite, const("ax2", np.array([2], np.int64))], "bad_count", keepdims=1
    )  # (N, A, 1)
    bad = op("Greater", [bad_count, zero_f], "bad")
    boxes = op("Where", [bad, zero_f, boxes], "boxes_clean")  # (N, A, 4)
    scores = op("Where", [bad, zero_f, scores], "scores_finite")
    scores = op("Where", [op("Equal", [scores, scores], "not_nan"), scores, zero_f], "scores_clean")
    return boxes, scores


def _keep_top_candidates(
    tail: _Tail, scores: str, a: int, c: int, pre_nms_topk: int
) -> tuple[str, str]:
    """Step 2: keep the ``pre_nms_topk`` best (anchor, class) scores, anchor-major like numpy's
    nonzero. Returns the flat scores (N, A*C) and the per-class view (N, C, A)."""
    op, const = tail.op, tail.const
    zero_f = const("zero_f", np.array(0.0, np.float32))
    flat = op("Reshape", [scores, const("flat_shape", np.array([0, -1], np.int64))], "flat")
    if a * c > pre_nms_topk:
        k = const("pre_k", np.array([pre_nms_topk], np.int64))
        vals = op("TopK", [flat, k], "pre_vals", axis=1)
        tail.nodes[-1].output.append("nms/pre_idx_unused")
        kth = op(
            "Slice",
            [
                vals,
                const("kth_start", np.array([pre_nms_topk - 1], np.int64)),
                const("kth_end", np.array([pre_nms_topk], np.int64)),
                const("ax1", np.array([1], np.int64)),
            ],
            "kth",
        )  # (N, 1)
        flat = op("Where", [op("Less", [flat, kth], "below_k"), zero_f, flat], "flat_topk")
    scores = op("Reshape", [flat, const("nac_shape", np.array([0, a, c], np.int64))], "scores_k")
    scores_t = op("Transpose", [scores], "scores_t", perm=[0, 2, 1])  # (N, C, A)
    return flat, scores_t


def _select_and_rank(
    tail: _Tail,
    boxes: str,
    scores_t: str,
    flat: str,
    c: int,
    m: int,
    max_det: int,
    iou_threshold: float,
    score_threshold: float,
) -> tuple[str, str]:
    """Steps 3-4: per-class NonMaxSuppression, then the kept scores scattered into a dense
    (N, A*C) map at anchor*C + class and ranked with TopK. Returns the top ``m`` scores and
    their flat indices, (N, M) each."""
    op, const = tail.op, tail.const
    sel = op(  # (K, 3) = (batch, class, anchor)
        "NonMaxSuppression",
        [
            boxes,
            scores_t,
            const("max_per_class", np.array([max_det], np.int64)),
            const("iou_thr", np.array([iou_threshold], np.float32)),
            const("score_thr", np.array([score_threshold], np.float32)),
        ],
        "selected",
        center_point_box=0,
    )
    sel_scores = op("GatherND", [scores_t, sel], "sel_scores")  # (K,)
    n_c = const("num_classes", np.array(c, np.int64))
    pos = op(
        "Add", [op("Mul", [tail.column(sel, 2), n_c], "anchor_x_c"), tail.column(sel, 1)], "pos"
    )
    scatter_idx = op("Concat", [tail.column(sel, 0), pos], "scatter_idx", axis=1)  # (K, 2)
    dense = op(
        "ConstantOfShape",
        [op("Shape", [flat], "flat_shape_dyn")],
        "dense0",
        value=numpy_helper.from_array(np.array([0.0], np.float32)),
    )
    dense = op("ScatterND", [dense, scatter_idx, sel_scores], "dense")
    top_vals = op(
        "TopK",
        [dense, const("top_m", np.array([m], np.int64))],
        "top_vals",
        axis=1,
        largest=1,
        sorted=1,
    )
    tail.nodes[-1].output.append("nms/top_idx")
    return top_vals, "nms/top_idx"  # (N, M) float32, (N, M) int64


def _final_nodes(
    tail: _Tail, boxes: str, top_vals: str, top_idx: str, c: int
) -> list[onnx.NodeProto]:
    """The ranked scores and indices -> the four NMS outputs; rows past ``det_num`` get zero
    boxes, zero scores and class -1."""
    op, const = tail.op, tail.const
    zero_f = const("zero_f", np.array(0.0, np.float32))
    n_c = const("num_classes", np.array(c, np.int64))
    valid = op("Greater", [top_vals, zero_f], "valid")  # (N, M)
    det_num = op(
        "ReduceSum",
        [
            op("Cast", [valid], "valid_i", to=TensorProto.INT64),
            const("ax1b", np.array([1], np.int64)),
        ],
        "num",
        keepdims=0,
    )
    cls = op("Mod", [top_idx, n_c], "cls")
    anchor = op("Div", [top_idx, n_c], "anchor")
    anchor3 = op("Unsqueeze", [anchor, const("ax2b", np.array([2], np.int64))], "anchor3")
    picked = op("GatherND", [boxes, anchor3], "picked", batch_dims=1)  # (N, M, 4)
    valid3 = op("Unsqueeze", [valid, const("ax2c", np.array([2], np.int64))], "valid3")
    minus_one = const("minus_one", np.array(-1, np.int64))
    return [
        helper.make_node("Identity", [det_num], [DET_NUM], "nms/out_num"),
        helper.make_node("Where", [valid3, picked, zero_f], [DET_BOXES], "nms/out_boxes"),
        helper.make_node("Identity", [top_vals], [DET_SCORES], "nms/out_scores"),
        helper.make_node("Where", [valid, cls, minus_one], [DET_CLASSES], "nms/out_classes"),
    ]
