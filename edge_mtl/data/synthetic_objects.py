"""How each object class of the synthetic generator is drawn: one function per class, in
coordinates relative to the object's box, so the box size alone sets the object's scale."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge_mtl.data.synthetic_spec import _Obj


def fill(img: np.ndarray, pts: np.ndarray, color) -> None:
    """Fill the polygon ``pts`` (float (N, 2) xy pixels) anti-aliased, at 1/16-pixel precision."""
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)


@dataclass
class Painter:
    """Draws one object into its ``patch`` (uint8 BGR) and ``mask`` (uint8, 255 = object) in
    coordinates relative to its box: (0, 0) is the box's top-left corner (ox, oy) pixels and
    (1, 1) its bottom-right, the box being ``bw`` x ``bh`` pixels."""

    patch: np.ndarray
    mask: np.ndarray
    bw: float
    bh: float
    ox: float
    oy: float

    def at(self, x: float, y: float) -> tuple[float, float]:
        """Patch pixel coordinates of the box-relative point (x, y)."""
        return self.ox + x * self.bw, self.oy + y * self.bh

    def poly(self, pts: list[tuple[float, float]], color, into_mask: bool = True) -> None:
        p = np.array([self.at(x, y) for x, y in pts])
        fill(self.patch, p, color)
        if into_mask:
            fill(self.mask, p, 255)

    def rect(self, x0, y0, x1, y1, color, into_mask: bool = True) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, into_mask)

    def disc(self, cx, cy, r, color, into_mask: bool = True) -> None:
        x, y = self.at(cx, cy)
        c = (round(x * 16), round(y * 16))
        rad = max(16, round(r * min(self.bw, self.bh) * 16))
        cv2.circle(self.patch, c, rad, color, -1, cv2.LINE_AA, shift=4)
        if into_mask:
            cv2.circle(self.mask, c, rad, 255, -1, cv2.LINE_AA, shift=4)

    def lamp(self, lights: list, x: float, y: float, r: float, color) -> None:
        """Record a light source at box-relative (x, y) with radius ``r`` box widths."""
        lights.append((*self.at(x, y), r * self.bw, color))


_LAMP = (30, 30, 230)  # a vehicle's rear lamp, BGR
_GLOW = (60, 60, 255)  # its light at night
_TYRE = (20, 20, 20)


def _draw_car(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    col = o.color
    p.rect(0.08, 0.0, 0.92, 0.45, col)  # cabin
    p.rect(0.16, 0.06, 0.84, 0.40, (60, 50, 45) if not night else (20, 20, 20), False)
    p.rect(0.0, 0.38, 1.0, 0.85, col)  # body
    p.rect(0.0, 0.78, 0.18, 1.0, _TYRE)  # wheels
    p.rect(0.82, 0.78, 1.0, 1.0, _TYRE)
    plate = (200, 200, 200) if o.variant % 2 else tuple(int(c * 0.45) for c in col)
    p.rect(0.3, 0.62, 0.7, 0.74, plate, False)
    for lx in (0.06, 0.80):
        p.rect(lx, 0.45, lx + 0.14, 0.56, _LAMP, False)
        p.lamp(lights, lx + 0.07, 0.5, 0.12, _GLOW)


def _draw_truck(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    p.rect(0.0, 0.0, 1.0, 0.82, o.color)  # cargo box
    dark = tuple(int(c * 0.45) for c in o.color)
    for i in range(1, 4):
        p.rect(i / 4 - 0.01, 0.03, i / 4 + 0.01, 0.8, dark, False)
    p.rect(0.02, 0.78, 0.98, 0.9, (50, 50, 50))  # bumper
    p.rect(0.05, 0.88, 0.25, 1.0, _TYRE)
    p.rect(0.75, 0.88, 0.95, 1.0, _TYRE)
    for lx in (0.04, 0.86):
        p.rect(lx, 0.74, lx + 0.1, 0.8, _LAMP, False)
        p.lamp(lights, lx + 0.05, 0.77, 0.08, _GLOW)


def _draw_bus(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    p.rect(0.0, 0.0, 1.0, 0.92, o.color)
    p.rect(0.06, 0.05, 0.94, 0.13, _TYRE, False)  # destination display
    p.rect(0.07, 0.07, 0.6, 0.11, (0, 180, 255), False)
    p.rect(0.06, 0.18, 0.94, 0.5, (70, 60, 50) if not night else (90, 160, 190), False)
    p.rect(0.0, 0.86, 1.0, 0.93, (40, 40, 40))
    p.rect(0.06, 0.9, 0.22, 1.0, _TYRE)
    p.rect(0.78, 0.9, 0.94, 1.0, _TYRE)
    for lx in (0.04, 0.88):
        p.rect(lx, 0.66, lx + 0.08, 0.78, _LAMP, False)
        p.lamp(lights, lx + 0.04, 0.72, 0.07, _GLOW)


def _draw_person(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    skin = [(140, 170, 210), (80, 110, 160), (60, 80, 110)][o.variant]
    p.disc(0.5, 0.08, 0.5 * 0.16 * p.bh / max(p.bw, 1e-6) if p.bh < p.bw else 0.28, skin)
    p.rect(0.18, 0.15, 0.82, 0.55, o.color)  # torso
    p.rect(0.0, 0.17, 0.18, 0.5, o.color)  # arms
    p.rect(0.82, 0.17, 1.0, 0.5, o.color)
    pants = (60, 40, 30) if o.variant != 1 else (40, 40, 40)
    step = 0.12 * (1 if o.variant % 2 else -1)
    p.rect(0.2 + step / 2, 0.55, 0.47 + step / 2, 1.0, pants)
    p.rect(0.53 - step / 2, 0.55, 0.8 - step / 2, 1.0, pants)


def _draw_traffic_light(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    p.rect(0.0, 0.0, 1.0, 1.0, (25, 30, 30))
    lamps = [(40, 40, 240), (30, 200, 250), (90, 220, 60)]
    for i, c in enumerate(lamps):
        on = i == o.variant
        p.disc(0.5, 0.18 + 0.32 * i, 0.3, c if on else (50, 55, 55), False)
        if on:
            p.lamp(lights, 0.5, 0.18 + 0.32 * i, 0.5, c)


def _draw_traffic_sign(p: Painter, o: _Obj, night: bool, lights: list) -> None:
    if o.variant == 0:  # round prohibitory
        p.disc(0.5, 0.5, 0.5, (30, 30, 210))
        p.disc(0.5, 0.5, 0.36, (235, 235, 235), False)
    elif o.variant == 1:  # triangle warning
        p.poly([(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)], (30, 30, 210))
        p.poly([(0.5, 0.3), (0.78, 0.85), (0.22, 0.85)], (235, 235, 235), False)
    else:  # rectangular information
        p.rect(0.0, 0.0, 1.0, 1.0, (160, 90, 20))
        p.rect(0.15, 0.3, 0.85, 0.45, (235, 235, 235), False)
        p.rect(0.15, 0.55, 0.65, 0.7, (235, 235, 235), False)


DRAW = {
    "car": _draw_car,
    "truck": _draw_truck,
    "bus": _draw_bus,
    "person": _draw_person,
    "traffic light": _draw_traffic_light,
    "traffic sign": _draw_traffic_sign,
}
