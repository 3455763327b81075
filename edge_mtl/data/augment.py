"""Training augmentation for driving images, applied in model-input pixels after the letterbox.

Every random draw comes from the numpy Generator passed in, so one (seed, epoch, index) triple
always gives the same sample. Geometric steps move the boxes with the pixels; a horizontal flip
also negates curvature targets (a mirrored road bends the other way).
Images are uint8 BGR (H, W, 3); boxes float32 (K, 4) xyxy input pixels; classes int64 (K,).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_mtl.config import AugmentConfig
from edge_mtl.runtime.preprocess import PAD_VALUE

MIN_BOX_PX = 2.0  # after scale jitter, boxes narrower or shorter than this are dropped
MIN_VISIBLE = 0.5  # ... and so are boxes with less than this fraction of their area in view


def augment(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    targets: dict[str, float],
    cfg: AugmentConfig,
    rng: np.random.Generator,
    masks: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float], dict[str, np.ndarray]]:
    """Flip, photometric jitter, scale jitter as ``cfg`` says; returns new (img, boxes, classes,
    targets, masks) and leaves the inputs untouched. Boxes dropped by scale jitter take their
    classes. ``masks`` (uint8 (H, W) class maps, 255 = no label) move with the pixels; the same
    draws are made with or without them, so a sample's image does not depend on its masks."""
    masks = dict(masks or {})
    if rng.random() < cfg.hflip:
        img, boxes = hflip(img, boxes)
        targets = {k: -v if "curv" in k else v for k, v in targets.items()}
        masks = {k: np.ascontiguousarray(m[:, ::-1]) for k, m in masks.items()}
    if cfg.hsv > 0:
        img = photometric(img, rng, cfg.hsv)
    if cfg.scale > 0:
        img, boxes, classes, masks = scale_jitter(img, boxes, classes, rng, cfg.scale, masks)
    return img, boxes, classes, targets, masks


def hflip(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; pixel column j goes to W-1-j, so box edge x goes to W-x."""
    w = img.shape[1]
    out = np.asarray(boxes, np.float32)[:, [2, 1, 0, 3]]
    out[:, [0, 2]] = w - out[:, [0, 2]]
    return np.ascontiguousarray(img[:, ::-1]), out


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random contrast, brightness, saturation and colour cast, scaled by ``strength`` in [0, 1].

    The colour cast (a small gain per channel, as from white balance or sodium street lights)
    stands in for a hue shift at a fraction of the cost of a round trip through HSV.
    """
    contrast = 1 + rng.uniform(-0.25, 0.25) * strength
    brightness = rng.uniform(-15, 15) * strength
    saturation = 1 + rng.uniform(-0.3, 0.3) * strength
    cast = (1 + rng.uniform(-0.06, 0.06, size=3) * strength).astype(np.float32)
    # Per pixel, out_c = cast_c * (contrast * (gray + saturation * (f_c - gray)) +
    # (1 - contrast) * mean + brightness), with gray the pixel's channel mean and mean the
    # image's (saturation keeps it). That is one 3x4 colour matrix: cv2.transform applies it
    # in a single pass with rounding and saturation to uint8 (5.1 -> 0.8 ms at 256x448).
    mean = float(np.mean(cv2.mean(img)[:3]))
    mix = np.full((3, 3), (1 - saturation) / 3) + np.eye(3) * saturation
    matrix = cast[:, None] * contrast * mix
    offset = cast * ((1 - contrast) * mean + brightness)
    return cv2.transform(img, np.hstack([matrix, offset[:, None]]).astype(np.float32))


def scale_jitter(
    img: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    amount: float,
    masks: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Zoom by a random factor z in [1 - amount, 1 + amount] at a random place, same output size.

    Zooming in crops a random window of the enlarged image; zooming out places the shrunk image
    at a random position on PAD_VALUE grey (the letterbox colour). A point x moves to
    ``z * x + t``; boxes are clipped to the image and dropped when under MIN_BOX_PX on a side or
    with less than MIN_VISIBLE of their area left. ``masks`` take the same warp, nearest-
    neighbour, with 255 (no label) where the image gets padding.
    """
    h, w = img.shape[:2]
    z = rng.uniform(1 - amount, 1 + amount)
    tx, ty = rng.uniform(0, 1, size=2) * (w * (1 - z), h * (1 - z))
    # warpAffine maps pixel centres (integer coordinates), boxes map pixel edges: shift by
    # (z - 1) / 2 so both describe the same continuous transform.
    m = np.array([[z, 0, tx + (z - 1) / 2], [0, z, ty + (z - 1) / 2]], np.float64)
    out = cv2.warpAffine(
        img,
        m,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_VALUE,) * 3,
    )
    warped = {
        k: cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=255)
        for k, mask in (masks or {}).items()
    }
    moved = np.asarray(boxes, np.float32) * z + np.array([tx, ty, tx, ty], np.float32)
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    clipped = np.clip(moved, 0, np.array([w, h, w, h], np.float32))
    bw, bh = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (bw >= MIN_BOX_PX) & (bh >= MIN_BOX_PX) & (bw * bh >= MIN_VISIBLE * area)
    return out, clipped[keep], np.asarray(classes)[keep], warped
