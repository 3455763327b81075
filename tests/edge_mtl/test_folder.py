"""Class-per-folder image trees (edge_mtl.data.folder): labels, mapping, errors."""

import re
from collections import Counter

import pytest

from edge_mtl.data.folder import read_folder
from edge_mtl.data.labels import ATTRIBUTES
from edge_mtl.runtime.errors import InputError
from tests.edge_mtl.loader_files import (
    assert_same_records,
    class_folders,
    image,
    read_skipping,
)


def test_folder_labels_one_task(tmp_path):
    root = class_folders(tmp_path)
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
    root = class_folders(tmp_path)
    recs, unknown = read_folder(root, "weather", ATTRIBUTES, {"sunny": "clear"})
    assert [r.labels["weather"] for r in recs] == [2, 0, 0, 0, 0] and unknown == Counter()
    ignored = Counter()
    recs, unknown = read_folder(root, "weather", ATTRIBUTES, {"Sunny": "ignore"}, ignored)
    assert len(recs) == 3 and unknown == Counter() and ignored == Counter({"sunny": 2})
    image(tmp_path / "tod" / "dusk" / "1.png")
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


def test_folder_empty_image_raises_or_is_skipped(tmp_path, capsys):
    root = class_folders(tmp_path)
    good, _ = read_folder(root, "weather", ATTRIBUTES)
    (root / "clear" / "0.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=re.escape(f"{root}/clear/0.jpg: empty image file")):
        read_folder(root, "weather", ATTRIBUTES)
    source = {"kind": "folder", "path": str(root), "task": "weather"}
    recs, line = read_skipping(tmp_path, capsys, source)
    assert_same_records(recs, good)
    assert line == (
        "folder[0]: 3 images; unknown categories skipped (map them in categories): sunny 2; "
        "skipped 1 bad entry (0.jpg: empty image file)"
    )
