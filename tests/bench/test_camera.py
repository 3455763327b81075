"""The loopback test camera: a video looped at a frame rate as MJPEG on 127.0.0.1, read back by
the runtime as a live source, and ``edge-mtl bench --e2e camera:VIDEO@FPS`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_mtl.bench.camera import LoopbackCamera, main, parse_spec
from edge_mtl.cli import main as cli_main
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.sources import open_source


def test_parse_spec() -> None:
    assert parse_spec("demo/drive.mp4") is None
    assert parse_spec("http://127.0.0.1:8554/live.mjpg") is None
    assert parse_spec("camera:demo/drive.mp4@15") == ("demo/drive.mp4", 15.0)
    assert parse_spec("camera:a@b.mp4") == ("a@b.mp4", 30.0)  # no rate after the last @
    assert parse_spec("camera:clip.mp4") == ("clip.mp4", 30.0)
    with pytest.raises(InputError, match="frame rate after @"):
        parse_spec("camera:clip.mp4@0")


def test_camera_serves_the_video_looped_to_several_clients(tmp_path, kit) -> None:
    frames = kit.make_frames(3, 48, 64)
    clip = kit.write_video(tmp_path / "clip.mp4", frames)
    with LoopbackCamera(str(clip), fps=50) as cam:
        assert cam.url == f"http://127.0.0.1:{cam.port}/live.mjpg"
        sources = [open_source(cam.url), open_source(cam.url)]  # two clients at once
        try:
            for src in sources:
                assert src.live
                got = [src.read() for _ in range(4)]
                assert all(f is not None and f.image.shape == (48, 64, 3) for f in got)
                assert [f.index for f in got] == sorted({f.index for f in got})  # never twice
                # Each frame is one of the video's (JPEG of an mp4v decode: close, not equal).
                for f in got:
                    diffs = [np.abs(f.image.astype(int) - v.astype(int)).mean() for v in frames]
                    assert min(diffs) < 12
        finally:
            for src in sources:
                src.close()


def test_camera_refuses_what_is_not_a_video(tmp_path, capsys) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    with pytest.raises(InputError, match="cannot open as a video"):
        LoopbackCamera(str(bad))
    with pytest.raises(SystemExit) as e:
        main([str(bad), "--port", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("camera: error: camera ") and "\n" not in err


def test_bench_e2e_on_a_loopback_camera_reports_ages(tmp_path, models, kit) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(5, 48, 64))
    out = tmp_path / "cam.json"
    argv = ["bench", "--model", str(models["dense"]), "--provider", "cpu", "--e2e"]
    argv += [f"camera:{clip}@50", "--e2e-frames", "6", "--streams", "2"]
    argv += ["--runs", "3", "--warmup", "1", "--threads", "1", "--quiet", "--json", str(out)]
    assert cli_main(argv) == 0
    (row,) = json.loads(out.read_text())["results"]
    e = row["e2e"]
    assert e["source"].startswith("http://127.0.0.1:") and e["frames"] == 6
    assert 0 < e["latency_p50_ms"] <= e["latency_p90_ms"] <= e["latency_p99_ms"]
    for st in e["streams"]:
        assert st["frames"] == 3 * 2 * st["streams"]  # 3 rounds of 2 frames per stream
        assert 0 < st["latency_p50_ms"] <= st["latency_p90_ms"] <= st["latency_p99_ms"]
