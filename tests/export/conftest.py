"""A tiny real checkpoint (ResNet18 trunk, 64x96 input, detect + two classify + one regress
task, optionally two segment tasks) saved in the training checkpoint format, and ONNX files
exported from it once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge_mtl.checkpoint import deployable, save_atomic  # noqa: E402
from edge_mtl.config import Config, ModelConfig  # noqa: E402
from edge_mtl.model import MultiTaskModel  # noqa: E402

torch.set_num_threads(1)  # the suite shares two cores with training jobs

HW = (64, 96)
DET_CLASSES = ("car", "person", "sign")
CLASSIFY = {"weather": ("clear", "rain", "fog"), "scene": ("city", "highway")}
REGRESS = ("curvature",)
SEGMENT = {"drivable": ("background", "direct", "alternative"), "lanes": ("background", "lane")}


def tiny_config(strides: tuple[int, ...] = (8, 16, 32), segment: bool = False) -> Config:
    return Config(
        model=ModelConfig(
            backbone="resnet18",
            input_hw=HW,
            neck_channels=16,
            head_convs=1,
            detect=DET_CLASSES,
            classify=CLASSIFY,
            regress=REGRESS,
            regress_units={"curvature": "1/(50 m)"},
            segment=SEGMENT if segment else {},
            strides=strides,
        )
    )


def tiny_model(cfg: Config, seed: int = 0, det_bias: float = 0.0) -> MultiTaskModel:
    """A randomly initialised model with non-trivial BatchNorm statistics (so folding matters)
    and a detection head that fires: a few dozen overlapping boxes per image above 0.25.
    ``det_bias`` is added to every class logit (1.0: a dozen boxes per image above 0.4)."""
    torch.manual_seed(seed)
    model = MultiTaskModel(cfg.model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
        det = model.heads["detect"]
        det.cls_out.weight.normal_(0.0, 0.3)
        det.cls_out.bias.copy_(torch.tensor([-2.0, -2.5, -3.0]) + det_bias)
        det.reg_out.bias.fill_(3.0)  # boxes ~60 px wide overlap their neighbours: NMS has work
        seg = model.heads["segment"].out.values() if "segment" in model.heads else ()
        for out in seg:
            out[-1].weight.normal_(0.0, 2.0)
            out[-1].bias.zero_()
        if seg:  # centre each class's logit over an image, so every class wins somewhere
            logits = model.eval()(torch.randn(1, 3, *HW))
            for task, out in model.heads["segment"].out.items():
                out[-1].bias.copy_(-logits[f"seg_{task}_logits"].mean((0, 2, 3)))
    return model.eval()


def write_checkpoint(
    path: Path, strides: tuple[int, ...] = (8, 16, 32), det_bias: float = 0.0, segment=False
) -> Path:
    """A tiny model's ``best.pt`` in the format ``edge_mtl.train`` writes (EMA = weights);
    ``segment``: with the drivable and lanes tasks."""
    cfg = tiny_config(strides, segment)
    model = tiny_model(cfg, det_bias=det_bias)
    save_atomic(deployable(cfg.to_dict(), model.state_dict()), path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` in the format ``edge_mtl.train`` writes (the EMA weights as the model)."""
    return write_checkpoint(tmp_path_factory.mktemp("run") / "best.pt")


@pytest.fixture(scope="session")
def seg_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``best.pt`` of the tiny model with the drivable and lanes segment tasks."""
    return write_checkpoint(tmp_path_factory.mktemp("seg") / "best.pt", segment=True)
