"""Pixel tasks in ``edge-mtl run``'s outputs: the overlay's translucent layer under the boxes,
JSON lines whose RLE decodes to the engine's class maps, ``--save-masks`` PNGs for images,
videos and live streams, and the console line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edge_mtl.cli import main  # noqa: E402
from edge_mtl.runtime.console import image_line  # noqa: E402
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult  # noqa: E402
from edge_mtl.runtime.masksink import MaskSink  # noqa: E402
from edge_mtl.runtime.overlay import (  # noqa: E402
    SEG_ALPHA,
    SEG_COLORS,
    draw_overlay,
    draw_segmentations,
    panel_rows,
)
from edge_mtl.runtime.pipeline import Pipeline  # noqa: E402
from edge_mtl.runtime.postprocess import Detections  # noqa: E402
from edge_mtl.runtime.records import SCHEMA_PATH  # noqa: E402
from edge_mtl.runtime.segment import SegMap, rle_decode  # noqa: E402
from edge_mtl.runtime.sinks import StageTimes  # noqa: E402
from edge_mtl.runtime.sources import Frame, LiveSource  # noqa: E402

DRIVABLE = ("background", "direct", "alternative")
GREEN, RED, BLUE = (0, 255, 0), (0, 0, 255), (255, 0, 0)  # BGR: drivable 1 / 0 + lane / 2


def _run(model: Path, *flags: str) -> int:
    argv = ["run", "--model", str(model), "--provider", "cpu", "--threads", "1"]
    return main([*argv, *flags])


def _scene(h: int, w: int) -> np.ndarray:
    """Thirds: red (background, lane), green (direct), blue (alternative)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3], img[:, w // 3 : 2 * w // 3], img[:, 2 * w // 3 :] = RED, GREEN, BLUE
    return img


# ---- overlay --------------------------------------------------------------------------------


def test_the_overlay_blends_classes_and_keeps_the_background() -> None:
    """A 2x smaller map is resized to the frame; background pixels are left exactly, class
    pixels take SEG_ALPHA of their colour, lanes sit on top of the drivable area and boxes on
    top of both."""
    grey = np.full((200, 300, 3), 100, np.uint8)
    drivable = np.zeros((100, 150), np.uint8)
    drivable[50:, :75], drivable[50:, 75:] = 1, 2
    lanes = np.zeros((100, 150), np.uint8)
    lanes[:, 70:72] = 1  # frame columns 140-143
    segs = {
        "drivable": SegMap(drivable, DRIVABLE, (200, 300)),
        "lanes": SegMap(lanes, ("background", "lane"), (200, 300)),
    }
    det = Detections(np.array([[220, 120, 280, 190]], np.float32), np.array([0.9], np.float32),
                     np.array([0]))  # fmt: skip
    out = draw_overlay(grey, FrameResult(det, ("car",), segmentations=segs))

    def blend(color):
        return np.round(100 * (1 - SEG_ALPHA) + np.array(color) * SEG_ALPHA)

    assert (out[60:95, 150:215] == 100).all()  # no class, no panel, no tag: untouched
    np.testing.assert_allclose(out[150, 20], blend(SEG_COLORS["direct"]), atol=1)
    np.testing.assert_allclose(out[150, 200], blend(SEG_COLORS["alternative"]), atol=1)
    np.testing.assert_allclose(out[70, 141], blend(SEG_COLORS["lane"]), atol=1)
    np.testing.assert_allclose(out[150, 141], blend(SEG_COLORS["lane"]), atol=1)  # on top
    assert (out[150, 138] != out[150, 141]).any() and (out[150, 144] != out[150, 143]).any()
    assert (np.abs(out[150, 220] - blend(SEG_COLORS["alternative"])) > 20).any()  # box on top
    assert (grey == 100).all()  # the input frame is left unchanged


def test_the_panel_has_a_row_per_pixel_task() -> None:
    classes = np.zeros((10, 10), np.uint8)
    classes[5:, :4], classes[5:, 4:] = 1, 2
    lanes = np.zeros((10, 10), np.uint8)
    lanes[:, 0] = 1
    r = FrameResult(
        segmentations={
            "drivable": SegMap(classes, DRIVABLE, (10, 10)),
            "lanes": SegMap(lanes, ("background", "lane"), (10, 10)),
        }
    )
    rows = [(name, answer, second) for name, answer, _, second in panel_rows(r)]
    assert rows == [
        ("drivable", "50.0%", "direct 20%  alternative 30%"),
        ("lanes", "10.0%", ""),
    ]


# ---- run: JSON lines, --save-masks, console -------------------------------------------------


def test_an_image_run_writes_rle_masks_and_console_lines(tmp_path, seg_models, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = {"a": (30, 90), "b": (64, 40)}
    for stem, hw in sizes.items():
        cv2.imwrite(str(folder / f"{stem}.png"), _scene(*hw))
    jsonl, masks = tmp_path / "out.jsonl", tmp_path / "masks"
    assert _run(seg_models["maps"], "--source", str(folder), "--jsonl", str(jsonl),
                "--save-masks", str(masks), "--no-save") == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    header, *frames = (json.loads(x) for x in jsonl.read_text(encoding="utf-8").splitlines())
    for record in (header, *frames):
        validator.validate(record)
    assert [t["kind"] for t in header["tasks"]] == ["segment", "segment"]
    engine = Engine(seg_models["maps"], "cpu", EngineConfig(intra_op_threads=1))
    for record in frames:
        stem = Path(record["file"]).stem
        image = cv2.imread(str(folder / record["file"]))
        want = engine(image).segmentations
        for task in ("drivable", "lanes"):
            answer, m = record["tasks"][task], want[task]
            assert answer["size"] == list(m.classes.shape)
            assert answer["scale"] == pytest.approx(m.scale, abs=1e-6)
            assert answer["pixels"] == m.pixels()
            assert [e["class"] for e in answer["rle"]] == list(m.labels[1:])
            for k, e in enumerate(answer["rle"], 1):
                np.testing.assert_array_equal(rle_decode(e), m.classes == k)
            png = cv2.imread(str(masks / task / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            assert png.dtype == np.uint8 and png.shape == sizes[stem]
            np.testing.assert_array_equal(png, m.at_frame_size())
        share, px = want["drivable"].foreground()
        line = next(x for x in lines if f"{stem}.png:" in x)
        assert f"drivable {share:.1%} ({px} px)" in line
        assert "lanes " in line and " px)" in line
    assert sorted(p.name for p in (masks / "lanes").iterdir()) == ["a.png", "b.png"]


def test_a_video_saves_one_mask_per_frame_and_task(tmp_path, seg_models, kit) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(4, 36, 64))
    masks = tmp_path / "m"
    assert _run(seg_models["maps"], "--source", str(clip), "--save-masks", str(masks),
                "--no-save") == 0  # fmt: skip
    for task in ("drivable", "lanes"):
        names = sorted(p.name for p in (masks / task).iterdir())
        assert names == [f"{i:06d}.png" for i in range(4)]  # no temp files left
        png = cv2.imread(str(masks / task / names[0]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (36, 64) and png.max() <= (2 if task == "drivable" else 1)


def test_several_streams_get_a_mask_folder_each(tmp_path, seg_models, kit) -> None:
    for name in ("front", "rear"):
        kit.write_video(tmp_path / f"{name}.mp4", kit.make_frames(2, 32, 48))
    masks = tmp_path / "m"
    assert _run(seg_models["maps"], "--source", f"f={tmp_path / 'front.mp4'}",
                "--source", f"r={tmp_path / 'rear.mp4'}", "--save-masks", str(masks),
                "--no-save") == 0  # fmt: skip
    assert {str(p.relative_to(masks)) for p in masks.rglob("*.png")} == {
        f"{s}/{t}/{i:06d}.png" for s in "fr" for t in ("drivable", "lanes") for i in range(2)
    }


def test_a_live_stream_saves_masks_by_frame_index(tmp_path, seg_models, kit) -> None:
    camera = kit.FakeCapture()
    engine = Engine(seg_models["maps"], "cpu", EngineConfig(intra_op_threads=1))
    sink = MaskSink(tmp_path / "live", engine.meta.tasks)
    Pipeline(engine, LiveSource(lambda: camera, "cam"), [sink], max_frames=3).run()
    names = sorted(p.name for p in (tmp_path / "live" / "lanes").iterdir())
    assert len(names) == 3 and all(n.endswith(".png") and len(n) == 10 for n in names)
    png = cv2.imread(str(tmp_path / "live" / "drivable" / names[0]), cv2.IMREAD_UNCHANGED)
    assert png.shape == (4, 6)


def test_save_masks_needs_a_pixel_task(tmp_path, models, capsys) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    code = _run(models["dense"], "--source", str(img), "--save-masks", str(tmp_path / "m"))
    assert code == 2
    err = capsys.readouterr().err
    assert "--save-masks" in err and "has no segment task" in err and "weather (classify)" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "runs").exists()


def test_the_console_line_of_an_image_has_each_pixel_task() -> None:
    classes = np.zeros((4, 5), np.uint8)
    classes[2:, 1:] = 1
    r = FrameResult(segmentations={"lanes": SegMap(classes, ("background", "lane"), (8, 10))})
    frame = Frame(np.zeros((8, 10, 3), np.uint8), 0, 0.0, 0.0, "x.png")
    line = image_line(frame, r, StageTimes(total=1.5), {}, detect=False)
    assert line == "8x10; lanes 40.0% (8 px); 1.5 ms"


def test_maps_of_different_sizes_are_each_resized_to_the_frame() -> None:
    """A coarse drivable map and a full-size lane map land on the same pixels as two maps of
    one size would."""
    grey = np.full((40, 60, 3), 100, np.uint8)
    coarse = np.zeros((10, 15), np.uint8)
    coarse[5:] = 1
    lanes = np.zeros((40, 60), np.uint8)
    lanes[:, 30:32] = 1
    mixed = {
        "drivable": SegMap(coarse, DRIVABLE, (40, 60)),
        "lanes": SegMap(lanes, ("background", "lane"), (40, 60)),
    }
    fine = {**mixed, "drivable": SegMap(np.kron(coarse, np.ones((4, 4), np.uint8)), DRIVABLE,
                                        (40, 60))}  # fmt: skip
    a, b = grey.copy(), grey.copy()
    draw_segmentations(a, mixed)
    draw_segmentations(b, fine)
    np.testing.assert_array_equal(a, b)
    assert (a[:20, :30] == 100).all() and (a[20:, :30] != 100).all() and (a[:, 30] != 100).all()


def test_save_masks_refuses_a_file(tmp_path, seg_models, capsys) -> None:
    img, blocker = tmp_path / "a.png", tmp_path / "taken"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    blocker.write_text("x")
    assert _run(seg_models["maps"], "--source", str(img), "--save-masks", str(blocker)) == 2
    assert f"--save-masks {blocker}: is a file, not a folder" in capsys.readouterr().err
