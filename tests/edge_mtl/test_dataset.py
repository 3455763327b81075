"""Several sources mixed by records_for and MultiTaskDataset (edge_mtl.data.dataset)."""

import math

import numpy as np

from edge_mtl.config import config_from_dict
from edge_mtl.data.dataset import MultiTaskDataset, records_for
from tests.edge_mtl.conftest import tiny_cfg_dict
from tests.edge_mtl.loader_files import (
    CAR,
    TRUCK,
    class_folders,
    kitti_root,
)


def test_mixed_sources_records_and_targets(tmp_path, capsys):
    d = tiny_cfg_dict(hw=(64, 96))
    d["data"] = {
        "train": [
            {"kind": "kitti", "path": str(kitti_root(tmp_path))},
            {
                "kind": "folder",
                "path": str(class_folders(tmp_path)),
                "task": "weather",
                "name": "wx",
            },
        ],
        "val": [],
    }
    cfg = config_from_dict(d)
    recs = records_for(cfg.data.train, cfg, tmp_path)
    assert [r.source for r in recs] == ["kitti[0]"] * 3 + ["wx"] * 3
    assert capsys.readouterr().out.splitlines() == [
        "kitti[0]: 3 images, 4 boxes; unknown categories skipped (map them in categories): "
        "Misc 1, Cyclist 1; ignored: DontCare 1",
        "wx: 3 images; unknown categories skipped (map them in categories): sunny 2",
    ]
    ds = MultiTaskDataset(recs, cfg, train=False)
    _, t = ds[1]  # KITTI 1242x375 -> 96x29 letterbox: scale 96/1242, pad_y 17
    assert t["has_boxes"] is True and t["source"] == "kitti[0]" and t["cls_weather"] == -1
    s = 96 / 1242
    np.testing.assert_allclose(
        t["boxes"].numpy(),
        [[1 * s, 2 * s + 17, 50 * s, 40 * s + 17], [60 * s, 10 * s + 17, 140 * s, 90 * s + 17]],
        rtol=1e-6,
    )
    assert t["classes"].tolist() == [CAR, TRUCK] and math.isnan(t["reg_curvature"])
    x, t = ds[3]
    assert x.shape == (3, 64, 96) and t["has_boxes"] is False and t["source"] == "wx"
    assert t["boxes"].shape == (0, 4) and t["classes"].shape == (0,)
    assert (t["cls_weather"], t["cls_scene"], t["cls_timeofday"]) == (2, -1, -1)
