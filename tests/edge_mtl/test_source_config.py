"""The data.train source entries of a config: kinds, keys, names, checks."""

import pytest

from edge_mtl.config import ConfigError, config_from_dict
from tests.edge_mtl.conftest import tiny_cfg_dict


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"kind": "lidar", "path": "x"}, r"data.train\[0\] \(lidar\[0\]\): unknown kind 'lidar'"),
        ({"kind": "kitti"}, r"data.train\[0\] \(kitti\[0\]\): needs a path"),
        ({"kind": "folder", "path": "w"}, r"task must name a model.classify task"),
        ({"kind": "folder", "path": "w", "task": "season"}, r"got 'season'"),
        ({"kind": "coco", "path": "coco/"}, r"path must be the COCO JSON file, got 'coco/'"),
        ({"kind": "kitti", "path": "k", "task": "weather"}, r"task is only for kind folder"),
        ({"kind": "kitti", "path": "k", "images": "i"}, r"images is only for kinds coco and bdd"),
        (
            {"kind": "kitti", "path": "k", "categories": {"Cyclist": "bicycle"}},
            r"categories.Cyclist: 'bicycle' is not a model class",
        ),
        (
            {"kind": "folder", "path": "w", "task": "scene", "categories": {"x": "car"}},
            r"categories.x: 'car' is not a model class \(highway, city street, residential\)",
        ),
    ],
)
def test_config_source_checks(source, message):
    d = tiny_cfg_dict()
    d["data"]["train"] = [source]
    with pytest.raises(ConfigError, match=message):
        config_from_dict(d, "c.yaml")


def test_config_source_names_differ():
    d = tiny_cfg_dict()
    d["data"]["train"] = [
        {"kind": "synthetic", "n": 4, "name": "a"},
        {"kind": "synthetic", "n": 4, "name": "a"},
    ]
    with pytest.raises(
        ConfigError, match=r"data.train: source names must differ, got \['a', 'a'\]"
    ):
        config_from_dict(d, "c.yaml")


def test_config_box_sources_need_a_detection_head():
    d = tiny_cfg_dict()
    d["model"]["detect"] = []
    d["data"]["train"] = [{"kind": "kitti", "path": "k"}]
    with pytest.raises(ConfigError, match=r"kitti has only box labels, and model.detect is empty"):
        config_from_dict(d, "c.yaml")


def test_config_new_source_keys_and_augment_range():
    d = tiny_cfg_dict()
    d["data"]["train"] = [
        {"kind": "coco", "path": "a/instances.json", "images": "a/img", "weight": 2},
        {"kind": "folder", "path": "w", "task": "timeofday", "categories": {"dusk": "Dawn/Dusk"}},
    ]
    d["data"]["augment"] = {"hflip": 0.5, "hsv": 0.5, "scale": 0.3}
    cfg = config_from_dict(d)
    assert cfg.data.train[0].images == "a/img" and cfg.data.train[1].task == "timeofday"
    assert [s.display_name(i) for i, s in enumerate(cfg.data.train)] == ["coco[0]", "folder[1]"]
    d["data"]["augment"] = {"scale": 1.0}
    with pytest.raises(ConfigError, match=r"data.augment: .* got hflip=0.5, hsv=0.0, scale=1.0"):
        config_from_dict(d)
