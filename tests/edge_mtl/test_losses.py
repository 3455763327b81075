"""Detection target assignment: which dense locations learn which object."""

import pytest

torch = pytest.importorskip("torch")

from edge_mtl.config import config_from_dict  # noqa: E402
from edge_mtl.losses import assign, centerness_target, grown_to_grid, level_info  # noqa: E402

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
