"""BDD100K ``poly2d`` shapes (lane lines, drivable-area polygons) as point lists to rasterise.

A ``poly2d`` entry is ``{"vertices": [[x, y], ...], "types": "LCCL...", "closed": bool}`` in
frame pixels. ``types`` has one letter per vertex: ``L`` a point on the shape, ``C`` a control
point; two ``C`` between ``L`` points make a cubic Bezier segment (Scalabel's convention). A
Bezier segment is sampled densely along the curve: drawing straight lines through its control
points would put the lane where the annotator never drew it. Without ``types`` every vertex is
``L``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_mtl.data.malformed import EntryError

BEZIER_STEP_PX = 2.0  # sample a Bezier segment about every this many px of its control polygon
BEZIER_MAX_SAMPLES = 256  # ... with at most this many points per segment


def poly2d_points(poly: Any) -> np.ndarray:
    """One ``poly2d`` entry -> float64 (P, 2) x, y frame pixels along the shape, Bezier
    segments sampled, the first point repeated at the end when ``closed``. EntryError (for the
    caller's bad-entry report) when it is malformed."""
    if not isinstance(poly, dict):
        raise EntryError(f"poly2d entry is a {type(poly).__name__}, not an object")
    try:
        pts = np.asarray(poly["vertices"], np.float64)
    except (KeyError, TypeError, ValueError):
        raise EntryError("poly2d vertices are not a list of [x, y] pairs") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2 or not np.isfinite(pts).all():
        raise EntryError(f"poly2d vertices are not two or more finite [x, y] pairs: {pts.tolist()}")
    types = poly.get("types") or "L" * len(pts)
    if not isinstance(types, str) or len(types) != len(pts) or set(types) - {"L", "C"}:
        raise EntryError(
            f"poly2d types {types!r} do not give L or C for each of {len(pts)} vertices"
        )
    if poly.get("closed"):
        pts, types = np.vstack([pts, pts[:1]]), types + types[0]
    return _sample(pts, types)


def _sample(pts: np.ndarray, types: str) -> np.ndarray:
    """Points of an L/C vertex list with each ``L C C L`` run replaced by its Bezier curve."""
    if types[0] != "L" or types[-1] != "L":
        raise EntryError(f"poly2d types {types!r} must start and end on an L vertex")
    out = [pts[:1]]
    i = 0
    while i < len(types) - 1:
        if types[i + 1] == "L":
            out.append(pts[i + 1 : i + 2])
            i += 1
        elif types[i + 1 : i + 4] == "CCL":
            out.append(bezier(pts[i : i + 4])[1:])
            i += 3
        else:
            raise EntryError(f"poly2d types {types!r}: control points come in pairs between L's")
    return np.vstack(out)


def bezier(ctrl: np.ndarray) -> np.ndarray:
    """The cubic Bezier curve of control points ``ctrl`` float (4, 2), sampled from its start to
    its end point every ~BEZIER_STEP_PX: float64 (S, 2)."""
    length = float(np.linalg.norm(np.diff(ctrl, axis=0), axis=1).sum())
    n = min(BEZIER_MAX_SAMPLES, max(4, math.ceil(length / BEZIER_STEP_PX) + 1))
    t = np.linspace(0.0, 1.0, n)[:, None]
    s = 1.0 - t
    return s**3 * ctrl[0] + 3 * s**2 * t * ctrl[1] + 3 * s * t**2 * ctrl[2] + t**3 * ctrl[3]


def shapes(label: dict) -> list[np.ndarray]:
    """The sampled shapes of one label's ``poly2d`` list (EntryError when it is no list)."""
    polys = label.get("poly2d")
    if not isinstance(polys, list):
        raise EntryError(f"poly2d is a {type(polys).__name__}, not a list")
    return [poly2d_points(p) for p in polys]
