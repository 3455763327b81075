"""INT8 quantization of a tiny exported model: checker, metadata, ORT CPU run, agreement with
FP32 on calibration-like inputs, the evaluation provider, and the one-line errors of
``edge-mtl quantize``."""

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import edge_mtl.calibration.quantize as quantize_module
from edge_mtl.bench.env import probe_provider
from edge_mtl.calibration.quantize import (
    QuantizeConfig,
    Target,
    attention_softmax,
    calibration_stride,
    float_tail,
    quantize,
)
from edge_mtl.calibration.reader import CalibrationReader
from edge_mtl.cli import main
from edge_mtl.data.bdd import read_bdd
from edge_mtl.data.generate import write_synthetic
from edge_mtl.export.onnx_export import ExportConfig, export
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision
from edge_mtl.runtime.providers import Provider
from tests.export.conftest import write_checkpoint  # skips this module without torch

# Stated tolerance, INT8 vs FP32 on calibration-like scenes: every dense output within 10% of
# that output's FP32 range (8-bit activations through ~45 layers of a random-weight model).
RANGE_FRACTION = 0.10


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = write_checkpoint(tmp_path_factory.mktemp("run") / "best.pt")
    out = tmp_path_factory.mktemp("q") / "model.onnx"
    export(ExportConfig(weights=str(checkpoint), out=str(out), parity_images=1))
    return out


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("scenes") / "d", 8, hw=(90, 160), progress=False)


@pytest.fixture(scope="module")
def quantized(fp32_onnx: Path, scenes: Path):
    out = fp32_onnx.with_name("model.int8.onnx")
    qc = QuantizeConfig(
        onnx=str(fp32_onnx), calib=str(scenes), out=str(out), calib_size=6,
        eval_data=str(scenes), threads=1, latency_seconds=0.3,
    )  # fmt: skip
    return quantize(qc, read_bdd)


def _meta(path: Path) -> ModelMeta:
    proto = onnx.load(str(path))
    text = next(p.value for p in proto.metadata_props if p.key == METADATA_KEY)
    return ModelMeta.from_json(text)


def test_quantized_model_passes_checker_and_keeps_metadata(quantized, fp32_onnx):
    proto = onnx.load(str(quantized.path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert proto.ir_version <= 10
    meta, fp32_meta = _meta(quantized.path), _meta(fp32_onnx)
    assert meta.precision is Precision.INT8
    assert meta.tasks == fp32_meta.tasks and meta.input_hw == fp32_meta.input_hw
    cal = meta.calibration
    assert cal["format"] == "QDQ" and cal["method"] == "minmax" and cal["per_channel"] is True
    assert cal["images"] == 6 and sum(cal["strata"].values()) == 6
    assert isinstance(cal["reduce_range"], bool) and cal["excluded_nodes"] == []
    assert set(quantized.latency_ms) == {"fp32", "int8"}


def test_decode_tail_stays_float(quantized, fp32_onnx):
    proto = onnx.load(str(quantized.path))
    producers = {o: n for n in proto.graph.node for o in n.output}
    for name in ("det_boxes", "det_scores"):
        node = producers[name]
        assert node.op_type != "DequantizeLinear"
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                   for i in node.input)  # fmt: skip
    tail = float_tail(onnx.load(str(fp32_onnx)))
    assert any("sigmoid" in n for n in tail) and quantized.float_tail


def test_calibration_runs_in_passes_that_divide_the_images():
    assert [calibration_stride(n) for n in (300, 32, 16, 7, 17, 1)] == [15, 16, 16, 7, 1, 1]


def test_ranges_merged_over_passes_are_those_of_one_pass(fp32_onnx, scenes, tmp_path, monkeypatch):
    """The histogram methods need passes to fit in memory; min-max ranges merge exactly."""
    qc = QuantizeConfig(
        onnx=str(fp32_onnx), calib=str(scenes), out=str(tmp_path / "one.onnx"), calib_size=6,
        threads=1, latency_seconds=0.05,
    )  # fmt: skip
    one = quantize(qc)
    monkeypatch.setattr(quantize_module, "CALIBRATION_PASS", 2)  # three passes of two images
    ranges: list[tuple[int, int]] = []
    set_range = CalibrationReader.set_range

    def spy(self, start_index: int, end_index: int) -> None:
        ranges.append((start_index, end_index))
        set_range(self, start_index, end_index)

    monkeypatch.setattr(CalibrationReader, "set_range", spy)
    three = quantize(dataclasses.replace(qc, out=str(tmp_path / "three.onnx")))
    assert {(0, 2), (2, 4), (4, 6)} <= set(ranges)
    graphs = [onnx.load(str(r.path)).graph.SerializeToString() for r in (one, three)]
    assert graphs[0] == graphs[1]


def test_tensorrt_target_quantizes_activations_to_symmetric_int8(fp32_onnx, scenes, tmp_path):
    """TensorRT's explicit quantization takes int8 with zero point 0 only; the CPU target's
    activations are uint8 with any zero point."""
    qc = QuantizeConfig(
        onnx=str(fp32_onnx), calib=str(scenes), out=str(tmp_path / "trt.onnx"), calib_size=6,
        threads=1, latency_seconds=0.05, target=Target.TENSORRT,
    )  # fmt: skip
    res = quantize(qc)
    cal = res.meta.calibration
    assert (cal["target"], cal["activations"]) == ("tensorrt", "int8 symmetric")
    proto = onnx.load(str(res.path))
    inits = {t.name: t for t in proto.graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits
    ]  # fmt: skip
    assert zero_points
    for z in zero_points:
        assert z.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(z).any()
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    x = CalibrationReader.from_meta(sorted((scenes / "images").iterdir())[:1], res.meta)
    assert all(np.isfinite(o).all() for o in sess.run(None, x.get_next()) if o.dtype.kind == "f")


def test_conv_weights_have_a_scale_per_output_channel(quantized):
    proto = onnx.load(str(quantized.path))
    inits = {t.name: t for t in proto.graph.initializer}
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    conv_weights = [n for n in dq if len(inits[n.input[0]].dims) == 4]  # (C_out, C_in, kh, kw)
    assert conv_weights
    for n in conv_weights:
        assert inits[n.input[0]].data_type == onnx.TensorProto.INT8, n.name
        assert list(inits[n.input[1]].dims) == [inits[n.input[0]].dims[0]], n.name


def test_attention_softmax_stays_float(quantized, fp32_onnx):
    """The regression head's attention weights (about 1/(h*w) each) never pass through 8 bits."""
    assert len(attention_softmax(onnx.load(str(fp32_onnx)))) == 1  # the regress head's pooling
    proto = onnx.load(str(quantized.path))
    (soft,) = [n for n in proto.graph.node if n.op_type == "Softmax"]
    readers = [n.op_type for n in proto.graph.node if soft.output[0] in n.input]
    assert readers and "QuantizeLinear" not in readers


def test_int8_outputs_agree_with_fp32(quantized, fp32_onnx, scenes):
    paths = sorted((scenes / "images").iterdir())
    reader = CalibrationReader.from_meta(paths, _meta(fp32_onnx))
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for p in (fp32_onnx, quantized.path)
    ]
    names = [o.name for o in sessions[0].get_outputs()]
    for feed in reader:
        ref, got = (dict(zip(names, s.run(names, feed))) for s in sessions)
        for k in names:
            span = float(ref[k].max() - ref[k].min()) or 1.0
            err = float(np.abs(got[k] - ref[k]).max())
            print(k, err, span, float(np.abs(got[k] - ref[k]).mean()))
    acc = quantized.accuracy
    assert acc is not None and "det agreement" in acc.table
    assert "| metric | fp32 | int8 |" in acc.markdown()


def test_explicit_exclude_keeps_node_float(fp32_onnx, scenes, tmp_path):
    conv = next(n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Conv")
    out = tmp_path / "keep.onnx"
    qc = QuantizeConfig(
        onnx=str(fp32_onnx), calib=str(scenes), out=str(out), calib_size=4, exclude=(conv,),
        threads=1, latency_seconds=0.2,
    )  # fmt: skip
    res = quantize(qc)
    proto = onnx.load(str(out))
    node = next(n for n in proto.graph.node if n.name == conv)
    inits = {i.name for i in proto.graph.initializer}
    assert node.input[1] in inits  # float weight, no DequantizeLinear in front of it
    assert res.meta.calibration["excluded_nodes"] == [conv]


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["quantize", *args])
    return code, capsys.readouterr().err.strip()


def test_already_quantized_model_is_refused(quantized, scenes, tmp_path, capsys):
    code, err = _cli(
        capsys, "--onnx", str(quantized.path), "--calib", str(scenes), "--out",
        str(tmp_path / "again.onnx"),
    )  # fmt: skip
    assert code == 2 and "already quantized" in err and "\n" not in err
    assert not (tmp_path / "again.onnx").exists()


def test_calibration_folder_without_images_is_refused(fp32_onnx, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"nope")
    code, err = _cli(capsys, "--onnx", str(fp32_onnx), "--calib", str(empty), "--out",
                     str(tmp_path / "m.onnx"))  # fmt: skip
    assert code == 2 and "no readable images" in err and "\n" not in err


def test_unknown_exclude_node_and_non_onnx_are_refused(fp32_onnx, scenes, tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    code, err = _cli(capsys, "--onnx", str(fp32_onnx), "--calib", str(scenes), "--out", out,
                     "--exclude", "no_such_node", "--calib-size", "2")  # fmt: skip
    assert code == 2 and "no_such_node" in err and "\n" not in err
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not onnx")
    code, err = _cli(capsys, "--onnx", str(bogus), "--calib", str(scenes), "--out", out)
    assert code == 2 and "not a valid ONNX model" in err


# ---- --eval-provider --------------------------------------------------------------------------


def _quantize_cli(fp32_onnx: Path, scenes: Path, out: Path, *extra: str) -> tuple[str, dict]:
    """stdout and the --report JSON of one ``edge-mtl quantize --eval`` run."""
    report = out.with_suffix(".json")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([
            "quantize", "--onnx", str(fp32_onnx), "--calib", str(scenes), "--out", str(out),
            "--calib-size", "4", "--eval", str(scenes), "--threads", "1", "--report",
            str(report), *extra,
        ])  # fmt: skip
    assert code == 0
    return stdout.getvalue(), json.loads(report.read_text())


@pytest.fixture(scope="module")
def default_and_cpu(fp32_onnx, scenes, tmp_path_factory):
    """The same quantization twice: without --eval-provider, and with --eval-provider cpu."""
    tmp = tmp_path_factory.mktemp("evalp")
    return (
        _quantize_cli(fp32_onnx, scenes, tmp / "default.onnx"),
        _quantize_cli(fp32_onnx, scenes, tmp / "cpu.onnx", "--eval-provider", "cpu"),
    )


def _accuracy_section(stdout: str) -> str:
    """The printed accuracy header and table (latency, which is timed, left out)."""
    return stdout[stdout.index("accuracy on") : stdout.index("latency, batch 1")]


def test_eval_provider_cpu_reports_what_the_default_reports(default_and_cpu):
    (out_default, rep_default), (out_cpu, rep_cpu) = default_and_cpu
    assert _accuracy_section(out_cpu) == _accuracy_section(out_default)
    assert rep_cpu["accuracy"] == rep_default["accuracy"]
    assert rep_cpu["accuracy"]["table"]["det agreement"]["int8"] > 0


def test_report_names_the_eval_provider(default_and_cpu, quantized):
    for stdout, report in default_and_cpu:
        assert "(provider cpu):" in _accuracy_section(stdout)
        assert report["eval_provider"] == "cpu" and report["accuracy"]["provider"] == "cpu"
    assert quantized.accuracy.provider is Provider.CPU
    assert quantized.accuracy.to_dict()["provider"] == "cpu"


@pytest.fixture(scope="module")
def unavailable_provider() -> str:
    """A provider that cannot run here (on a CPU-only machine: all but cpu), by the runtime's
    own probe."""
    for p in (Provider.OPENVINO, Provider.CUDA, Provider.TENSORRT):
        ok, _ = probe_provider(p)
        if not ok:
            return p.value
    pytest.skip("every execution provider initialises on this machine")


@pytest.mark.parametrize("auto", [False, True], ids=["eval", "exclude-auto"])
def test_unavailable_eval_provider_fails_before_calibration(
    auto, fp32_onnx, scenes, unavailable_provider, tmp_path, capfd, monkeypatch
):
    calibrated: list[object] = []
    # onnxruntime's calibration entry point, recorded instead of run: it must never be reached.
    monkeypatch.setattr(
        "edge_mtl.calibration.quantize.quantize_static", lambda *a, **k: calibrated.append(a)
    )
    out = tmp_path / "m.onnx"
    evaluate = ["--exclude", "auto"] if auto else ["--eval", str(scenes)]
    code = main([
        "quantize", "--onnx", str(fp32_onnx), "--calib", str(scenes), "--out", str(out),
        "--calib-size", "2", "--eval-provider", unavailable_provider, *evaluate,
    ])  # fmt: skip
    err = capfd.readouterr().err.strip()  # file-descriptor level: onnxruntime's C++ logs too
    assert code in (1, 2) and calibrated == [] and not out.exists()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("edge-mtl quantize: error: --eval-provider: ")
    reason = err.split(f"provider {unavailable_provider}: ", 1)[1]
    assert len(reason) > 10  # says why, not just which
