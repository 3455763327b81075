"""Progressive resizing: which size a step trains at, and that a resized batch keeps its boxes
on its objects."""

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from edge_mtl.config import ConfigError, config_from_dict, validate  # noqa: E402
from edge_mtl.losses import MultiTaskLoss  # noqa: E402
from edge_mtl.model import MultiTaskModel  # noqa: E402
from edge_mtl.progressive import low_res_hw, resize_batch, stage_at, train_hw  # noqa: E402
from edge_mtl.tasks.detect import level_info  # noqa: E402
from edge_mtl.train import train  # noqa: E402

from .conftest import tiny_cfg_dict  # noqa: E402


def test_low_res_sizes_are_whole_multiples_of_the_largest_stride():
    assert low_res_hw((256, 448), 0.75, 32) == (192, 320)  # 336 is not a multiple of 32
    assert low_res_hw((256, 448), 0.5, 32) == (128, 224)
    assert low_res_hw((64, 96), 0.25, 32) == (32, 32)  # never below one cell of the coarsest map


def test_the_early_part_of_the_run_trains_small_and_the_rest_at_full_size():
    d = tiny_cfg_dict(hw=(128, 192))
    d["train"].update(low_res_scale=0.5, low_res_until=0.4)
    cfg = config_from_dict(d)
    assert train_hw(0.0, cfg.model, cfg.train) == (64, 96)
    assert train_hw(0.39, cfg.model, cfg.train) == (64, 96)
    assert train_hw(0.4, cfg.model, cfg.train) == (128, 192)
    off = config_from_dict(tiny_cfg_dict(hw=(128, 192)))
    assert train_hw(0.0, off.model, off.train) == (128, 192)


def test_stages_train_smaller_then_larger_then_full_size():
    d = tiny_cfg_dict(hw=(128, 192))
    d["train"].update(low_res_scale=[0.25, 0.5], low_res_until=[0.3, 0.6])
    cfg = config_from_dict(d)
    assert cfg.train.low_res_scale == (0.25, 0.5)
    sizes = [train_hw(f, cfg.model, cfg.train) for f in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)]
    assert sizes == [(32, 32), (32, 32), (64, 96), (64, 96), (128, 192), (128, 192)]
    assert stage_at(0.45, cfg.train) == (0.5, 0.6) and stage_at(0.6, cfg.train) is None


@pytest.mark.parametrize(
    "scale,until,says",
    [
        ([0.5, 0.75], [0.5], "one scale per stage, got 2 scale(s) and 1 run fraction(s)"),
        ([0.5, 0.75], [0.6, 0.5], "stages must end in increasing order, got [0.6, 0.5]"),
        ([0.5, 1.5], [0.3, 0.5], "train.low_res_scale: must be in (0, 1]"),
        ("half", 0.5, "expected a number or a list, got 'half'"),
    ],
)
def test_bad_stages_are_named(scale, until, says):
    d = tiny_cfg_dict()
    d["train"].update(low_res_scale=scale, low_res_until=until)
    with pytest.raises(ConfigError) as e:
        config_from_dict(d, "c.yaml")
    assert says in str(e.value) and "train.low_res" in str(e.value)


@pytest.mark.parametrize("key,value", [("low_res_scale", 0.0), ("low_res_until", 1.5)])
def test_out_of_range_settings_name_the_key(key, value):
    cfg = config_from_dict(tiny_cfg_dict())
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **{key: value}))
    with pytest.raises(ConfigError, match=f"train.{key}"):
        validate(bad)


def test_a_resized_batch_keeps_each_box_on_its_object():
    images = torch.zeros(2, 3, 128, 192)
    boxes = [torch.tensor([[40.0, 20.0, 80.0, 60.0]]), torch.tensor([[100.0, 64.0, 180.0, 120.0]])]
    for img, b in zip(images, boxes):
        x0, y0, x1, y1 = b[0].int().tolist()
        img[:, y0:y1, x0:x1] = 1.0
    targets = [{"boxes": b, "classes": torch.tensor([0]), "cls_weather": 1} for b in boxes]
    small, scaled = resize_batch(images, targets, (64, 80))
    assert small.shape == (2, 3, 64, 80)
    assert scaled[0]["cls_weather"] == 1 and targets[0]["boxes"] is boxes[0]  # inputs untouched
    torch.testing.assert_close(
        scaled[0]["boxes"], torch.tensor([[40 * 80 / 192, 10, 80 * 80 / 192, 30]])
    )
    for img, t in zip(small, scaled):
        ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
        x0, y0, x1, y1 = t["boxes"][0].tolist()
        # the bright pixels of the resized image lie in the scaled box (within a pixel)
        assert (
            x0 - 1 <= xs.min() and xs.max() + 1 <= x1 and y0 - 1 <= ys.min() and ys.max() + 1 <= y1
        )
        assert abs((xs.float().mean() + 0.5) - (x0 + x1) / 2) < 1.0
    same, same_t = resize_batch(images, targets, (128, 192))
    assert same is images and same_t is targets


def test_the_detection_loss_follows_the_input_size():
    cfg = config_from_dict(tiny_cfg_dict(hw=(128, 192)))
    model = MultiTaskModel(cfg.model)
    loss_fn = MultiTaskLoss(cfg.model, {}, torch.device("cpu"))
    targets = [
        {
            "boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]),
            "classes": torch.tensor([1]),
            **{f"cls_{t}": 0 for t in cfg.model.classify},
            "reg_curvature": 0.0,
        }
    ]
    for hw in ((64, 96), (128, 192)):
        out = model(torch.randn(1, 3, *hw))
        points = level_info(cfg.model, torch.device("cpu"), hw)[0]
        assert points.shape[0] == out["det_boxes"].shape[1]
        loss, parts = loss_fn(out, targets, hw)
        assert torch.isfinite(loss) and parts["det"] > 0


def test_a_progressive_run_says_when_it_switches_and_trains_at_both_sizes(
    tmp_path, monkeypatch, capsys
):
    d = tiny_cfg_dict(n_train=8, n_val=4, hw=(128, 192))  # 2 epochs x 2 steps
    d["train"].update(low_res_scale=0.5, low_res_until=0.5)
    cfg = config_from_dict(d)
    seen, lines = [], []
    real_call = MultiTaskLoss.__call__

    def spy(self, out, targets, hw=None):
        seen.append(tuple(hw))
        return real_call(self, out, targets, hw)

    monkeypatch.setattr(MultiTaskLoss, "__call__", spy)
    metrics = train(
        cfg, tmp_path / "run", progress=False, data_root=tmp_path / "data", log=lines.append
    )
    assert seen == [(64, 96), (64, 96), (128, 192), (128, 192)]
    switches = [line for line in lines if "training at" in line]
    assert switches[0].startswith("step 0: training at 64x96 (train.low_res_scale 0.5 until 50%")
    assert switches[1].startswith("step 2: training at 128x192 (the model's input size")
    assert "det/map50" in metrics  # evaluated at the full size
    assert "it/s" not in capsys.readouterr().err  # progress=False: no progress bar
