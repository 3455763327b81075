"""The pixel labels of a synthetic scene, painted in step with its image.

``edge_mtl.data.synthetic`` hands the *same* projected polygons and lines it draws into the image
to a :class:`SceneMasks`, in the same painter's order: the road first (drivable area: the ego lane
``1 direct``, the rest of the road ``2 alternative``), then the lane markings on it (``1 lane``),
then everything drawn over the road (guardrails, buildings, trees, poles, objects), which paints
background (0) into both labels where it is seen. So each label pixel says what the image shows
there, occlusion included, as the boxes do. Atmosphere (fog, rain, snow, noise) changes no label,
like BDD100K's labels of a rainy frame.

Labels are filled without anti-aliasing (``cv2.LINE_8``) at the image's 1/16-pixel precision, so
a label edge lies within a pixel of the anti-aliased edge in the image. Canonical values
(:data:`edge_mtl.data.masks.MASK_CLASSES`); ``edge_mtl.data.masks.drivable_to_bdd`` and
``lanes_to_bdd`` turn them into BDD100K's PNG values.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Lane markings are labelled at their true projected width but never thinner than this many
# pixels in a 640-pixel-wide frame (scaled with the frame width): a 16 cm dash is under a pixel
# wide beyond ~70 m at 360x640, and a class a pixel wide or less is all but unlearnable after the
# letterbox shrinks it. The image keeps drawing the true (anti-aliased, faint) width.
LANE_MIN_PX = 3.0


def lane_min_px(width: int) -> int:
    """The minimum lane-marking label width in pixels for a frame ``width`` pixels wide."""
    return max(1, round(LANE_MIN_PX * width / 640))


def _pts16(pts: np.ndarray) -> np.ndarray:
    """float (N, 2) xy pixels -> int32 at 1/16-pixel precision (OpenCV's ``shift=4``)."""
    return np.round(np.asarray(pts, np.float64) * 16).astype(np.int32)


@dataclass
class SceneMasks:
    """Label maps of one scene, uint8 (H, W) each: ``drivable`` (0 background, 1 direct, 2
    alternative), ``lanes`` (0 background, 1 lane marking) and ``dashed`` (1 on the pixels of
    dashed markings, 0 on solid ones and elsewhere: BDD100K's lane style bit)."""

    drivable: np.ndarray
    lanes: np.ndarray
    dashed: np.ndarray

    @classmethod
    def empty(cls, hw: tuple[int, int]) -> SceneMasks:
        return cls(*(np.zeros(hw, np.uint8) for _ in range(3)))

    @property
    def min_px(self) -> int:
        """Minimum lane-marking label width of this frame, pixels."""
        return lane_min_px(self.drivable.shape[1])

    def road(self, road: np.ndarray, ego: np.ndarray) -> None:
        """The road surface polygon ``road`` (float (N, 2) xy pixels) becomes alternative, then
        the ego lane's polygon ``ego`` direct."""
        cv2.fillPoly(self.drivable, [_pts16(road)], 2, cv2.LINE_8, shift=4)
        cv2.fillPoly(self.drivable, [_pts16(ego)], 1, cv2.LINE_8, shift=4)

    def dash(self, poly: np.ndarray) -> None:
        """A dashed marking: the filled polygon (float (N, 2) xy pixels)."""
        cv2.fillPoly(self.lanes, [_pts16(poly)], 1, cv2.LINE_8, shift=4)
        cv2.fillPoly(self.dashed, [_pts16(poly)], 1, cv2.LINE_8, shift=4)

    def solid_line(self, pts: np.ndarray) -> None:
        """A solid marking along the polyline ``pts`` (float (N, 2) xy pixels), ``min_px``
        wide (the image draws it one pixel wide at every distance)."""
        cv2.polylines(self.lanes, [_pts16(pts)], False, 1, self.min_px, cv2.LINE_8, shift=4)

    def cover_poly(self, poly: np.ndarray) -> None:
        """Something opaque drawn over the road fills polygon ``poly``: background below it."""
        for m in (self.drivable, self.lanes, self.dashed):
            cv2.fillPoly(m, [_pts16(poly)], 0, cv2.LINE_8, shift=4)

    def cover_polyline(self, pts: np.ndarray, thickness: int) -> None:
        """An opaque polyline ``pts`` (float (N, 2) xy pixels) ``thickness`` px wide."""
        for m in (self.drivable, self.lanes, self.dashed):
            cv2.polylines(m, [_pts16(pts)], False, 0, thickness, cv2.LINE_8, shift=4)

    def cover_line(self, p0: tuple[int, int], p1: tuple[int, int], thickness: int) -> None:
        """An opaque straight line between integer pixels ``p0`` and ``p1`` (a pole)."""
        for m in (self.drivable, self.lanes, self.dashed):
            cv2.line(m, p0, p1, 0, thickness, cv2.LINE_8)

    def cover_disc(self, centre: tuple[int, int], radius: int) -> None:
        """An opaque disc (a tree's crown) at integer pixel ``centre``, ``radius`` px."""
        for m in (self.drivable, self.lanes, self.dashed):
            cv2.circle(m, centre, radius, 0, -1, cv2.LINE_8)

    def cover_pixels(self, region: tuple[slice, slice], seen: np.ndarray) -> None:
        """An object's visible pixels: ``seen`` bool over the frame's ``region``."""
        for m in (self.drivable, self.lanes, self.dashed):
            m[region][seen] = 0

    def finish(self) -> None:
        """Markings count only on the road: a lane pixel off the drivable area (a minimum-width
        marking reaching past the road's edge far away) is background."""
        self.lanes[self.drivable == 0] = 0
        self.dashed &= self.lanes
