"""COCO instances JSON (edge_mtl.data.coco): boxes, classes, bad annotations, images."""

import json
import re
from collections import Counter

import numpy as np
import pytest

from edge_mtl.data.coco import read_coco
from edge_mtl.data.labels import DET_CLASSES
from edge_mtl.data.malformed import BadEntries
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.loader_files import (
    CAR,
    PERSON,
    SIGN,
    assert_same_records,
    coco_images,
    coco_json,
    read_skipping,
)


def test_coco_boxes_classes_and_counts(tmp_path):
    path = coco_json(tmp_path)
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
    path = coco_json(tmp_path)
    coco_images(tmp_path / "elsewhere")
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
    path = coco_json(tmp_path, annotations=[annotation])
    with pytest.raises(InputError, match=r"instances.json: " + message):
        read_coco(path, DET_CLASSES)


def test_coco_bad_json_and_missing_images_dir(tmp_path):
    path = coco_json(tmp_path)
    with pytest.raises(InputError, match=r"nowhere: images directory not found"):
        read_coco(path, DET_CLASSES, tmp_path / "nowhere")
    path.write_text('{"images": [')
    with pytest.raises(InputError, match=r"instances.json: not valid JSON"):
        read_coco(path, DET_CLASSES)


def test_coco_bad_annotation_raises_or_is_skipped(tmp_path, capsys):
    path = coco_json(tmp_path)
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
    recs, line = read_skipping(tmp_path, capsys, {"kind": "coco", "path": str(path)})
    assert_same_records(recs, good[:2])  # c.jpg goes whole with its bad annotation
    assert line == (
        "coco[0]: 2 images, 3 boxes; unknown categories skipped (map them in categories): "
        f"dog 1, bicycle 1; ignored: iscrowd 1, empty box 1; skipped 1 bad entry ({problem}); "
        "1 image dropped for bad objects"
    )


def test_coco_bad_annotations_drop_their_image_once(tmp_path):
    path = coco_json(tmp_path)
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
    assert_same_records(recs, [good[0], good[2]])
    assert bad.count == 3 and bad.images_dropped == 1
    assert unknown == Counter()  # b.jpg's dog and bicycle went with it
    assert ignored == Counter({"iscrowd": 1, "empty box": 1})  # a.jpg's, kept


def test_coco_missing_image_drops_it_and_its_annotations(tmp_path):
    path = coco_json(tmp_path)
    good, _ = read_coco(path, DET_CLASSES)
    missing = path.parent / "images" / "sub" / "b.jpg"
    missing.unlink()
    with pytest.raises(
        InputError, match=re.escape(f"images[1] (id 2): image file not found ({missing})")
    ):
        read_coco(path, DET_CLASSES)
    bad = BadEntries(skip=True)
    recs, unknown = read_coco(path, DET_CLASSES, bad=bad)
    assert_same_records(recs, [good[0], good[2]])
    assert bad.count == 1 and unknown == Counter()  # b.jpg's dog and bicycle went with it
    path.write_text('{"images": [')
    with pytest.raises(InputError, match=r"instances.json: not valid JSON"):
        read_coco(path, DET_CLASSES, bad=BadEntries(skip=True))
