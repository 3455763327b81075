import os

import cv2
import numpy as np
import pytest

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES, atomic_write, read_json, write_json_atomic
from edge_mtl.runtime.sources import iter_frames, open_source


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write('{"v": 2, "trunc')
        raise RuntimeError("crash mid-write")
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_get_the_usual_mode(tmp_path):
    write_json_atomic(tmp_path / "a.json", [1, 2], indent=2)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_read_json_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(InputError, match=r"nope\.json: label file not found"):
        read_json(tmp_path / "nope.json", "label file")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_every_stage_reads_the_same_image_suffixes(tmp_path):
    """One list: a .tif (like every suffix in IMAGE_SUFFIXES) is a run source frame, a
    calibration image and folder training data alike; other files are passed over."""
    from edge_mtl.calibration.select import select_calibration
    from edge_mtl.data.folder import read_folder

    assert {".jpg", ".png", ".tif", ".tiff"} <= IMAGE_SUFFIXES
    rain = tmp_path / "rain"
    rain.mkdir()
    for i, suffix in enumerate(sorted(IMAGE_SUFFIXES)):
        image = np.full((8, 10) if suffix == ".pgm" else (8, 10, 3), 40 + i, np.uint8)
        assert cv2.imwrite(str(rain / f"{i}{suffix}"), image), suffix
    (rain / "notes.txt").write_text("not an image")
    want = sorted(f"{i}{s}" for i, s in enumerate(sorted(IMAGE_SUFFIXES)))

    records, unknown = read_folder(tmp_path, "weather", {"weather": ("clear", "rain")})
    assert sorted(r.image.name for r in records) == want and not unknown
    assert all(r.labels == {"weather": 1} and not r.has_boxes for r in records)

    frames = list(iter_frames(open_source(str(rain))))
    assert sorted(f.name for f in frames) == want
    assert all(f.image.shape == (8, 10, 3) and f.image.dtype == np.uint8 for f in frames)

    chosen = select_calibration(tmp_path, size=100)
    assert sorted(p.name for p in chosen.paths) == want
