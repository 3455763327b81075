"""Procedural driving scenes, deterministic by seed (numpy + OpenCV only, no torch).

A pinhole camera 1.5 m above a road that bends with ``curvature``; vehicles, pedestrians, traffic
lights and signs stand in the world and are projected, so sizes follow distance (about 8 px far
away to a third of the frame up close). Objects are painted far to near; each object's box is the
tight box of its *visible* pixels, so occluded and border-cut objects are labelled as seen.
The drivable area (ego lane / other lanes) and lane markings are labelled per pixel from the same
polygons in the same painter's order (``synthetic_masks``), so they are occluded the same way.
Time of day, weather and scene type change many cues at once (sky, light level, tint, particles,
fog by depth, buildings/houses/guardrails), with brightness jittered so no single statistic
such as mean brightness gives the class away.

The random choices of a scene are drawn in ``synthetic_spec`` (``sample_spec`` -> ``SceneSpec``);
this module renders them through the camera and is the public API (``render_scene``,
``render_clip``, ``synthetic_cache_name``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_mtl.data.labels import DET_CLASSES
from edge_mtl.data.synthetic_masks import SceneMasks
from edge_mtl.data.synthetic_objects import DRAW, Painter, fill
from edge_mtl.data.synthetic_spec import (
    LANE_W,
    SceneSpec,
    _Obj,
    come_back,
    lane_index,
    lane_traffic,
    sample_spec,
)

CAM_H = 1.5  # camera height above the road, metres
Z_NEAR = 3.0  # distance at which the ground meets the bottom image row, metres
# Lateral road offset = CURV_GAIN * curvature * z**2 metres: curvature 1 is a bend of radius
# 1 / (2 * CURV_GAIN) = 50 m. At 0.004 (125 m) a full bend moved the road by a few pixels near the
# horizon at training size and the curvature head never left the mean predictor.
CURV_GAIN = 0.010
# Part of the cache folder name of rendered scenes: bump it whenever the same seed renders
# different pixels or labels (here or in synthetic_spec.py), so stale caches are not reused.
GENERATOR_VERSION = 3  # 3: per-scene drivable-area and lane masks (images as in 2)
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
    ``curvature`` in [-1, 1] (signed road bend); ``ids`` int32 (H, W), k+1 where box k is seen;
    ``object_ids`` int64 (K,) which object box k shows: its index in the scene's objects for a
    still, an identity that stays with it from frame to frame in a clip (``render_clip``);
    ``visibility`` float32 (K,) the share of the object's drawn pixels left visible;
    ``masks`` the pixel labels from the scene's own geometry (``synthetic_masks``), uint8 (H, W)
    canonical classes: ``drivable`` (0 background, 1 direct = the ego lane, 2 alternative = the
    rest of the road) and ``lanes`` (0 background, 1 lane marking), both background where
    something is drawn over the road; ``lane_dashed`` bool (H, W), True on dashed markings."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    attributes: dict[str, str]
    curvature: float
    ids: np.ndarray
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    visibility: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    lane_dashed: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))


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


def _edges(cam: _Camera, x0: float, x1: float, zs: np.ndarray) -> np.ndarray:
    """The ground strip between lateral offsets ``x0`` < ``x1`` (metres from the road centre)
    over distances ``zs``, as one image polygon: float (2 * len(zs), 2) xy pixels."""
    ul, vl = cam.project(x0, 0.0, zs)
    ur, vr = cam.project(x1, 0.0, zs)
    return np.concatenate([np.stack([ul, vl], 1), np.stack([ur, vr], 1)[::-1]])


def _ego_lane(spec: SceneSpec) -> tuple[float, float]:
    """Lateral span (metres) of the lane the camera is in."""
    i = lane_index(spec, spec.cam_x)
    return (i - spec.lanes / 2) * LANE_W, (i + 1 - spec.lanes / 2) * LANE_W


def _dash(cam: _Camera, xm: float, z0: float, min_px: int) -> tuple[np.ndarray, np.ndarray]:
    """A lane dash 16 cm wide from ``z0`` to ``z0 + 3`` m at lateral ``xm``: its image polygon
    and its label polygon, the same quad widened where needed to ``min_px`` pixels."""
    zs = np.array([z0, z0, z0 + 3.0, z0 + 3.0])
    half = np.maximum(0.08, 0.5 * min_px * zs / cam.f)  # metres giving min_px pixels at z
    side = np.array([-1.0, 1.0, 1.0, -1.0])
    u, v = cam.project(xm + side * half, np.zeros(4), zs)
    return _quad(cam, xm - 0.08, xm + 0.08, 0, 0, z0, z0 + 3.0), np.stack([u, v], 1)


def _draw_ground(
    img: np.ndarray, spec: SceneSpec, cam: _Camera, travel: float, lab: SceneMasks
) -> None:
    """Sky, ground, sidewalks, the road with its markings and the guardrails; the road and
    markings into ``lab`` too."""
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
    if spec.scene != "highway":  # sidewalks; none on highways
        fill(img, _edges(cam, -spec.road_half - 3.0, spec.road_half + 3.0, zs), (150, 150, 150))
    road = _edges(cam, -spec.road_half, spec.road_half, zs)
    fill(img, road, (85, 85, 88))
    lab.road(road, _edges(cam, *_ego_lane(spec), zs))
    # lane markings: dashes 3 m long every 10 m, scrolling with travel
    for i in range(1, spec.lanes):
        xm = (i - spec.lanes / 2) * LANE_W
        start = (-travel) % 10.0
        for z0 in np.arange(start + Z_NEAR * 0.9, 150, 10.0):
            quad, label = _dash(cam, xm, z0, lab.min_px)
            fill(img, quad, (225, 225, 225))
            lab.dash(label)
    for side in (-1, 1):  # solid edge lines
        xe = side * (spec.road_half - 0.2)
        u0, v0 = cam.project(xe, 0.0, zs)
        pts = np.round(np.stack([u0, v0], 1) * 16).astype(np.int32)
        cv2.polylines(img, [pts], False, (210, 210, 210), 1, cv2.LINE_AA, shift=4)
        lab.solid_line(np.stack([u0, v0], 1))
        if spec.scene == "highway":  # guardrail
            u1, v1 = cam.project(side * (spec.road_half + 1.0), 0.7, zs)
            pts = np.round(np.stack([u1, v1], 1) * 16).astype(np.int32)
            cv2.polylines(img, [pts], False, (170, 175, 180), 2, cv2.LINE_AA, shift=4)
            lab.cover_polyline(np.stack([u1, v1], 1), 2)


def _draw_roadside(
    img: np.ndarray, spec: SceneSpec, cam: _Camera, travel: float, lights: list, lab: SceneMasks
) -> None:
    """Buildings and trees, far to near; where they are drawn over the road, ``lab`` gets
    background."""
    for side, off, z0, z1, height, color, style in sorted(spec.buildings, key=lambda b: -b[2]):
        z0, z1 = z0 - travel, z1 - travel
        if z1 < Z_NEAR:
            continue
        z0 = max(z0, Z_NEAR * 0.7)
        x = side * off
        wall = _quad(cam, x, x, 0, height, z0, z1)
        fill(img, wall, color)
        lab.cover_poly(wall)
        if style == "house":
            u, v = cam.project(
                np.array([x, x, x]),
                np.array([height, height + 2.5, height]),
                np.array([z0, (z0 + z1) / 2, z1]),
            )
            fill(img, np.stack([u, v], 1), (40, 50, 110))
            lab.cover_poly(np.stack([u, v], 1))
        step = 3.0
        for zw in np.arange(z0 + 1.0, z1 - 1.0, step):  # windows lie inside the wall
            for yw in np.arange(2.0, height - 1.0, step):
                lit = spec.timeofday != "daytime" and (hash((spec.seed, int(zw), int(yw))) % 3 == 0)
                wcol = (120, 210, 250) if lit else tuple(int(c * 0.55) for c in color)
                fill(img, _quad(cam, x, x, yw, yw + 1.2, zw, zw + 1.5), wcol)
                if lit:
                    u, v = cam.project(x, yw + 0.6, zw + 0.75)
                    lights.append((u, v, min(3.0, cam.f * 0.4 / max(zw, 1)), (120, 210, 250)))
    for x, z, radius, height in sorted(spec.trees, key=lambda t: -t[1]):
        z = z - travel
        if z < Z_NEAR:
            continue
        trunk = _quad(cam, x - 0.2, x + 0.2, 0, height - radius, z, z)
        fill(img, trunk, (40, 60, 80))
        lab.cover_poly(trunk)
        u, v = cam.project(x, height - radius * 0.6, z)
        centre, r = (int(u), int(v)), max(1, int(cam.f * radius / z))
        cv2.circle(img, centre, r, (40, 110, 50), -1, cv2.LINE_AA)
        lab.cover_disc(centre, r)


def _draw_support(
    img: np.ndarray, cam: _Camera, o: _Obj, z: float, spec: SceneSpec, lab: SceneMasks
) -> None:
    """What ties object ``o`` to the road: a pole under a raised object (background in
    ``lab``), a shadow under a vehicle in clear daylight (still road)."""
    night = spec.timeofday == "night"
    u, v = cam.project(o.x, o.elevation, z)
    s = cam.f / z
    if o.elevation > 0:  # pole from the ground to the object
        ug, vg = cam.project(o.x, 0.0, z)
        thick = max(1, int(0.1 * s))
        cv2.line(img, (int(ug), int(vg)), (int(u), int(v)), (90, 90, 90), thick, cv2.LINE_AA)
        lab.cover_line((int(ug), int(vg)), (int(u), int(v)), thick)
    if o.kind in ("car", "truck", "bus") and spec.weather == "clear" and not night:
        bw = _SIZES[o.kind][0] * s
        axes = (int(bw * 0.6), max(1, int(bw * 0.08)))
        cv2.ellipse(img, (int(u), int(v)), axes, 0, 0, 360, (40, 40, 40), -1, cv2.LINE_AA)


def _paint_objects(
    img: np.ndarray,
    spec: SceneSpec,
    cam: _Camera,
    travel: float,
    lights: list,
    ids: np.ndarray,
    depth: np.ndarray,
    lab: SceneMasks,
) -> list[tuple[int, str, tuple[float, float, float, float], int]]:
    """Paint the objects far to near into ``img``, marking each one's visible pixels in ``ids``
    (rank + 1) and ``depth`` (metres) and background in ``lab``. Returns (id, kind, nominal
    xyxy box, drawn pixels, index in ``spec.objects``)."""
    h, w = spec.hw
    night = spec.timeofday == "night"
    placed = []
    objs = [(o, o.z - travel * (1 - o.speed), n) for n, o in enumerate(spec.objects)]
    objs = [(o, z, n) for o, z, n in objs if z > Z_NEAR * 1.2]
    order = sorted(range(len(objs)), key=lambda i: -objs[i][1])
    for rank, i in enumerate(order):
        o, z, n = objs[i]
        ow, oh = _SIZES[o.kind]
        u, v = cam.project(o.x, o.elevation, z)
        bw, bh = ow * cam.f / z, oh * cam.f / z
        x0, y0 = u - bw / 2, v - bh
        _draw_support(img, cam, o, z, spec, lab)
        px0, py0 = math.floor(x0) - 1, math.floor(y0) - 1
        pw, ph = math.ceil(bw) + 3, math.ceil(bh) + 3
        painter = Painter(
            np.zeros((ph, pw, 3), np.uint8),
            np.zeros((ph, pw), np.uint8),
            bw,
            bh,
            x0 - px0,
            y0 - py0,
        )
        obj_lights: list = []
        DRAW[o.kind](painter, o, night, obj_lights)
        fx0, fy0 = max(px0, 0), max(py0, 0)
        fx1, fy1 = min(px0 + pw, w), min(py0 + ph, h)
        if fx1 <= fx0 or fy1 <= fy0:
            continue
        crop = (slice(fy0 - py0, fy1 - py0), slice(fx0 - px0, fx1 - px0))
        m = painter.mask[crop] > 127
        region = (slice(fy0, fy1), slice(fx0, fx1))
        img[region][m] = painter.patch[crop][m]
        ids[region][m] = rank + 1
        depth[region][m] = z
        lab.cover_pixels(region, m)
        lights.extend((lx + px0, ly + py0, r, c) for lx, ly, r, c in obj_lights)
        placed.append((rank + 1, o.kind, (x0, y0, x0 + bw, y0 + bh), int(m.sum()), n))
    return placed


def _visible_boxes(
    placed: list, ids: np.ndarray, hw: tuple[int, int]
) -> tuple[list, list, np.ndarray, list]:
    """The labelled boxes (xyxy pixels of the visible pixels) and classes of the placed objects,
    the id map relabelled so k+1 marks box k's pixels (0 elsewhere), and per box (index in the
    spec's objects, visible share of its drawn pixels)."""
    h, w = hw
    boxes, classes, which = [], [], []
    seen = np.zeros_like(ids)
    for oid, kind, (nx0, ny0, nx1, ny1), drawn, n in placed:
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
        which.append((n, ys.size / max(drawn, 1)))
        seen[ys, xs] = len(boxes)
    return boxes, classes, seen, which


def render_spec(
    spec: SceneSpec, travel: float = 0.0, rng: np.random.Generator | None = None
) -> Scene:
    """Draw ``spec`` with the camera moved ``travel`` metres forward."""
    rng = rng if rng is not None else np.random.default_rng(spec.seed + 7919)
    h, w = spec.hw
    cam = _Camera(spec)
    img = np.zeros((h, w, 3), np.uint8)
    lights: list = []
    lab = SceneMasks.empty(spec.hw)
    _draw_ground(img, spec, cam, travel, lab)
    _draw_roadside(img, spec, cam, travel, lights, lab)
    ids = np.zeros((h, w), np.int32)
    rows = np.arange(h, dtype=np.float32) - spec.horizon
    depth = np.full((h, w), np.inf, np.float32)
    depth[:] = np.where(rows > 0, cam.f * CAM_H / np.maximum(rows, 1e-3), np.inf)[:, None]
    placed = _paint_objects(img, spec, cam, travel, lights, ids, depth, lab)
    lab.finish()
    boxes, classes, seen, which = _visible_boxes(placed, ids, spec.hw)
    _apply_atmosphere(img, spec, depth, lights, rng)
    return Scene(
        image=img,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        classes=np.asarray(classes, np.int64),
        attributes={"weather": spec.weather, "scene": spec.scene, "timeofday": spec.timeofday},
        curvature=spec.curvature,
        ids=seen,
        object_ids=np.array([n for n, _ in which], np.int64),
        visibility=np.array([min(v, 1.0) for _, v in which], np.float32),
        masks={"drivable": lab.drivable, "lanes": lab.lanes},
        lane_dashed=lab.dashed.astype(bool),
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

    The vehicles of one lane move at that lane's speed, at least ``MIN_GAP`` apart, so none
    drives through another; those in the camera's lane keep their distance, at least ``FOLLOW``
    ahead (the camera follows them instead of driving through them), and the others are
    overtaken (``synthetic_spec.lane_traffic``). An object that passes the camera comes back at
    the far end of its kind's distance range (``DISTANCE``, as stills are drawn), so a long clip
    never runs empty and holds the sizes the stills hold; it is a new object, with a new
    identity in the scenes' ``object_ids`` (1, 2, ...: an object keeps its identity while it
    stays ahead of the camera).
    """
    spec = sample_spec(seed, hw)
    lane_traffic(spec)
    rng = np.random.default_rng(seed + 1)
    identity = np.arange(1, len(spec.objects) + 1, dtype=np.int64)
    next_id = len(spec.objects) + 1
    for i in range(n_frames):
        travel = i * speed
        for n, o in enumerate(spec.objects):
            if o.z - travel * (1 - o.speed) < Z_NEAR * 1.3:
                come_back(spec, o, travel, rng)
                identity[n], next_id = next_id, next_id + 1
        scene = render_spec(spec, travel, rng)
        yield dataclasses.replace(scene, object_ids=identity[scene.object_ids])


def synthetic_cache_name(seed: int, n: int, hw: tuple[int, int]) -> str:
    """The folder name under which ``n`` scenes rendered from ``seed`` at ``hw`` are cached."""
    return f"synthetic-v{GENERATOR_VERSION}-s{seed}-n{n}-{hw[0]}x{hw[1]}"
