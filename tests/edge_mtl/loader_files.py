"""Small hand-written dataset files in each source format, shared by the loader tests."""

import json

import cv2
import numpy as np

from edge_mtl.config import config_from_dict
from edge_mtl.data.dataset import records_for
from tests.edge_mtl.conftest import tiny_cfg_dict

# Class indices of DET_CLASSES, in order.
CAR, TRUCK, BUS, PERSON, LIGHT, SIGN = range(6)


def image(path, hw=(30, 40)):
    """Write a flat grey BGR image of ``hw`` (H, W) pixels at ``path``; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*hw, 3), 80, np.uint8))
    return path


def bdd_root(tmp_path):
    """A BDD100K folder (labels.json + images/) with two frames: a.jpg (car, lane, trailer, sign)
    and b.jpg (bus)."""
    root = tmp_path / "bdd"
    root.mkdir()
    frames = [
        {
            "name": "a.jpg",
            "attributes": {"weather": "rainy", "scene": "city street", "timeofday": "night"},
            "labels": [
                {"id": 0, "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 11.5, "y2": 12}},
                {"id": 1, "category": "lane", "poly2d": [{"vertices": [[0, 5], [9, 5]]}]},
                {"id": 2, "category": "trailer", "box2d": {"x1": 3, "y1": 3, "x2": 6, "y2": 9}},
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
    image(root / "images" / "a.jpg")
    image(root / "images" / "b.jpg")
    return root


# 000000.txt: a car, a pedestrian, DontCare, Misc, an empty line and a cyclist.
KITTI_0 = """\
Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59
Pedestrian 0.00 0 0.21 100.00 120.50 130.25 200.00 1.80 0.60 0.80 1.00 1.70 9.00 0.30
DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10
Misc 0.00 1 1.00 10.00 10.00 20.00 30.00 1.00 1.00 1.00 1.00 1.00 1.00 0.00

Cyclist 0.50 2 -2.00 300.00 150.00 340.00 220.00 1.70 0.50 1.80 2.00 1.60 20.00 -1.00
"""


# 000001.txt: a van (a car by default) and a truck.
KITTI_1 = """\
Van 0.00 0 1.00 1.00 2.00 50.00 40.00 2.00 1.80 4.50 -5.00 1.80 20.00 1.00
Truck 0.10 1 1.00 60.00 10.00 140.00 90.00 3.00 2.50 9.00 5.00 1.80 30.00 1.00
"""


def kitti_root(tmp_path, files=None):
    """A KITTI training folder (label_2/ + 1242x375 image_2/); ``files`` maps stem -> label text."""
    root = tmp_path / "kitti"
    files = files or {"000000": KITTI_0, "000001": KITTI_1, "000002": ""}
    (root / "label_2").mkdir(parents=True)
    for stem, text in files.items():
        (root / "label_2" / f"{stem}.txt").write_text(text)
        image(root / "image_2" / f"{stem}.png", (375, 1242))
    return root


def coco_json(tmp_path, **changes):
    """A COCO instances JSON with images/ beside it; ``changes`` replace top-level keys."""
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
    coco_images(path.parent / "images")
    return path


def coco_images(folder):
    """Write the three images coco_json names into ``folder``."""
    for name in ("a.jpg", "sub/b.jpg", "c.jpg"):
        image(folder / name)


def class_folders(tmp_path):
    """A weather class-per-folder tree: clear/ (2), Rainy/ (1), sunny/ (2), and non-images."""
    root = tmp_path / "weather"
    for rel in ("clear/2.png", "clear/1.jpg", "Rainy/3.JPG", "sunny/4.jpg", "sunny/5.jpg"):
        image(root / rel)
    (root / "clear" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("not a class")
    (root / "empty").mkdir()
    return root


def read_skipping(tmp_path, capsys, source):
    """records_for on one source with ``skip_bad: true``: its records and its report line."""
    d = tiny_cfg_dict()
    d["data"] = {"train": [{**source, "skip_bad": True}], "val": []}
    cfg = config_from_dict(d)
    recs = records_for(cfg.data.train, cfg, tmp_path)
    return recs, capsys.readouterr().out.rstrip("\n")


def assert_same_records(recs, expected):
    """Records equal in image, boxes, classes, labels and has_boxes."""
    assert [r.image for r in recs] == [r.image for r in expected]
    for r, e in zip(recs, expected):
        np.testing.assert_array_equal(r.boxes, e.boxes)
        assert r.classes.tolist() == e.classes.tolist()
        assert r.labels == e.labels and r.has_boxes == e.has_boxes


# BDD100K as shipped: a.jpg with a car, a pedestrian, a rider, a motorcycle, a bicycle and a
# traffic light (old names: person, motor, bike), b.jpg with no objects; one spelling per format.
SHIPPED_OBJECTS = (
    ("car", "car", (1, 2, 20, 12)),
    ("person", "pedestrian", (30, 5, 36, 30)),
    ("rider", "rider", (40, 5, 46, 28)),
    ("motor", "motorcycle", (40, 20, 50, 34)),
    ("bike", "bicycle", (2, 30, 12, 40)),
    ("traffic light", "traffic light", (55, 0, 60, 9.5)),
)
SHIPPED_ATTRS = {"weather": "clear", "scene": "highway", "timeofday": "night"}


def _shipped_labels(new: bool) -> list[dict]:
    return [
        {
            "id": str(i) if new else i,
            "category": names[new],
            "attributes": {"occluded": False, "truncated": False, "trafficLightColor": "none"},
            "box2d": dict(zip(("x1", "y1", "x2", "y2"), box)),
        }
        for i, (*names, box) in enumerate(SHIPPED_OBJECTS)
    ]


def bdd_shipped(tmp_path):
    """A BDD100K tree as it unpacks: ``images/100k/val/{a,b}.jpg`` (64x64) and the val labels in
    the three published forms: ``labels/bdd100k_labels_images_val.json`` (2018 single list, old
    names, with a drivable-area polygon), ``labels/det_20/det_val.json`` (det_20, new names,
    ``labels: null`` for b.jpg) and ``labels/100k/val/{a,b}.json`` (per image, old names)."""
    root = tmp_path / "bdd100k"
    for n in ("a", "b"):
        image(root / "images" / "100k" / "val" / f"{n}.jpg", (64, 64))
    lab = root / "labels"
    (lab / "det_20").mkdir(parents=True)
    (lab / "100k" / "val").mkdir(parents=True)
    area = {"category": "drivable area", "poly2d": [{"vertices": [[0, 60], [63, 60], [30, 40]]}]}
    old = [
        {"name": "a.jpg", "attributes": SHIPPED_ATTRS, "labels": [*_shipped_labels(False), area]},
        {"name": "b.jpg", "attributes": SHIPPED_ATTRS, "timestamp": 10000, "labels": []},
    ]
    (lab / "bdd100k_labels_images_val.json").write_text(json.dumps(old))
    det = [
        {"name": "a.jpg", "attributes": SHIPPED_ATTRS, "timestamp": 10000,
         "labels": _shipped_labels(True)},
        {"name": "b.jpg", "attributes": SHIPPED_ATTRS, "timestamp": 10000, "labels": None},
    ]  # fmt: skip
    (lab / "det_20" / "det_val.json").write_text(json.dumps(det))
    for n, objects in (("a", _shipped_labels(False)), ("b", [])):
        per = {"name": n, "attributes": SHIPPED_ATTRS,
               "frames": [{"timestamp": 10000, "objects": objects}]}  # fmt: skip
        (lab / "100k" / "val" / f"{n}.json").write_text(json.dumps(per))
    return root


# Pixel labels (edge_mtl.data.bdd_masks): 64x96 frames, BDD100K values on disk.
PIX_HW = (64, 96)
STRAIGHT = {"vertices": [[10, 20], [80, 20]], "types": "LL", "closed": False}
# a cubic Bezier: its midpoint (t = 0.5) is (48, 15); its control polygon runs along y = 0
CURVE = {"vertices": [[10, 60], [10, 0], [86, 0], [86, 60]], "types": "LCCL", "closed": False}


def drivable_png(path, hw=PIX_HW):
    """A BDD100K drivable PNG at ``path``: background (2) above row 40, direct (0) below it on
    the left half, alternative (1) on the right half."""
    png = np.full(hw, 2, np.uint8)
    png[40:, : hw[1] // 2] = 0
    png[40:, hw[1] // 2 :] = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), png)
    return path


def lane_png(path, hw=PIX_HW):
    """A BDD100K lane PNG at ``path``: 255 (background) but for row 5, columns 5..9: a dashed
    single white line (6 + (1 << 4))."""
    png = np.full(hw, 255, np.uint8)
    png[5, 5:10] = 6 | 16
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), png)
    return path


def bdd_pixels(tmp_path):
    """BDD100K 2020 as shipped with pixel labels: ``images/100k/val/{a,b,c,d}.jpg``, boxes in
    ``labels/det_20/det_val.json``, a drivable PNG for a only (``labels/drivable/masks/val``),
    a lane PNG for a (``labels/lane/masks/val``) and lane polylines in ``labels/lane/polygons/
    lane_val.json``: a (a line the PNG overrides), b (STRAIGHT), c (CURVE); d has none."""
    root = tmp_path / "bdd100k"
    for n in "abcd":
        image(root / "images" / "100k" / "val" / f"{n}.jpg", PIX_HW)
    lab = root / "labels"
    car = {"id": "0", "category": "car", "box2d": {"x1": 1, "y1": 2, "x2": 20, "y2": 12}}
    det = [{"name": f"{n}.jpg", "attributes": SHIPPED_ATTRS, "labels": [car]} for n in "abcd"]
    (lab / "det_20").mkdir(parents=True)
    (lab / "det_20" / "det_val.json").write_text(json.dumps(det))
    drivable_png(lab / "drivable" / "masks" / "val" / "a.png")
    lane_png(lab / "lane" / "masks" / "val" / "a.png")

    def lane(category, poly):
        return {"id": "1", "category": category, "attributes": {}, "poly2d": [poly]}

    lanes = [
        {"name": "a.jpg", "labels": [lane("road curb", STRAIGHT)]},
        {"name": "b.jpg", "labels": [lane("single white", STRAIGHT)]},
        {"name": "c.jpg", "labels": [lane("double yellow", CURVE)]},
    ]
    (lab / "lane" / "polygons").mkdir(parents=True)
    (lab / "lane" / "polygons" / "lane_val.json").write_text(json.dumps(lanes))
    return root
