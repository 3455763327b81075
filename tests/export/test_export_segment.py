"""Export of segment tasks: ``seg_<task>`` is an in-graph ArgMax + Cast(uint8) class map at the
input resolution equal to torch's argmax, or float logits with ``--seg-logits``; FP16 keeps the
class maps uint8; ``--nms`` and a fixed batch work beside them; parity reports pixel agreement
and refuses a graph whose class maps disagree with torch."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from edge_mtl.checkpoint import load_model
from edge_mtl.cli import main
from edge_mtl.export.onnx_export import build_metadata, torch_to_onnx
from edge_mtl.export.validate import FP32_TOLERANCE, check_parity, run_torch
from edge_mtl.export.validate import synthetic_inputs as scenes
from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.errors import RuntimeFailure
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision, TaskKind

from .conftest import HW, SEGMENT, tiny_config, tiny_model

SEG = [f"seg_{t}" for t in SEGMENT]


def _export(checkpoint: Path, out: Path, *flags: str) -> tuple[Path, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["export", "--weights", str(checkpoint), "--out", str(out), *flags])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def _meta(path: Path) -> ModelMeta:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ModelMeta.from_json(props[METADATA_KEY], str(path))


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"images": x})))


def _argmax(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """torch's own argmax of each segment task's logits: uint8 (N, H, W)."""
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(x))
    return {n: out[n + "_logits"].argmax(1).to(torch.uint8).numpy() for n in SEG}


@pytest.fixture(scope="module")
def seg_raw(seg_checkpoint, tmp_path_factory) -> tuple[Path, str]:
    return _export(seg_checkpoint, tmp_path_factory.mktemp("seg") / "m.onnx", "--dynamic-batch")


def test_class_map_is_an_in_graph_argmax_equal_to_torch(seg_raw, seg_checkpoint):
    path, printed = seg_raw
    proto = onnx.load(str(path))
    outs = {o.name: o for o in proto.graph.output}
    for name in SEG:
        t = outs[name].type.tensor_type
        assert t.elem_type == TensorProto.UINT8
        assert [d.dim_param or d.dim_value for d in t.shape.dim] == ["batch", *HW]
    producer = {o: n for n in proto.graph.node for o in n.output}
    for name in SEG:  # ArgMax over the class axis, then Cast to uint8, inside the graph
        cast = producer[name]
        to = next(a.i for a in cast.attribute if a.name == "to")
        assert (cast.op_type, to) == ("Cast", TensorProto.UINT8)
        assert producer[cast.input[0]].op_type == "ArgMax"
    meta = _meta(path)
    seg = [t for t in meta.tasks if t.kind is TaskKind.SEGMENT]
    assert [(t.name, t.classes, t.logits, t.map_stride) for t in seg] == [
        (k, v, False, 1) for k, v in SEGMENT.items()
    ]
    assert all("input resolution" in t.note for t in seg)
    assert meta.extra["parity"]["pixel_agreement"] == dict.fromkeys(SEG, 1.0)
    assert set(meta.extra["parity"]["max_abs_diff"]).isdisjoint(SEG)
    assert "seg_lanes            pixel agreement 100.000% (>= 99.5%)" in printed
    assert "uint8 class maps [N, H, W]" in printed

    model, _, _ = load_model(seg_checkpoint)
    x = scenes(meta, 3)
    want = _argmax(model, x)
    for b in (1, 3):  # the dynamic batch axis
        got = [_run(path, x[i : i + b]) for i in range(0, 3, b)]
        for name in SEG:
            np.testing.assert_array_equal(np.concatenate([g[name] for g in got]), want[name])
    assert len(np.unique(want["seg_drivable"])) == 3  # the random head uses every class


def test_runtime_engine_decodes_the_class_map(seg_raw, seg_checkpoint):
    """The engine's SegMap is the class map over the frame's content (padding cut away)."""
    model, _, _ = load_model(seg_checkpoint)
    frame = np.random.default_rng(0).integers(0, 255, (60, 60, 3), np.uint8)  # square: pads x
    engine = Engine(seg_raw[0], "cpu", EngineConfig(warmup_runs=0))
    got = engine.infer_batch([frame])[0].segmentations["drivable"]
    assert got.labels == SEGMENT["drivable"] and got.frame_hw == (60, 60)
    assert got.classes.shape == (64, 64)  # 60 px scaled to 64 rows, 64 of the 96 columns
    x, _ = engine.preprocess([frame])
    np.testing.assert_array_equal(got.classes, _argmax(model, x)["seg_drivable"][0][:, 16:80])


def test_seg_logits_flag_exports_float_logits(seg_checkpoint, tmp_path):
    path, printed = _export(seg_checkpoint, tmp_path / "logits.onnx", "--seg-logits")
    meta = _meta(path)
    assert all(t.logits for t in meta.tasks if t.kind is TaskKind.SEGMENT)
    assert "float logits [N, K, H, W]" in printed and "seg_drivable         max |diff|" in printed
    model, _, _ = load_model(seg_checkpoint)
    x = scenes(meta, 2)
    got, want = _run(path, x), run_torch(model, x, meta)
    for name, k in zip(SEG, (3, 2)):
        assert got[name].dtype == np.float32 and got[name].shape == (2, k, *HW)
        np.testing.assert_allclose(got[name], want[name], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(got[name].argmax(1), _argmax(model, x)[name])


def test_fp16_keeps_class_maps_uint8_and_agrees(seg_checkpoint, tmp_path):
    path, printed = _export(seg_checkpoint, tmp_path / "half.onnx", "--half")
    proto = onnx.load(str(path))
    types = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert {types[n] for n in SEG} == {TensorProto.UINT8}
    assert {t for n, t in types.items() if n not in SEG} == {TensorProto.FLOAT}
    meta = _meta(path)
    assert meta.precision is Precision.FP16
    agree = meta.extra["parity"]["pixel_agreement"]
    assert set(agree) == set(SEG) and min(agree.values()) >= 0.99
    model, _, _ = load_model(seg_checkpoint)
    x = scenes(meta, 2)
    got, want = _run(path, x), _argmax(model, x)
    for name in SEG:
        assert (got[name] == want[name]).mean() >= 0.99
    assert "(>= 99%)" in printed


def test_nms_and_fixed_batch_work_beside_segment_tasks(seg_checkpoint, tmp_path):
    path, _ = _export(seg_checkpoint, tmp_path / "nms.onnx", "--nms", "--batch", "2")
    names = [o.name for o in onnx.load(str(path)).graph.output]
    assert names[:4] == ["det_num", "det_boxes", "det_scores", "det_classes"]
    assert names[-2:] == SEG
    model, _, _ = load_model(seg_checkpoint)
    x = scenes(_meta(path), 2)
    got = _run(path, x)
    for name in SEG:
        np.testing.assert_array_equal(got[name], _argmax(model, x)[name])


def test_parity_refuses_class_maps_that_disagree_with_torch():
    cfg = tiny_config(segment=True)
    model = tiny_model(cfg)
    other = tiny_model(cfg)
    with torch.no_grad():  # the exported graph's lanes classifier says "lane" far more often
        other.heads["segment"].out["lanes"][-1].bias.copy_(torch.tensor([-3.0, 3.0]))
    proto = torch_to_onnx(other, HW)
    meta = build_metadata(cfg, HW, None, Precision.FP32, nms=False)
    with pytest.raises(RuntimeFailure, match=r"seg_lanes agrees with torch's argmax on .*99.5%"):
        check_parity(model, proto, meta, dataclasses.replace(FP32_TOLERANCE), n_images=2)


def test_seg_logits_needs_segment_tasks(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--weights", str(checkpoint), "--out", str(out), "--seg-logits"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--seg-logits needs a model with segment tasks" in err
    assert len(err.splitlines()) == 1 and not out.exists()
