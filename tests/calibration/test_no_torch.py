"""``edge-mtl quantize`` in a process where torch cannot be imported, as in a venv with only
``pip install edge-mtl[quantize]``: calibration, the accuracy report on labelled data, latency."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx

from edge_mtl.data.generate import write_synthetic
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision

REPO = Path(__file__).resolve().parents[2]

# Prepended to a `python -c` script: torch and torchvision look absent, as in a venv without
# them: importing them fails and ``importlib.util.find_spec`` (which onnxruntime's quantization
# tools probe) returns None. onnx stays: the quantizer needs it.
BLOCK_TORCH_ONLY = textwrap.dedent(
    """
    import sys
    sys.modules.update({"torch": None, "torchvision": None})
    """
)


def _named(src: Path, dst: Path) -> Path:
    """``src`` with every node named (exclusions and the float tail go by node name, as in
    an export; onnx.helper leaves names empty)."""
    proto = onnx.load(str(src))
    for i, node in enumerate(proto.graph.node):
        node.name = f"{node.op_type.lower()}_{i}"
    onnx.save(proto, str(dst))
    return dst


def test_quantize_runs_with_torch_blocked(models, tmp_path) -> None:
    data = write_synthetic(tmp_path / "scenes", 6, hw=(48, 64), progress=False)
    fp32 = _named(models["dense"], tmp_path / "tiny.onnx")
    out, report = tmp_path / "tiny.int8.onnx", tmp_path / "report.json"
    argv = [
        "quantize", "--onnx", str(fp32), "--calib", str(data), "--out", str(out),
        "--calib-size", "4", "--eval", str(data), "--threads", "1", "--report", str(report),
    ]  # fmt: skip
    code = BLOCK_TORCH_ONLY + textwrap.dedent(
        f"""
        from edge_mtl.cli import main
        rc = main({argv!r})
        assert rc == 0, rc
        torch_like = (m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
        leaked = sorted(m for m in torch_like if sys.modules[m] is not None)
        assert not leaked, leaked
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    proto = onnx.load(str(out))
    meta = ModelMeta.from_json(next(p.value for p in proto.metadata_props if p.key == METADATA_KEY))
    assert meta.precision is Precision.INT8 and meta.calibration["images"] == 4
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    doc = json.loads(report.read_text())
    table = doc["accuracy"]["table"]
    assert doc["eval_provider"] == "cpu" and doc["accuracy"]["images"] == 6
    assert set(table["weather acc"]) == {"fp32", "int8"} and "det mAP@0.5" in table
    assert set(doc["latency_ms"]) == {"fp32", "int8"} and doc["latency_ms"]["int8"] > 0
