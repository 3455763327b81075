"""FP16 export: float16 weights and compute inside, float32 ``images`` in and outputs out.

The torch model is converted before export (BatchNorm folded in float32 first, then
``.half()``); :class:`~edge_mtl.export.onnx_export.ContractOutputs`
casts at the boundaries, so the graph
starts with one Cast to float16 and ends with Casts to float32 and the runtime feeds it exactly
what it feeds the float32 model. Detection decoding (anchor points, box corners, score
sigmoid/sqrt) stays in float32 because :class:`edge_mtl.tasks.detect.DetectHead` upcasts before it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from torch import nn

from edge_mtl.runtime.errors import RuntimeFailure

FP16_MAX = 65504.0


def to_half(model: nn.Module) -> nn.Module:
    """``model`` (already BatchNorm-folded, eval mode) with parameters and buffers in float16.
    Raises RuntimeFailure when a weight would overflow float16 (|w| > 65504)."""
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and t.numel() and float(t.detach().abs().max()) > FP16_MAX:
            raise RuntimeFailure(f"fp16 export: weight {name} exceeds the float16 range")
    return model.half().eval()


def fp16_weight_fraction(proto: onnx.ModelProto) -> float:
    """Fraction of weight elements (initializers with more than one element) stored as float16."""
    total = half = 0
    for init in proto.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        if n <= 1:
            continue
        total += n
        half += n if init.data_type == TensorProto.FLOAT16 else 0
    return half / total if total else 0.0


def check_half_graph(proto: onnx.ModelProto, min_fraction: float = 0.95) -> float:
    """Raise RuntimeFailure unless the graph's float inputs/outputs are float32 and nearly all
    weights are float16; returns the float16 weight fraction."""
    for v in (*proto.graph.input, *proto.graph.output):
        dtype = v.type.tensor_type.elem_type
        if dtype == TensorProto.FLOAT16:
            raise RuntimeFailure(f"fp16 export: {v.name!r} should stay float32 but is float16")
    frac = fp16_weight_fraction(proto)
    if frac < min_fraction:
        raise RuntimeFailure(
            f"fp16 export: only {frac:.0%} of the weights are float16 (expected >= "
            f"{min_fraction:.0%})"
        )
    return frac
