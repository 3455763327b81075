"""Measure the tracker without a trained model (docs/results.md, "Tracking without a model"):

    python scripts/track_study.py cost --detections 100
    python scripts/track_study.py oracle --gt clip.gt.txt --fps 10 --miss 0.1 --jitter 0.03
    python scripts/track_study.py frame --video clip.mp4 --gt clip.gt.txt --frame 120 --out f.jpg

``cost``: milliseconds per ``Tracker.update`` with N boxes moving at constant velocity on a
1920x1080 frame (one thread; the first 20 frames are left out). ``oracle``: the tracker alone on
a generated clip's true boxes, degraded like a detector's (each box missed with probability
``--miss``, its corners jittered by ``--jitter`` of its size, a fifth of them scored 0.3-0.5, a
false box in 30 % of the frames), scored by ``eval-video``'s code. ``frame``: one frame of the
clip with the oracle tracker's IDs and trails drawn by the run overlay.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

from edge_mtl.bench.mot import MotBoxes, mot_rows, read_mot
from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.postprocess import Detections
from edge_mtl.runtime.track import Tracker, TrackerConfig


def cost(n: int, frames: int = 300) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [1800, 1000], (n, 2))
    wh = rng.uniform(20, 120, (n, 2))
    vel, cls = rng.normal(0, 3, (n, 2)), rng.integers(0, 6, n)
    tr, times = Tracker(), []
    for f in range(frames):
        p = xy + vel * f
        boxes = np.concatenate([p, p + wh], 1) + rng.normal(0, 1, (n, 4))
        scores = rng.uniform(0.3, 1.0, n)
        t0 = time.perf_counter()
        tr.update(boxes, scores, cls, f / 30)
        times.append(time.perf_counter() - t0)
    t = np.array(times[20:]) * 1e3
    print(f"{n} detections: mean {t.mean():.3f} ms, p50 {np.median(t):.3f} ms, "
          f"p90 {np.percentile(t, 90):.3f} ms per frame")  # fmt: skip


def degraded(g: MotBoxes, rng: np.random.Generator, miss: float, jitter: float):
    """A frame's true boxes as a detector might give them: (xyxy, scores, classes, truth ids)."""
    xyxy = np.concatenate([g.boxes[:, :2], g.boxes[:, :2] + g.boxes[:, 2:]], 1)
    xyxy += rng.normal(0, jitter, xyxy.shape) * np.concatenate([g.boxes[:, 2:]] * 2, 1)
    scores = np.where(rng.uniform(size=len(g)) < 0.2, rng.uniform(0.3, 0.5, len(g)),
                      rng.uniform(0.6, 1.0, len(g)))  # fmt: skip
    cls, ids = g.classes - 1, g.ids
    if rng.uniform() < 0.3:
        x, y = rng.uniform(0, 600), rng.uniform(150, 300)
        xyxy = np.vstack([xyxy, [[x, y, x + 20, y + 15]]])
        scores, cls, ids = (
            np.append(scores, rng.uniform(0.3, 0.7)),
            np.append(cls, 0),
            np.append(ids, -1),
        )
    keep = rng.uniform(size=len(xyxy)) > miss
    return xyxy[keep], scores[keep], cls[keep], ids[keep]


def oracle(gt_path: str, fps: float, miss: float, jitter: float, upto: int | None = None):
    """Run the tracker on the degraded truth; returns (MOT rows, per-frame results)."""
    gt, rng, tr = read_mot(gt_path), np.random.default_rng(0), Tracker(TrackerConfig())
    rows, results = [], []
    for f in range(1, (upto or int(gt.frame.max())) + 1):
        xyxy, scores, cls, _ = degraded(gt.at(f), rng, miss, jitter)
        info = tr.update(xyxy, scores, cls, f / fps)
        ok = info.ids >= 0
        rows.append(mot_rows(f, info.ids[ok], xyxy[ok], scores[ok], cls[ok] + 1))
        results.append((xyxy, scores, cls, info))
    return gt, MotBoxes.concat(rows), results


def _classes(gt_path: str) -> list[str]:
    return json.loads(Path(gt_path.replace(".gt.txt", ".frames.json")).read_text())["classes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["cost", "oracle", "frame"])
    p.add_argument("--detections", type=int, default=100)
    p.add_argument("--gt")
    p.add_argument("--video")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--miss", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--frame", type=int, default=120)
    p.add_argument("--out", default="track-frame.jpg")
    a = p.parse_args()
    if a.what == "cost":
        return cost(a.detections)
    from edge_mtl.bench.video_eval import tracking_scores

    if a.what == "oracle":
        gt, hyp, _ = oracle(a.gt, a.fps, a.miss, a.jitter)
        classes = _classes(a.gt)
        for name, s in tracking_scores(gt, hyp, int(gt.frame.max()), classes).items():
            per100 = s["id_switches_per_100"]
            print(f"{name:<14} MOTA {s['mota']:.3f} IDF1 {s['idf1']:.3f} IDsw {s['id_switches']} "
                  f"({per100:.1f} per 100 tracks) GT tracks {s['gt_tracks']}")  # fmt: skip
        return None
    from edge_mtl.runtime.overlay import draw_overlay

    names = _classes(a.gt)
    *_, results = oracle(a.gt, a.fps, a.miss, a.jitter, upto=a.frame)
    xyxy, scores, cls, info = results[-1]
    cap = cv2.VideoCapture(a.video)
    cap.set(cv2.CAP_PROP_POS_FRAMES, a.frame - 1)
    ok, image = cap.read()
    assert ok, f"{a.video}: no frame {a.frame}"
    det = Detections(xyxy.astype(np.float32), scores.astype(np.float32), cls.astype(np.int64))
    r = FrameResult(det, tuple(names[c] for c in cls), tracks=info)
    cv2.imwrite(a.out, draw_overlay(image, r))
    print(f"wrote {a.out}")
    return None


if __name__ == "__main__":
    main()
