"""The page's script (runtime/web/static/app.js) on a real ``/api/status`` and real event
records, run by Node with a stand-in DOM (tests/runtime/web/stub_dom.js) where Node exists: one
tile per stream with its video, figures and every task's answer, and fields of task kinds or
record keys the page does not know rendered generically. The real browser test is
test_web_browser.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.records import run_header
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame
from edge_mtl.runtime.web.live import LiveView

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "runtime" / "web" / "static" / "app.js"


class Source:
    name, live, fps, drops, reconnects = "cam.mp4", False, 10.0, 2, 1


def test_page_script_renders_tiles_figures_and_unknown_fields(models, kit, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("no Node.js here (apt install nodejs) to run the page's script")
    engine = Engine(models["dense"], providers="cpu")
    run = {"model": "tiny.onnx", "provider": "cpu", "precision": "fp32", "tasks": []}
    view = LiveView(run, serve_fps=10)
    records = []
    for name in ("front", "rear"):
        s = view.add_stream(name, run_header(engine, Source(), name), Source(), ())
        for i, img in enumerate(kit.make_frames(2)):
            s.write(Frame(img, i, 0.0, 0.0), engine(img), StageTimes(1, 2, 3, 6))
        records.append([name, s.record()[1]])
    depth = {"kind": "depth", "classes": ["near", "far"], "area": {"far": 0.12}}
    lanes = {
        "kind": "segment",
        "fractions": {"bg": 0.875, "lane": 0.125},
        "pixels": {"bg": 7, "lane": 1},
        "rle": [],
        "size": [2, 4],
        "scale": [1, 1],
    }
    records.append(["rear", {**records[1][1], "frame": 7, "tracks": [{"id": 3}, {"id": 4}],
                             "tasks": {**records[1][1]["tasks"], "depth": depth,
                                       "lanes": lanes}}])  # fmt: skip
    (tmp_path / "status.json").write_text(json.dumps(view.status()))
    (tmp_path / "events.json").write_text(json.dumps(records))
    out = subprocess.run(
        [node, str(Path(__file__).with_name("web") / "stub_dom.js"), str(APP),
         str(tmp_path / "status.json"), str(tmp_path / "events.json")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    page = json.loads(out.stdout)
    assert page["note"] == "" and "tiny.onnx" in page["run"] and "cpu fp32" in page["run"]
    assert [t["stream"] for t in page["tiles"]] == ["front", "rear"]
    assert page["tiles"][1]["img"] == "/stream/rear.mjpg"
    front, rear = (t["text"] for t in page["tiles"])
    weather = records[0][1]["tasks"]["weather"]
    assert f"weather {weather['label']} {weather['prob']:.2f}" in front
    assert "FPS" in front and "drops 2" in front and "reconnects 1" in front
    assert "curvature" in front and "inference ms 2.0" in front
    assert "frame 7" in rear and "tracks 2 items" in rear  # a record key the page never saw
    assert "depth classes [2], area {…}" in rear  # a task kind it does not know
    assert "lanes 12.5% (1 px)" in rear  # a pixel task: share of the frame and pixels
