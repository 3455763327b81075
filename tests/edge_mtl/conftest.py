import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from edge_mtl.config import config_from_dict  # noqa: E402
from edge_mtl.data.labels import ATTRIBUTES, DET_CLASSES  # noqa: E402


def tiny_cfg_dict(tmp_path=None, n_train=16, n_val=8, hw=(64, 96)):
    return {
        "model": {
            "backbone": "resnet18",
            "input_hw": list(hw),
            "neck_channels": 16,
            "head_convs": 1,
            "detect": list(DET_CLASSES),
            "classify": {k: list(v) for k, v in ATTRIBUTES.items()},
            "regress": ["curvature"],
        },
        "data": {
            "train": [{"kind": "synthetic", "n": n_train, "seed": 0, "frame_hw": [90, 160]}],
            "val": [{"kind": "synthetic", "n": n_val, "seed": 500, "frame_hw": [90, 160]}],
            "workers": 0,
        },
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.002, "warmup_steps": 2, "amp": "off"},
    }


@pytest.fixture
def tiny_cfg():
    return config_from_dict(tiny_cfg_dict(), "tiny")
