import os

import pytest
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import atomic_write, read_json, write_json_atomic


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
