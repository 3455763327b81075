"""Procedural driving scenes, deterministic by seed (numpy + OpenCV only, no torch).

A pinhole camera 1.5 m above a road that bends with ``curvature``; vehicles, pedestrians, traffic
lights and signs stand in the world and are projected, so sizes follow distance (about 8 px far
away to a third of the frame up close). Objects are painted far to near; each object's box is the
tight box of its *visible* pixels, so occluded and border-cut objects are labelled as seen.
Time of day, weather and scene type change many cues at once (sky, light level, tint, particles,
fog by depth, buildings/houses/guardrails), with brightness jittered so no single statistic
such as mean brightness gives the class away.

The random choices of a scene are drawn in ``synthetic_spec`` (``sample_spec`` -> ``SceneSpec``);
this module renders them through the camera and is the public API (``render_scene``,
``render_clip``, ``synthetic_cache_name``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_mtl.data.labels import DET_CLASSES
from edge_mtl.data.synthetic_spec import LANE_W, SceneSpec, _Obj, sample_spec

CAM_H = 1.5  # camera height above the road, metres
Z_NEAR = 3.0  # distance at which the ground meets the bottom image row, metres
# Lateral road offset = CURV_GAIN * curvature * z**2 metres: curvature 1 is a bend of radius
# 1 / (2 * CURV_GAIN) = 50 m. At 0.004 (125 m) a full bend moved the road by a few pixels near the
# horizon at training size and the curvature head never left the mean predictor.
CURV_GAIN = 0.010
# Part of the cache folder name of rendered scenes: bump it whenever the same seed renders
# different pixels or labels (here or in synthetic_spec.py), so stale caches are not reused.
GENERATOR_VERSION = 2
# world sizes (width, height) in metres per class
_SIZES = {
    "car": (1.8, 1.5),
    "truck": (2.5, 3.4),
    "bus": (2.6, 3.1),
    "person": (0.55, 1.75),
    "traffic light": (0.45, 1.1),
    "traffic sign": (0.75, 0.75),
}


@dataclass(frozen=True)
class Scene:
    """One rendered scene. ``image`` uint8 BGR (H, W, 3); ``boxes`` float32 (K, 4) xyxy pixels;
    ``classes`` int64 (K,) into DET_CLASSES; ``attributes`` weather/scene/timeofday names;
    ``curvature`` in [-1, 1] (signed road bend); ``ids`` int32 (H, W), k+1 where box k is seen."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    attributes: dict[str, str]
    curvature: float
    ids: np.ndarray


class _Camera:
    def __init__(self, spec: SceneSpec) -> None:
        self.h, self.w = spec.hw
        self.hy = spec.horizon
        self.f = (self.h - self.hy) * Z_NEAR / CAM_H
        self.curv = spec.curvature
        self.cam_x = spec.cam_x

    def road_x(self, z: np.ndarray | float) -> np.ndarray | float:
        return CURV_GAIN * self.curv * np.square(z)

    def project(self, x, y, z):
        """World (lateral x from road centre, height y, distance z) -> pixel (u, v)."""
        u = self.w / 2 + self.f * (np.add(x, self.road_x(z)) - self.cam_x) / z
        v = self.hy + self.f * (CAM_H - np.asarray(y)) / z
        return u, v


# ---------------------------------------------------------------------------------- rendering


def _sky_colors(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """(top, horizon) BGR float colours before the light level is applied."""
    table = {
        "daytime": ((205, 140, 70), (235, 205, 175)),
        "dawn/dusk": ((130, 80, 90), (90, 150, 245)),
        "night": ((45, 22, 12), (75, 55, 45)),
    }
    top, hor = (np.array(c, np.float32) for c in table[spec.timeofday])
    if spec.weather in ("overcast", "rainy", "snowy", "foggy"):
        gray_top = top.mean() * np.ones(3, np.float32)
        gray_hor = hor.mean() * np.ones(3, np.float32)
        mix = 0.85 if spec.weather != "overcast" else 0.7
        top = top * (1 - mix) + gray_top * mix
        hor = hor * (1 - mix) + gray_hor * mix
    return top, hor


def _light_level(spec: SceneSpec) -> float:
    base = {"daytime": 1.0, "dawn/dusk": 0.6, "night": 0.34}[spec.timeofday]
    base *= {"clear": 1.0, "overcast": 0.82, "rainy": 0.68, "foggy": 0.9, "snowy": 0.92}[
        spec.weather
    ]
    return base * spec.brightness


def _quad(cam: _Camera, x0, x1, y0, y1, z0, z1) -> np.ndarray:
    u, v = cam.project(
        np.array([x0, x1, x1, x0]), np.array([y0, y1, y1, y0]), np.array([z0, z0, z1, z1])
    )
    return np.stack([u, v], 1)


def _fill(img: np.ndarray, pts: np.ndarray, color) -> None:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)


def _draw_background(
    img: np.ndarray, spec: SceneSpec, cam: _Camera, travel: float, lights: list
) -> None:
    hy = round(spec.horizon)
    top, hor = _sky_colors(spec)
    t = np.linspace(0, 1, hy)[:, None]
    img[:hy] = (top * (1 - t) + hor * t)[:, None, :]
    ground = {
        "highway": (70, 120, 95),
        "city street": (120, 120, 125),
        "residential": (60, 140, 80),
    }[spec.scene]
    if spec.weather == "snowy":
        ground = (225, 225, 220)
    img[hy:] = ground
    zs = np.geomspace(Z_NEAR * 0.9, 400, 80)
    for xs, color in ((spec.road_half + 3.0, (150, 150, 150)), (spec.road_half, (85, 85, 88))):
        if xs == spec.road_half + 3.0 and spec.scene == "highway":
            continue  # no sidewalks on highways
        ul, vl = cam.project(-xs, 0.0, zs)
        ur, vr = cam.project(xs, 0.0, zs)
        poly = np.concatenate([np.stack([ul, vl], 1), np.stack([ur, vr], 1)[::-1]])
        _fill(img, poly, color)
    # lane markings: dashes 3 m long every 10 m, scrolling with travel
    for i in range(1, spec.lanes):
        xm = (i - spec.lanes / 2) * LANE_W
        start = (-travel) % 10.0
        for z0 in np.arange(start + Z_NEAR * 0.9, 150, 10.0):
            _fill(img, _quad(cam, xm - 0.08, xm + 0.08, 0, 0, z0, z0 + 3.0), (225, 225, 225))
    for side in (-1, 1):  # solid edge lines
        xe = side * (spec.road_half - 0.2)
        u0, v0 = cam.project(xe, 0.0, zs)
        pts = np.round(np.stack([u0, v0], 1) * 16).astype(np.int32)
        cv2.polylines(img, [pts], False, (210, 210, 210), 1, cv2.LINE_AA, shift=4)
        if spec.scene == "highway":  # guardrail
            u1, v1 = cam.project(side * (spec.road_half + 1.0), 0.7, zs)
            pts = np.round(np.stack([u1, v1], 1) * 16).astype(np.int32)
            cv2.polylines(img, [pts], False, (170, 175, 180), 2, cv2.LINE_AA, shift=4)
    for side, off, z0, z1, height, color, style in sorted(spec.buildings, key=lambda b: -b[2]):
        z0, z1 = z0 - travel, z1 - travel
        if z1 < Z_NEAR:
            continue
        z0 = max(z0, Z_NEAR * 0.7)
        x = side * off
        _fill(img, _quad(cam, x, x, 0, height, z0, z1), color)
        if style == "house":
            u, v = cam.project(
                np.array([x, x, x]),
                np.array([height, height + 2.5, height]),
                np.array([z0, (z0 + z1) / 2, z1]),
            )
            _fill(img, np.stack([u, v], 1), (40, 50, 110))
        step = 3.0
        for zw in np.arange(z0 + 1.0, z1 - 1.0, step):
            for yw in np.arange(2.0, height - 1.0, step):
                lit = spec.timeofday != "daytime" and (hash((spec.seed, int(zw), int(yw))) % 3 == 0)
                wcol = (120, 210, 250) if lit else tuple(int(c * 0.55) for c in color)
                _fill(img, _quad(cam, x, x, yw, yw + 1.2, zw, zw + 1.5), wcol)
                if lit:
                    u, v = cam.project(x, yw + 0.6, zw + 0.75)
                    lights.append((u, v, min(3.0, cam.f * 0.4 / max(zw, 1)), (120, 210, 250)))
    for x, z, radius, height in sorted(spec.trees, key=lambda t: -t[1]):
        z = z - travel
        if z < Z_NEAR:
            continue
        _fill(img, _quad(cam, x - 0.2, x + 0.2, 0, height - radius, z, z), (40, 60, 80))
        u, v = cam.project(x, height - radius * 0.6, z)
        cv2.circle(
            img, (int(u), int(v)), max(1, int(cam.f * radius / z)), (40, 110, 50), -1, cv2.LINE_AA
        )


def _draw_object(
    patch: np.ndarray,
    mask: np.ndarray,
    o: _Obj,
    bw: float,
    bh: float,
    ox: float,
    oy: float,
    night: bool,
    lights: list,
) -> None:
    """Draw object ``o`` into ``patch``/``mask`` with its box spanning (ox, oy, ox+bw, oy+bh)."""

    def rect(x0, y0, x1, y1, color, into_mask=True):
        p = np.array(
            [
                [ox + x0 * bw, oy + y0 * bh],
                [ox + x1 * bw, oy + y0 * bh],
                [ox + x1 * bw, oy + y1 * bh],
                [ox + x0 * bw, oy + y1 * bh],
            ]
        )
        _fill(patch, p, color)
        if into_mask:
            _fill(mask, p, 255)

    def disc(cx, cy, r, color, into_mask=True):
        c = (round((ox + cx * bw) * 16), round((oy + cy * bh) * 16))
        rad = max(16, round(r * min(bw, bh) * 16))
        cv2.circle(patch, c, rad, color, -1, cv2.LINE_AA, shift=4)
        if into_mask:
            cv2.circle(mask, c, rad, 255, -1, cv2.LINE_AA, shift=4)

    col = o.color
    dark = tuple(int(c * 0.45) for c in col)
    if o.kind == "car":
        rect(0.08, 0.0, 0.92, 0.45, col)  # cabin
        rect(0.16, 0.06, 0.84, 0.40, (60, 50, 45) if not night else (20, 20, 20), False)
        rect(0.0, 0.38, 1.0, 0.85, col)  # body
        rect(0.0, 0.78, 0.18, 1.0, (20, 20, 20))  # wheels
        rect(0.82, 0.78, 1.0, 1.0, (20, 20, 20))
        rect(0.3, 0.62, 0.7, 0.74, (200, 200, 200) if o.variant % 2 else dark, False)
        for lx in (0.06, 0.80):
            rect(lx, 0.45, lx + 0.14, 0.56, (30, 30, 230), False)
            lights.append((ox + (lx + 0.07) * bw, oy + 0.5 * bh, 0.12 * bw, (60, 60, 255)))
    elif o.kind == "truck":
        rect(0.0, 0.0, 1.0, 0.82, col)  # cargo box
        for i in range(1, 4):
            rect(i / 4 - 0.01, 0.03, i / 4 + 0.01, 0.8, dark, False)
        rect(0.02, 0.78, 0.98, 0.9, (50, 50, 50))  # bumper
        rect(0.05, 0.88, 0.25, 1.0, (20, 20, 20))
        rect(0.75, 0.88, 0.95, 1.0, (20, 20, 20))
        for lx in (0.04, 0.86):
            rect(lx, 0.74, lx + 0.1, 0.8, (30, 30, 230), False)
            lights.append((ox + (lx + 0.05) * bw, oy + 0.77 * bh, 0.08 * bw, (60, 60, 255)))
    elif o.kind == "bus":
        rect(0.0, 0.0, 1.0, 0.92, col)
        rect(0.06, 0.05, 0.94, 0.13, (20, 20, 20), False)  # destination display
        rect(0.07, 0.07, 0.6, 0.11, (0, 180, 255), False)
        rect(0.06, 0.18, 0.94, 0.5, (70, 60, 50) if not night else (90, 160, 190), False)
        rect(0.0, 0.86, 1.0, 0.93, (40, 40, 40))
        rect(0.06, 0.9, 0.22, 1.0, (20, 20, 20))
        rect(0.78, 0.9, 0.94, 1.0, (20, 20, 20))
        for lx in (0.04, 0.88):
            rect(lx, 0.66, lx + 0.08, 0.78, (30, 30, 230), False)
            lights.append((ox + (lx + 0.04) * bw, oy + 0.72 * bh, 0.07 * bw, (60, 60, 255)))
    elif o.kind == "person":
        skin = [(140, 170, 210), (80, 110, 160), (60, 80, 110)][o.variant]
        disc(0.5, 0.08, 0.5 * 0.16 * bh / max(bw, 1e-6) if bh < bw else 0.28, skin)
        rect(0.18, 0.15, 0.82, 0.55, col)  # torso
        rect(0.0, 0.17, 0.18, 0.5, col)  # arms
        rect(0.82, 0.17, 1.0, 0.5, col)
        pants = (60, 40, 30) if o.variant != 1 else (40, 40, 40)
        step = 0.12 * (1 if o.variant % 2 else -1)
        rect(0.2 + step / 2, 0.55, 0.47 + step / 2, 1.0, pants)
        rect(0.53 - step / 2, 0.55, 0.8 - step / 2, 1.0, pants)
    elif o.kind == "traffic light":
        rect(0.0, 0.0, 1.0, 1.0, (25, 30, 30))
        lamps = [(40, 40, 240), (30, 200, 250), (90, 220, 60)]
        for i, c in enumerate(lamps):
            on = i == o.variant
            disc(0.5, 0.18 + 0.32 * i, 0.3, c if on else (50, 55, 55), False)
            if on:
                lights.append((ox + 0.5 * bw, oy + (0.18 + 0.32 * i) * bh, 0.5 * bw, c))
    elif o.kind == "traffic sign":
        if o.variant == 0:  # round prohibitory
            disc(0.5, 0.5, 0.5, (30, 30, 210))
            disc(0.5, 0.5, 0.36, (235, 235, 235), False)
        elif o.variant == 1:  # triangle warning
            p = np.array([[ox + 0.5 * bw, oy], [ox + bw, oy + bh], [ox, oy + bh]])
            _fill(patch, p, (30, 30, 210))
            _fill(mask, p, 255)
            q = np.array(
                [
                    [ox + 0.5 * bw, oy + 0.3 * bh],
                    [ox + 0.78 * bw, oy + 0.85 * bh],
                    [ox + 0.22 * bw, oy + 0.85 * bh],
                ]
            )
            _fill(patch, q, (235, 235, 235))
        else:  # rectangular information
            rect(0.0, 0.0, 1.0, 1.0, (160, 90, 20))
            rect(0.15, 0.3, 0.85, 0.45, (235, 235, 235), False)
            rect(0.15, 0.55, 0.65, 0.7, (235, 235, 235), False)


def render_spec(
    spec: SceneSpec, travel: float = 0.0, rng: np.random.Generator | None = None
) -> Scene:
    """Draw ``spec`` with the camera moved ``travel`` metres forward."""
    rng = rng if rng is not None else np.random.default_rng(spec.seed + 7919)
    h, w = spec.hw
    cam = _Camera(spec)
    night = spec.timeofday == "night"
    img = np.zeros((h, w, 3), np.uint8)
    lights: list = []
    _draw_background(img, spec, cam, travel, lights)
    ids = np.zeros((h, w), np.int32)
    depth = np.full((h, w), np.inf, np.float32)
    rows = np.arange(h, dtype=np.float32) - spec.horizon
    depth[:] = np.where(rows > 0, cam.f * CAM_H / np.maximum(rows, 1e-3), np.inf)[:, None]

    placed = []  # (obj index, nominal box, drawn pixel count)
    objs = [(o, o.z - travel * (1 - o.speed)) for o in spec.objects]
    objs = [(o, z) for o, z in objs if z > Z_NEAR * 1.2]
    order = sorted(range(len(objs)), key=lambda i: -objs[i][1])
    for rank, i in enumerate(order):
        o, z = objs[i]
        ow, oh = _SIZES[o.kind]
        u, v = cam.project(o.x, o.elevation, z)
        s = cam.f / z
        bw, bh = ow * s, oh * s
        x0, y0 = u - bw / 2, v - bh
        if o.elevation > 0:  # pole from the ground to the object
            ug, vg = cam.project(o.x, 0.0, z)
            cv2.line(
                img,
                (int(ug), int(vg)),
                (int(u), int(v)),
                (90, 90, 90),
                max(1, int(0.1 * s)),
                cv2.LINE_AA,
            )
        if o.kind in ("car", "truck", "bus") and spec.weather == "clear" and not night:
            cv2.ellipse(
                img,
                (int(u), int(v)),
                (int(bw * 0.6), max(1, int(bw * 0.08))),
                0,
                0,
                360,
                (40, 40, 40),
                -1,
                cv2.LINE_AA,
            )
        px0, py0 = math.floor(x0) - 1, math.floor(y0) - 1
        pw, ph = math.ceil(bw) + 3, math.ceil(bh) + 3
        patch = np.zeros((ph, pw, 3), np.uint8)
        mask = np.zeros((ph, pw), np.uint8)
        obj_lights: list = []
        _draw_object(patch, mask, o, bw, bh, x0 - px0, y0 - py0, night, obj_lights)
        fx0, fy0 = max(px0, 0), max(py0, 0)
        fx1, fy1 = min(px0 + pw, w), min(py0 + ph, h)
        if fx1 <= fx0 or fy1 <= fy0:
            continue
        m = mask[fy0 - py0 : fy1 - py0, fx0 - px0 : fx1 - px0] > 127
        region = (slice(fy0, fy1), slice(fx0, fx1))
        img[region][m] = patch[fy0 - py0 : fy1 - py0, fx0 - px0 : fx1 - px0][m]
        ids[region][m] = rank + 1
        depth[region][m] = z
        lights.extend((lx + px0, ly + py0, r, c) for lx, ly, r, c in obj_lights)
        nominal = (x0, y0, x0 + bw, y0 + bh)
        placed.append((rank + 1, o.kind, nominal, int(m.sum())))

    boxes, classes = [], []
    seen = np.zeros_like(ids)
    for oid, kind, (nx0, ny0, nx1, ny1), drawn in placed:
        ys, xs = np.nonzero(ids == oid)
        if ys.size < 12:
            continue
        inframe = max(0.0, min(nx1, w) - max(nx0, 0)) * max(0.0, min(ny1, h) - max(ny0, 0))
        if ys.size < 0.3 * drawn or inframe < 0.3 * (nx1 - nx0) * (ny1 - ny0):
            continue  # mostly hidden or mostly outside the frame: unlabelled, like BDD ignores
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        if box[2] - box[0] < 3 or box[3] - box[1] < 3:
            continue
        boxes.append(box)
        classes.append(DET_CLASSES.index(kind))
        seen[ys, xs] = len(boxes)  # k+1 <-> box k
    _apply_atmosphere(img, spec, depth, lights, rng)
    return Scene(
        image=img,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(classes, np.int64),
        attributes={"weather": spec.weather, "scene": spec.scene, "timeofday": spec.timeofday},
        curvature=spec.curvature,
        ids=seen,
    )


def _apply_atmosphere(
    img: np.ndarray, spec: SceneSpec, depth: np.ndarray, lights: list, rng: np.random.Generator
) -> None:
    h, w = spec.hw
    f = img.astype(np.float32) * _light_level(spec)
    if spec.timeofday == "dawn/dusk":
        f *= np.array([0.8, 0.92, 1.12], np.float32)  # warm tint
    if spec.timeofday == "night":
        f *= np.array([1.1, 1.0, 0.9], np.float32)  # cool tint
    if spec.weather == "foggy":
        alpha = 1.0 - np.exp(-np.minimum(depth, 1e4) / spec.fog_visibility)
        fog = 200.0 * _light_level(spec)
        f = f * (1 - alpha[..., None]) + fog * alpha[..., None]
    if spec.timeofday != "daytime" or spec.weather == "rainy":
        glow = np.zeros((h, w, 3), np.float32)
        strength = 1.0 if spec.timeofday == "night" else 0.5
        for u, v, r, c in lights:
            cv2.circle(
                glow,
                (int(u), int(v)),
                int(np.clip(r * 1.4, 1, 9)),
                [x * strength for x in c],
                -1,
                cv2.LINE_AA,
            )
        glow = cv2.GaussianBlur(glow, (0, 0), 2.0)
        f += glow
    if spec.weather == "rainy":
        streaks = np.zeros((h, w), np.float32)
        n = int(rng.integers(150, 400))
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
        ln = rng.uniform(8, 20, n)
        for x, y, length in zip(xs, ys, ln):
            cv2.line(streaks, (int(x), int(y)), (int(x - length * 0.25), int(y + length)), 1.0, 1)
        f += streaks[..., None] * 60.0 * _light_level(spec)
    elif spec.weather == "snowy":
        flakes = np.zeros((h, w), np.float32)
        n = int(rng.integers(200, 600))
        for x, y, r in zip(rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(0.6, 2.2, n)):
            cv2.circle(flakes, (int(x), int(y)), round(r), 1.0, -1, cv2.LINE_AA)
        f = f * (1 - 0.8 * flakes[..., None]) + 235.0 * 0.8 * flakes[..., None]
    f += rng.normal(0, rng.uniform(1.5, 5.0), f.shape).astype(np.float32)
    np.clip(f, 0, 255, out=f)
    img[:] = f.astype(np.uint8)


def render_scene(seed: int, hw: tuple[int, int] = (360, 640)) -> Scene:
    """The scene for ``seed``: same seed, same pixels and labels."""
    return render_spec(sample_spec(seed, hw))


def render_clip(seed: int, n_frames: int, hw: tuple[int, int] = (360, 640), speed: float = 0.6):
    """Yield ``n_frames`` consecutive scenes of one drive (camera ``speed`` metres per frame).

    Objects that pass the camera reappear far ahead, so a long clip never runs empty.
    """
    spec = sample_spec(seed, hw)
    rng = np.random.default_rng(seed + 1)
    for i in range(n_frames):
        travel = i * speed
        for o in spec.objects:
            if o.z - travel * (1 - o.speed) < Z_NEAR * 1.3:
                o.z += float(rng.uniform(50, 70))
        yield render_spec(spec, travel, rng)


def synthetic_cache_name(seed: int, n: int, hw: tuple[int, int]) -> str:
    """The folder name under which ``n`` scenes rendered from ``seed`` at ``hw`` are cached."""
    return f"synthetic-v{GENERATOR_VERSION}-s{seed}-n{n}-{hw[0]}x{hw[1]}"
