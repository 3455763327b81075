"""Bench's end-to-end stages for a model with pixel tasks: ``segment`` (the sinks' work on the
class maps) is reported beside ``postprocess``, in the JSON and in the markdown table."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")

from edge_mtl.bench.e2e import segment_post_ms
from edge_mtl.cli import main
from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.segment import SegMap
from tests.runtime.conftest import build_seg_model

FAST = ["--runs", "3", "--warmup", "1", "--threads", "1", "--quiet"]


def test_e2e_reports_a_segment_stage(models, kit, tmp_path) -> None:
    seg = build_seg_model(tmp_path / "seg.onnx")
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(6, 48, 64))
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    argv = ["bench", "--model", str(seg), str(models["dense"]), "--provider", "cpu", *FAST]
    assert main([*argv, "--e2e", str(clip), "--json", str(out), "--md", str(md)]) == 0
    seg_row, dense_row = json.loads(out.read_text())["results"]
    assert set(seg_row["e2e"]["stage_ms"]) == {
        "decode", "preprocess", "inference", "postprocess", "segment",
    }  # fmt: skip
    assert seg_row["e2e"]["stage_ms"]["segment"] > 0
    assert "segment" not in dense_row["e2e"]["stage_ms"]  # no pixel task, no stage
    lines = md.read_text().splitlines()
    header = next(x for x in lines if "postprocess ms" in x)
    cols = [c.strip() for c in header.strip("|").split("|")]
    rows = [[c.strip() for c in x.strip("|").split("|")] for x in lines[lines.index(header) + 2 :]]
    cells = [r[cols.index("segment ms")] for r in rows[:2]]
    assert float(cells[0]) == pytest.approx(seg_row["e2e"]["stage_ms"]["segment"], abs=0.01)
    assert cells[1] == "-"


def test_segment_post_ms_leaves_the_frame_alone() -> None:
    image = np.full((36, 64, 3), 90, np.uint8)
    classes = np.zeros((36, 64), np.uint8)
    classes[20:] = 1
    r = FrameResult(segmentations={"lanes": SegMap(classes, ("background", "lane"), (36, 64))})
    assert segment_post_ms(image, r) > 0
    assert (image == 90).all()
