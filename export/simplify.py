"""``--simplify``: graph clean-up with onnxslim (constant folding, dead-node and redundant
Cast/Reshape removal, shape-chain folding). Parity is re-checked on the result by the caller."""

from __future__ import annotations

import onnx

from edge_mtl.runtime.errors import InputError, RuntimeFailure


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Return an onnxslim-simplified copy of ``proto`` (metadata props preserved)."""
    try:
        import onnxslim
    except ImportError:
        raise InputError(
            "--simplify needs onnxslim: pip install 'edge-mtl[train]' (or pip install onnxslim)"
        ) from None
    props = [(p.key, p.value) for p in proto.metadata_props]
    try:
        slim = onnxslim.slim(proto)
    except Exception as e:  # onnxslim raises assorted types from its passes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RuntimeFailure(f"onnxslim failed: {first[:200]}") from e
    if not isinstance(slim, onnx.ModelProto):
        raise RuntimeFailure("onnxslim returned no model")
    del slim.metadata_props[:]
    for key, value in props:
        slim.metadata_props.add(key=key, value=value)
    return slim
