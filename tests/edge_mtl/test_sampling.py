"""Per-source sampling: probabilities, determinism, and what an epoch visits."""

from collections import Counter

import numpy as np
import pytest

from edge_mtl.data.sampling import (
    epoch_batches,
    epoch_indices,
    mix_summary,
    source_probabilities,
)


def test_probabilities_follow_size_weight_and_temperature():
    np.testing.assert_allclose(source_probabilities([300, 100], [1, 1], 1.0), [0.75, 0.25])
    # T = 2: sqrt(300) : sqrt(100)
    p = source_probabilities([300, 100], [1, 1], 2.0)
    np.testing.assert_allclose(p, np.array([300**0.5, 10]) / (300**0.5 + 10))
    np.testing.assert_allclose(source_probabilities([300, 100], [1, 3], 1.0), [0.5, 0.5])
    np.testing.assert_allclose(source_probabilities([300, 0], [1, 1], 1.0), [1.0, 0.0])
    with pytest.raises(ValueError):
        source_probabilities([10], [1], 0.0)


def test_proportional_epoch_is_a_permutation_and_reproducible():
    a = epoch_indices([30, 10], [1, 1], 1.0, seed=3, epoch=2)
    assert sorted(a) == list(range(40))
    assert a == epoch_indices([30, 10], [1, 1], 1.0, seed=3, epoch=2)
    assert a != epoch_indices([30, 10], [1, 1], 1.0, seed=3, epoch=3)


def test_oversampled_small_source_repeats_whole_passes():
    sizes = [90, 10]
    idx = epoch_indices(sizes, [1, 9], 1.0, seed=0, epoch=0)  # p = 0.5 / 0.5
    assert len(idx) == 100
    small = [i for i in idx if i >= 90]
    counts = Counter(small)
    assert set(counts) <= set(range(90, 100))
    # whole shuffled passes: no image of the small source is seen twice more than another
    assert max(counts.values()) - min(counts.values()) <= 1
    assert 35 <= len(small) <= 65  # about half of the epoch


def test_epoch_batches_drop_the_ragged_tail():
    b = epoch_batches([10], [1], 1.0, batch_size=4, seed=0, epoch=0)
    assert [len(x) for x in b] == [4, 4]
    assert len({i for batch in b for i in batch}) == 8


def test_mix_summary_shows_masked_tasks():
    text = mix_summary(["kitti", "weather"], [{"det": 5}, {"weather": 7}], [5, 7], [0.4, 0.6])
    lines = text.splitlines()
    assert lines[0].split() == ["source", "images", "share", "det", "weather"]
    assert lines[1].split() == ["kitti", "5", "40%", "5", "-"]
    assert lines[2].split() == ["weather", "7", "60%", "-", "7"]


def test_training_mixes_sources_and_logs_their_label_counts(tmp_path):
    import cv2

    from edge_mtl.config import config_from_dict
    from edge_mtl.data.labels import ATTRIBUTES
    from edge_mtl.train import train
    from tests.edge_mtl.conftest import tiny_cfg_dict

    for cls, value in (("clear", 200), ("foggy", 120)):
        (tmp_path / "weather" / cls).mkdir(parents=True)
        for i in range(3):
            img = np.full((90, 160, 3), value + i, np.uint8)
            cv2.imwrite(str(tmp_path / "weather" / cls / f"{i}.png"), img)
    d = tiny_cfg_dict(n_train=8, n_val=4)
    d["data"]["train"].append(
        {"kind": "folder", "path": str(tmp_path / "weather"), "task": "weather", "name": "wx"}
    )
    d["data"]["temperature"] = 2.0
    d["train"].update(epochs=1, batch_size=7)
    lines: list[str] = []
    train(
        config_from_dict(d, "mix"),
        tmp_path / "run",
        "cpu",
        progress=False,
        data_root=tmp_path / "data",
        log=lambda *a: lines.append(" ".join(map(str, a))),
    )
    text = "\n".join(lines)
    assert "sources (temperature 2.0):" in text
    rows = {r.split()[0]: r.split() for r in text.splitlines() if r.startswith("  ")}
    p = source_probabilities([8, 6], [1, 1], 2.0)
    assert rows["source"] == ["source", "images", "share", "det", *ATTRIBUTES, "curvature"]
    assert rows["synthetic[0]"] == ["synthetic[0]", "8", f"{p[0]:.0%}", "8", "8", "8", "8", "8"]
    assert rows["wx"] == ["wx", "6", f"{p[1]:.0%}", "-", "6", "-", "-", "-"]
