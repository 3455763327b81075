"""Pixel labels of BDD100K-format sources (edge_mtl.data.bdd_masks, poly2d, headers): drivable
and lane PNGs where each release ships them, poly2d lanes and areas rasterised, the config keys
that point elsewhere, bad PNGs as bad entries, and the source's report line."""

import json
import os

import cv2
import numpy as np
import pytest

from edge_mtl.config import ConfigError, config_from_dict
from edge_mtl.data.bdd import read_bdd
from edge_mtl.data.bdd_masks import MaskOptions
from edge_mtl.data.dataset import MultiTaskDataset, records_for
from edge_mtl.data.headers import image_hw
from edge_mtl.data.labels import ATTRIBUTES, DET_CLASSES
from edge_mtl.data.malformed import BadEntries, EntryError
from edge_mtl.data.masks import LANE_WIDTH
from edge_mtl.data.poly2d import bezier, poly2d_points
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.conftest import tiny_cfg_dict
from tests.edge_mtl.loader_files import (
    CURVE,
    PIX_HW,
    SHIPPED_ATTRS,
    STRAIGHT,
    bdd_pixels,
    drivable_png,
    image,
    lane_png,
)

DET = "labels/det_20/det_val.json"


def _read(label, **opts):
    recs, _ = read_bdd(label, DET_CLASSES, ATTRIBUTES, (), masks=MaskOptions(**opts))
    return {r.image.stem: r for r in recs}


def _mask(rec, kind):
    return rec.masks[kind].load(PIX_HW)


def test_shipped_drivable_png_and_lane_polylines_load_to_canonical_masks(tmp_path):
    recs = _read(bdd_pixels(tmp_path) / DET)
    assert {n: sorted(r.masks) for n, r in recs.items()} == {
        "a": ["drivable", "lanes"], "b": ["lanes"], "c": ["lanes"], "d": [],
    }  # fmt: skip
    drivable = _mask(recs["a"], "drivable")  # BDD 2 / 0 / 1 -> background / direct / alternative
    assert drivable[:40].max() == 0 and (drivable[40:, :48] == 1).all()
    assert (drivable[40:, 48:] == 2).all()
    lanes = _mask(recs["a"], "lanes")  # the lane PNG wins over a's polyline
    assert lanes[5, 5:10].tolist() == [1] * 5 and lanes.sum() == 5
    straight = _mask(recs["b"], "lanes")  # y = 20 from x = 10 to 80, 8 px wide
    assert (straight[20, 10:81] == 1).all() and (straight[17:24, 45] == 1).all()
    assert straight[:15].max() == 0 and straight[26:].max() == 0
    assert straight[20, :5].max() == 0 and straight[20, 86:].max() == 0
    assert recs["b"].masks["lanes"].width == LANE_WIDTH == 8
    curve = _mask(recs["c"], "lanes")
    assert curve[15, 48] == 1  # the Bezier's midpoint is on the curve...
    assert curve[0, 48] == 0 and curve[20, 10] == 0  # ... its control polygon is not drawn
    assert curve[20, 30] == 1  # y(t) = 20 at t = 1/3, where x = 10 + 76 * 7/27 = 29.7
    assert curve[40:, 40:56].max() == 0  # a curve, not a closed shape
    # the lane JSON named as the label file: its frames' own polylines; d is not in it
    lane_json = _read(bdd_pixels(tmp_path / "2") / "labels/lane/polygons/lane_val.json")
    assert sorted(lane_json) == ["a", "b", "c"] and lane_json["a"].masks["lanes"].png is not None
    np.testing.assert_array_equal(_mask(lane_json["c"], "lanes"), curve)


def test_bezier_sampling_and_malformed_poly2d():
    mid = bezier(np.array(CURVE["vertices"], float))
    assert np.allclose(mid[0], [10, 60]) and np.allclose(mid[-1], [86, 60])
    assert np.abs(mid - [48, 15]).sum(axis=1).min() < 1.0  # passes through the midpoint
    pts = poly2d_points({**STRAIGHT, "vertices": [[0, 0], [4, 0], [4, 3]], "types": "LLL"})
    closed = poly2d_points({"vertices": [[0, 0], [4, 0], [4, 3]], "closed": True})
    assert pts.tolist() == [[0, 0], [4, 0], [4, 3]] and closed.tolist()[-1] == [0, 0]
    for bad, why in (
        ({"vertices": [[0, 0]]}, "two or more finite"),
        ({"vertices": [[0, 0], [1, float("nan")]]}, "two or more finite"),
        ({"vertices": [[0, 0], [1, 1]], "types": "LX"}, "L or C for each"),
        ({"vertices": [[0, 0], [1, 1], [2, 2]], "types": "LCL"}, "come in pairs"),
        ({"vertices": "0 0 1 1"}, "pairs"),
    ):
        with pytest.raises(EntryError, match=why):
            poly2d_points(bad)


def test_2018_release_drivable_maps_polygons_and_lane_list(tmp_path):
    root = tmp_path / "bdd100k"
    for n in "ab":
        image(root / "images" / "100k" / "val" / f"{n}.jpg", PIX_HW)
    drivable_png(root / "drivable_maps" / "labels" / "val" / "a_drivable_id.png")
    area = {
        "category": "drivable area",
        "attributes": {"areaType": "alternative"},
        "poly2d": [{"vertices": [[0, 63], [95, 63], [48, 30]], "types": "LLL", "closed": True}],
    }
    lane = {"category": "lane", "attributes": {"laneType": "single white"}, "poly2d": [CURVE]}
    frames = [
        {"name": "a.jpg", "attributes": SHIPPED_ATTRS, "labels": [area]},
        {"name": "b.jpg", "attributes": SHIPPED_ATTRS, "labels": [area, lane]},
    ]
    label = root / "labels" / "bdd100k_labels_images_val.json"
    label.parent.mkdir(parents=True)
    label.write_text(json.dumps(frames))
    recs = _read(label)
    assert recs["a"].masks["drivable"].png.name == "a_drivable_id.png"  # the PNG wins
    drivable = _mask(recs["b"], "drivable")  # the polygon, filled with its areaType's class
    assert drivable[60, 48] == 2 and drivable[35, 48] == 2 and drivable[20, 48] == 0
    assert drivable[60, 5] == 2 and drivable[40, 5] == 0
    assert _mask(recs["b"], "lanes")[15, 48] == 1
    # the file labels lanes: a frame without any has none (all background), not "unlabelled"
    assert _mask(recs["a"], "lanes").max() == 0
    # only the kinds asked for are looked for
    assert all(list(r.masks) == ["lanes"] for r in _read(label, kinds=("lanes",)).values())


def test_edge_mtl_layout_masks_and_lane_width(tmp_path):
    root = tmp_path / "d"
    frames = [{"name": f"{n}.jpg", "attributes": {}, "labels": []} for n in "ab"]
    root.mkdir()
    (root / "labels.json").write_text(json.dumps(frames))
    for n in "ab":
        image(root / "images" / f"{n}.jpg", PIX_HW)
    drivable_png(root / "labels" / "drivable" / "masks" / "a.png")
    lane_png(root / "labels" / "lane" / "masks" / "b.png")
    recs = _read(root)
    assert sorted(recs["a"].masks) == ["drivable"] and sorted(recs["b"].masks) == ["lanes"]
    assert _mask(recs["a"], "drivable")[50, 60] == 2 and _mask(recs["b"], "lanes")[5, 7] == 1
    # poly2d lanes drawn at another width
    frames[0]["labels"] = [{"category": "single white", "poly2d": [STRAIGHT]}]
    (root / "labels.json").write_text(json.dumps(frames))
    thin = _mask(_read(root, lane_width=2.0)["a"], "lanes")
    assert np.nonzero(thin[:, 45])[0].tolist() == [19, 20, 21]  # 8 px wide: rows 16..24


def test_explicit_mask_folders_override_the_layout(tmp_path, capsys):
    root = bdd_pixels(tmp_path)
    mine = tmp_path / "mine"
    png = np.full(PIX_HW, 2, np.uint8)
    png[:10] = 1  # alternative on top: unlike the shipped a.png
    mine.mkdir()
    cv2.imwrite(str(mine / "b.png"), png)
    lane_png(tmp_path / "my_lanes" / "d.png")
    d = tiny_cfg_dict(hw=PIX_HW)
    d["model"]["segment"] = {"drivable": ["background", "direct", "alternative"]}
    src = {"kind": "bdd100k", "path": str(root / DET), "drivable": str(mine)}
    d["data"] = {"train": [src], "val": []}
    cfg = config_from_dict(d)
    recs = {r.image.stem: r for r in records_for(cfg.data.train, cfg, tmp_path)}
    assert [n for n, r in recs.items() if r.masks] == ["b"]  # lanes: not a task of the model
    assert _mask(recs["b"], "drivable")[:10].min() == 2
    assert capsys.readouterr().out == "bdd100k[0]: 4 images, 4 boxes, 1 with drivable-area labels\n"
    item = MultiTaskDataset(list(recs.values()), cfg, train=False)[1][1]  # b: input = frame size
    assert item["seg_drivable"][:10].min() == 2 and item["seg_drivable"][10:].max() == 0
    assert MultiTaskDataset(list(recs.values()), cfg, train=False)[0][1]["seg_drivable"] is None
    recs = _read(root / DET, lanes=tmp_path / "my_lanes")
    assert recs["d"].masks["lanes"].png == tmp_path / "my_lanes" / "d.png"
    assert recs["a"].masks["lanes"].png is None  # a's lanes now come from the polylines
    with pytest.raises(InputError, match=r"^[^\n]*nowhere: lane mask folder not found"):
        _read(root / DET, lanes=tmp_path / "nowhere")


def test_report_counts_images_with_pixel_labels(tmp_path, capsys):
    d = tiny_cfg_dict(hw=PIX_HW)
    d["model"]["segment"] = {"drivable": ["background", "direct"], "lanes": ["background", "lane"]}
    d["data"] = {"train": [{"kind": "bdd100k", "path": str(bdd_pixels(tmp_path) / DET)}]}
    cfg = config_from_dict(d)
    records_for(cfg.data.train, cfg, tmp_path)
    assert capsys.readouterr().out == (
        "bdd100k[0]: 4 images, 4 boxes, 1 with drivable-area labels, 3 with lane labels\n"
    )


def test_mask_keys_are_checked_in_the_config():
    d = tiny_cfg_dict()
    d["data"]["train"][0]["drivable"] = "masks"
    with pytest.raises(ConfigError, match=r"synthetic\[0\]\): drivable is only for kind bdd100k"):
        config_from_dict(d)
    d = tiny_cfg_dict()
    d["data"]["val"] = [{"kind": "bdd100k", "path": "x", "lane_width": 0}]
    with pytest.raises(ConfigError, match=r"lane_width must be a positive width in px, got 0"):
        config_from_dict(d)


def test_bad_mask_png_is_a_bad_entry_naming_it(tmp_path):
    root = bdd_pixels(tmp_path)
    a_png = root / "labels" / "drivable" / "masks" / "val" / "a.png"
    a_png.write_bytes(b"not a png")
    with pytest.raises(InputError, match=rf"det_val.json: frame 0 \(a.jpg\): {a_png}: not a read"):
        _read(root / DET)
    drivable_png(a_png, (32, 96))
    bad = BadEntries(skip=True)
    recs, _ = read_bdd(root / DET, DET_CLASSES, ATTRIBUTES, (), bad)
    assert [r.image.stem for r in recs] == ["b", "c", "d"]  # the frame is skipped
    assert bad.count == 1 and bad.examples == [
        f"det_val.json: frame 0 (a.jpg): {a_png}: mask is 96x32, its image 96x64"
    ]
    cv2.imwrite(str(a_png), np.zeros((*PIX_HW, 3), np.uint8))  # colour: not a class map
    with pytest.raises(InputError, match=r"a\.png: not a readable 8-bit single-channel mask PNG"):
        _read(root / DET)


def test_bad_lane_polylines_are_bad_entries(tmp_path):
    root = bdd_pixels(tmp_path)
    lane_json = root / "labels" / "lane" / "polygons" / "lane_val.json"
    lanes = json.loads(lane_json.read_text())
    lanes[1]["labels"][0]["poly2d"] = [{"vertices": [[1, 2]]}]
    lane_json.write_text(json.dumps(lanes))
    with pytest.raises(InputError, match=r"lane_val.json: frame 1 \(b.jpg\): labels\[0\] \(single"):
        _read(root / DET)
    bad = BadEntries(skip=True)
    recs, _ = read_bdd(root / DET, DET_CLASSES, ATTRIBUTES, (), bad)
    assert bad.count == 1 and [sorted(r.masks) for r in recs][1] == []  # b: lanes unlabelled


def test_no_stat_per_image_when_mask_folders_are_missing(tmp_path, monkeypatch):
    def stats(n):
        root = tmp_path / f"n{n}" / "bdd100k"
        frames = [{"name": f"{i}.jpg", "attributes": {}, "labels": []} for i in range(n)]
        label = root / "labels" / "det_20" / "det_val.json"
        label.parent.mkdir(parents=True)
        label.write_text(json.dumps(frames))
        for i in range(n):
            image(root / "images" / "100k" / "val" / f"{i}.jpg", (8, 8))
        calls = []
        real = os.stat

        def counting(path, *args, **kwargs):
            if any(w in str(path) for w in ("drivable", "lane")):
                calls.append(path)
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", counting)
        recs = _read(label)
        monkeypatch.setattr(os, "stat", real)
        assert len(recs) == n and not any(r.masks for r in recs.values())
        return len(calls)

    assert 0 < stats(3) == stats(30) <= 20  # the candidate folders, once each


def test_image_sizes_from_headers(tmp_path):
    for ext in ("jpg", "png", "bmp"):
        path = tmp_path / f"x.{ext}"
        cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8))
        assert image_hw(path) == (37, 53)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff")
    assert image_hw(tmp_path / "bad.jpg") is None
