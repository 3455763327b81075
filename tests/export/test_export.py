"""``edge-mtl export`` end to end on a tiny real checkpoint: graph validity, metadata, parity with
torch (fp32 at batch 1 and 4, fp16), in-graph NMS against the numpy postprocess, a clean op set,
torch-free loading, and one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_mtl.checkpoint import load_model
from edge_mtl.cli import main
from edge_mtl.export.fp16 import fp16_weight_fraction
from edge_mtl.export.nms import add_nms
from edge_mtl.export.onnx_export import build_metadata
from edge_mtl.export.validate import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    foreign_nodes,
    match_detections,
    nms_detections,
    run_torch,
)
from edge_mtl.export.validate import synthetic_inputs as scenes
from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision
from edge_mtl.runtime.postprocess import postprocess_detections

from .conftest import HW, tiny_config, write_checkpoint

REPO = Path(__file__).resolve().parents[2]
CONTRACT = ["det_boxes", "det_scores", "cls_weather", "cls_scene", "reg_curvature"]
NMS_CONTRACT = ["det_num", "det_boxes", "det_scores", "det_classes", *CONTRACT[2:]]


def _export(checkpoint: Path, out: Path, *flags: str) -> tuple[Path, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["export", "--weights", str(checkpoint), "--out", str(out), *flags])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


@pytest.fixture(scope="session")
def raw(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return _export(checkpoint, tmp_path_factory.mktemp("raw") / "model.onnx", "--dynamic-batch")


@pytest.fixture(scope="session")
def half(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(checkpoint, tmp_path_factory.mktemp("fp16") / "model.onnx", "--half")[0]


@pytest.fixture(scope="session")
def nms_fixed(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nms") / "sub" / "model.onnx"  # parent created on demand
    flags = ("--nms", "--simplify", "--batch", "2", "--opset", "17")
    return _export(checkpoint, out, *flags)[0]


def _meta(path: Path) -> ModelMeta:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ModelMeta.from_json(props[METADATA_KEY], str(path))


def _session(path: Path | bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    src = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _dims(v: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


def test_graph_passes_checker_and_shape_inference(raw):
    model = onnx.load(str(raw[0]))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    assert [i.name for i in model.graph.input] == ["images"]
    assert _dims(model.graph.input[0]) == ["batch", 3, *HW]
    assert [o.name for o in model.graph.output] == CONTRACT
    assert _dims(model.graph.output[1])[1:] == [8 * 12 + 4 * 6 + 2 * 3, 3]  # anchors, classes
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18


def test_metadata_round_trips(raw):
    meta = _meta(raw[0])
    cfg = tiny_config()
    want = build_metadata(cfg, HW, None, Precision.FP32, nms=False)
    assert meta.replace(extra={}) == want.replace(extra={})
    assert meta.config_hash == cfg.hash() and len(meta.config_hash) == 16
    assert meta.batch is None and meta.precision is Precision.FP32
    det = meta.detect
    assert det is not None and det.classes == cfg.model.detect and det.strides == (8, 16, 32)
    assert (det.score_threshold, det.iou_threshold, det.nms_in_graph) == (0.25, 0.5, False)
    assert [t.classes for t in meta.tasks[1:3]] == [("clear", "rain", "fog"), ("city", "highway")]
    assert (meta.tasks[3].name, meta.tasks[3].unit) == ("curvature", "1/(50 m)")  # for JSONL
    assert set(meta.extra["parity"]["max_abs_diff"]) == set(CONTRACT)
    assert ModelMeta.from_json(meta.to_json()) == meta


def _assert_fp32_close(got: list[np.ndarray], want: dict[str, np.ndarray]) -> None:
    """ONNX outputs, in CONTRACT order, against torch's within the FP32 export tolerance."""
    for out, name in zip(got, CONTRACT, strict=True):
        np.testing.assert_allclose(
            out, want[name], rtol=FP32_TOLERANCE.rtol, atol=FP32_TOLERANCE.atol, err_msg=name
        )


@pytest.mark.parametrize("batch", [1, 4])
def test_fp32_parity_with_torch_at_batch(raw, checkpoint, batch):
    model, _, _ = load_model(checkpoint)
    x = scenes(_meta(raw[0]), 4)
    want = run_torch(model, x)
    sess = _session(raw[0])
    got = [sess.run(CONTRACT, {"images": x[i : i + batch]}) for i in range(0, 4, batch)]
    _assert_fp32_close([np.concatenate([g[k] for g in got]) for k in range(len(CONTRACT))], want)
    assert "det_boxes            max |diff|" in raw[1] and "matched" in raw[1]


def test_a_stride_4_pyramid_exports_with_parity(tmp_path):
    """P2-P5: four levels of per-level BatchNorm fold into the graph, the metadata names the
    strides, and the ONNX outputs match torch."""
    ckpt = write_checkpoint(tmp_path / "best.pt", strides=(4, 8, 16, 32))
    path, _ = _export(ckpt, tmp_path / "p2.onnx")
    assert _meta(path).detect.strides == (4, 8, 16, 32)
    model, _, _ = load_model(ckpt)
    x = scenes(_meta(path), 2)
    want = run_torch(model, x)
    got = _session(path).run(CONTRACT, {"images": x})
    anchors = sum((HW[0] // s) * (HW[1] // s) for s in (4, 8, 16, 32))
    assert got[0].shape == (2, anchors, 4)
    _assert_fp32_close(got, want)


def test_fp16_parity_with_torch(half, checkpoint):
    model = onnx.load(str(half))
    assert all(
        v.type.tensor_type.elem_type == TensorProto.FLOAT
        for v in (*model.graph.input, *model.graph.output)
    )
    assert fp16_weight_fraction(model) > 0.95
    meta = _meta(half)
    assert meta.precision is Precision.FP16
    torch_model, _, _ = load_model(checkpoint)
    x = scenes(meta, 4)
    want = run_torch(torch_model, x)
    got = dict(zip(CONTRACT, _session(half).run(CONTRACT, {"images": x})))
    for name in CONTRACT:
        np.testing.assert_allclose(
            got[name],
            want[name],
            rtol=FP16_TOLERANCE.rtol,
            atol=FP16_TOLERANCE.atol,
            err_msg=name,
        )
    assert np.abs(got["det_boxes"] - want["det_boxes"]).max() > 0  # really computed in fp16


def test_graphs_have_no_custom_or_training_ops(raw, half, nms_fixed):
    for path in (raw[0], half, nms_fixed):
        model = onnx.load(str(path))
        assert foreign_nodes(model) == []
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx", "com.microsoft"}
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"Dropout", "BatchNormalization"}  # BN folded into the convolutions
        assert not model.functions


@pytest.mark.parametrize(("max_det", "topk"), [(300, 1000), (10, 40)])
def test_nms_variant_equals_numpy_postprocess(raw, max_det, topk):
    proto = onnx.load(str(raw[0]))
    nms = add_nms(proto, 0.25, 0.5, max_det=max_det, pre_nms_topk=topk)
    x = scenes(_meta(raw[0]), 4)
    dense = dict(zip(CONTRACT, _session(raw[0]).run(CONTRACT, {"images": x})))
    out = dict(
        zip(NMS_CONTRACT, _session(nms.SerializeToString()).run(NMS_CONTRACT, {"images": x}))
    )
    assert out["det_boxes"].shape == (4, min(max_det, 378), 4)
    suppressed = 0
    for i in range(4):
        want = postprocess_detections(
            dense["det_boxes"][i],
            dense["det_scores"][i],
            0.25,
            0.5,
            max_det=max_det,
            pre_nms_topk=topk,
        )
        n = int(out["det_num"][i])
        assert n == len(want) > 0
        np.testing.assert_array_equal(out["det_classes"][i, :n], want.classes)
        np.testing.assert_array_equal(out["det_scores"][i, :n], want.scores)
        np.testing.assert_array_equal(out["det_boxes"][i, :n], want.boxes)
        assert (out["det_classes"][i, n:] == -1).all() and (out["det_scores"][i, n:] == 0).all()
        suppressed += int((dense["det_scores"][i] > 0.25).sum()) - n
    assert suppressed > 0  # NMS really removed boxes
    np.testing.assert_array_equal(out["cls_weather"], dense["cls_weather"])


def _dense_graph(n: int, a: int, c: int) -> onnx.ModelProto:
    """Identity graph with the raw detection contract, to feed add_nms hand-made inputs."""
    nodes = [
        helper.make_node("Identity", ["boxes"], ["det_boxes"]),
        helper.make_node("Identity", ["scores"], ["det_scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [n, a, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n, a, c]),
        ],
        [
            helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [n, a, 4]),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [n, a, c]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_nms_tail_handles_ties_and_non_finite_boxes():
    rng = np.random.default_rng(0)
    n, a, c = 2, 60, 4
    centres = rng.uniform(10, 90, (n, a, 2))
    size = rng.uniform(5, 30, (n, a, 2))
    boxes = np.concatenate([centres - size, centres + size], -1).astype(np.float32)
    scores = rng.choice(np.float32([0.1, 0.3, 0.5, 0.7, 0.9]), (n, a, c))  # many exact ties
    boxes[0, 3, 1] = np.nan
    boxes[1, 7, 2] = np.inf
    scores[1, 9, 0] = np.nan
    nms = add_nms(_dense_graph(n, a, c), 0.25, 0.45, max_det=50)
    onnx.checker.check_model(nms, full_check=True)
    got = _session(nms.SerializeToString()).run(None, {"boxes": boxes, "scores": scores})
    num, out_boxes, out_scores, out_classes = got
    for i in range(n):
        want = postprocess_detections(boxes[i], scores[i], 0.25, 0.45, max_det=50)
        k = int(num[i])
        assert k == len(want)
        np.testing.assert_array_equal(out_classes[i, :k], want.classes)
        np.testing.assert_array_equal(out_scores[i, :k], want.scores)
        np.testing.assert_array_equal(out_boxes[i, :k], want.boxes)
        assert np.isfinite(out_boxes[i]).all()


def test_nms_export_through_cli(nms_fixed):
    model = onnx.load(str(nms_fixed))
    assert [o.name for o in model.graph.output] == NMS_CONTRACT
    assert _dims(model.graph.input[0])[0] == 2
    assert any(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert "NonMaxSuppression" in {n.op_type for n in model.graph.node}
    meta = _meta(nms_fixed)
    assert meta.batch == 2 and meta.detect.nms_in_graph
    assert meta.detect.outputs == tuple(NMS_CONTRACT[:4])
    assert meta.detect.max_det == 300 and meta.extra["parity"]["detections"]["matched"] > 0
    assert (meta.detect.score_threshold, meta.detect.iou_threshold) == (0.25, 0.5)


def test_nms_export_bakes_the_thresholds_given(tmp_path):
    """``export --nms --conf 0.4 --iou 0.6 --max-det 50``: the metadata says so, the graph does
    so (its outputs equal the numpy postprocess at those values) and the runtime holds to it.
    The model's class logits are raised by 1 so that a dozen boxes per image score above 0.4."""
    confident = write_checkpoint(tmp_path / "best.pt", det_bias=1.0)
    _export(confident, tmp_path / "model.onnx")
    flags = ("--nms", "--conf", "0.4", "--iou", "0.6", "--max-det", "50")
    path, printed = _export(confident, tmp_path / "model.nms.onnx", *flags)
    assert "detection thresholds (baked into the NMS): conf 0.4, iou 0.6, max-det 50" in printed
    det = _meta(path).detect
    assert (det.score_threshold, det.iou_threshold, det.max_det) == (0.4, 0.6, 50)
    assert det.nms_in_graph and _meta(path).extra["parity"]["detections"]["matched"] > 0
    x = scenes(_meta(path), 2)
    boxes, scores = _session(tmp_path / "model.onnx").run(
        ["det_boxes", "det_scores"], {"images": x}
    )
    outs = dict(zip(NMS_CONTRACT, _session(path).run(NMS_CONTRACT[:4], {"images": x})))
    assert outs["det_scores"].shape == (2, 50)
    for i in range(len(x)):
        want = postprocess_detections(boxes[i], scores[i], 0.4, 0.6, max_det=50)
        got = nms_detections(outs, i)
        assert len(got) > 0 and (got.scores > 0.4).all()
        # the two graphs' float rounding can flip a score or IoU lying right at a threshold
        assert match_detections(want, got, 0.99, 1e-3) >= max(len(got), len(want)) - 1

    with pytest.raises(InputError, match=r"--conf 0.3 is below the score threshold 0.4 baked"):
        Engine(path, "cpu", EngineConfig(conf_threshold=0.3, warmup_runs=0))
    with pytest.raises(InputError, match=r"--max-det 51 is above the 50 detections baked"):
        Engine(path, "cpu", EngineConfig(max_det=51, warmup_runs=0))


def test_thresholds_without_nms_are_the_runtime_defaults(checkpoint, tmp_path):
    flags = ("--conf", "0.35", "--iou", "0.45", "--max-det", "7")
    path, printed = _export(checkpoint, tmp_path / "model.onnx", *flags)
    assert "detection thresholds (runtime defaults): conf 0.35, iou 0.45, max-det 7" in printed
    det = _meta(path).detect
    assert (det.score_threshold, det.iou_threshold, det.max_det, det.nms_in_graph) == (
        0.35, 0.45, 7, False,
    )  # fmt: skip


TORCH_FREE = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        engine = name in ("edge_mtl", "edge_mtl.runtime") or name.startswith("edge_mtl.runtime.")
        if top in ("torch", "torchvision", "onnx") or (top == "edge_mtl" and not engine):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from edge_mtl.runtime.engine import Engine
out = []
for path in sys.argv[1:]:
    eng = Engine(path, providers="cpu")
    res = eng(np.full((120, 200, 3), 90, np.uint8))
    out.append({"tasks": [t.name for t in eng.meta.tasks], "hw": list(eng.meta.input_hw),
                "batch": eng.meta.batch, "dets": len(res.detections),
                "torch": "torch" in sys.modules})
print(json.dumps(out))
"""


def test_runtime_reads_export_without_torch(raw, nms_fixed):
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(raw[0]), str(nms_fixed)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)
    assert first["tasks"] == ["det", "weather", "scene", "curvature"]
    assert first["hw"] == list(HW) and first["batch"] is None and second["batch"] == 2
    assert not first["torch"] and not second["torch"]


def _fails(capsys, argv: list[str], expect: str) -> None:
    rc = main(["export", *argv])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert expect in err, err


def test_missing_checkpoint(tmp_path, capsys):
    _fails(
        capsys,
        ["--weights", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")],
        "checkpoint not found",
    )
    assert not (tmp_path / "m.onnx").exists()


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint at all")
    _fails(
        capsys,
        ["--weights", str(bad), "--out", str(tmp_path / "m.onnx")],
        "not a readable checkpoint",
    )


def test_imgsz_not_multiple_of_stride(checkpoint, tmp_path, capsys):
    _fails(
        capsys,
        ["--weights", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--imgsz", "64", "100"],
        "multiples of 32",
    )


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_unwritable_output_path(checkpoint, tmp_path, capsys, where):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = blocker / "m.onnx" if where == "under_a_file" else tmp_path
    _fails(capsys, ["--weights", str(checkpoint), "--out", str(out)], str(out))


def test_bad_thresholds_are_refused_before_loading(tmp_path, capsys):
    out, weights = str(tmp_path / "m.onnx"), str(tmp_path / "never_read.pt")
    for flag, value, expect in (
        ("--conf", "1", "--conf 1: must be in [0, 1)"),
        ("--iou", "-0.1", "--iou -0.1: must be in [0, 1]"),
        ("--max-det", "0", "--max-det 0: must be at least 1"),
    ):
        _fails(capsys, ["--weights", weights, "--out", out, "--nms", flag, value], expect)


def test_bad_batch_and_opset(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    _fails(capsys, ["--weights", str(checkpoint), "--out", out, "--batch", "0"], "--batch 0")
    _fails(capsys, ["--weights", str(checkpoint), "--out", out, "--opset", "13"], "--opset 13")
