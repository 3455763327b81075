"""KITTI label_2 files (edge_mtl.data.kitti): boxes, classes, bad lines, missing images."""

import re
from collections import Counter

import numpy as np
import pytest

from edge_mtl.data.kitti import read_kitti
from edge_mtl.data.labels import DET_CLASSES
from edge_mtl.data.malformed import BadEntries
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.loader_files import (
    CAR,
    KITTI_1,
    PERSON,
    TRUCK,
    assert_same_records,
    kitti_root,
    read_skipping,
)


def test_kitti_boxes_classes_and_counts(tmp_path):
    root = kitti_root(tmp_path)
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
        kitti_root(tmp_path), DET_CLASSES, {"cyclist": "person", "Misc": "ignore"}, ignored
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
    root = kitti_root(tmp_path, {"000000": KITTI_1.splitlines()[0] + "\n" + line + "\n"})
    with pytest.raises(InputError, match=message):
        read_kitti(root, DET_CLASSES)


def test_kitti_missing_directories_and_images(tmp_path):
    with pytest.raises(InputError, match=r"nope/label_2: directory not found"):
        read_kitti(tmp_path / "nope", DET_CLASSES)
    root = kitti_root(tmp_path, {"000000": KITTI_1})
    (root / "label_2" / "000007.txt").write_text(KITTI_1)
    with pytest.raises(InputError, match=r"000007.txt: no image 000007.png in"):
        read_kitti(root, DET_CLASSES)


def test_kitti_bad_line_raises_or_is_skipped(tmp_path, capsys):
    root = kitti_root(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    with (root / "label_2" / "000001.txt").open("a") as f:
        f.write("Car 0 0 0 50 60 40 70 1 1 1 1 1 1 1\n")
    problem = "000001.txt:3: degenerate box [50.0, 60.0, 40.0, 70.0] (left top right bottom)"
    with pytest.raises(InputError, match=re.escape(f"{root}/label_2/{problem}")):
        read_kitti(root, DET_CLASSES)
    recs, line = read_skipping(tmp_path, capsys, {"kind": "kitti", "path": str(root)})
    # 000001.png goes whole: kept without the bad box, that car would train as background
    assert_same_records(recs, [good[0], good[2]])
    assert line == (
        "kitti[0]: 2 images, 2 boxes; unknown categories skipped (map them in categories): "
        f"Misc 1, Cyclist 1; ignored: DontCare 1; skipped 1 bad entry ({problem}); "
        "1 image dropped for bad objects"
    )


def test_kitti_bad_lines_drop_their_image_once(tmp_path):
    root = kitti_root(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    with (root / "label_2" / "000000.txt").open("a") as f:
        f.write("Car 0 0 0 50 60 40 70 1 1 1 1 1 1 1\n")  # degenerate box
        f.write("Car 0.00 0 -1.58 587.01 173.33 614.12\n")  # too few fields
    bad, ignored = BadEntries(skip=True), Counter()
    recs, unknown = read_kitti(root, DET_CLASSES, ignored=ignored, bad=bad)
    assert_same_records(recs, good[1:])
    assert bad.count == 2 and bad.images_dropped == 1
    assert unknown == Counter() and ignored == Counter()  # 000000's Misc, Cyclist, DontCare


def test_kitti_missing_image_is_skipped(tmp_path, capsys):
    root = kitti_root(tmp_path)
    good, _ = read_kitti(root, DET_CLASSES)
    (root / "label_2" / "000007.txt").write_text(KITTI_1)
    recs, line = read_skipping(tmp_path, capsys, {"kind": "kitti", "path": str(root)})
    assert_same_records(recs, good)
    assert line.endswith(
        f"; skipped 1 bad entry (000007.txt: no image 000007.png in {root / 'image_2'})"
    )
