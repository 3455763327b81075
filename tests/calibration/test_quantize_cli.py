"""``edge-mtl quantize`` as a user sees it, on the runtime's tiny models (no torch): an --nms
export is refused in one line, ONNX Runtime's own prints stay off the terminal unless --debug
while our stage lines show progress, and --debug shows the exception behind every wrapped
error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import pytest

import edge_mtl.calibration.quantize as quantize_module
from edge_mtl.cli import main
from edge_mtl.runtime.errors import DEBUG_ENV
from tests.runtime.conftest import make_frames

CHATTER = "Collecting tensor data and making histogram"  # ORT's entropy calibration print


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("calib")
    for i, f in enumerate(make_frames(4, h=32, w=32)):
        cv2.imwrite(str(d / f"{i}.png"), f)
    return d


@pytest.fixture()
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)  # an earlier in-process --debug sets it


def _quantize(model: Path, calib: Path, out: Path, *flags: str, debug: bool = False) -> int:
    argv = ["--debug"] * debug + ["quantize", "--onnx", str(model), "--calib", str(calib)]
    return main([*argv, "--out", str(out), "--calib-size", "4", "--threads", "1", *flags])


def test_nms_export_is_refused_in_one_line(models, calib, tmp_path, capfd, no_debug) -> None:
    code = _quantize(models["nms"], calib, tmp_path / "q.onnx")
    err = capfd.readouterr().err
    assert code == 2 and not (tmp_path / "q.onnx").exists()
    assert err.splitlines() == [
        f"edge-mtl quantize: error: {models['nms']} has in-graph NMS: quantize the plain export "
        "(edge-mtl export without --nms), then run the INT8 model as it is: the runtime "
        "applies the same NMS"
    ]


def test_library_chatter_is_silenced(models, calib, tmp_path, capfd, no_debug, monkeypatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # stage lines go to a terminal
    code = _quantize(models["dense"], calib, tmp_path / "q.onnx", "--method", "entropy")
    out, err = capfd.readouterr()  # file-descriptor level: C++ logs and tqdm bars too
    assert code == 0, err
    assert CHATTER not in out + err and "Finding optimal threshold" not in out + err
    assert out.startswith("wrote ") or "q.onnx" in out  # our own report is still printed
    # stderr has only our stage lines, each with the seconds since the start
    assert [re.sub(r"^edge-mtl quantize: \[\d+ s\] ", "", line) for line in err.splitlines()] == [
        "calibrating on 4 images (entropy)",
        "latency of fp32, int8 in turns on CPU",
    ], err


def test_stage_lines_stay_off_a_log(models, calib, tmp_path, capfd, no_debug) -> None:
    assert _quantize(models["dense"], calib, tmp_path / "q.onnx") == 0
    assert not capfd.readouterr().err.strip()


def test_debug_shows_the_library_chatter(models, calib, tmp_path, capfd, monkeypatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    code = _quantize(models["dense"], calib, tmp_path / "q.onnx", "--method", "entropy")
    out, err = capfd.readouterr()
    assert code == 0 and CHATTER in out + err


def _fail_preprocessing(*args, **kwargs) -> None:
    raise AssertionError()  # what ORT's symbolic shape inference raises on an NMS graph


def test_empty_library_error_is_named_and_debug_shows_it(
    models, calib, tmp_path, capfd, monkeypatch, no_debug
) -> None:
    monkeypatch.setattr(quantize_module, "quant_pre_process", _fail_preprocessing)
    code = _quantize(models["dense"], calib, tmp_path / "q.onnx")
    err = capfd.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        f"edge-mtl quantize: error: {models['dense']}: quantization pre-processing failed "
        "(AssertionError)"
    ]
    code = _quantize(models["dense"], calib, tmp_path / "q.onnx", debug=True)
    err = capfd.readouterr().err
    assert code == 1 and "Traceback (most recent call last)" in err
    assert "in _fail_preprocessing" in err and "AssertionError" in err
    assert err.strip().splitlines()[-1].endswith("pre-processing failed (AssertionError)")


def test_debug_shows_the_cause_a_wrapper_hid(calib, tmp_path, capfd, no_debug) -> None:
    """``load_fp32`` raises its one-line InputError ``from None``; --debug still shows the
    onnx exception behind it."""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x0a\xff\xff\xff not a protobuf")
    assert _quantize(garbage, calib, tmp_path / "q.onnx") == 2
    plain = capfd.readouterr().err
    assert len(plain.splitlines()) == 1 and "not a valid ONNX model" in plain
    assert _quantize(garbage, calib, tmp_path / "q.onnx", debug=True) == 2
    err = capfd.readouterr().err
    assert "During handling of the above exception, another exception occurred" in err
    assert "in load_fp32" in err and err.strip().splitlines()[-1] == plain.strip()
