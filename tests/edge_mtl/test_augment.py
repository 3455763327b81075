"""Augmentation: boxes follow the pixels, drops follow the rules, a seed gives one result."""

import cv2
import numpy as np
import pytest

from edge_mtl.config import AugmentConfig, config_from_dict
from edge_mtl.data.augment import augment, hflip, photometric, scale_jitter
from edge_mtl.data.dataset import MultiTaskDataset, records_for
from tests.edge_mtl.conftest import tiny_cfg_dict


class FixedUniform:
    """Stands in for a numpy Generator: ``uniform`` returns low + u * (high - low) for planned u."""

    def __init__(self, *us: float) -> None:
        self.us = list(us)

    def uniform(self, low, high, size=None):
        n = 1 if size is None else size
        u = np.array([self.us.pop(0) for _ in range(n)])
        out = low + u * (high - low)
        return out[0] if size is None else out


def _canvas(rects, hw=(100, 120)):
    """Grey image with white filled rectangles; returns the image and their xyxy boxes."""
    img = np.full((*hw, 3), 114, np.uint8)
    for x1, y1, x2, y2 in rects:
        img[y1:y2, x1:x2] = 255
    return img, np.array(rects, np.float32).reshape(-1, 4)


def _white_box(img):
    ys, xs = np.nonzero(img[..., 0] > 184)  # halfway between the grey and the white
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 5.5, 9], [0, 0, 30, 20]], np.float32)
    img2, boxes2 = hflip(*hflip(img, boxes))
    np.testing.assert_array_equal(img2, img)
    np.testing.assert_array_equal(boxes2, boxes)


def test_flipped_box_covers_the_flipped_rectangle():
    img, boxes = _canvas([(10, 5, 25, 15)], hw=(40, 60))
    out, fb = hflip(img, boxes)
    np.testing.assert_array_equal(fb, [[35, 5, 50, 15]])
    assert _white_box(out) == [35, 5, 50, 15]


def test_augment_flip_negates_curvature_only():
    img, boxes = _canvas([(10, 5, 25, 15)], hw=(40, 60))
    cfg = AugmentConfig(hflip=1.0, hsv=0.0, scale=0.0)
    targets = {"curvature": 0.25, "speed": 3.0}
    out, b, c, t, _ = augment(img, boxes, np.array([4]), targets, cfg, np.random.default_rng(0))
    assert t == {"curvature": -0.25, "speed": 3.0} and targets["curvature"] == 0.25
    np.testing.assert_array_equal(b, [[35, 5, 50, 15]])
    assert c.tolist() == [4] and _white_box(out) == [35, 5, 50, 15]
    off = AugmentConfig(hflip=0.0, hsv=0.0, scale=0.0)
    out, b, c, t, _ = augment(img, boxes, np.array([4]), targets, off, np.random.default_rng(0))
    assert out is img and t == targets
    np.testing.assert_array_equal(b, boxes)


def test_zoom_in_at_top_left_moves_clips_and_drops_boxes():
    # u = 1 -> z = 1 + 0.5; t = 0: a point x goes to 1.5 x
    img, boxes = _canvas([(10, 10, 30, 30), (60, 10, 80, 30), (70, 50, 78, 80)])
    out, b, c, _ = scale_jitter(img, boxes, np.array([0, 1, 2]), FixedUniform(1, 0, 0), 0.5)
    # box 1 -> [90, 15, 120, 45]: fully in; box 2 -> x 105..117, y 75..120 -> clipped 75..100,
    # 25 of 45 rows visible (more than half): kept
    np.testing.assert_array_equal(b, [[15, 15, 45, 45], [90, 15, 120, 45], [105, 75, 117, 100]])
    assert c.tolist() == [0, 1, 2]
    assert _white_box(out[:, :60]) == [15, 15, 45, 45]
    _, b, c, _ = scale_jitter(img, boxes, np.arange(3), FixedUniform(1, 1, 0), 0.5)
    # t = (120 * -0.5, 0) = (-60, 0): box 0 -> x -45..-15 (gone), box 1 -> 30..60
    np.testing.assert_array_equal(b, [[30, 15, 60, 45], [45, 75, 57, 100]])
    assert c.tolist() == [1, 2]


def test_boxes_losing_most_area_or_too_small_are_dropped():
    img, boxes = _canvas([(10, 10, 30, 30), (100, 10, 115, 30), (50, 50, 53, 53)])
    # z = 1.5, t = 0: box 1 -> x 150..172 entirely outside a 120 wide image
    _, b, c, _ = scale_jitter(img, boxes, np.arange(3), FixedUniform(1, 0, 0), 0.5)
    assert c.tolist() == [0, 2]
    # z = 0.5 (u = 0), t = 0: box 2 -> 1.5 px wide: dropped; box 1 -> x 50..57.5 kept
    _, b, c, _ = scale_jitter(img, boxes, np.arange(3), FixedUniform(0, 0, 0), 0.5)
    np.testing.assert_array_equal(b, [[5, 5, 15, 15], [50, 5, 57.5, 15]])
    assert c.tolist() == [0, 1]
    # a box with 20% of its width left in view is dropped: x 70..120 -> 105..180 at z = 1.5
    img, boxes = _canvas([(70, 10, 120, 30)])
    _, b, c, _ = scale_jitter(img, boxes, np.arange(1), FixedUniform(1, 0, 0), 0.5)
    assert b.shape == (0, 4) and c.shape == (0,)


@pytest.mark.parametrize("seed", range(8))
def test_scale_jitter_boxes_stay_inside_and_match_the_pixels(seed):
    img, boxes = _canvas([(40, 30, 80, 70)])
    out, b, c, _ = scale_jitter(img, boxes, np.array([5]), np.random.default_rng(seed), 0.4)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert len(b) == 1 and c.tolist() == [5]  # a central box never loses half its area here
    assert (b >= 0).all() and (b[:, [0, 2]] <= 120).all() and (b[:, [1, 3]] <= 100).all()
    found = _white_box(out)
    np.testing.assert_allclose(b[0], found, atol=1.0)


def test_photometric_changes_colours_not_geometry():
    img, _ = _canvas([(40, 30, 80, 70)])
    out = photometric(img, np.random.default_rng(3), 1.0)
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    assert _white_box(out) == [40, 30, 80, 70]  # white stays the brightest


def test_same_seed_same_sample_and_epochs_differ(tmp_path):
    img, boxes = _canvas([(40, 30, 80, 70)])
    cfg = AugmentConfig(hflip=0.5, hsv=0.8, scale=0.3)
    targets = {"curvature": 0.1}

    def run(seed):
        return augment(img, boxes, np.array([1]), targets, cfg, np.random.default_rng(seed))

    a, b = run((0, 1, 2)), run((0, 1, 2))
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3] and not np.array_equal(a[0], run((0, 2, 2))[0])

    (tmp_path / "w" / "clear").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "w" / "clear" / "1.png"), img)
    d = tiny_cfg_dict(hw=(64, 96))
    d["data"] = {
        "train": [{"kind": "folder", "path": str(tmp_path / "w"), "task": "weather"}],
        "val": [],
        "augment": {"hflip": 0.5, "hsv": 0.8, "scale": 0.3},
    }
    c = config_from_dict(d)
    ds = MultiTaskDataset(records_for(c.data.train, c, tmp_path), c, train=True)
    first = ds[0][0]
    assert ds[0][0].equal(first)
    ds.set_epoch(1)
    assert not ds[0][0].equal(first)


def test_photometric_is_the_saturation_contrast_brightness_cast_formula():
    """The one-pass colour matrix equals the step-by-step definition within one grey level."""
    img = (np.random.default_rng(0).random((24, 40, 3)) * 255).astype(np.uint8)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        contrast = 1 + rng.uniform(-0.25, 0.25)
        brightness = rng.uniform(-15, 15)
        saturation = 1 + rng.uniform(-0.3, 0.3)
        cast = 1 + rng.uniform(-0.06, 0.06, size=3)
        f = img.astype(np.float64)
        gray = f.mean(axis=2, keepdims=True)
        f = gray + (f - gray) * saturation
        mean = f.mean()
        expect = np.clip(((f - mean) * contrast + mean + brightness) * cast, 0, 255)
        out = photometric(img, np.random.default_rng(seed), 1.0)
        assert np.abs(out - expect).max() <= 1.0


def _scene(hw=(100, 120)):
    """A black image with two painted polygons (green: class 1, red: class 2) and its mask:
    the classes of exactly the painted pixels (uint8 (H, W))."""
    img = np.zeros((*hw, 3), np.uint8)
    mask = np.zeros(hw, np.uint8)
    for colour, cls, poly in (
        ((0, 255, 0), 1, [(5, 90), (70, 95), (30, 40)]),
        ((0, 0, 255), 2, [(80, 10), (115, 20), (100, 60), (85, 30)]),
    ):
        cv2.fillPoly(img, [np.array(poly, np.int32)], colour)
        cv2.fillPoly(mask, [np.array(poly, np.int32)], cls)
    return img, mask


def _painted(img):
    """The mask of an (augmented) scene image read off its pixels: 1 green, 2 red, 0 black,
    255 the grey padding; pixels blended by interpolation are left out (-1)."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    out = np.full(img.shape[:2], -1)
    out[(b == 0) & (g == 0) & (r == 0)] = 0
    out[(b == 0) & (g == 255) & (r == 0)] = 1
    out[(b == 0) & (g == 0) & (r == 255)] = 2
    out[(b == 114) & (g == 114) & (r == 114)] = 255
    return out


def test_flipped_mask_is_the_mask_of_the_flipped_scene():
    img, mask = _scene()
    before = mask.copy()
    cfg = AugmentConfig(hflip=1.0, hsv=0.0, scale=0.0)
    out, _, _, _, masks = augment(
        img, np.zeros((0, 4), np.float32), np.zeros(0), {}, cfg, np.random.default_rng(0),
        {"drivable": mask},
    )  # fmt: skip
    assert (_painted(out) >= 0).all() and masks["drivable"].flags.c_contiguous
    np.testing.assert_array_equal(masks["drivable"], _painted(out))
    np.testing.assert_array_equal(masks["drivable"], mask[:, ::-1])
    np.testing.assert_array_equal(mask, before)  # the input is untouched


@pytest.mark.parametrize("seed", range(6))
def test_scale_jitter_moves_masks_with_the_pixels(seed):
    img, mask = _scene()
    out, _, _, masks = scale_jitter(
        img, np.zeros((0, 4), np.float32), np.zeros(0), np.random.default_rng(seed), 0.4,
        {"drivable": mask, "lanes": (mask == 2).astype(np.uint8)},
    )  # fmt: skip
    want = _painted(out)
    sure = want >= 0  # pixels no interpolation blended
    assert sure.mean() > 0.9
    np.testing.assert_array_equal(masks["drivable"][sure], want[sure])
    lanes = np.where(want == 255, 255, want == 2)
    np.testing.assert_array_equal(masks["lanes"][sure], lanes[sure])
    z_out = (want == 255).any()  # zoomed out: the padding is unlabelled, as in the image
    assert z_out == (masks["drivable"] == 255).any()


def test_photometric_leaves_masks_alone_and_draws_do_not_depend_on_masks():
    img, mask = _scene()
    boxes = np.array([[30, 40, 70, 95]], np.float32)
    cfg = AugmentConfig(hflip=0.0, hsv=1.0, scale=0.0)
    out = augment(img, boxes, np.array([1]), {}, cfg, np.random.default_rng(3), {"m": mask})
    assert out[4]["m"] is mask or np.array_equal(out[4]["m"], mask)
    assert not np.array_equal(out[0], img)  # the colours did change
    cfg = AugmentConfig(hflip=0.5, hsv=0.8, scale=0.3)
    for seed in range(8):
        a = augment(img, boxes, np.array([1]), {"c": 1.0}, cfg, np.random.default_rng(seed))
        b = augment(
            img, boxes, np.array([1]), {"c": 1.0}, cfg, np.random.default_rng(seed),
            {"drivable": mask},
        )  # fmt: skip
        for x, y in zip(a[:3], b[:3]):
            np.testing.assert_array_equal(x, y)
        assert a[3] == b[3] and a[4] == {} and set(b[4]) == {"drivable"}
