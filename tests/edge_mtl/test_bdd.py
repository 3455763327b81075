"""BDD100K labels (edge_mtl.data.bdd, edge_mtl.data.bdd_layout): boxes, attributes, category
maps, bad frames, and the dataset read as it ships (its layout, its three label formats, its
category names old and new)."""

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.cli import main
from edge_mtl.config import config_from_dict
from edge_mtl.data.bdd import read_bdd
from edge_mtl.data.bdd_layout import bdd_categories, split_of
from edge_mtl.data.categories import CategoryMap
from edge_mtl.data.dataset import records_for
from edge_mtl.data.labelled import read_labelled, source_for
from edge_mtl.data.labels import ATTRIBUTES, DET_CLASSES
from edge_mtl.data.malformed import BadEntries
from edge_mtl.runtime.errors import InputError
from tests.bench.labelled import labelled_by_model
from tests.edge_mtl.conftest import tiny_cfg_dict
from tests.edge_mtl.loader_files import (
    BUS,
    CAR,
    LIGHT,
    PERSON,
    SIGN,
    assert_same_records,
    bdd_root,
    bdd_shipped,
    image,
    read_skipping,
)
from tests.runtime.conftest import build_model


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
    assert unknown == Counter({"trailer": 1})  # the lane polygon has no box: not counted


def test_bdd_category_mapping_through_records_for(tmp_path, capsys):
    d = tiny_cfg_dict()
    src = {"kind": "bdd100k", "path": str(bdd_root(tmp_path)), "name": "bdd-day"}
    src["categories"] = {"trailer": "person", "traffic sign": "ignore"}
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
    labels = [{"category": "trailer", "box2d": box}, {"category": "car", "box2d": box}]
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
    assert unknown == Counter({"trailer": 1})  # not the skipped frame's trailer
    recs, line = read_skipping(tmp_path, capsys, {"kind": "bdd100k", "path": str(root)})
    assert_same_records(recs, good)
    assert line == (
        "bdd100k[0]: 2 images, 3 boxes; unknown categories skipped (map them in categories): "
        f"trailer 1; skipped 1 bad entry ({problem}); 1 image dropped for bad objects"
    )


def test_bdd_bad_labels_drop_their_frame(tmp_path, capsys):
    root = bdd_root(tmp_path)
    good, _ = read_bdd(root, DET_CLASSES, ATTRIBUTES, ("curvature",))
    frames = json.loads((root / "labels.json").read_text())
    # a.jpg: a car, a trailer (unknown to this model) and a sign, plus two labels that do not
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
    assert unknown == Counter()  # a.jpg's trailer went with it
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


SHIPPED_FORMATS = {
    "single list (2018)": "labels/bdd100k_labels_images_val.json",
    "det_20": "labels/det_20/det_val.json",
    "per-image files": "labels/100k/val",
}


@pytest.mark.parametrize("fmt", SHIPPED_FORMATS)
def test_shipped_label_formats_load_to_the_same_records(tmp_path, fmt):
    root = bdd_shipped(tmp_path)
    recs, unknown = read_bdd(root / SHIPPED_FORMATS[fmt], DET_CLASSES, ATTRIBUTES, ())
    assert source_for(root / SHIPPED_FORMATS[fmt], {}).kind == "bdd100k"  # eval --data
    images = root / "images" / "100k" / "val"
    assert [r.image for r in recs] == [images / "a.jpg", images / "b.jpg"]  # found by itself
    # car; pedestrian (or person) and rider -> person; traffic light; motorcycle and bicycle
    # are no class of this model: counted under the file's own name, never dropped silently
    assert recs[0].classes.tolist() == [CAR, PERSON, PERSON, LIGHT]
    np.testing.assert_array_equal(
        recs[0].boxes, [[1, 2, 20, 12], [30, 5, 36, 30], [40, 5, 46, 28], [55, 0, 60, 9.5]]
    )
    assert recs[1].boxes.shape == (0, 4) and recs[1].has_boxes  # labels null / [] / no objects
    assert all(r.labels == {"weather": 0, "scene": 0, "timeofday": 2} for r in recs)
    new = fmt == "det_20"
    assert unknown == Counter(
        {"motorcycle" if new else "motor": 1, "bicycle" if new else "bike": 1}
    )


def test_bdd_category_names_old_and_new_map_to_the_models_spelling():
    m = bdd_categories(DET_CLASSES)
    assert m["pedestrian"] == m["rider"] == m["other person"] == "person"
    assert m["motor"] == "motorcycle" and m["bike"] == "bicycle" and "car" not in m
    # a model that names its classes the 2018 way, with a rider class of its own
    cmap = CategoryMap(
        ("car", "motor", "bike", "rider"), bdd_categories(("motor", "bike", "rider"))
    )
    assert [cmap.index(n) for n in ("motorcycle", "motor", "bicycle", "bike", "rider")] == [
        1, 1, 2, 2, 3,
    ]  # fmt: skip
    assert cmap.index("pedestrian") is None and cmap.unknown == Counter({"pedestrian": 1})
    # a source's categories still override the defaults
    cmap = CategoryMap(DET_CLASSES, bdd_categories(DET_CLASSES), {"rider": "ignore"})
    assert cmap.index("rider") is None and cmap.ignored == Counter({"rider": 1})
    assert [split_of(Path(p)) for p in ("det_train.json", "x_labels_images_val.json", "test")] == [
        "train", "val", "test",
    ]  # fmt: skip


def test_images_key_overrides_the_published_layout(tmp_path, capsys):
    root = bdd_shipped(tmp_path)
    elsewhere = tmp_path / "moved"
    image(elsewhere / "a.jpg", (64, 64))
    image(elsewhere / "b.jpg", (64, 64))
    d = tiny_cfg_dict()
    label = str(root / "labels" / "det_20" / "det_val.json")
    src = {"kind": "bdd100k", "path": label, "images": str(elsewhere)}
    d["data"] = {"train": [src], "val": []}
    recs = records_for(config_from_dict(d).data.train, config_from_dict(d), tmp_path)
    assert [r.image for r in recs] == [elsewhere / "a.jpg", elsewhere / "b.jpg"]
    assert capsys.readouterr().out == (
        "bdd100k[0]: 2 images, 4 boxes; unknown categories skipped (map them in categories): "
        "motorcycle 1, bicycle 1\n"
    )


def test_images_not_found_is_one_line_naming_the_places(tmp_path):
    root = bdd_shipped(tmp_path)
    label = root / "labels" / "det_20" / "det_val.json"
    (root / "images" / "100k" / "val").rename(root / "images" / "100k" / "elsewhere")
    with pytest.raises(InputError) as e:
        read_bdd(label, DET_CLASSES, ATTRIBUTES, ())
    ups = (label.parent, root / "labels", root, tmp_path)  # up to 4 folders above the file
    places = [label.parent / "images"] + [a / "images" / "100k" / "val" for a in ups]
    assert str(e.value) == (
        f"{label}: images not found in {', '.join(map(str, places))}; "
        "name the folder with images: in the bdd100k source"
    )
    with pytest.raises(InputError, match=r"bdd100k: no labels.json nor per-image .json label"):
        read_bdd(root, DET_CLASSES, ATTRIBUTES, ())  # the root: which split is not guessed
    with pytest.raises(InputError, match=r"^[^\n]*nowhere: images directory not found"):
        read_bdd(label, DET_CLASSES, ATTRIBUTES, (), images=tmp_path / "nowhere")


def test_eval_data_takes_bdd100k_as_shipped(tmp_path, capsys):
    model = build_model(tmp_path / "tiny.onnx")
    folder = labelled_by_model(model, tmp_path / "set")  # labels.json + images/
    root = tmp_path / "bdd100k"
    (root / "labels" / "det_20").mkdir(parents=True)
    (root / "images" / "100k").mkdir(parents=True)
    (folder / "images").rename(root / "images" / "100k" / "val")
    frames = json.loads((folder / "labels.json").read_text())
    (root / "labels" / "det_20" / "det_val.json").write_text(json.dumps(frames))
    label = root / "labels" / "det_20" / "det_val.json"
    assert source_for(root, {}).path == str(label)  # the root: its val labels
    scores = []
    for data in (label, root):
        assert main(["eval", "--model", str(model), "--data", str(data), "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["images"] == 12 and scores[0]["det mAP@0.5"] > 50  # labelled by the model
    assert scores[0] == scores[1]
    # quantize --eval reads its set through the same plug
    recs, _ = read_labelled(root, ("car", "sign"), {}, ())
    assert len(recs) == 12 and recs[0].image == root / "images" / "100k" / "val" / "0000.jpg"


def test_scalabel_object_and_a_bad_per_image_file(tmp_path):
    root = bdd_shipped(tmp_path)
    det = root / "labels" / "det_20" / "det_val.json"
    want, _ = read_bdd(det, DET_CLASSES, ATTRIBUTES, ())
    det.write_text(json.dumps({"frames": json.loads(det.read_text()), "config": {}}))
    assert source_for(det, {}).kind == "bdd100k"  # told from COCO by its content
    assert_same_records(read_bdd(det, DET_CLASSES, ATTRIBUTES, ())[0], want)
    per_image = root / "labels" / "100k" / "val"
    (per_image / "b.json").write_text(json.dumps({"name": "b", "frames": []}))
    with pytest.raises(InputError, match=r"val/b.json: frame 0 \(b\): expected one frame, got 0"):
        read_bdd(per_image, DET_CLASSES, ATTRIBUTES, ())
    bad = BadEntries(skip=True)
    recs, _ = read_bdd(per_image, DET_CLASSES, ATTRIBUTES, (), bad)
    assert_same_records(recs, want[:1])
    assert bad.count == 1
