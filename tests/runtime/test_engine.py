"""Engine: outputs equal a direct onnxruntime session + numpy postprocess; providers; bad input."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import edge_mtl.runtime.engine as engine_module
from edge_mtl.runtime.engine import Engine, EngineConfig, Provider
from edge_mtl.runtime.errors import DEBUG_ENV, InputError, MetadataError, RuntimeFailure
from edge_mtl.runtime.postprocess import detections_to_frame, postprocess_detections, softmax
from edge_mtl.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess
from edge_mtl.runtime.providers import (
    Skip,
    fallback_summary,
    nvidia_gpu_present,
    parse_providers,
)
from tests.runtime.conftest import BLOCK_TORCH

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the installed onnxruntime is the CPU-only build, without the OpenVINO plugin."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr("edge_mtl.runtime.providers.find_openvino_plugin", lambda: None)


def _direct(model: Path, frames: list[np.ndarray], conf: float, iou: float, hw=(32, 32)):
    """The reference: a bare session and the shared numpy pre/postprocess, frame by frame."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = []
    for f in frames:
        x, (lb,) = preprocess([f], hw, IMAGENET_MEAN, IMAGENET_STD, 114)
        boxes, scores, logits, curv = sess.run(
            ["det_boxes", "det_scores", "cls_weather", "reg_curvature"], {"images": x}
        )
        dets = detections_to_frame(postprocess_detections(boxes[0], scores[0], conf, iou), lb)
        out.append((dets, softmax(logits)[0], float(curv[0, 0])))
    return out


def test_engine_matches_direct_session(models, kit) -> None:
    frames = kit.make_frames(2) + kit.make_frames(1, h=80, w=40, seed=5)
    engine = Engine(models["dense"], "cpu", EngineConfig(conf_threshold=0.35, iou_threshold=0.45))
    results = engine.infer_batch(frames)
    expected = _direct(models["dense"], frames, 0.35, 0.45)
    assert len(results) == 3
    assert sum(len(r.detections) for r in results) > 0, "fixture model should detect something"
    for r, (dets, probs, curv) in zip(results, expected):
        np.testing.assert_allclose(r.detections.boxes, dets.boxes, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(r.detections.scores, dets.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(r.detections.classes, dets.classes)
        assert r.det_labels == tuple(kit.DET_CLASSES[c] for c in dets.classes)
        w = r.classifications["weather"]
        np.testing.assert_allclose(w.probs, probs, rtol=1e-5, atol=1e-6)
        assert w.label == kit.WEATHER[int(np.argmax(probs))]
        assert w.prob == pytest.approx(float(probs.max()), rel=1e-5)
        assert r.regressions["curvature"] == pytest.approx(curv, rel=1e-5, abs=1e-6)


def test_default_thresholds_come_from_metadata(models, kit) -> None:
    frames = kit.make_frames(2)
    got = Engine(models["dense"], "cpu").infer_batch(frames)
    want = _direct(models["dense"], frames, 0.3, 0.5)  # score/iou thresholds in tiny_meta
    for r, (dets, _, _) in zip(got, want):
        np.testing.assert_allclose(r.detections.scores, dets.scores, rtol=1e-5)


def test_call_equals_batch_and_fixed_batch_splits(models, kit) -> None:
    frames = kit.make_frames(3)
    dyn = Engine(models["dense"], "cpu")
    fixed = Engine(models["batch1"], "cpu")
    assert fixed.meta.batch == 1
    for a, b, f in zip(dyn.infer_batch(frames), fixed.infer_batch(frames), frames):
        single = dyn(f)
        for r in (b, single):
            np.testing.assert_allclose(r.detections.boxes, a.detections.boxes, atol=1e-4)
            np.testing.assert_allclose(
                r.classifications["weather"].probs, a.classifications["weather"].probs, atol=1e-6
            )


def test_in_graph_nms_uses_only_valid_rows(models, kit) -> None:
    engine = Engine(models["nms"], "cpu", EngineConfig(conf_threshold=0.3))
    # 64x64 frame into a 32x32 input: scale 0.5, no padding, so frame boxes = input boxes * 2.
    r = engine(np.zeros((64, 64, 3), np.uint8))
    keep = [0, 1]  # row 2 is below 0.3, row 3 is padding beyond det_num even though it scores .99
    np.testing.assert_allclose(r.detections.boxes, kit.NMS_BOXES[keep] * 2)
    np.testing.assert_allclose(r.detections.scores, kit.NMS_SCORES[keep])
    assert r.det_labels == ("car", "sign")


def test_model_without_metadata(models, kit) -> None:
    with pytest.raises(MetadataError, match="--imgsz"):
        Engine(models["nometa"], "cpu")
    engine = Engine(models["nometa"], "cpu", EngineConfig(imgsz=(32, 32)))
    ref = Engine(models["dense"], "cpu", EngineConfig(conf_threshold=0.25, iou_threshold=0.5))
    frame = kit.make_frames(1)[0]
    got, want = engine(frame), ref(frame)
    assert engine.meta.tasks[1].classes == ("0", "1", "2", "3")
    assert got.det_labels == tuple(str(c) for c in want.detections.classes)
    np.testing.assert_allclose(got.detections.boxes, want.detections.boxes, atol=1e-4)
    assert got.classifications["weather"].label == str(want.classifications["weather"].index)
    assert got.regressions == pytest.approx(want.regressions)


def test_metadata_is_checked_by_each_task_kinds_decoder() -> None:
    import dataclasses
    import json

    from edge_mtl.runtime.metadata import ModelMeta
    from tests.runtime.conftest import tiny_meta

    d = json.loads(tiny_meta().to_json())
    d["tasks"][2]["kind"] = "lidar"  # no decoder for it in this runtime
    with pytest.raises(MetadataError, match=r"m\.onnx: task 'curvature' has kind 'lidar', which"):
        ModelMeta.from_json(json.dumps(d), "m.onnx")
    meta = tiny_meta()
    det = dataclasses.replace(meta.tasks[0], outputs=("det_boxes",))
    bad = meta.replace(tasks=(det, *meta.tasks[1:])).to_json()
    with pytest.raises(MetadataError, match=r"detection task 'det' needs outputs for \['boxes'"):
        ModelMeta.from_json(bad, "m.onnx")
    nameless = meta.replace(tasks=(dataclasses.replace(meta.tasks[1], classes=()),)).to_json()
    with pytest.raises(MetadataError, match="task 'weather' has no class names"):
        ModelMeta.from_json(nameless, "m.onnx")


def test_imgsz_that_contradicts_the_graph(models) -> None:
    with pytest.raises(InputError, match=r"expects 3x32x32, got 3x64x64"):
        Engine(models["dense"], "cpu", EngineConfig(imgsz=(64, 64)))


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
        "not an image",
    ],
    ids=["gray", "bgra", "float", "empty", "str"],
)
def test_bad_frames_raise_input_error(models, frame) -> None:
    engine = Engine(models["dense"], "cpu", EngineConfig(warmup_runs=0))
    with pytest.raises(InputError, match="uint8 HxWx3"):
        engine(frame)


def test_missing_and_corrupt_model(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        Engine(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf")
    with pytest.raises(InputError, match="not a valid ONNX model"):
        Engine(bad, "cpu")


def test_auto_falls_back_with_reasons(models, cpu_only) -> None:
    engine = Engine(models["dense"], "auto")
    assert engine.provider is Provider.CPU
    assert len(engine.fallback_reasons) == 3
    assert engine.fallback_reasons[0].startswith("tensorrt: not in this onnxruntime build")
    assert engine.fallback_reasons[1].startswith("cuda: not in this onnxruntime build")
    assert engine.fallback_reasons[2].startswith(
        "openvino: plugin onnxruntime-ep-openvino not installed"
    )
    assert [s.brief for s in engine.skipped] == [
        "not in this onnxruntime build",
        "not in this onnxruntime build",
        "not installed",
    ]
    assert (
        "provider cpu [skipped tensorrt, cuda: not in this onnxruntime build; "
        "openvino: not installed]; input 3x32x32" in engine.describe()
    )


@pytest.mark.parametrize("name", ["tensorrt", "cuda"])
def test_explicit_absent_provider_is_an_error(models, cpu_only, name) -> None:
    with pytest.raises(RuntimeFailure, match=f"provider {name}: not in this onnxruntime build"):
        Engine(models["dense"], name)


def test_listed_but_unusable_provider_falls_back(models) -> None:
    """With onnxruntime-gpu on a machine without GPU libraries the provider is listed but fails."""
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build does not list TensorRT")
    engine = Engine(models["dense"], ["tensorrt", "cpu"], EngineConfig(warmup_runs=0))
    if engine.provider is Provider.TENSORRT:
        pytest.skip("TensorRT works on this machine")
    assert engine.provider is Provider.CPU
    assert engine.fallback_reasons[0].startswith("tensorrt: did not initialise")


def test_unusable_cuda_points_to_debug_which_shows_onnxruntimes_reason(
    models, monkeypatch, capfd
) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build does not list CUDA")
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    engine = Engine(models["dense"], ["cuda", "cpu"], EngineConfig(warmup_runs=0))
    if engine.provider is Provider.CUDA:
        pytest.skip("CUDA works on this machine")
    assert "(edge-mtl --debug shows onnxruntime's own message)" in engine.fallback_reasons[0]
    assert "onnxruntime" not in capfd.readouterr().err  # quiet without --debug ...
    monkeypatch.setenv(DEBUG_ENV, "1")
    Engine(models["dense"], ["cuda", "cpu"], EngineConfig(warmup_runs=0))
    assert "CUDA" in capfd.readouterr().err  # ... its own lines with it


def test_parse_providers() -> None:
    auto = [Provider.TENSORRT, Provider.CUDA, Provider.OPENVINO, Provider.CPU]
    assert parse_providers("auto") == (auto, False)
    assert parse_providers("CUDA") == ([Provider.CUDA], True)
    assert parse_providers(["cuda", Provider.CPU]) == ([Provider.CUDA, Provider.CPU], False)
    with pytest.raises(InputError, match="unknown"):
        parse_providers("directml")


def test_runtime_imports_and_runs_without_torch(models, tmp_path) -> None:
    """``runtime`` (and ``edge-mtl run``) must work on a box with neither torch nor onnx."""
    jsonl = tmp_path / "out.jsonl"
    folder = tmp_path / "imgs"
    folder.mkdir()
    import cv2

    cv2.imwrite(str(folder / "a.png"), np.full((24, 40, 3), 90, np.uint8))
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import numpy as np
        import edge_mtl.runtime.engine, edge_mtl.runtime.sources, edge_mtl.runtime.sinks
        import edge_mtl.runtime, edge_mtl.runtime.pipeline, edge_mtl.runtime.cli
        e = edge_mtl.runtime.engine.Engine({str(models["dense"])!r}, "cpu")
        print(e(np.zeros((20, 30, 3), np.uint8)).classifications["weather"].label)
        from edge_mtl.cli import main
        rc = main(["run", "--model", {str(models["dense"])!r}, "--source", {str(folder)!r},
                   "--provider", "cpu", "--jsonl", {str(jsonl)!r}])
        assert not any(m.split(".")[0] in ("torch", "onnx") for m in sys.modules), "leaked"
        sys.exit(rc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] in ("clear", "rain", "fog", "snow")
    assert len(jsonl.read_text().splitlines()) == 2  # header + one frame
    assert (tmp_path / "runs/run/exp/a.png").is_file()  # the annotated image, saved by default


def test_a_fallback_is_one_line_and_debug_shows_every_reason(
    models, cpu_only, caplog, monkeypatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="edge_mtl.runtime"):
        engine = Engine(models["dense"], "auto")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [(logging.INFO, engine.describe())]  # the providers skipped: in brief
    caplog.clear()
    monkeypatch.setenv(DEBUG_ENV, "1")
    with caplog.at_level(logging.INFO, logger="edge_mtl.runtime"):
        again = Engine(models["dense"], "auto")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"provider {r}" for r in again.fallback_reasons] + [again.describe()]
    assert again.fallback_reasons == engine.fallback_reasons  # both still know why in full


def test_a_provider_that_is_here_but_fails_warns_once(monkeypatch) -> None:
    """Absent providers keep the line at INFO; one that is installed and breaks makes it a
    warning, once per process for the same failure."""
    monkeypatch.setattr(engine_module, "_WARNED", set())
    absent = Skip(Provider.TENSORRT, "tensorrt: not in this onnxruntime build", "not in build")
    broken = Skip(Provider.CUDA, "cuda: did not initialise (x)", "did not initialise", False)
    assert engine_module._describe_level([absent]) == logging.INFO
    assert engine_module._describe_level([absent, broken]) == logging.WARNING
    assert engine_module._describe_level([broken]) == logging.INFO  # said once already
    assert fallback_summary([absent, broken]) == (
        "tensorrt: not in build; cuda: did not initialise"
    )


def _run_auto(model: Path, source: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``edge-mtl [flags] run --provider auto`` in a fresh process: stderr as a user sees it,
    onnxruntime's own C++ log lines included."""
    argv = [*flags, "run", "--model", str(model), "--source", str(source), "--provider", "auto"]
    argv.append("--no-save")  # runs with the repository as working directory
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}  # --debug in flags, or not
    return subprocess.run(
        [sys.executable, "-m", "edge_mtl", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_auto_on_this_machine_prints_one_line(models, tmp_path) -> None:
    """The real onnxruntime build and hardware: on a machine without a GPU, onnxruntime-gpu
    lists TensorRT and CUDA and neither starts; the run still prints one line about it."""
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((24, 40, 3), 90, np.uint8))
    proc = _run_auto(models["dense"], folder)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edge-mtl run: tiny.onnx: provider "), lines[0]
    if not lines[0].startswith("edge-mtl run: tiny.onnx: provider cpu"):
        return  # a GPU or OpenVINO device here: nothing was skipped to show with --debug
    assert "[skipped tensorrt" in lines[0]
    gpu_build = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}
    if nvidia_gpu_present() is False and gpu_build <= set(ort.get_available_providers()):
        assert "[skipped tensorrt, cuda: no NVIDIA GPU; openvino: " in lines[0]  # onnxruntime-gpu
    debug = _run_auto(models["dense"], folder, "--debug")
    assert debug.returncode == 0, debug.stderr
    ours = [ln for ln in debug.stderr.splitlines() if ln.startswith("edge-mtl run: provider ")]
    assert [ln.split()[3] for ln in ours] == ["tensorrt:", "cuda:", "openvino:"], debug.stderr
