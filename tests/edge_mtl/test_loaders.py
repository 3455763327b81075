"""Dataset loaders on small hand-written files in each format: exact boxes, classes, labels."""

import json
import math
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_mtl.runtime.errors import InputError

from edge_mtl.config import ConfigError, config_from_dict
from edge_mtl.data.bdd import read_bdd
from edge_mtl.data.coco import read_coco
from edge_mtl.data.dataset import MultiTaskDataset, records_for
from edge_mtl.data.folder import read_folder
from edge_mtl.data.kitti import read_kitti
from edge_mtl.data.labels import ATTRIBUTES, DET_CLASSES
from edge_mtl.data.malformed import BadEntries, EntryError
from tests.edge_mtl.conftest import tiny_cfg_dict

CAR, TRUCK, BUS, PERSON, LIGHT, SIGN = range(6)


def _image(path, hw=(30, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), 80, np.uint8))
    return path


# ---------------------------------------------------------------- BDD100K


def _bdd(tmp_path):
    root = tmp_path / "bdd"
    root.mkdir()
    frames = [
        {
            "name": "a.jpg",
            "attributes": {"weather": "rainy", "scene": "city street", "timeofday": "night"},
            "labels": [
                {"id": 0, "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 11.5, "y2": 12}},
                {"id": 1, "category": "lane", "poly2d": [{"vertices": [[0, 5], [9, 5]]}]},
                {"id": 2, "category": "rider", "box2d": {"x1": 3, "y1": 3, "x2": 6, "y2": 9}},
                {
                    "id": 3,
                    "category": "traffic sign",
                    "box2d": {"x1": 20, "y1": 1, "x2": 24, "y2": 4},
                },
            ],
        },
        {
            "name": "b.jpg",
            "attributes": {"weather": "undefined", "scene": "highway", "timeofday": "daytime"},
            "labels": [
                {"id": 0, "category": "bus", "box2d": {"x1": 0, "y1": 0, "x2": 30, "y2": 20}}
            ],
        },
    ]
    (root / "labels.json").write_text(json.dumps(frames))
    _image(root / "images" / "a.jpg")
    _image(root / "images" / "b.jpg")
    return root


def test_bdd_boxes_attributes_and_unknown_categories(tmp_path):
    root = _bdd(tmp_path)
    recs, unknown = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    assert [r.image for r in recs] == [root / "images" / "a.jpg", root / "images" / "b.jpg"]
    np.testing.assert_array_equal(recs[0].boxes, [[1, 2, 11.5, 12], [20, 1, 24, 4]])
    assert recs[0].boxes.dtype == np.float32
    assert recs[0].classes.tolist() == [CAR, SIGN]
    assert recs[0].labels == {"weather": 2, "scene": 1, "timeofday": 2}
    assert recs[1].labels == {"weather": -1, "scene": 0, "timeofday": 0}
    np.testing.assert_array_equal(recs[1].boxes, [[0, 0, 30, 20]])
    assert recs[1].classes.tolist() == [BUS]
    assert all(r.has_boxes for r in recs) and math.isnan(recs[0].targets["curvature"])
    assert unknown == Counter({"rider": 1})  # the lane polygon has no box: not counted


def test_bdd_category_mapping_through_records_for(tmp_path, capsys):
    d = tiny_cfg_dict()
    src = {"kind": "bdd100k", "path": str(_bdd(tmp_path)), "name": "bdd-day"}
    src["categories"] = {"rider": "person", "traffic sign": "ignore"}
    d["data"] = {"train": [src], "val": []}
    recs = records_for(config_from_dict(d).data.train, config_from_dict(d), tmp_path)
    assert recs[0].classes.tolist() == [CAR, PERSON]
    np.testing.assert_array_equal(recs[0].boxes, [[1, 2, 11.5, 12], [3, 3, 6, 9]])
    assert recs[1].classes.tolist() == [BUS]
    assert {r.source for r in recs} == {"bdd-day"}
    assert capsys.readouterr().out == "bdd-day: 2 images, 3 boxes; ignored: traffic sign 1\n"


# ---------------------------------------------------------------- KITTI

KITTI_0 = """\
Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59
Pedestrian 0.00 0 0.21 100.00 120.50 130.25 200.00 1.80 0.60 0.80 1.00 1.70 9.00 0.30
DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10
Misc 0.00 1 1.00 10.00 10.00 20.00 30.00 1.00 1.00 1.00 1.00 1.00 1.00 0.00

Cyclist 0.50 2 -2.00 300.00 150.00 340.00 220.00 1.70 0.50 1.80 2.00 1.60 20.00 -1.00
"""
KITTI_1 = """\
Van 0.00 0 1.00 1.00 2.00 50.00 40.00 2.00 1.80 4.50 -5.00 1.80 20.00 1.00
Truck 0.10 1 1.00 60.00 10.00 140.00 90.00 3.00 2.50 9.00 5.00 1.80 30.00 1.00
"""


def _kitti(tmp_path, files=None):
    root = tmp_path / "kitti"
    files = files or {"000000": KITTI_0, "000001": KITTI_1, "000002": ""}
    (root / "label_2").mkdir(parents=True)
    for stem, text in files.items():
        (root / "label_2" / f"{stem}.txt").write_text(text)
        _image(root / "image_2" / f"{stem}.png", (375, 1242))
    return root


def test_kitti_boxes_classes_and_counts(tmp_path):
    root = _kitti(tmp_path)
    ignored = Counter()
    recs, unknown = read_kitti(root, DET_CLASSES, ignored=ignored)
    assert [r.image.name for r in recs] == ["000000.png", "000001.png", "000002.png"]
    np.testing.assert_array_equal(
        recs[0].boxes,
        np.array([[587.01, 173.33, 614.12, 200.12], [100.0, 120.5, 130.25, 200.0]], np.float32),
    )
    assert recs[0].classes.tolist() == [CAR, PERSON]
    np.testing.assert_array_equal(recs[1].boxes, [[1, 2, 50, 40], [60, 10, 140, 90]])
    assert recs[1].classes.tolist() == [CAR, TRUCK]  # a Van is a car
    assert recs[2].boxes.shape == (0, 4) and recs[2].classes.shape == (0,)
    assert all(r.has_boxes and r.labels == {} for r in recs)
    # Cyclist -> rider by default, and this model has no rider: reported, like Misc
    assert unknown == Counter({"Misc": 1, "Cyclist": 1})
    assert ignored == Counter({"DontCare": 1})


def test_kitti_categories_override_defaults(tmp_path):
    ignored = Counter()
    recs, unknown = read_kitti(
        _kitti(tmp_path), DET_CLASSES, {"cyclist": "person", "Misc": "ignore"}, ignored
    )
    assert recs[0].classes.tolist() == [CAR, PERSON, PERSON]
    np.testing.assert_array_equal(recs[0].boxes[2], [300, 150, 340, 220])
    assert unknown == Counter() and ignored == Counter({"DontCare": 1, "Misc": 1})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12", "000000.txt:2: expected 15 fields"),
        ("Car 0.00 0 -1.58 587.01 top 614.12 200.12 1 1 1 1 1 1 1", "000000.txt:2: top is not a"),
        (
            "Car 0 0 0 50 60 40 70 1 1 1 1 1 1 1",
            r"000000.txt:2: degenerate box \[50.0, 60.0, 40.0, 70.0\]",
        ),
    ],
)
def test_kitti_bad_line_names_file_and_line(tmp_path, line, message):
    root = _kitti(tmp_path, {"000000": KITTI_1.splitlines()[0] + "\n" + line + "\n"})
    with pytest.raises(InputError, match=message):
        read_kitti(root, DET_CLASSES)


def test_kitti_missing_directories_and_images(tmp_path):
    with pytest.raises(InputError, match=r"nope/label_2: directory not found"):
        read_kitti(tmp_path / "nope", DET_CLASSES)
    root = _kitti(tmp_path, {"000000": KITTI_1})
    (root / "label_2" / "000007.txt").write_text(KITTI_1)
    with pytest.raises(InputError, match=r"000007.txt: no image 000007.png in"):
        read_kitti(root, DET_CLASSES)


# ---------------------------------------------------------------- COCO


def _coco(tmp_path, **changes):
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
            {"id": 2, "file_name": "sub/b.jpg", "width": 320, "height": 240},
            {"id": 3, "file_name": "c.jpg", "width": 64, "height": 48},
        ],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 2, "name": "bicycle"},
            {"id": 3, "name": "car"},
            {"id": 13, "name": "stop sign"},
            {"id": 18, "name": "dog"},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 20, 30, 40.5], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 99, 99], "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 13, "bbox": [300, 200, 30, 50]},
            {"id": 13, "image_id": 2, "category_id": 18, "bbox": [1, 1, 5, 5]},
            {"id": 14, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5]},
            {"id": 15, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},
            {"id": 16, "image_id": 1, "category_id": 1, "bbox": [100, 50, 20, 60]},
        ],
    }
    data.update(changes)
    path = tmp_path / "coco" / "instances.json"
    (tmp_path / "coco" / "images").mkdir(parents=True)
    path.write_text(json.dumps(data))
    _coco_images(path.parent / "images")
    return path


def _coco_images(folder):
    for name in ("a.jpg", "sub/b.jpg", "c.jpg"):
        _image(folder / name)


def test_coco_boxes_classes_and_counts(tmp_path):
    path = _coco(tmp_path)
    ignored = Counter()
    recs, unknown = read_coco(path, DET_CLASSES, ignored=ignored)
    images = path.parent / "images"
    assert [r.image for r in recs] == [images / "a.jpg", images / "sub/b.jpg", images / "c.jpg"]
    np.testing.assert_array_equal(recs[0].boxes, [[10, 20, 40, 60.5], [100, 50, 120, 110]])
    assert recs[0].classes.tolist() == [CAR, PERSON]
    np.testing.assert_array_equal(recs[1].boxes, [[300, 200, 320, 240]])  # clipped to 320x240
    assert recs[1].classes.tolist() == [SIGN]  # stop sign -> traffic sign
    assert recs[2].boxes.shape == (0, 4) and all(r.has_boxes for r in recs)
    assert unknown == Counter({"dog": 1, "bicycle": 1})  # bicycle -> bike: not in this model
    assert ignored == Counter({"iscrowd": 1, "empty box": 1})


def test_coco_images_dir_and_mapping(tmp_path):
    path = _coco(tmp_path)
    _coco_images(tmp_path / "elsewhere")
    recs, unknown = read_coco(
        path, DET_CLASSES, tmp_path / "elsewhere", {"dog": "ignore", "bicycle": "person"}
    )
    assert recs[0].image == tmp_path / "elsewhere" / "a.jpg"
    assert recs[1].classes.tolist() == [SIGN, PERSON]
    assert unknown == Counter()


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (
            {"id": 7, "image_id": 99, "category_id": 3, "bbox": [1, 1, 2, 2]},
            r"annotations\[0\] \(id 7\): image_id 99 is not in images",
        ),
        (
            {"id": 8, "image_id": 1, "category_id": 4, "bbox": [1, 1, 2, 2]},
            r"annotations\[0\] \(id 8\): category_id 4 is not in categories",
        ),
        (
            {"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, -2, 2]},
            r"annotations\[0\] \(id 9\): invalid bbox",
        ),
        (
            {"id": 5, "image_id": 3, "category_id": 3, "bbox": [70, 1, 2, 2]},
            r"annotations\[0\] \(id 5\): bbox \[70.0, 1.0, 2.0, 2.0\] lies outside the 64x48",
        ),
        ({"id": 6, "image_id": 1, "category_id": 3}, r"annotations\[0\] \(id 6\): malformed"),
    ],
)
def test_coco_bad_annotation_names_file_and_entry(tmp_path, annotation, message):
    path = _coco(tmp_path, annotations=[annotation])
    with pytest.raises(InputError, match=r"instances.json: " + message):
        read_coco(path, DET_CLASSES)


def test_coco_bad_json_and_missing_images_dir(tmp_path):
    path = _coco(tmp_path)
    with pytest.raises(InputError, match=r"nowhere: images directory not found"):
        read_coco(path, DET_CLASSES, tmp_path / "nowhere")
    path.write_text('{"images": [')
    with pytest.raises(InputError, match=r"instances.json: not valid JSON"):
        read_coco(path, DET_CLASSES)


# ---------------------------------------------------------------- class folders


def _folders(tmp_path):
    root = tmp_path / "weather"
    for rel in ("clear/2.png", "clear/1.jpg", "Rainy/3.JPG", "sunny/4.jpg", "sunny/5.jpg"):
        _image(root / rel)
    (root / "clear" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("not a class")
    (root / "empty").mkdir()
    return root


def test_folder_labels_one_task(tmp_path):
    root = _folders(tmp_path)
    recs, unknown = read_folder(root, "weather", ATTRIBUTES)
    assert [r.image.relative_to(root).as_posix() for r in recs] == [
        "Rainy/3.JPG",
        "clear/1.jpg",
        "clear/2.png",
    ]
    assert [r.labels for r in recs] == [
        {"weather": 2, "scene": -1, "timeofday": -1},
        {"weather": 0, "scene": -1, "timeofday": -1},
        {"weather": 0, "scene": -1, "timeofday": -1},
    ]
    assert all(not r.has_boxes and r.boxes.shape == (0, 4) and r.targets == {} for r in recs)
    assert unknown == Counter({"sunny": 2})  # counted per image


def test_folder_mapping_and_ignore(tmp_path):
    root = _folders(tmp_path)
    recs, unknown = read_folder(root, "weather", ATTRIBUTES, {"sunny": "clear"})
    assert [r.labels["weather"] for r in recs] == [2, 0, 0, 0, 0] and unknown == Counter()
    ignored = Counter()
    recs, unknown = read_folder(root, "weather", ATTRIBUTES, {"Sunny": "ignore"}, ignored)
    assert len(recs) == 3 and unknown == Counter() and ignored == Counter({"sunny": 2})
    _image(tmp_path / "tod" / "dusk" / "1.png")
    recs, _ = read_folder(tmp_path / "tod", "timeofday", ATTRIBUTES, {"dusk": "dawn/dusk"})
    assert recs[0].labels == {"weather": -1, "scene": -1, "timeofday": 1}


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match=r"nope: class folder directory not found"):
        read_folder(tmp_path / "nope", "weather", ATTRIBUTES)
    (tmp_path / "bare" / "clear").mkdir(parents=True)
    with pytest.raises(InputError, match=r"bare: no images in class folders"):
        read_folder(tmp_path / "bare", "weather", ATTRIBUTES)
    with pytest.raises(InputError, match=r"task 'season' is not a classification task"):
        read_folder(tmp_path / "bare", "season", ATTRIBUTES)


# ---------------------------------------------------------------- mixing sources


def test_mixed_sources_records_and_targets(tmp_path, capsys):
    d = tiny_cfg_dict(hw=(64, 96))
    d["data"] = {
        "train": [
            {"kind": "kitti", "path": str(_kitti(tmp_path))},
            {"kind": "folder", "path": str(_folders(tmp_path)), "task": "weather", "name": "wx"},
        ],
        "val": [],
    }
    cfg = config_from_dict(d)
    recs = records_for(cfg.data.train, cfg, tmp_path)
    assert [r.source for r in recs] == ["kitti[0]"] * 3 + ["wx"] * 3
    assert capsys.readouterr().out.splitlines() == [
        "kitti[0]: 3 images, 4 boxes; unknown categories skipped (map them in categories): "
        "Misc 1, Cyclist 1; ignored: DontCare 1",
        "wx: 3 images; unknown categories skipped (map them in categories): sunny 2",
    ]
    ds = MultiTaskDataset(recs, cfg, train=False)
    _, t = ds[1]  # KITTI 1242x375 -> 96x29 letterbox: scale 96/1242, pad_y 17
    assert t["has_boxes"] is True and t["source"] == "kitti[0]" and t["cls_weather"] == -1
    s = 96 / 1242
    np.testing.assert_allclose(
        t["boxes"].numpy(),
        [[1 * s, 2 * s + 17, 50 * s, 40 * s + 17], [60 * s, 10 * s + 17, 140 * s, 90 * s + 17]],
        rtol=1e-6,
    )
    assert t["classes"].tolist() == [CAR, TRUCK] and math.isnan(t["reg_curvature"])
    x, t = ds[3]
    assert x.shape == (3, 64, 96) and t["has_boxes"] is False and t["source"] == "wx"
    assert t["boxes"].shape == (0, 4) and t["classes"].shape == (0,)
    assert (t["cls_weather"], t["cls_scene"], t["cls_timeofday"]) == (2, -1, -1)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"kind": "lidar", "path": "x"}, r"data.train\[0\] \(lidar\[0\]\): unknown kind 'lidar'"),
        ({"kind": "kitti"}, r"data.train\[0\] \(kitti\[0\]\): needs a path"),
        ({"kind": "folder", "path": "w"}, r"task must name a model.classify task"),
        ({"kind": "folder", "path": "w", "task": "season"}, r"got 'season'"),
        ({"kind": "coco", "path": "coco/"}, r"path must be the COCO JSON file, got 'coco/'"),
        ({"kind": "kitti", "path": "k", "task": "weather"}, r"task is only for kind folder"),
        ({"kind": "kitti", "path": "k", "images": "i"}, r"images is only for kind coco"),
        (
            {"kind": "kitti", "path": "k", "categories": {"Cyclist": "bicycle"}},
            r"categories.Cyclist: 'bicycle' is not a model class",
        ),
        (
            {"kind": "folder", "path": "w", "task": "scene", "categories": {"x": "car"}},
            r"categories.x: 'car' is not a model class \(highway, city street, residential\)",
        ),
    ],
)
def test_config_source_checks(source, message):
    d = tiny_cfg_dict()
    d["data"]["train"] = [source]
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d, "c.yaml")


def test_config_source_names_differ():
    d = tiny_cfg_dict()
    d["data"]["train"] = [
        {"kind": "synthetic", "n": 4, "name": "a"},
        {"kind": "synthetic", "n": 4, "name": "a"},
    ]
    with pytest.raises(
        ConfigError, match=r"data.train: source names must differ, got \['a', 'a'\]"
    ):
        config_from_dict(d, "c.yaml")


def test_config_box_sources_need_a_detection_head():
    d = tiny_cfg_dict()
    d["model"]["detect"] = []
    d["data"]["train"] = [{"kind": "kitti", "path": "k"}]
    with pytest.raises(ConfigError, match=r"kitti has only box labels, and model.detect is empty"):
        config_from_dict(d, "c.yaml")


def test_config_new_source_keys_and_augment_range():
    d = tiny_cfg_dict()
    d["data"]["train"] = [
        {"kind": "coco", "path": "a/instances.json", "images": "a/img", "weight": 2},
        {"kind": "folder", "path": "w", "task": "timeofday", "categories": {"dusk": "Dawn/Dusk"}},
    ]
    d["data"]["augment"] = {"hflip": 0.5, "hsv": 0.5, "scale": 0.3}
    cfg = config_from_dict(d)
    assert cfg.data.train[0].images == "a/img" and cfg.data.train[1].task == "timeofday"
    assert [s.display_name(i) for i, s in enumerate(cfg.data.train)] == ["coco[0]", "folder[1]"]
    d["data"]["augment"] = {"scale": 1.0}
    with pytest.raises(ConfigError, match=r"data.augment: .* got hflip=0.5, hsv=0.0, scale=1.0"):
        config_from_dict(d)


# ---------------------------------------------------------------- malformed entries


def _read_skipping(tmp_path, capsys, source):
    """records_for on one source with ``skip_bad: true``: its records and its report line."""
    d = tiny_cfg_dict()
    d["data"] = {"train": [{**source, "skip_bad": True}], "val": []}
    cfg = config_from_dict(d)
    recs = records_for(cfg.data.train, cfg, tmp_path)
    return recs, capsys.readouterr().out.rstrip("\n")


def _assert_same(recs, expected):
    assert [r.image for r in recs] == [r.image for r in expected]
    for r, e in zip(recs, expected):
        np.testing.assert_array_equal(r.boxes, e.boxes)
        assert r.classes.tolist() == e.classes.tolist()
        assert r.labels == e.labels and r.has_boxes == e.has_boxes


def test_bad_entries_raise_or_count():
    bad = BadEntries()
    with pytest.raises(InputError, match=r"^/d/labels.txt:12: degenerate box$"):
        bad.add(Path("/d/labels.txt"), 12, "degenerate box")
    bad = BadEntries(skip=True)
    assert bad.summary() == ""
    bad.add(Path("/d/labels.json"), "frame 3", KeyError("name"))
    assert (
        bad.summary()
        == "skipped 1 bad entry (labels.json: frame 3: malformed entry (KeyError('name')))"
    )
    for i in range(4):
        bad.add(Path("/d/images") / f"{i}.jpg", None, EntryError("empty image file"))
    assert bad.count == 5
    assert bad.summary() == (
        "skipped 5 bad entries (labels.json: frame 3: malformed entry (KeyError('name')); "
        "0.jpg: empty image file; 1.jpg: empty image file; first 3 shown)"
    )
    assert bad.images_dropped == 0


def test_bad_objects_count_their_image_once():
    bad = BadEntries(skip=True)
    bad.add(Path("/d/7.txt"), 2, "degenerate box", image=Path("/d/7.png"))
    assert (
        bad.summary()
        == "skipped 1 bad entry (7.txt:2: degenerate box); 1 image dropped for bad objects"
    )
    bad.add(Path("/d/7.txt"), 5, "degenerate box", image=Path("/d/7.png"))
    bad.add(Path("/d/8.txt"), 1, "degenerate box", image=Path("/d/8.png"))
    bad.add(Path("/d/9.png"), None, "empty image file")
    assert bad.count == 4 and bad.images_dropped == 2
    assert bad.summary().endswith("; first 3 shown); 2 images dropped for bad objects")
    with pytest.raises(InputError, match=r"^/d/7.txt:2: degenerate box$"):
        BadEntries().add(Path("/d/7.txt"), 2, "degenerate box", image=Path("/d/7.png"))


def test_bdd_bad_frame_raises_or_is_skipped(tmp_path, capsys):
    root = _bdd(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    frames = json.loads((root / "labels.json").read_text())
    box = {"x1": 5, "y1": 5, "x2": 5, "y2": 9}
    labels = [{"category": "rider", "box2d": box}, {"category": "car", "box2d": box}]
    frames.insert(1, {"name": "c.jpg", "labels": labels})
    (root / "labels.json").write_text(json.dumps(frames))
    _image(root / "images" / "c.jpg")
    problem = "labels.json: frame 1 (c.jpg), labels[1]: degenerate box [5.0, 5.0, 5.0, 9.0]"
    with pytest.raises(InputError, match=re.escape(f"{root}/{problem}")):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    bad = BadEntries(skip=True)
    recs, unknown = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",), bad)
    _assert_same(recs, good)
    assert bad.count == 1 and bad.images_dropped == 1
    assert unknown == Counter({"rider": 1})  # not the skipped frame's rider
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    _assert_same(recs, good)
    assert line == (
        "bdd100k[0]: 2 images, 3 boxes; unknown categories skipped (map them in categories): "
        f"rider 1; skipped 1 bad entry ({problem}); 1 image dropped for bad objects"
    )


def test_bdd_bad_labels_drop_their_frame(tmp_path, capsys):
    root = _bdd(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    frames = json.loads((root / "labels.json").read_text())
    # a.jpg: a car, a rider (unknown to this model) and a sign, plus two labels that do not
    # parse; keeping a.jpg without them would teach their pixels as background
    frames[0]["labels"] += [
        {"category": "car", "box2d": {"x1": 1, "y1": 1, "x2": 4}},
        {"category": "bus", "box2d": {"x1": 1, "y1": 1, "x2": "nan", "y2": 4}},
    ]
    (root / "labels.json").write_text(json.dumps(frames))
    bad = BadEntries(skip=True)
    recs, unknown = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",), bad)
    _assert_same(recs, good[1:])
    assert bad.count == 2 and bad.images_dropped == 1
    assert unknown == Counter()  # a.jpg's rider went with it
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    _assert_same(recs, good[1:])
    assert line == (
        "bdd100k[0]: 1 images, 1 boxes; skipped 2 bad entries "
        "(labels.json: frame 0 (a.jpg), labels[4]: malformed entry (KeyError('y2')); "
        "labels.json: frame 0 (a.jpg), labels[5]: degenerate box [1.0, 1.0, nan, 4.0]); "
        "1 image dropped for bad objects"
    )


def test_bdd_frame_with_missing_image(tmp_path, capsys):
    root = _bdd(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    (root / "images" / "a.jpg").unlink()
    problem = "labels.json: frame 0 (a.jpg): image file not found (images/a.jpg)"
    with pytest.raises(InputError, match=re.escape(f"{root}/{problem}")):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    _assert_same(recs, good[1:])
    assert line == f"bdd100k[0]: 1 images, 1 boxes; skipped 1 bad entry ({problem})"


def test_bdd_unparseable_file_is_an_error_even_when_skipping(tmp_path):
    root = _bdd(tmp_path)
    (root / "labels.json").write_text('[{"name": "a.jpg"')
    with pytest.raises(InputError, match=r"labels.json: not valid JSON"):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, (), BadEntries(skip=True))


def test_kitti_bad_line_raises_or_is_skipped(tmp_path, capsys):
    root = _kitti(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    with (root / "label_2" / "000001.txt").open("a") as f:
        f.write("Car 0 0 0 50 60 40 70 1 1 1 1 1 1 1\n")
    problem = "000001.txt:3: degenerate box [50.0, 60.0, 40.0, 70.0] (left top right bottom)"
    with pytest.raises(InputError, match=re.escape(f"{root}/label_2/{problem}")):
        read_kitti(root, DET_CLASSES)
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "kitti", "path": str(root)})
    # 000001.png goes whole: kept without the bad box, that car would train as background
    _assert_same(recs, [good[0], good[2]])
    assert line == (
        "kitti[0]: 2 images, 2 boxes; unknown categories skipped (map them in categories): "
        f"Misc 1, Cyclist 1; ignored: DontCare 1; skipped 1 bad entry ({problem}); "
        "1 image dropped for bad objects"
    )


def test_kitti_bad_lines_drop_their_image_once(tmp_path):
    root = _kitti(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    with (root / "label_2" / "000000.txt").open("a") as f:
        f.write("Car 0 0 0 50 60 40 70 1 1 1 1 1 1 1\n")  # degenerate box
        f.write("Car 0.00 0 -1.58 587.01 173.33 614.12\n")  # too few fields
    bad, ignored = BadEntries(skip=True), Counter()
    recs, unknown = read_kitti(root, DET_CLASSES, ignored=ignored, bad=bad)
    _assert_same(recs, good[1:])
    assert bad.count == 2 and bad.images_dropped == 1
    assert unknown == Counter() and ignored == Counter()  # 000000's Misc, Cyclist, DontCare


def test_kitti_missing_image_is_skipped(tmp_path, capsys):
    root = _kitti(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    (root / "label_2" / "000007.txt").write_text(KITTI_1)
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "kitti", "path": str(root)})
    _assert_same(recs, good)
    assert line.endswith(
        f"; skipped 1 bad entry (000007.txt: no image 000007.png in {root / 'image_2'})"
    )


def test_coco_bad_annotation_raises_or_is_skipped(tmp_path, capsys):
    path = _coco(tmp_path)
    good, _ = read_coco(path, DET_CLASSES)
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 17, "image_id": 3, "category_id": 3, "bbox": [70, 1, 2, 2]})
    path.write_text(json.dumps(data))
    problem = (
        "instances.json: annotations[7] (id 17): bbox [70.0, 1.0, 2.0, 2.0] lies outside the "
        "64x48 image c.jpg"
    )
    with pytest.raises(InputError, match=re.escape(f"{path.parent}/{problem}")):
        read_coco(path, DET_CLASSES)
    recs, line = _read_skipping(tmp_path, capsys, {"kind": "coco", "path": str(path)})
    _assert_same(recs, good[:2])  # c.jpg goes whole with its bad annotation
    assert line == (
        "coco[0]: 2 images, 3 boxes; unknown categories skipped (map them in categories): "
        f"dog 1, bicycle 1; ignored: iscrowd 1, empty box 1; skipped 1 bad entry ({problem}); "
        "1 image dropped for bad objects"
    )


def test_coco_bad_annotations_drop_their_image_once(tmp_path):
    path = _coco(tmp_path)
    good, _ = read_coco(path, DET_CLASSES)
    data = json.loads(path.read_text())
    data["annotations"] += [
        {"id": 20, "image_id": 2, "category_id": 3, "bbox": [1, 1, -2, 2]},  # invalid bbox
        {"id": 21, "image_id": 2, "category_id": 4, "bbox": [1, 1, 2, 2]},  # unknown category
        {"id": 22, "image_id": 99, "category_id": 3, "bbox": [1, 1, 2, 2]},  # unknown image
    ]
    path.write_text(json.dumps(data))
    bad, ignored = BadEntries(skip=True), Counter()
    recs, unknown = read_coco(path, DET_CLASSES, ignored=ignored, bad=bad)
    # b.jpg goes whole; the annotation of an image that does not exist drops no image
    _assert_same(recs, [good[0], good[2]])
    assert bad.count == 3 and bad.images_dropped == 1
    assert unknown == Counter()  # b.jpg's dog and bicycle went with it
    assert ignored == Counter({"iscrowd": 1, "empty box": 1})  # a.jpg's, kept


def test_coco_missing_image_drops_it_and_its_annotations(tmp_path):
    path = _coco(tmp_path)
    good, _ = read_coco(path, DET_CLASSES)
    missing = path.parent / "images" / "sub" / "b.jpg"
    missing.unlink()
    with pytest.raises(
        InputError, match=re.escape(f"images[1] (id 2): image file not found ({missing})")
    ):
        read_coco(path, DET_CLASSES)
    bad = BadEntries(skip=True)
    recs, unknown = read_coco(path, DET_CLASSES, bad=bad)
    _assert_same(recs, [good[0], good[2]])
    assert bad.count == 1 and unknown == Counter()  # b.jpg's dog and bicycle went with it
    path.write_text('{"images": [')
    with pytest.raises(InputError, match=r"instances.json: not valid JSON"):
        read_coco(path, DET_CLASSES, bad=BadEntries(skip=True))


def test_folder_empty_image_raises_or_is_skipped(tmp_path, capsys):
    root = _folders(tmp_path)
    good, _ = read_folder(root, "weather", ATTRIBUTES)
    (root / "clear" / "0.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=re.escape(f"{root}/clear/0.jpg: empty image file")):
        read_folder(root, "weather", ATTRIBUTES)
    source = {"kind": "folder", "path": str(root), "task": "weather"}
    recs, line = _read_skipping(tmp_path, capsys, source)
    _assert_same(recs, good)
    assert line == (
        "folder[0]: 3 images; unknown categories skipped (map them in categories): sunny 2; "
        "skipped 1 bad entry (0.jpg: empty image file)"
    )
