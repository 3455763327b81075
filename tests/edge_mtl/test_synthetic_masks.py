"""The synthetic generator's drivable-area and lane masks against its own geometry, on disk, and
its stale-cache handling (edge_mtl.data.synthetic, synthetic_masks, generate)."""

import json
import math

import cv2
import numpy as np

from edge_mtl.config import config_from_dict
from edge_mtl.data.dataset import records_for
from edge_mtl.data.generate import (
    MASK_DIRS,
    STAMP,
    clip_mask_paths,
    stale_reason,
    write_synthetic,
    write_video,
)
from edge_mtl.data.masks import LANE_DASHED, from_bdd
from edge_mtl.data.synthetic import (
    CAM_H,
    GENERATOR_VERSION,
    Z_NEAR,
    _Camera,
    render_clip,
    render_scene,
    render_spec,
)
from edge_mtl.data.synthetic_masks import lane_min_px
from edge_mtl.data.synthetic_spec import LANE_W, SceneSpec, _Obj
from tests.edge_mtl.conftest import tiny_cfg_dict


def _spec(hw=(90, 160), objects=()) -> SceneSpec:
    """A straight two-lane residential road, clear daytime, camera 0.5 m right of the centre
    line (so in lane 1, spanning 0 .. 3.5 m), nothing beside the road."""
    return SceneSpec(
        hw=hw, timeofday="daytime", weather="clear", scene="residential", curvature=0.0,
        horizon=0.4 * hw[0], brightness=1.0, road_half=3.7, lanes=2, cam_x=0.5,
        objects=list(objects),
    )  # fmt: skip


def _u(spec: SceneSpec, x: float, row: int) -> float:
    """Image column of lateral offset ``x`` (metres) on the ground at image row ``row``."""
    cam = _Camera(spec)
    z = cam.f * CAM_H / (row - spec.horizon)
    return float(cam.project(x, 0.0, z)[0])


def test_drivable_row_spans_the_projected_road_ego_lane_direct():
    spec = _spec()
    d = render_spec(spec).masks["drivable"]
    assert d[89, 0] > 0 and d[89, -1] > 0  # near the camera the road fills the row
    for row in (42, 50, 58):  # rows where both road edges are in the frame
        cols = np.flatnonzero(d[row])
        left, right = _u(spec, -spec.road_half, row), _u(spec, spec.road_half, row)
        # the edges slant ~2 px per row: the label takes every pixel the road touches in the
        # row, so the span reaches the edges' x at the row's lower border (row + 0.5), +-1 px
        low_left, low_right = (
            _u(spec, -spec.road_half, row + 0.5),
            _u(spec, spec.road_half, row + 0.5),
        )
        assert low_left - 1 <= cols[0] <= left + 1 and right - 1 <= cols[-1] <= low_right + 1
        assert cols.size == cols[-1] - cols[0] + 1  # no hole across the road
        centre, ego_right = _u(spec, 0.0, row), _u(spec, LANE_W, row)
        inside = np.arange(160)
        ego = (inside > centre + 1) & (inside < ego_right - 1)
        other = (inside > left + 1) & (inside < centre - 1) | (inside > ego_right + 1)
        other &= inside < right - 1
        assert ego.any() and other.any()
        assert (d[row, ego] == 1).all() and (d[row, other] == 2).all()
    top = math.floor(spec.horizon)
    assert not d[:top].any() and d[top + 2 :].any()


def test_dashes_and_edge_lines_are_lane_pixels_where_they_are_drawn():
    spec = _spec(hw=(360, 640))
    s = render_spec(spec)
    lanes, dashed, cam = s.masks["lanes"], s.lane_dashed, _Camera(spec)
    assert not lanes[: math.floor(spec.horizon)].any()
    n_dash = n_gap = n_edge = 0
    for row in range(math.ceil(spec.horizon) + 2, 360):
        z = cam.f * CAM_H / (row - spec.horizon)
        # dashes: 2.7 + 10k .. 5.7 + 10k m; phase of the ground seen across the row's height
        near, far = ((cam.f * CAM_H / (row + d - spec.horizon) - Z_NEAR * 0.9) for d in (0.5, -0.5))
        u = round(_u(spec, 0.0, row))
        if far < 147 and near // 10 == far // 10 and far % 10 < 3:  # a dash fills the row
            width = max(0.16 * cam.f / z, lane_min_px(640))
            band = lanes[row, u - 24 : u + 25]
            assert lanes[row, u] == 1 and dashed[row, u]
            assert abs(int(band.sum()) - width) <= 2
            n_dash += 1
        elif near // 10 == far // 10 and near % 10 > 3:  # a gap between dashes fills the row
            assert lanes[row, u - 2 : u + 3].sum() == 0
            n_gap += 1
        for x in (-3.5, 3.5):  # solid edge lines at road_half - 0.2, never dashed
            ue = round(_u(spec, x, row))
            if not 0 <= ue < 640:
                continue
            n_edge += 1
            assert lanes[row, ue] == 1 and not dashed[row, ue]
    assert n_dash > 20 and n_gap > 20 and n_edge > 200
    assert lane_min_px(640) == 3 and lane_min_px(160) == 1


def test_an_object_on_the_road_is_background_in_both_masks():
    car = _Obj("car", 1.75, 9.0, color=(30, 30, 160))
    ped = _Obj("person", -0.1, 14.0)  # standing on the centre line's dashes
    bare, busy = render_spec(_spec()), render_spec(_spec(objects=[car, ped]))
    seen = busy.ids > 0
    assert len(busy.boxes) == 2 and seen.sum() > 100
    # the objects stand in front of the road (their tops rise above it) and a lane marking...
    assert (bare.masks["drivable"][seen] > 0).mean() > 0.5 and bare.masks["lanes"][seen].any()
    for kind in ("drivable", "lanes"):  # ... and hide it where they are seen, only there
        assert not busy.masks[kind][seen].any()
        np.testing.assert_array_equal(busy.masks[kind][~seen], bare.masks[kind][~seen])
    assert not busy.lane_dashed[seen].any()


def test_masks_of_random_scenes_are_consistent():
    for seed in range(10):
        s = render_scene(seed, (90, 160))
        d, ln = s.masks["drivable"], s.masks["lanes"]
        assert d.dtype == ln.dtype == np.uint8 and d.shape == ln.shape == (90, 160)
        assert set(np.unique(d)) <= {0, 1, 2} and set(np.unique(ln)) <= {0, 1}
        assert not d[s.ids > 0].any() and not ln[s.ids > 0].any()  # boxes' pixels hide the road
        assert not ln[d == 0].any() and not s.lane_dashed[ln == 0].any()
        assert (d == 1).any() and (d == 2).any() and ln.any()


def test_masks_on_disk_decode_to_the_scene_masks(tmp_path):
    out = write_synthetic(tmp_path / "d", 3, seed=7, hw=(90, 160), progress=False)
    for i in range(3):
        s = render_scene(7 + i, (90, 160))
        stem = f"{7 + i:08d}.png"
        d = cv2.imread(str(out / MASK_DIRS["drivable"] / stem), cv2.IMREAD_UNCHANGED)
        ln = cv2.imread(str(out / MASK_DIRS["lanes"] / stem), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(d)) <= {0, 1, 2} and d[0, 0] == 2  # BDD: 2 background (sky)
        np.testing.assert_array_equal(from_bdd("drivable", d), s.masks["drivable"])
        np.testing.assert_array_equal(from_bdd("lanes", ln), s.masks["lanes"])
        np.testing.assert_array_equal((ln != 255) & (ln & LANE_DASHED > 0), s.lane_dashed)
    stamp = json.loads((out / STAMP).read_text())
    assert stamp == {"generator_version": GENERATOR_VERSION, "seed": 7, "n": 3,
                     "frame_hw": [90, 160]}  # fmt: skip
    assert GENERATOR_VERSION == 3 and stale_reason(out, 7, 3, (90, 160)) is None
    assert "n 3 (want 4)" in stale_reason(out, 7, 4, (90, 160))


def test_stale_synthetic_set_at_a_path_is_rendered_again(tmp_path, capsys):
    root = tmp_path / "syn"
    write_synthetic(root, 2, seed=5, hw=(64, 112), progress=False)
    (root / STAMP).write_text(json.dumps({"generator_version": 2, "seed": 5, "n": 2,
                                          "frame_hw": [64, 112]}))  # fmt: skip
    stale_png = root / MASK_DIRS["lanes"] / "00000005.png"
    stale_png.unlink()  # as a v2 set had no masks
    (root / "images" / "old.jpg").write_bytes(b"x")  # a file of the earlier set
    d = tiny_cfg_dict(hw=(64, 96))
    d["data"] = {"train": [{"kind": "synthetic", "path": str(root), "n": 2, "seed": 5,
                            "frame_hw": [64, 112]}], "val": []}  # fmt: skip
    cfg = config_from_dict(d)
    recs = records_for(cfg.data.train, cfg, tmp_path)
    out = capsys.readouterr().out
    assert "re-rendering 2 synthetic scenes" in out
    assert "generator version 2, this is version 3" in out
    assert len(recs) == 2 and stale_png.is_file() and not (root / "images" / "old.jpg").exists()
    assert json.loads((root / STAMP).read_text())["generator_version"] == GENERATOR_VERSION
    assert not list(root.glob(".synth.tmp*"))
    records_for(cfg.data.train, cfg, tmp_path)  # now current: reused
    assert "reusing 2 synthetic scenes" in capsys.readouterr().out
    (root / STAMP).unlink()
    assert "synthetic.json missing" in stale_reason(root, 5, 2, (64, 112))


def test_stale_reason_names_what_differs(tmp_path):
    write_synthetic(tmp_path, 1, seed=3, hw=(64, 112), progress=False)
    assert stale_reason(tmp_path, 3, 1, (64, 112)) is None
    why = stale_reason(tmp_path, 4, 1, (64, 128))
    assert why == "rendered with seed 3 (want 4), frame size (64, 112) (want (64, 128))"
    (tmp_path / STAMP).write_text("{")
    assert stale_reason(tmp_path, 3, 1, (64, 112)) == "synthetic.json unreadable"


def test_a_clip_writes_one_mask_pair_per_frame(tmp_path):
    video = write_video(tmp_path / "clip.mp4", 3, seed=2, hw=(64, 112), progress=False)
    info = json.loads((tmp_path / "clip.frames.json").read_text())
    assert info["masks"] == "clip.masks"
    assert sorted(
        p.relative_to(tmp_path).as_posix() for p in (tmp_path / "clip.masks").rglob("*.png")
    ) == [f"clip.masks/{kind}/{i:06d}.png" for kind in ("drivable", "lane") for i in (1, 2, 3)]
    for i, scene in enumerate(render_clip(2, 3, (64, 112)), start=1):
        paths = clip_mask_paths(video, i, masks=tmp_path / info["masks"])
        assert paths == clip_mask_paths(video, i)
        for kind, path in paths.items():
            png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(from_bdd(kind, png), scene.masks[kind])
    # a shorter clip in the same place leaves no frame of the earlier one behind
    write_video(tmp_path / "clip.mp4", 1, seed=2, hw=(64, 112), progress=False)
    assert len(list((tmp_path / "clip.masks").rglob("*.png"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip.frames.json",
        "clip.gt.txt",
        "clip.masks",
        "clip.mp4",
    ]
