"""BDD100K labels.json (edge_mtl.data.bdd): boxes, attributes, category maps, bad frames."""

import json
import math
import re
from collections import Counter

import numpy as np
import pytest

from edge_mtl.config import config_from_dict
from edge_mtl.data.bdd import read_bdd
from edge_mtl.data.dataset import records_for
from edge_mtl.data.labels import ATTRIBUTES, DET_CLASSES
from edge_mtl.data.malformed import BadEntries
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.conftest import tiny_cfg_dict
from tests.edge_mtl.loader_files import (
    BUS,
    CAR,
    PERSON,
    SIGN,
    assert_same_records,
    bdd_root,
    image,
    read_skipping,
)


def test_bdd_boxes_attributes_and_unknown_categories(tmp_path):
    root = bdd_root(tmp_path)
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
    src = {"kind": "bdd100k", "path": str(bdd_root(tmp_path)), "name": "bdd-day"}
    src["categories"] = {"rider": "person", "traffic sign": "ignore"}
    d["data"] = {"train": [src], "val": []}
    recs = records_for(config_from_dict(d).data.train, config_from_dict(d), tmp_path)
    assert recs[0].classes.tolist() == [CAR, PERSON]
    np.testing.assert_array_equal(recs[0].boxes, [[1, 2, 11.5, 12], [3, 3, 6, 9]])
    assert recs[1].classes.tolist() == [BUS]
    assert {r.source for r in recs} == {"bdd-day"}
    assert capsys.readouterr().out == "bdd-day: 2 images, 3 boxes; ignored: traffic sign 1\n"


def test_bdd_bad_frame_raises_or_is_skipped(tmp_path, capsys):
    root = bdd_root(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    frames = json.loads((root / "labels.json").read_text())
    box = {"x1": 5, "y1": 5, "x2": 5, "y2": 9}
    labels = [{"category": "rider", "box2d": box}, {"category": "car", "box2d": box}]
    frames.insert(1, {"name": "c.jpg", "labels": labels})
    (root / "labels.json").write_text(json.dumps(frames))
    image(root / "images" / "c.jpg")
    problem = "labels.json: frame 1 (c.jpg), labels[1]: degenerate box [5.0, 5.0, 5.0, 9.0]"
    with pytest.raises(InputError, match=re.escape(f"{root}/{problem}")):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    bad = BadEntries(skip=True)
    recs, unknown = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",), bad)
    assert_same_records(recs, good)
    assert bad.count == 1 and bad.images_dropped == 1
    assert unknown == Counter({"rider": 1})  # not the skipped frame's rider
    recs, line = read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    assert_same_records(recs, good)
    assert line == (
        "bdd100k[0]: 2 images, 3 boxes; unknown categories skipped (map them in categories): "
        f"rider 1; skipped 1 bad entry ({problem}); 1 image dropped for bad objects"
    )


def test_bdd_bad_labels_drop_their_frame(tmp_path, capsys):
    root = bdd_root(tmp_path)
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
    assert_same_records(recs, good[1:])
    assert bad.count == 2 and bad.images_dropped == 1
    assert unknown == Counter()  # a.jpg's rider went with it
    recs, line = read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    assert_same_records(recs, good[1:])
    assert line == (
        "bdd100k[0]: 1 images, 1 boxes; skipped 2 bad entries "
        "(labels.json: frame 0 (a.jpg), labels[4]: malformed entry (KeyError('y2')); "
        "labels.json: frame 0 (a.jpg), labels[5]: degenerate box [1.0, 1.0, nan, 4.0]); "
        "1 image dropped for bad objects"
    )


def test_bdd_frame_with_missing_image(tmp_path, capsys):
    root = bdd_root(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    (root / "images" / "a.jpg").unlink()
    problem = "labels.json: frame 0 (a.jpg): image file not found (images/a.jpg)"
    with pytest.raises(InputError, match=re.escape(f"{root}/{problem}")):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    recs, line = read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    assert_same_records(recs, good[1:])
    assert line == f"bdd100k[0]: 1 images, 1 boxes; skipped 1 bad entry ({problem})"


def test_bdd_unparseable_file_is_an_error_even_when_skipping(tmp_path):
    root = bdd_root(tmp_path)
    (root / "labels.json").write_text('[{"name": "a.jpg"')
    with pytest.raises(InputError, match=r"labels.json: not valid JSON"):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, (), BadEntries(skip=True))
