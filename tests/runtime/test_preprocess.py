"""Letterbox + normalisation: geometry, pixel values, and the box round trip."""

from __future__ import annotations

import numpy as np
import pytest

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    boxes_to_frame,
    boxes_to_input,
    letterbox,
    normalize,
    preprocess,
)


@pytest.mark.parametrize(
    ("frame_hw", "size_hw", "scale", "pad_xy"),
    [
        ((48, 64), (32, 32), 0.5, (0, 4)),  # wide frame: bars top and bottom
        ((64, 32), (32, 32), 0.5, (8, 0)),  # tall frame: bars left and right
        ((16, 16), (32, 64), 2.0, (16, 0)),  # upscale
        ((32, 32), (32, 32), 1.0, (0, 0)),  # identity
    ],
)
def test_letterbox_geometry(frame_hw, size_hw, scale, pad_xy) -> None:
    frame = np.full((*frame_hw, 3), 200, np.uint8)
    out, lb = letterbox(frame, size_hw, pad_value=114)
    assert out.shape == (*size_hw, 3) and out.dtype == np.uint8
    assert lb.scale == pytest.approx(scale)
    assert (lb.pad_x, lb.pad_y) == pad_xy
    assert lb.frame_hw == frame_hw
    px, py = pad_xy
    h, w = round(frame_hw[0] * scale), round(frame_hw[1] * scale)
    assert (out[py : py + h, px : px + w] == 200).all()
    assert (out == 114).sum() == 3 * (size_hw[0] * size_hw[1] - h * w)


def test_box_round_trip() -> None:
    _, lb = letterbox(np.zeros((720, 1280, 3), np.uint8), (384, 640))
    boxes = np.array([[0, 0, 1280, 720], [100.5, 200.25, 300, 400], [640, 360, 641, 361]])
    back = boxes_to_frame(boxes_to_input(boxes, lb), lb)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_boxes_to_frame_clips_to_the_frame() -> None:
    _, lb = letterbox(np.zeros((48, 64, 3), np.uint8), (32, 32))  # scale .5, pad_y 4
    out = boxes_to_frame(np.array([[-5, 0, 40, 40]], np.float32), lb)
    np.testing.assert_allclose(out, [[0, 0, 64, 48]])


def test_normalize_values_and_layout() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 255  # B, G, R
    x = normalize(img)
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32 and x.flags.c_contiguous
    for c, value in enumerate((255, 20, 10)):  # RGB order out
        want = (value / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        np.testing.assert_allclose(x[0, c], want, rtol=1e-6)


def test_preprocess_batches_any_sizes() -> None:
    frames = [np.zeros((10, 20, 3), np.uint8), np.zeros((30, 5, 3), np.uint8)]
    x, lbs = preprocess(frames, (32, 32))
    assert x.shape == (2, 3, 32, 32)
    assert [lb.frame_hw for lb in lbs] == [(10, 20), (30, 5)]


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 1), (0, 5, 3)])
def test_letterbox_rejects_non_bgr(shape) -> None:
    with pytest.raises(InputError, match="HxWx3"):
        letterbox(np.zeros(shape, np.uint8), (32, 32))
