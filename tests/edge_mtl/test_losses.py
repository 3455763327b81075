"""Detection target assignment: which dense locations learn which object."""

import pytest

torch = pytest.importorskip("torch")

from edge_mtl.config import config_from_dict  # noqa: E402
from edge_mtl.tasks.detect import (  # noqa: E402
    assign,
    centerness_target,
    grown_to_grid,
    level_info,
    level_range,
)

from .conftest import tiny_cfg_dict  # noqa: E402


def _level():
    cfg = config_from_dict(tiny_cfg_dict(), "tiny").model  # 64x96 input, strides 8, 16, 32
    return level_info(cfg, torch.device("cpu"))


def test_a_box_thinner_than_the_grid_gets_a_cell_that_can_score():
    points, strides, ranges = _level()
    # 6 px wide, between the stride-8 cell centres at x = 12 and x = 20: none lies inside it
    box = torch.tensor([[13.0, 20.0, 19.0, 36.0]])
    idx = assign(points, strides, ranges, box)
    pos = torch.nonzero(idx == 0).flatten()
    assert len(pos) >= 1 and bool((strides[pos] == 8).all())
    grown = grown_to_grid(box.expand(len(pos), 4), strides[pos])
    ctr = centerness_target(points[pos], grown)
    # against the true box every such cell is outside it, and its centerness target would be 0
    assert float(centerness_target(points[pos], box.expand(len(pos), 4)).max()) == 0.0
    assert float(ctr.max()) > 0.4  # sqrt(0.2 x 1): 4 px off-centre in a box grown to 12 px


def test_boxes_wider_than_the_stride_are_not_grown():
    boxes = torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 10.0, 14.0, 50.0]])
    grown = grown_to_grid(boxes, torch.tensor([8.0, 8.0]))
    assert torch.equal(grown[0], boxes[0])
    assert grown[1].tolist() == [6.0, 10.0, 18.0, 50.0]  # only the 4 px width, to 1.5 strides


def test_large_objects_get_many_locations_small_ones_at_least_one():
    points, strides, ranges = _level()
    boxes = torch.tensor([[4.0, 4.0, 60.0, 60.0], [70.0, 40.0, 75.0, 45.0]])
    idx = assign(points, strides, ranges, boxes)
    assert int((idx == 0).sum()) > 4 and int((idx == 1).sum()) >= 1


def test_level_ranges_keep_fcos_for_p3_p5_and_give_p2_the_smallest_objects():
    assert [level_range((8, 16, 32), i) for i in range(3)] == [
        (0.0, 64.0),
        (64.0, 128.0),
        (128.0, float("inf")),
    ]
    assert [level_range((4, 8, 16, 32), i) for i in range(2)] == [(0.0, 32.0), (32.0, 64.0)]
    d = tiny_cfg_dict()
    d["model"]["strides"] = [4, 8, 16, 32]
    points, strides, ranges = level_info(config_from_dict(d).model, torch.device("cpu"))
    # a 6x6 px light goes to the stride-4 grid; an 88 px car reaches over 32 px from every
    # point near its centre, so it stays on the coarser levels
    boxes = torch.tensor([[21.0, 21.0, 27.0, 27.0], [2.0, 2.0, 90.0, 62.0]])
    idx = assign(points, strides, ranges, boxes)
    assert set(strides[idx == 0].tolist()) == {4.0}
    assert 4.0 not in set(strides[idx == 1].tolist()) and 8.0 in set(strides[idx == 1].tolist())


def test_the_retired_det_object_balance_key_is_refused_in_configs_but_not_in_checkpoints():
    from edge_mtl.checkpoint import config_of
    from edge_mtl.config import ConfigError

    d = tiny_cfg_dict()
    d["train"]["det_object_balance"] = 0.5
    with pytest.raises(ConfigError, match=r"train\.det_object_balance: unknown key"):
        config_from_dict(d, "x.yaml")
    cfg = config_of({"config": d}, "old.pt")  # a checkpoint written before the key retired
    assert cfg.model.detect == tuple(d["model"]["detect"])
