"""Pipeline and ``edge-mtl run``: end to end into JSONL + video, drops, Ctrl-C, clean errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from edge_mtl.cli import main
from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.sinks import JsonlSink, VideoSink
from edge_mtl.runtime.sources import LiveSource, iter_frames, open_source

REPO = Path(__file__).resolve().parents[2]


def _records(path) -> list[dict]:
    """The frame records of a JSON-lines file, after its header line."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    return lines[1:]


def test_video_runs_end_to_end_into_jsonl_and_video(tmp_path, models, kit, capsys) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(12), fps=10.0)
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "annotated.mp4"
    model = str(models["dense"])
    argv = ["run", "--model", model, "--source", str(clip), "--provider", "cpu"]
    argv += ["--jsonl", str(jsonl), "--save", str(out), "--conf", "0.3", "--threads", "1"]
    rc = main(argv)
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("edge-mtl run: 12 frames in ")
    assert summary.endswith("provider cpu, precision fp32"), summary
    assert "drops 0" in summary

    records = _records(jsonl)
    assert [r["frame"] for r in records] == list(range(12))
    assert [r["source_frame"] for r in records] == list(range(12))
    engine = Engine(models["dense"], "cpu", EngineConfig(conf_threshold=0.3))
    for rec, frame in zip(records, iter_frames(open_source(str(clip)))):
        want = engine(frame.image)
        assert set(rec["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
        assert rec["tasks"]["weather"]["label"] == want.classifications["weather"].label
        curvature = rec["tasks"]["curvature"]["value"]
        assert curvature == pytest.approx(want.regressions["curvature"], abs=1e-5)
        assert [d["label"] for d in rec["detections"]] == list(want.det_labels)
        boxes = np.array([d["box"] for d in rec["detections"]]).reshape(-1, 4)
        np.testing.assert_allclose(boxes, want.detections.boxes, atol=0.01)
    assert sum(len(r["detections"]) for r in records) > 0
    assert kit.count_video_frames(out) == 12
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    cap.release()


def test_image_folder_with_max_frames(tmp_path, models, kit) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = [(40, 60), (90, 30), (32, 32)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"img_{i}.png"), kit.make_frames(1, h, w, seed=i)[0])
    jsonl = tmp_path / "out.jsonl"
    model = str(models["dense"])
    rc = main(["run", "--model", model, "--source", str(folder), "--provider", "cpu",
               "--jsonl", str(jsonl), "--max-frames", "2", "--conf", "0.2"])  # fmt: skip
    assert rc == 0
    records = _records(jsonl)
    assert [r["file"] for r in records] == ["img_0.png", "img_1.png"]
    for rec, (h, w) in zip(records, sizes):
        for d in rec["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h  # frame pixels, not input pixels


class SlowModel:
    """The real engine, but each inference lasts as long as the camera takes to make 5 frames."""

    def __init__(self, engine: Engine, cam) -> None:
        self.engine, self.cam = engine, cam
        self.preprocess, self.postprocess = engine.preprocess, engine.postprocess

    def run(self, x):
        self.cam.wait_for(self.cam.produced + 5)
        return self.engine.run(x)


def test_slow_model_on_live_source_drops_instead_of_queueing(models, kit) -> None:
    cam = kit.FakeCapture()
    source = LiveSource(lambda: cam, "fake camera")
    seen: list[int] = []
    pipe = Pipeline(
        SlowModel(Engine(models["dense"], "cpu"), cam),
        source,
        max_frames=12,
        on_result=lambda frame, result, times: seen.append(frame.index),
    )
    summary = pipe.run()
    assert summary.frames == 12 and len(seen) == 12
    assert seen == sorted(set(seen))
    assert summary.drops > 0
    # Frames the model never saw: the span of source indices is far larger than what was run,
    # and every frame skipped inside that span was counted as a drop, not queued somewhere.
    assert seen[-1] - seen[0] >= 2 * len(seen)
    assert summary.drops >= (seen[-1] - seen[0] + 1) - len(seen)


def test_ctrl_c_stops_cleanly_and_flushes(tmp_path, models, kit) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(10))
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    done = []

    def interrupt_on_third(frame, result, times) -> None:
        done.append(frame.index)
        if len(done) == 3:
            raise KeyboardInterrupt

    sinks = [JsonlSink(jsonl), VideoSink(out, fps=10)]
    engine = Engine(models["dense"], "cpu")
    summary = Pipeline(engine, open_source(str(clip)), sinks, on_result=interrupt_on_third).run()
    assert summary.interrupted and summary.frames == 3
    assert "(interrupted)" in summary.line()
    assert [r["frame"] for r in _records(jsonl)] == [0, 1, 2]
    assert kit.count_video_frames(out) == 3


def test_a_file_run_says_its_age_counts_from_the_read(models, kit, tmp_path) -> None:
    """A file's frames wait in the read-ahead queues: its summary does not call that capture."""
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(3))
    summary = Pipeline(Engine(models["dense"], "cpu"), open_source(str(clip))).run()
    assert summary.frames == 3 and not summary.live
    assert "FPS, read to result p50 " in summary.line()


@pytest.fixture()
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])


@pytest.mark.parametrize(
    ("case", "extra", "code", "message"),
    [
        ("missing model", ["--model", "nope.onnx"], 2, "nope.onnx: model file not found"),
        ("no metadata", ["--model", "{nometa}"], 2, "pass --imgsz H W"),
        ("bad source", ["--source", "no_such_clip.mp4"], 2, "source no_such_clip.mp4: no such"),
        ("wrong size", ["--imgsz", "64", "48"], 2, "expects 3x32x32, got 3x64x48"),
        ("tensorrt absent", ["--provider", "tensorrt"], 1, "provider tensorrt: not in this"),
        ("bad conf", ["--conf", "2"], 2, "--conf must be in [0, 1]"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path, monkeypatch, capsys, models, kit, cpu_only, case, extra, code, message
) -> None:
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("frame.png", kit.make_frames(1)[0])
    argv = ["run", "--model", str(models["dense"]), "--source", "frame.png", "--provider", "cpu"]
    argv += [e.format(nometa=models["nometa"]) for e in extra]  # a repeated option overrides
    assert main(argv) == code, case
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-mtl run: error: ") and "\n" not in err, err
    assert message in err


def test_model_without_metadata_runs_with_imgsz(tmp_path, models, kit) -> None:
    cv2.imwrite(str(tmp_path / "f.png"), kit.make_frames(1)[0])
    jsonl = tmp_path / "o.jsonl"
    rc = main(["run", "--model", str(models["nometa"]), "--source", str(tmp_path / "f.png"),
               "--provider", "cpu", "--imgsz", "32", "32", "--jsonl", str(jsonl)])  # fmt: skip
    assert rc == 0
    (rec,) = _records(jsonl)
    assert rec["tasks"]["weather"]["label"] in {"0", "1", "2", "3"}
    assert all(d["label"] in {"0", "1", "2"} for d in rec["detections"])


def test_sigint_stops_the_cli_and_leaves_complete_files(tmp_path, models, kit) -> None:
    """A real Ctrl-C (SIGINT) to ``edge-mtl run``: exit 0, summary, playable video, whole lines."""
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(400, 24, 32))
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    code = "import sys; from edge_mtl.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["run", "--model", str(models["dense"]), "--source", str(clip), "--provider", "cpu"]
    argv += ["--jsonl", str(jsonl), "--save", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (jsonl.exists() and jsonl.read_text().count("\n") >= 6):  # header + 5
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    summary = stdout.strip().splitlines()[-1]
    assert "(interrupted)" in summary
    n = int(summary.removeprefix("edge-mtl run: ").split()[0])
    assert 5 <= n < 400
    assert len(_records(jsonl)) == n
    assert kit.count_video_frames(out) == n


def test_synth_video_runs_end_to_end(tmp_path, models, kit, capsys) -> None:
    """The clip `edge-mtl synth --video` writes goes through `edge-mtl run` frame for frame."""
    clip = tmp_path / "drive.mp4"
    assert main(["synth", "--video", str(clip), "--frames", "9", "--size", "90", "160"]) == 0
    jsonl, out = tmp_path / "drive.jsonl", tmp_path / "drive.annotated.mp4"
    argv = ["run", "--model", str(models["dense"]), "--source", str(clip), "--provider", "cpu"]
    assert main([*argv, "--jsonl", str(jsonl), "--save", str(out), "--threads", "1"]) == 0
    assert "edge-mtl run: 9 frames in " in capsys.readouterr().out
    assert [r["frame"] for r in _records(jsonl)] == list(range(9))
    assert kit.count_video_frames(out) == 9
