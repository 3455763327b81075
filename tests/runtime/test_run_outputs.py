"""What ``edge-mtl run`` saves and prints: the auto-incremented run folder, ``--save`` files and
folders, ``--no-save``, ``--exist-ok``, nothing left behind by a failed run, the per-image
console line and the progress line."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.cli import main
from edge_mtl.runtime.console import Console, eta, image_line
from edge_mtl.runtime.decoders import Classification
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult
from edge_mtl.runtime.files import next_run_dir
from edge_mtl.runtime.postprocess import Detections
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """The run folder is relative to the working directory, as in Ultralytics."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(model: Path, source: str | Path, *flags: str) -> int:
    argv = ["run", "--model", str(model), "--source", str(source), "--provider", "cpu"]
    return main([*argv, "--threads", "1", "--conf", "0.2", *flags])


def _image(path: Path, kit, h: int = 48, w: int = 64, seed: int = 1) -> np.ndarray:
    img = kit.make_frames(1, h, w, seed=seed)[0]
    assert cv2.imwrite(str(path), img)
    return cv2.imread(str(path))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _counts(result: FrameResult) -> str:
    labels = [result.det_labels[k] for k in np.argsort(result.detections.classes, kind="stable")]
    return ", ".join(f"{labels.count(n)} {n}" for n in dict.fromkeys(labels))


def test_image_is_saved_annotated_into_the_run_folder_with_its_line(cwd, models, kit, capsys):
    src = _image(cwd / "street.png", kit)
    assert _run(models["dense"], "street.png") == 0
    out = capsys.readouterr().out.splitlines()
    saved = cv2.imread(str(cwd / "runs/run/exp/street.png"))
    assert saved is not None and saved.shape == src.shape
    assert np.abs(saved.astype(int) - src).max() > 50  # boxes and labels drawn on it

    want = Engine(models["dense"], "cpu", EngineConfig(conf_threshold=0.2))(src)
    assert len(want.detections) > 0
    w, c = want.classifications["weather"], want.regressions["curvature"]
    line = (
        f"image 1/1 street.png: 48x64, {_counts(want)}; weather {w.label} {w.prob:.2f}, "
        f"curvature {c:.3f}; "
    )
    assert out[0].startswith(line), (out[0], line)
    assert re.fullmatch(r"\d+\.\d ms", out[0][len(line) :]), out[0]
    assert out[1] == "edge-mtl run: results saved to runs/run/exp"
    assert out[2].startswith("edge-mtl run: 1 frames in ")  # the summary stays last


def test_runs_increment_and_exist_ok_reuses(cwd, models, kit, capsys):
    _image(cwd / "a.png", kit)
    for _ in range(2):
        assert _run(models["dense"], "a.png") == 0
    assert sorted(p.name for p in (cwd / "runs/run").iterdir()) == ["exp", "exp2"]
    (cwd / "runs/run/exp/a.png").unlink()
    assert _run(models["dense"], "a.png", "--exist-ok") == 0
    assert sorted(p.name for p in (cwd / "runs/run").iterdir()) == ["exp", "exp2"]
    assert (cwd / "runs/run/exp/a.png").is_file()
    assert capsys.readouterr().out.splitlines()[-2] == "edge-mtl run: results saved to runs/run/exp"


def test_no_save_writes_nothing(cwd, models, kit, capsys):
    _image(cwd / "a.png", kit)
    assert _run(models["dense"], "a.png", "--no-save") == 0
    assert _files(cwd) == {"a.png"}
    assert "saved" not in capsys.readouterr().out


def test_save_one_image_file(cwd, models, kit):
    src = _image(cwd / "a.png", kit)
    assert _run(models["dense"], "a.png", "--save", "one.jpg") == 0
    saved = cv2.imread(str(cwd / "one.jpg"))
    assert saved is not None and saved.shape == src.shape
    assert not (cwd / "runs").exists()


def test_save_folder_keeps_image_names_and_names_the_video(cwd, models, kit, capsys):
    (cwd / "imgs").mkdir()
    for i, (h, w) in enumerate([(40, 60), (90, 30), (32, 32)]):
        _image(cwd / "imgs" / f"img_{i}.png", kit, h, w, seed=i)
    assert _run(models["dense"], "imgs", "--save", "annot/") == 0
    assert _files(cwd / "annot") == {"img_0.png", "img_1.png", "img_2.png"}
    assert cv2.imread(str(cwd / "annot/img_1.png")).shape == (90, 30, 3)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines[:3]] == [
        f"image {i + 1}/3 imgs/img_{i}.png" for i in range(3)
    ]
    assert lines[-2] == "edge-mtl run: results saved to annot/"

    kit.write_video(cwd / "clip.mp4", kit.make_frames(5), fps=10.0)
    assert _run(models["dense"], "clip.mp4", "--save", "annot/") == 0
    assert kit.count_video_frames(cwd / "annot/clip.mp4") == 5


def test_video_is_saved_as_a_video_with_every_frame(cwd, models, kit, capsys):
    kit.write_video(cwd / "clip.mp4", kit.make_frames(12), fps=10.0)
    assert _run(models["dense"], "clip.mp4") == 0
    out = cwd / "runs/run/exp/clip.mp4"
    assert kit.count_video_frames(out) == 12
    cap = cv2.VideoCapture(str(out))
    size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    assert size == (64, 48) and fps == pytest.approx(10.0)
    lines = capsys.readouterr().out.splitlines()
    assert not [ln for ln in lines if ln.startswith("image ")]  # a video gets progress instead
    assert lines[-2] == "edge-mtl run: results saved to runs/run/exp"


def test_failed_runs_leave_no_files(cwd, models, kit, capsys):
    (cwd / "bad.jpg").write_bytes(b"not a jpeg")
    assert _run(models["dense"], "bad.jpg", "--jsonl", "out.jsonl") == 2
    assert _run(models["dense"], "bad.jpg", "--save", "annot/", "--jsonl", "out.jsonl") == 2
    kit.write_video(cwd / "clip.mp4", kit.make_frames(3))
    assert _run(models["dense"], "clip.mp4", "--save", "one.jpg", "--jsonl", "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "--save one.jpg: a video or stream is saved as a video" in err
    assert _files(cwd) == {"bad.jpg", "clip.mp4"}


def test_missing_source_is_reported_before_the_model_loads(cwd, capsys):
    (cwd / "model.onnx").write_bytes(b"not a model")
    assert _run(cwd / "model.onnx", "missing.mp4") == 2
    err = capsys.readouterr().err
    assert "source missing.mp4: no such file, folder, camera index or URL" in err
    assert "ONNX" not in err


def test_save_one_image_file_refused_for_several_images(cwd, models, kit, capsys):
    (cwd / "imgs").mkdir()
    for i in range(2):
        _image(cwd / "imgs" / f"{i}.png", kit, seed=i)
    assert _run(models["dense"], "imgs", "--save", "one.jpg") == 2
    assert "--save one.jpg: 2 images cannot share one image file" in capsys.readouterr().err
    assert _files(cwd) == {"imgs", "imgs/0.png", "imgs/1.png"}


def test_jsonl_to_stdout_moves_console_lines_to_stderr(cwd, models, kit, capsys):
    _image(cwd / "a.png", kit)
    assert _run(models["dense"], "a.png", "--jsonl", "-") == 0
    out, err = capsys.readouterr()
    assert "image 1/1 a.png: 48x64" not in out and "edge-mtl run:" not in out
    assert "image 1/1 a.png: 48x64" in err
    assert "edge-mtl run: results saved to runs/run/exp" in err


def test_several_streams_save_under_their_names(cwd, models, kit, capsys):
    kit.write_video(cwd / "clip.mp4", kit.make_frames(4))
    (cwd / "imgs").mkdir()
    _image(cwd / "imgs" / "x.png", kit)
    argv = ["run", "--model", str(models["dense"]), "--provider", "cpu", "--threads", "1"]
    assert main([*argv, "--source", "clip.mp4", "--source", "imgs"]) == 0
    assert _files(cwd / "runs/run/exp") == {"clip.mp4", "imgs", "imgs/x.png"}
    assert kit.count_video_frames(cwd / "runs/run/exp/clip.mp4") == 4
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("imgs: image 1/1 imgs/x.png: 48x64, ") for ln in lines), lines


# ---- the run folder and the console lines, piece by piece -----------------------------------


def test_next_run_dir_numbers_and_races(tmp_path):
    assert next_run_dir(tmp_path / "r").name == "exp"
    assert next_run_dir(tmp_path / "r").name == "exp2"
    assert next_run_dir(tmp_path / "r", exist_ok=True).name == "exp"
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(next_run_dir(tmp_path / "r").name))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=lambda n: int(n[3:])) == [f"exp{n}" for n in range(3, 11)]


def _result() -> FrameResult:
    dets = Detections(
        np.zeros((3, 4), np.float32),
        np.array([0.9, 0.8, 0.7], np.float32),
        np.array([2, 0, 2], np.int64),
    )
    weather = Classification("rain", 1, 0.914, np.array([0.05, 0.914, 0.02, 0.016], np.float32))
    return FrameResult(
        dets, ("sign", "car", "sign"), {"weather": weather}, {"curvature": 0.0123, "speed": 12.5}
    )


def test_image_line_content():
    frame = Frame(np.zeros((360, 640, 3), np.uint8), 1, 0.0, 0.0, "b.jpg")
    times = StageTimes(total=12.34)
    line = image_line(frame, _result(), times, {"speed": "km/h"}, detect=True)
    assert line == (
        "360x640, 1 car, 2 sign; weather rain 0.91, curvature 0.012, speed 12.500 km/h; 12.3 ms"
    )
    empty = FrameResult(Detections.empty(), (), {}, {})
    assert image_line(frame, empty, times, {}, detect=True) == "360x640, no detections; 12.3 ms"
    assert image_line(frame, empty, times, {}, detect=False) == "360x640; 12.3 ms"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Video:
    live, fps, frame_count = False, 10.0, 10


def test_progress_line_on_a_terminal_and_in_a_log(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("edge_mtl.runtime.console.time.perf_counter", lambda: now[0])
    tty = _Tty()
    console = Console(tty)
    sink = console.sink(_Video(), "clip", multi=False, max_frames=None)
    for _ in range(4):
        sink.write(None, None, None)  # the progress sink only counts
        now[0] += 0.5
    console.finish()
    shown = tty.getvalue()
    assert shown.split("\r")[1] == "clip 1/10 frames (10%)"  # no rate from one frame
    assert shown.endswith("\n")
    assert shown.count("\n") == 1  # rewritten in place, ended once
    assert "\rclip 4/10 frames (40%), 2.0 FPS, ETA 3 s" in shown

    log = io.StringIO()
    console = Console(log)
    sink = console.sink(_Video(), "clip", multi=False, max_frames=8)
    for _ in range(8):
        sink.write(None, None, None)
        now[0] += 1.0
    console.finish()
    # the first line after 5 s: frame 6 came 5 s after frame 1
    assert log.getvalue() == "clip 6/8 frames (75%), 1.2 FPS, ETA 2 s\n"


def test_eta_format():
    assert [eta(s) for s in (42.2, 187, 3727)] == ["42 s", "3:07", "1:02:07"]


def test_streams_of_one_name_save_apart():
    from edge_mtl.runtime.save import unique_names

    assert unique_names(["clip", "cam", "clip"]) == ["clip_0", "cam", "clip_2"]
