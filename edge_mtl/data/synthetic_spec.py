"""What is in a synthetic driving scene, drawn from a seed: no pixels (numpy only).

``sample_spec`` makes every random choice of one scene - time of day, weather, scene type, road
bend, lanes, camera offset, the vehicles, pedestrians, traffic lights and signs standing in the
world (lateral position and distance in metres), and the buildings and trees along the road - into
a ``SceneSpec``; ``edge_mtl.data.synthetic`` renders it. ``lane_traffic`` and ``come_back`` move
the objects of a clip (``render_clip``): lanes of traffic that never drive through each other,
and objects that passed the camera coming back far ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_mtl.data.labels import SCENE, TIMEOFDAY, WEATHER

LANE_W = 3.5
# Distances (metres) each kind of object is placed at: stills draw log-uniformly in the range, and
# a clip brings an object that passed the camera back at the far end of its own range.
DISTANCE = {
    "car": (5.5, 70.0),
    "truck": (5.5, 70.0),
    "bus": (5.5, 70.0),
    "person": (4.5, 45.0),
    "traffic light": (9.0, 50.0),
    "traffic sign": (6.0, 45.0),
}
VEHICLES = ("car", "truck", "bus")
MIN_GAP = 10.0  # metres between two vehicles of one lane in a clip
FOLLOW = 25.0  # metres the camera stays behind the vehicles in its own lane (1.4 s at 0.6 m/frame)
_VEHICLE_COLORS = [
    (40, 40, 40),
    (200, 200, 200),
    (30, 30, 160),
    (150, 80, 20),
    (60, 110, 60),
    (220, 220, 230),
    (80, 80, 90),
    (20, 120, 200),
    (120, 40, 120),
]


@dataclass
class _Obj:
    kind: str
    x: float  # lateral position relative to the road centre, metres
    z: float  # distance, metres
    elevation: float = 0.0  # height of the object's bottom above the road, metres
    color: tuple[int, int, int] = (128, 128, 128)
    variant: int = 0
    speed: float = 0.0  # own forward speed, m/frame (clips only)


@dataclass
class SceneSpec:
    """Everything random about a scene; ``synthetic.render_spec`` draws it at a camera travel."""

    hw: tuple[int, int]
    timeofday: str
    weather: str
    scene: str
    curvature: float
    horizon: float
    brightness: float
    road_half: float
    lanes: int
    cam_x: float
    objects: list[_Obj] = field(default_factory=list)
    buildings: list[tuple] = field(default_factory=list)
    trees: list[tuple] = field(default_factory=list)
    fog_visibility: float = 1e9
    seed: int = 0


def sample_spec(seed: int, hw: tuple[int, int] = (360, 640)) -> SceneSpec:
    """Draw the random choices of one scene from ``seed``."""
    rng = np.random.default_rng(seed)
    h, _ = hw
    scene = SCENE[rng.integers(len(SCENE))]
    lanes = {"highway": int(rng.integers(3, 5)), "city street": 2, "residential": 2}[scene]
    road_half = lanes * LANE_W / 2 + (0.5 if scene == "highway" else 0.2)
    spec = SceneSpec(
        hw=hw,
        timeofday=TIMEOFDAY[rng.integers(len(TIMEOFDAY))],
        weather=WEATHER[rng.integers(len(WEATHER))],
        scene=scene,
        curvature=float(rng.uniform(-1, 1)),
        horizon=float(h * rng.uniform(0.36, 0.48)),
        brightness=float(rng.uniform(0.7, 1.25)),
        road_half=road_half,
        lanes=lanes,
        cam_x=float(rng.uniform(-0.3, 0.3) * LANE_W * (lanes / 2 - 0.5)),
        seed=seed,
    )
    if spec.weather == "foggy":
        spec.fog_visibility = float(rng.uniform(60, 120))
    _sample_furniture(spec, rng)
    _sample_objects(spec, rng)
    return spec


def _sample_furniture(spec: SceneSpec, rng: np.random.Generator) -> None:
    side_off = spec.road_half + (3.0 if spec.scene == "city street" else 5.0)
    if spec.scene == "city street":
        for side in (-1, 1):
            z = float(rng.uniform(4, 10))
            while z < 160:
                length = float(rng.uniform(8, 25))
                height = float(rng.uniform(6, 25))
                gray = int(rng.integers(60, 190))
                tint = rng.integers(-25, 25, 3)
                color = tuple(int(np.clip(gray + t, 0, 255)) for t in tint)
                spec.buildings.append((side, side_off, z, z + length, height, color, "city"))
                z += length + float(rng.uniform(0, 3))
    elif spec.scene == "residential":
        for side in (-1, 1):
            z = float(rng.uniform(5, 14))
            while z < 120:
                length = float(rng.uniform(7, 12))
                color = tuple(int(c) for c in rng.integers(90, 230, 3))
                spec.buildings.append((side, side_off + 3, z, z + length, 4.5, color, "house"))
                spec.trees.append(
                    (
                        side * (side_off + float(rng.uniform(-1, 1))),
                        z + length + 1,
                        float(rng.uniform(1.5, 3.0)),
                        float(rng.uniform(4, 7)),
                    )
                )
                z += length + float(rng.uniform(4, 10))
    else:
        for _ in range(int(rng.integers(2, 8))):
            side = rng.choice([-1, 1])
            spec.trees.append(
                (
                    side * (side_off + float(rng.uniform(5, 30))),
                    float(rng.uniform(30, 150)),
                    float(rng.uniform(2, 4)),
                    float(rng.uniform(5, 9)),
                )
            )


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _sample_objects(spec: SceneSpec, rng: np.random.Generator) -> None:
    lane_centres = [(i - (spec.lanes - 1) / 2) * LANE_W for i in range(spec.lanes)]
    n_veh = int(rng.integers(1, {"highway": 7, "city street": 6, "residential": 4}[spec.scene]))
    for _ in range(n_veh):
        kind = str(rng.choice(VEHICLES, p=[0.6, 0.2, 0.2]))
        color = _VEHICLE_COLORS[rng.integers(len(_VEHICLE_COLORS))]
        if kind == "bus":
            color = [(0, 200, 240), (30, 30, 200), (160, 90, 30), (240, 240, 240)][rng.integers(4)]
        x = lane_centres[rng.integers(len(lane_centres))] + float(rng.normal(0, 0.3))
        spec.objects.append(
            _Obj(
                kind,
                x,
                _log_uniform(rng, *DISTANCE[kind]),
                color=color,
                variant=int(rng.integers(4)),
                speed=float(rng.uniform(-0.2, 0.3)),
            )
        )
    n_ped = int(rng.integers(0, {"highway": 2, "city street": 6, "residential": 4}[spec.scene]))
    for _ in range(n_ped):
        on_road = rng.random() < 0.25
        x = (
            float(rng.uniform(-spec.road_half, spec.road_half))
            if on_road
            else float(rng.choice([-1, 1]) * (spec.road_half + rng.uniform(0.6, 2.8)))
        )
        shirt = tuple(int(c) for c in rng.integers(20, 240, 3))
        spec.objects.append(
            _Obj(
                "person",
                x,
                _log_uniform(rng, *DISTANCE["person"]),
                color=shirt,
                variant=int(rng.integers(3)),
            )
        )
    n_light = int(rng.integers(0, {"highway": 2, "city street": 4, "residential": 2}[spec.scene]))
    for _ in range(n_light):
        overhead = rng.random() < 0.5
        x = (
            float(rng.uniform(-spec.road_half * 0.6, spec.road_half * 0.6))
            if overhead
            else float(rng.choice([-1, 1]) * (spec.road_half + 0.8))
        )
        spec.objects.append(
            _Obj(
                "traffic light",
                x,
                _log_uniform(rng, *DISTANCE["traffic light"]),
                elevation=float(rng.uniform(4.0, 5.5) if overhead else 2.6),
                variant=int(rng.integers(3)),
            )
        )
    for _ in range(int(rng.integers(0, 4))):
        x = float(rng.choice([-1, 1]) * (spec.road_half + rng.uniform(0.6, 1.5)))
        spec.objects.append(
            _Obj(
                "traffic sign",
                x,
                _log_uniform(rng, *DISTANCE["traffic sign"]),
                elevation=float(rng.uniform(1.8, 2.6)),
                variant=int(rng.integers(3)),
            )
        )


# ------------------------------------------------------------------- motion in clips


def lane_index(spec: SceneSpec, x: float) -> int:
    """The lane (0 = leftmost) at lateral offset ``x`` metres: lane i spans
    [(i - lanes/2) * LANE_W, (i + 1 - lanes/2) * LANE_W]; beyond the road, the nearest one."""
    return min(max(math.floor(x / LANE_W + spec.lanes / 2), 0), spec.lanes - 1)


def lane_traffic(spec: SceneSpec) -> None:
    """Give the vehicles of each lane the speed of its nearest one and space them ``MIN_GAP``
    apart, nearest first; in the camera's lane, the camera's speed, from ``FOLLOW`` on."""
    ego = lane_index(spec, spec.cam_x)
    speeds: dict[int, float] = {ego: 1.0}
    last: dict[int, float] = {ego: FOLLOW - MIN_GAP}
    for o in sorted((o for o in spec.objects if o.kind in VEHICLES), key=lambda o: o.z):
        lane = lane_index(spec, o.x)
        o.speed = speeds.setdefault(lane, o.speed)
        if lane in last:
            o.z = max(o.z, last[lane] + MIN_GAP)
        last[lane] = o.z


def come_back(spec: SceneSpec, o: _Obj, travel: float, rng: np.random.Generator) -> None:
    """Put ``o`` back in the last quarter of its distance range, behind its lane's traffic."""
    far = DISTANCE[o.kind][1]
    ahead = float(rng.uniform(0.75 * far, far))
    if o.kind in VEHICLES:
        lane = lane_index(spec, o.x)
        mates = sorted(
            p.z - travel * (1 - p.speed)
            for p in spec.objects
            if p is not o and p.kind in VEHICLES and lane_index(spec, p.x) == lane
        )
        for m in mates:  # nearest first: each push only moves it further out
            if abs(ahead - m) < MIN_GAP:
                ahead = m + MIN_GAP
    o.z = ahead + travel * (1 - o.speed)
