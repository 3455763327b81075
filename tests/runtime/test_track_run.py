"""``edge-mtl run --track --smooth``: JSON lines carry track IDs, ages and smoothed answers that
validate against the shipped schema; each stream has its own tracker; the overlay draws IDs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from edge_mtl.cli import main
from edge_mtl.runtime.decoders import Classification
from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.overlay import draw_overlay
from edge_mtl.runtime.postprocess import Detections
from edge_mtl.runtime.records import SCHEMA_PATH
from edge_mtl.runtime.track import TrackInfo


def _frames(path: Path) -> list[dict]:
    lines = [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines()]
    try:  # a dev dependency: the records' own assertions run without it
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        validator = jsonschema.Draft202012Validator(schema)
        for line in lines:
            validator.validate(line)
    return [r for r in lines if r["type"] == "frame"]


def test_run_track_writes_ids_ages_and_smoothed_answers(tmp_path, models, kit, capsys) -> None:
    video = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(8))
    out = tmp_path / "out.jsonl"
    argv = ["run", "--model", str(models["nms"]), "--source", str(video), "--provider", "cpu"]
    assert main([*argv, "--no-save", "--track", "--smooth", "0.5", "--jsonl", str(out)]) == 0
    frames = _frames(out)
    assert len(frames) == 8
    for i, fr in enumerate(frames):
        car = next(d for d in fr["detections"] if d["label"] == "car")  # score 0.9: tracked
        assert (car["track_id"], car["track_age"]) == (1, i + 1)
        faint = [d for d in fr["detections"] if d["score"] < 0.6]  # never starts a track
        assert faint and all(d["track_id"] is None for d in faint)
        w = fr["tasks"]["weather"]
        assert set(w["smoothed"]) == {"label", "index", "prob", "probs"}
        assert "value" in fr["tasks"]["curvature"]["smoothed"]
        assert fr["latency_ms"]["track"] >= 0 and fr["latency_ms"]["smooth"] >= 0
    first = frames[0]["tasks"]["curvature"]
    assert first["smoothed"]["value"] == first["value"]  # the first frame starts the average
    out_text = capsys.readouterr().out
    assert "tracks 1 (length mean 8.0, median 8 frames), tracking " in out_text
    assert " ms per frame" in out_text


def test_without_track_the_records_have_no_track_fields(tmp_path, models, kit) -> None:
    video = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(3))
    out = tmp_path / "out.jsonl"
    argv = ["run", "--model", str(models["nms"]), "--source", str(video), "--provider", "cpu"]
    assert main([*argv, "--no-save", "--jsonl", str(out)]) == 0
    fr = _frames(out)[0]
    assert all("track_id" not in d for d in fr["detections"])
    assert "smoothed" not in fr["tasks"]["weather"]


def test_each_stream_has_its_own_tracker(tmp_path, models, kit) -> None:
    a = kit.write_video(tmp_path / "a.mp4", kit.make_frames(4))
    b = kit.write_video(tmp_path / "b.mp4", kit.make_frames(6))
    argv = ["run", "--model", str(models["nms"]), "--source", str(a), "--source", str(b)]
    argv += ["--provider", "cpu", "--no-save", "--track", "--jsonl", str(tmp_path / "{name}.jsonl")]
    assert main(argv) == 0
    for name, n in (("a", 4), ("b", 6)):
        frames = _frames(tmp_path / f"{name}.jsonl")
        ids = [d["track_id"] for fr in frames for d in fr["detections"] if d["label"] == "car"]
        assert ids == [1] * n  # numbered from 1 in each stream


def test_bad_smooth_is_a_one_line_error(models, kit, tmp_path, capsys) -> None:
    video = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(2))
    argv = ["run", "--model", str(models["nms"]), "--source", str(video), "--smooth", "-1"]
    assert main(argv) == 2
    assert "--smooth must be >= 0 seconds" in capsys.readouterr().err


def test_overlay_draws_the_id_and_the_trail() -> None:
    img = np.zeros((120, 200, 3), np.uint8)
    det = Detections(np.array([[120, 40, 160, 80]], np.float32), np.array([0.9], np.float32),
                     np.array([0]))  # fmt: skip
    trail = np.full((1, 4, 2), np.nan, np.float32)
    trail[0, 1:] = [[20, 100], [60, 80], [140, 60]]
    base = FrameResult(det, ("car",))
    tracked = FrameResult(det, ("car",), tracks=TrackInfo(np.array([12]), np.array([3]), trail))
    plain, drawn = draw_overlay(img, base), draw_overlay(img, tracked)
    diff = np.any(plain != drawn, axis=2)
    assert diff[95:105, 15:30].any()  # the trail's old end, far from the box
    assert diff[:40].any()  # the wider "#12 car 0.90" tag above the box


def test_panel_shows_the_smoothed_label() -> None:
    from edge_mtl.runtime.overlay import panel_rows

    raw = Classification("rainy", 1, 0.6, np.array([0.4, 0.6], np.float32))
    steady = Classification("clear", 0, 0.7, np.array([0.7, 0.3], np.float32))
    r = FrameResult(classifications={"w": raw}, smoothed_classifications={"w": steady})
    assert panel_rows(r)[0][1] == "clear 0.70"
