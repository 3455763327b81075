import pytest
import torch

from edge_mtl.config import config_from_dict
from edge_mtl.model import MultiTaskModel
from edge_mtl.tasks import KINDS
from tests.edge_mtl.conftest import tiny_cfg_dict


@pytest.mark.parametrize("strides", [(8, 16, 32), (4, 8, 16, 32)])
@pytest.mark.parametrize("hw", [(64, 96), (96, 160)])
def test_output_shapes_per_task(hw, strides):
    d = tiny_cfg_dict(hw=hw)
    d["model"]["strides"] = list(strides)
    cfg = config_from_dict(d)
    model = MultiTaskModel(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, *hw))
    anchors = sum((hw[0] // s) * (hw[1] // s) for s in cfg.model.strides)
    assert out["det_boxes"].shape == (2, anchors, 4)
    assert out["det_scores"].shape == (2, anchors, len(cfg.model.detect))
    for task, names in cfg.model.classify.items():
        assert out[f"cls_{task}"].shape == (2, len(names))
    assert out["reg_curvature"].shape == (2, 1)
    assert set(model.output_names()) <= set(out)
    assert float(out["det_scores"].min()) >= 0 and float(out["det_scores"].max()) <= 1


def test_boxes_are_decoded_around_their_points():
    cfg = config_from_dict(tiny_cfg_dict())
    model = MultiTaskModel(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    b = out["det_boxes"][0]
    assert bool((b[:, 2] >= b[:, 0]).all()) and bool((b[:, 3] >= b[:, 1]).all())


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_registered_head_builds_alone(kind):
    d = tiny_cfg_dict()
    m = d["model"]
    m["detect"] = m["detect"] if kind == "detect" else []
    m["classify"] = m["classify"] if kind == "classify" else {}
    m["regress"] = m["regress"] if kind == "regress" else []
    if kind == "segment":
        m["segment"] = {"drivable": ["background", "direct", "alternative"]}
    cfg = config_from_dict(d)
    model = MultiTaskModel(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 96))
    assert list(model.heads) == [kind]
    tasks = KINDS[kind].declared(cfg.model)
    names = [n for t in tasks for n in KINDS[kind].output_names(t)]
    assert model.output_names() == names and len(names) >= len(tasks) >= 1
    for t in tasks:  # the shapes the kind declares are the shapes its head returns
        for name, shape in KINDS[kind].output_shapes(t, cfg.model, (64, 96)).items():
            assert tuple(out[name].shape) == (2, *shape)


def test_pretrained_trunk_loads_from_a_local_torchvision_state_dict(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    d = tiny_cfg_dict()
    d["model"]["pretrained"] = str(tmp_path / "r18.pth")
    model = MultiTaskModel(config_from_dict(d).model)
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_pretrained_path_that_is_not_a_resnet_is_refused(tmp_path):
    from edge_mtl.runtime.errors import InputError

    torch.save({"something": torch.zeros(3)}, tmp_path / "x.pth")
    d = tiny_cfg_dict()
    d["model"]["pretrained"] = str(tmp_path / "x.pth")
    with pytest.raises(InputError, match=r"x\.pth: not a torchvision resnet18 state dict"):
        MultiTaskModel(config_from_dict(d).model)


def test_detection_towers_keep_running_statistics_per_pyramid_level():
    """Each level is normalised by its own batch statistics in training, so eval mode must use
    each level's own running statistics, not one blend of all levels."""
    cfg = config_from_dict(tiny_cfg_dict())
    model = MultiTaskModel(cfg.model).train()
    with torch.no_grad():
        for _ in range(20):
            model(torch.randn(2, 3, 64, 96) * 3 + 1)
    tower = model.heads["detect"].cls_tower
    means = [norms[0].running_mean for norms in tower.norms]
    assert len(means) == len(cfg.model.strides)
    assert not torch.allclose(means[0], means[-1], atol=1e-3)
    # in eval mode a level's features go through that level's statistics
    tower.eval()
    f = torch.randn(1, cfg.model.neck_channels, 4, 6)
    for level, norms in enumerate(tower.norms):
        x = f
        for conv, norm in zip(tower.convs, norms):
            y = conv(x)
            mean, var = norm.running_mean[:, None, None], norm.running_var[:, None, None]
            y = (y - mean) / torch.sqrt(var + norm.eps)
            x = torch.relu(y * norm.weight[:, None, None] + norm.bias[:, None, None])
        assert torch.allclose(tower(f, level), x, atol=1e-5)


def test_strides_outside_the_supported_pyramids_are_refused():
    from edge_mtl.config import ConfigError

    d = tiny_cfg_dict()
    d["model"]["strides"] = [4, 8, 16]
    with pytest.raises(
        ConfigError, match=r"model\.strides: expected \[8, 16, 32\] or \[4, 8, 16, 32\]"
    ):
        config_from_dict(d, "x.yaml")


def test_a_stride_4_level_comes_from_c2_and_keeps_p4_for_curvature():
    """With P2 in the pyramid the detection head gains the finest level (the first anchors are
    a stride-4 grid) and the curvature head still reads P4, so adding P2 changes nothing else."""
    d = tiny_cfg_dict()
    d["model"]["strides"] = [4, 8, 16, 32]
    model = MultiTaskModel(config_from_dict(d).model).eval()
    assert len(model.neck.lateral) == 4 and model.neck.lateral[0].in_channels == 64
    seen = {}
    model.heads["regress"].register_forward_pre_hook(lambda m, a: seen.setdefault("p", a[0]))
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert seen["p"].shape[-2:] == (4, 6)  # P4 of a 64x96 input
    first = out["det_boxes"][0, 0]  # zero-size boxes at init sit on their cell centres
    assert float(first[0] + first[2]) / 2 < 4 and float(first[1] + first[3]) / 2 < 4
