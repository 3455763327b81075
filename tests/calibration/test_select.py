"""Calibration-set selection: stratified by (timeofday, weather), deterministic, sized, and a
clear error when there is nothing to read."""

import json
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.calibration.select import allocate, select_calibration
from edge_mtl.data.generate import write_synthetic
from edge_mtl.runtime.errors import InputError


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("calib") / "d", 24, hw=(90, 160), progress=False)


def _strata(root: Path) -> dict[str, str]:
    frames = json.loads((root / "labels.json").read_text())
    return {
        f["name"]: f"{f['attributes']['timeofday']}/{f['attributes']['weather']}" for f in frames
    }


def test_stratified_selection_covers_every_condition(synth):
    by_name = _strata(synth)
    present = set(by_name.values())
    assert len(present) > 3  # the generator varies conditions; the test needs several
    sel = select_calibration(synth, size=len(present) + 1, seed=3)
    chosen = {by_name[p.name] for p in sel.paths}
    assert chosen == present
    s = sel.summary
    assert s["source"] == "labels" and s["size"] == len(sel.paths) == len(present) + 1
    assert s["available"] == 24 and sum(s["strata"].values()) == s["size"]
    assert set(s["strata"]) == present


def test_selection_is_deterministic_by_seed_and_capped(synth):
    a = select_calibration(synth, size=10, seed=1)
    b = select_calibration(synth, size=10, seed=1)
    c = select_calibration(synth, size=10, seed=2)
    assert a.paths == b.paths and a.paths != c.paths
    assert len(select_calibration(synth, size=1000).paths) == 24


def test_plain_folder_is_sampled_uniformly(synth):
    sel = select_calibration(synth / "images", size=5, seed=0)
    assert len(sel.paths) == 5 and sel.summary["source"] == "folder"
    assert all(p.parent == synth / "images" for p in sel.paths)


def test_allocate_proportional_with_one_each():
    counts = {"a": 100, "b": 10, "c": 1}
    q = allocate(counts, 20)
    assert sum(q.values()) == 20 and q["c"] == 1 and q["b"] >= 1 and q["a"] > q["b"]
    assert allocate(counts, 2) == {"a": 1, "b": 1, "c": 0}
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = {str(i): int(n) for i, n in enumerate(rng.integers(1, 30, rng.integers(1, 8)))}
        size = int(rng.integers(1, sum(counts.values()) + 5))
        q = allocate(counts, size)
        assert sum(q.values()) == min(size, sum(counts.values()))
        assert all(0 <= q[k] <= counts[k] for k in counts)


def test_folder_without_readable_images_is_an_input_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="no readable images"):
        select_calibration(tmp_path)
    with pytest.raises(InputError, match="not found"):
        select_calibration(tmp_path / "missing")
