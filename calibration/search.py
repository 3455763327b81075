"""``quantize --exclude auto``: which nodes to keep float so INT8 stays within tolerance.

First the heads of the classify, regress and segment tasks that INT8 loses past tolerance are
tried float: every node that feeds only that task's outputs. A pixel's class flips wherever two
logits nearly tie, and the boundaries lane IoU is made of are exactly such places; a regression
carries every rounding of its head into its one number (its attention softmax is float in every
INT8 model already, :func:`~edge_mtl.calibration.quantize.attention_softmax`). No ranking of
weighted layers by noise finds these, and the heads cost little time (one stride, or one pooled
vector). The detection head is most of the model's work and is left to the ranking. Then the
nodes ORT's QDQ debugging tools rank most hurt are kept float, 1, 2, 4, ... at a time (beside
the heads when keeping those helped), until the drop is within tolerance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from edge_mtl.bench.accuracy import EvalSet, Predictions
from edge_mtl.calibration.accuracy import AccuracyReport, compare
from edge_mtl.calibration.quiet import library_quiet
from edge_mtl.calibration.reader import CalibrationReader
from edge_mtl.runtime.metadata import ModelMeta, TaskKind

if TYPE_CHECKING:
    from edge_mtl.calibration.quantize import Quantizer

log = logging.getLogger("edge_mtl.calibration")

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"})
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish"})
SENSITIVITY_IMAGES = 8


def consumers_of(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it, in graph order."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in proto.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    return consumers


def head_nodes(proto: onnx.ModelProto, outputs: set[str]) -> list[str]:
    """Nodes (graph order) whose every path ends in one of ``outputs``: those outputs' task
    heads, not the trunk or neck they share with other tasks."""
    graph_outputs = {o.name for o in proto.graph.output}
    consumers = consumers_of(proto)
    reach: dict[str, set[str]] = {}  # node -> the graph outputs it feeds
    for n in reversed(proto.graph.node):  # topological order reversed: consumers first
        r = {t for t in n.output if t in graph_outputs}
        for t in n.output:
            for c in consumers.get(t, []):
                r |= reach[c.name]
        reach[n.name] = r
    return [n.name for n in proto.graph.node if reach[n.name] and reach[n.name] <= outputs]


def light_outputs_past(meta: ModelMeta, report: AccuracyReport, tolerance: float) -> set[str]:
    """The outputs of the classify, regress and segment tasks whose metric rows ``int8`` loses
    more than ``tolerance`` points on (rows are named ``<task> <metric>``)."""
    past = {r.rsplit(" ", 1)[0] for r in report.table if (report.loss(r, "int8") or 0) > tolerance}
    return {
        o for t in meta.tasks if t.kind is not TaskKind.DETECT and t.name in past for o in t.outputs
    }


def node_sensitivity(q: Quantizer, qdq: Path, images: int = SENSITIVITY_IMAGES) -> list[str]:
    """Quantized nodes ordered most-hurt first, by ORT's QDQ debugging tools: for each activation
    the signal-to-quantization-noise ratio of its own Q/DQ (pre vs post, dB) and for each weight
    float vs dequantized. Candidates are the weighted nodes (Conv/Gemm/MatMul); each scores the
    worst (lowest) SQNR among its weights, its output and the output of a Relu right after it."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    aug = q.work / "qdq_aug.onnx"
    with library_quiet():
        modify_model_output_intermediate_tensors(str(qdq), str(aug))
    reader = CalibrationReader(
        q.reader.paths[:images], q.reader.input_name, q.reader.input_hw, q.reader.mean,
        q.reader.std, q.reader.pad_value,
    )  # fmt: skip
    with library_quiet():
        matching = create_activation_matching(collect_activations(str(aug), reader))
    acts = {
        t: compute_signal_to_quantization_noice_ratio(m["pre_qdq"], m["post_qdq"])
        for t, m in matching.items()
    }
    aug.unlink()
    with library_quiet():
        weights = compute_weight_error(create_weight_matching(str(q.pre), str(qdq)))
    consumers = consumers_of(q.pre_proto)
    score: dict[str, float] = {}
    for n in q.pre_proto.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        # A Conv's QDQ output usually sits after the Relu fused into it: count that one too.
        outs = list(n.output)
        users = consumers.get(n.output[0], [])
        if len(users) == 1 and users[0].op_type in ACTIVATIONS:
            outs += users[0].output
        sq = [acts[t] for t in outs if t in acts] + [weights[t] for t in n.input if t in weights]
        if sq:
            score[n.name] = float(min(sq))
    return sorted(score, key=lambda k: (score[k], k))


def search_exclusions(
    q: Quantizer,
    meta: ModelMeta,
    base: Path,
    tail: list[str],
    judge: EvalSet,
    fp32: Path,
    preds: dict[str, Predictions],
    report: AccuracyReport,
) -> tuple[Path, list[str], AccuracyReport, list[tuple[int, float]]]:
    """The search of the module docstring, from ``base`` (QDQ with only the float ``tail``)
    whose FP32 vs INT8 ``report`` on ``judge`` is given: returns the chosen model, the nodes it
    keeps float, its report and the steps as (nodes kept, drop in points). Stops at
    ``max_auto_exclude`` ranked nodes or a quarter of the weighted layers; when the tolerance is
    not reached the best tried is returned and a warning printed."""
    qc = q.qc
    search = [(0, report.max_drop("int8"))]
    if search[0][1] <= qc.tolerance:
        return base, [], report, search
    best = (search[0][1], base, [], report)

    def attempt(kept: list[str]) -> float:
        nonlocal best
        path = q.build(tail + kept, q.work / f"int8_keep{len(search)}.onnx")
        preds.pop("int8", None)
        rep = compare(
            {"fp32": fp32, "int8": path}, judge, threads=qc.threads, cache=preds,
            provider=qc.eval_provider,
        )  # fmt: skip
        drop = rep.max_drop("int8")
        log.info("--exclude auto: %d nodes float -> %.2f points", len(kept), drop)
        search.append((len(kept), drop))
        if drop < best[0]:
            best = (drop, path, kept, rep)
        return drop

    past = light_outputs_past(meta, report, qc.tolerance)
    heads = [n for n in head_nodes(q.pre_proto, past) if n not in tail]
    if heads and attempt(heads) <= qc.tolerance:
        return best[1], best[2], best[3], search
    first = heads if heads and best[2] == heads else []  # the heads float helped: keep them
    ranked = [n for n in node_sensitivity(q, base) if n not in first]
    k = 1
    # Past a quarter of the weighted layers the model is no longer mostly int8: stop there.
    while k <= min(qc.max_auto_exclude, max(1, len(ranked) // 4)):
        if attempt(first + ranked[:k]) <= qc.tolerance:
            break
        k *= 2
    if best[0] > qc.tolerance:
        log.warning("--exclude auto: best drop %.2f points > tolerance %.2f", best[0], qc.tolerance)
        print(
            f"warning: --exclude auto did not reach the tolerance ({qc.tolerance:g} points); "
            f"keeping the best tried ({best[0]:.2f} points with {len(best[2])} nodes float)"
        )
    return best[1], best[2], best[3], search
