"""Score a model and its tracker on a clip with ground truth (``edge-mtl eval-video``).

The clip runs through the same engine, pipeline and :class:`~edge_mtl.runtime.stabilize.
Stabilizer` as ``edge-mtl run --track --smooth``; the tracks are scored against the clip's
MOTChallenge ground truth with py-motmetrics (MOTA, MOTP, IDF1, ID switches, mostly
tracked/lost; per class and over all classes, a box matching only a ground-truth box of its own
class at IoU >= 0.5) and with HOTA, DetA and AssA (:mod:`edge_mtl.bench.hota`), the detections
by COCO mAP per frame (pycocotools, via :func:`edge_mtl.bench.metrics.coco_map`), and the
classification labels by how often they change
(flicker, per 100 frames: raw, smoothed, and the ground truth's own changes).

motmetrics and its pandas/scipy come with the ``track-eval`` extra; nothing here needs torch.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_mtl.bench.hota import hota
from edge_mtl.bench.mot import MotBoxes, mot_rows, read_mot
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import read_json
from edge_mtl.runtime.postprocess import box_iou_matrix

MATCH_IOU = 0.5  # a track box matches a ground-truth box at IoU >= 0.5 (MOTChallenge)


@dataclass
class ClipRun:
    """What the model and tracker said about every frame of a clip, in frame order.
    ``tracks``: the tracked boxes (id >= 1) as MOT rows, ``dets``: per frame (boxes xyxy,
    scores, classes), ``labels`` / ``smoothed``: task -> label per frame."""

    frames: int = 0
    hw: tuple[int, int] = (0, 0)
    tracks: list[MotBoxes] = field(default_factory=list)
    dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)
    smoothed: dict[str, list[str]] = field(default_factory=dict)


def run_clip(engine: Any, video: str, stabilize: Any, max_frames: int | None = None) -> ClipRun:
    """Run ``engine`` over ``video`` through the pipeline with a stabilizer made from
    ``stabilize`` (a ``StabilizeConfig``); collects a :class:`ClipRun`."""
    from edge_mtl.runtime.pipeline import Pipeline
    from edge_mtl.runtime.sources import VideoFileSource
    from edge_mtl.runtime.stabilize import StabilizedSinks, Stabilizer

    out = ClipRun()

    class Collect:
        def write(self, frame: Any, result: Any, times: Any) -> None:
            _collect(out, frame, result)

        def close(self) -> None:
            pass

    stabilizer = Stabilizer(stabilize, engine.meta.tasks)
    source = VideoFileSource(video)
    Pipeline(engine, source, [StabilizedSinks(stabilizer, [Collect()])], max_frames).run()
    return out


def _collect(out: ClipRun, frame: Any, result: Any) -> None:
    d = result.detections
    out.frames += 1
    out.hw = frame.image.shape[:2]
    out.dets.append((d.boxes.copy(), d.scores.copy(), d.classes.copy()))
    if result.tracks is not None:
        ok = result.tracks.ids >= 0
        out.tracks.append(
            mot_rows(
                frame.index + 1, result.tracks.ids[ok], d.boxes[ok], d.scores[ok], d.classes[ok] + 1
            )
        )
    for name, c in result.classifications.items():
        out.labels.setdefault(name, []).append(c.label)
    for name, c in result.smoothed_classifications.items():
        out.smoothed.setdefault(name, []).append(c.label)


def _accumulate(gt: MotBoxes, hyp: MotBoxes, frames: int, cls: int | None) -> Any:
    """A motmetrics accumulator over frames 1..``frames``: boxes of class ``cls`` (MOT class,
    index + 1), or of every class with matches only within a class (``cls=None``)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    gt, hyp = _of_class(gt, hyp, cls)
    for f in range(1, frames + 1):
        g, h = gt.at(f), hyp.at(f)
        acc.update(g.ids.tolist(), h.ids.tolist(), _distances(g, h), frameid=f)
    return acc


def _of_class(gt: MotBoxes, hyp: MotBoxes, cls: int | None) -> tuple[MotBoxes, MotBoxes]:
    """The rows of MOT class ``cls`` (index + 1) of both; all rows for ``cls=None``."""
    if cls is None:
        return gt, hyp
    return gt.rows(gt.classes == cls), hyp.rows(hyp.classes == cls)


def _distances(g: MotBoxes, h: MotBoxes) -> np.ndarray:
    """1 - IoU of ground truth (G) and track (H) boxes (G, H), NaN (no match) below
    ``MATCH_IOU`` or across classes: motmetrics' ``iou_matrix`` convention (computed here, as
    motmetrics 1.4's own uses an API NumPy 2 removed)."""
    iou = box_iou_matrix(_xyxy(g.boxes), _xyxy(h.boxes))
    ok = (iou >= MATCH_IOU) & (g.classes[:, None] == h.classes[None, :])
    return np.where(ok, 1.0 - iou, np.nan)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


_METRICS = ["mota", "motp", "idf1", "num_switches", "num_unique_objects", "mostly_tracked",
            "mostly_lost", "num_false_positives", "num_misses", "num_objects", "idtp", "idfp",
            "idfn"]  # fmt: skip


def tracking_scores(gt: MotBoxes, hyp: MotBoxes, frames: int, classes: list[str]) -> dict:
    """MOT metrics over all classes (``"all"``) and per class name present in the ground
    truth: hota, deta, assa (:mod:`edge_mtl.bench.hota`), mota, motp (mean IoU of matches), idf1,
    id_switches, id_switches_per_100 (per 100 ground-truth tracks), gt_tracks, mostly_tracked,
    mostly_lost, false_positives, misses."""
    import motmetrics as mm

    gt = gt.rows((gt.frame >= 1) & (gt.frame <= frames))
    present: list[int | None] = [None, *sorted(set(gt.classes.tolist()))]  # None: all classes
    names = [
        "all" if c is None else classes[c - 1] if 0 < c <= len(classes) else str(c) for c in present
    ]
    accs = [_accumulate(gt, hyp, frames, c) for c in present]
    table = mm.metrics.create().compute_many(accs, metrics=_METRICS, names=names)
    out = {}
    for name, cls in zip(names, present):
        r = table.loc[name]
        n_gt = int(r["num_unique_objects"])
        scores = hota(*_of_class(gt, hyp, cls), frames)
        out[name] = {
            **{k: _num(v) for k, v in scores.items() if k != "loca"},
            "mota": _num(r["mota"]),
            "motp_iou": _num(1 - r["motp"]) if np.isfinite(r["motp"]) else None,
            "idf1": _num(r["idf1"]),
            "id_switches": int(r["num_switches"]),
            "id_switches_per_100": _per_100(r["num_switches"], n_gt),
            "gt_tracks": n_gt,
            "gt_boxes": int(r["num_objects"]),
            "mostly_tracked": int(r["mostly_tracked"]),
            "mostly_lost": int(r["mostly_lost"]),
            "false_positives": int(r["num_false_positives"]),
            "misses": int(r["num_misses"]),
            **{k: int(r[k]) for k in ("idtp", "idfp", "idfn")},  # IDF1's counts, for pooling
        }
    return out


def _per_100(switches: int, tracks: int) -> float | None:
    """ID switches per 100 ground-truth tracks (None without tracks)."""
    return _num(100 * switches / tracks) if tracks else None


def _num(v: float) -> float | None:
    return round(float(v), 4) if np.isfinite(v) else None


def changes_per_100(labels: list[str]) -> float:
    """How often a label sequence changes value, per 100 frames (0.0 for < 2 frames)."""
    if len(labels) < 2:
        return 0.0
    return 100.0 * sum(a != b for a, b in itertools.pairwise(labels)) / len(labels)


def flicker(run: ClipRun, truth: list[dict]) -> dict:
    """Per classification task: label changes per 100 frames, raw and smoothed (when the run
    smoothed), the ground truth's, and the share of frames whose (raw, smoothed) label is
    right."""
    out = {}
    for name, raw in run.labels.items():
        gt = [str(f.get(name, "")) for f in truth[: len(raw)]]
        entry: dict[str, Any] = {"raw": round(changes_per_100(raw), 3)}
        if name in run.smoothed:
            entry["smoothed"] = round(changes_per_100(run.smoothed[name]), 3)
        if gt and all(gt):
            entry["truth"] = round(changes_per_100(gt), 3)
            entry["accuracy_raw"] = round(float(np.mean([a == b for a, b in zip(raw, gt)])), 4)
            if name in run.smoothed:
                hits = [a == b for a, b in zip(run.smoothed[name], gt)]
                entry["accuracy_smoothed"] = round(float(np.mean(hits)), 4)
        out[name] = entry
    return out


def detection_map(run: ClipRun, gt: MotBoxes, num_classes: int) -> dict:
    """COCO mAP@0.5 and mAP@0.5:0.95 of the per-frame detections (every box the model gave,
    tracked or not) against the ground-truth boxes."""
    from edge_mtl.bench.metrics import coco_map

    gts = []
    for f in range(1, run.frames + 1):
        g = gt.at(f)
        gts.append((_xyxy(g.boxes), g.classes - 1))
    m = coco_map(gts, run.dets, num_classes, [run.hw] * run.frames)
    return {"map50": _num(m["map50"]), "map": _num(m["map"])}


def read_truth(gt_path: str, frames_path: str | None) -> tuple[MotBoxes, dict]:
    """The ground truth: MOT rows and the frames file (``{}`` when there is none)."""
    gt = read_mot(gt_path)
    if frames_path is None:
        guess = Path(str(gt_path).removesuffix(".gt.txt") + ".frames.json")
        frames_path = str(guess) if guess.is_file() and guess != Path(gt_path) else None
    if frames_path is None:
        return gt, {}
    info = read_json(frames_path, "frames file")
    if not isinstance(info, dict) or not isinstance(info.get("frames", []), list):
        raise InputError(f"{frames_path}: not a frames file (an object with a 'frames' list)")
    return gt, info


def evaluate(run: ClipRun, gt: MotBoxes, info: dict, classes: list[str]) -> dict:
    """Every score of one clip run (see the module docstring), JSON-ready."""
    if run.frames == 0:
        raise InputError("the video gave no frame to score")
    hyp = MotBoxes.concat(run.tracks)
    report: dict[str, Any] = {"frames": run.frames}
    report["tracking"] = tracking_scores(gt, hyp, run.frames, classes) if run.tracks else None
    report["detection"] = detection_map(run, gt, len(classes))
    report["flicker"] = flicker(run, info.get("frames", []))
    return report


def pool(reports: list[dict]) -> dict:
    """Several clips' reports as one: per class, MOTA and IDF1 from the counts summed over the
    clips that hold it (each clip weighs by its boxes), HOTA the mean over those clips, ID
    switches and ground-truth tracks summed; detection mAP and label changes the mean over
    clips."""
    out: dict[str, Any] = {"clips": len(reports), "frames": sum(r["frames"] for r in reports)}
    tracking: dict[str, list[dict]] = {}
    for r in reports:
        for name, s in (r["tracking"] or {}).items():
            tracking.setdefault(name, []).append(s)
    out["tracking"] = {name: _pool_class(rows) for name, rows in tracking.items()} or None
    out["detection"] = {k: _mean([r["detection"][k] for r in reports]) for k in ("map50", "map")}
    flick: dict[str, dict[str, list[float]]] = {}
    for r in reports:
        for task, f in r["flicker"].items():
            for k in ("raw", "smoothed", "truth"):
                if k in f:
                    flick.setdefault(task, {}).setdefault(k, []).append(f[k])
    out["flicker"] = {t: {k: round(float(np.mean(v)), 3) for k, v in f.items()}
                      for t, f in flick.items()}  # fmt: skip
    return out


def _pool_class(rows: list[dict]) -> dict:
    total = {k: sum(r[k] for r in rows) for k in ("gt_boxes", "false_positives", "misses",
             "id_switches", "gt_tracks", "idtp", "idfp", "idfn", "mostly_tracked",
             "mostly_lost")}  # fmt: skip
    errors = total["false_positives"] + total["misses"] + total["id_switches"]
    id_all = 2 * total["idtp"] + total["idfp"] + total["idfn"]
    mean = {k: _mean([r[k] for r in rows]) for k in ("hota", "deta", "assa")}
    return {
        "clips": len(rows),
        **mean,
        "mota": _num(1 - errors / total["gt_boxes"]) if total["gt_boxes"] else None,
        "idf1": _num(2 * total["idtp"] / id_all) if id_all else None,
        "id_switches_per_100": _per_100(total["id_switches"], total["gt_tracks"]),
        **total,
    }


def table(report: dict) -> str:
    """The report as the lines ``eval-video`` prints."""
    head = f"{report['frames']} frames; "
    if "clips" in report:
        head = f"pooled over {report['clips']} clips, {report['frames']} frames; mean "
    lines = [f"{head}detection mAP@0.5 {report['detection']['map50']}, "
             f"mAP@0.5:0.95 {report['detection']['map']}"]  # fmt: skip
    if "clips" in report:
        lines.append("MOTA and IDF1 from the counts summed over the clips; HOTA, DetA, AssA and "
                     "label changes the mean over clips")  # fmt: skip
    if report["tracking"]:
        heads = " ".join(f"{x:>7}" for x in ("HOTA", "DetA", "AssA", "MOTA", "IDF1"))
        lines.append(f"{'class':<14} {heads} {'IDsw':>5} {'IDsw/100':>9} {'GT tracks':>9} "
                     f"{'MT':>4} {'ML':>4}")  # fmt: skip
        for name, s in report["tracking"].items():
            per100 = "-" if s["id_switches_per_100"] is None else f"{s['id_switches_per_100']:.1f}"
            lines.append(
                f"{name:<14} {_f(s['hota']):>7} {_f(s['deta']):>7} {_f(s['assa']):>7} "
                f"{_f(s['mota']):>7} {_f(s['idf1']):>7} {s['id_switches']:>5} "
                f"{per100:>9} {s['gt_tracks']:>9} {s['mostly_tracked']:>4} {s['mostly_lost']:>4}"
            )
    for name, f in report["flicker"].items():
        parts = [f"raw {f['raw']:.2f}"] + [
            f"{k} {f[k]:.2f}" for k in ("smoothed", "truth") if k in f
        ]
        lines.append(f"{name} label changes per 100 frames: " + ", ".join(parts))
    return os.linesep.join(lines)


def clip_line(report: dict) -> str:
    """One clip of a multi-clip run in one line: frames, mAP@0.5 and the all-class scores."""
    line = f"{report['video']}: {report['frames']} frames, mAP@0.5 {report['detection']['map50']}"
    a = (report["tracking"] or {}).get("all")
    if a is not None:
        line += (f", MOTA {_f(a['mota'])}, IDF1 {_f(a['idf1'])}, HOTA {_f(a['hota'])}, "
                 f"ID switches {a['id_switches']} / {a['gt_tracks']} GT tracks")  # fmt: skip
    return line


def _mean(values: list[float | None]) -> float | None:
    """The mean of the values that are not None (None if none is)."""
    known = [v for v in values if v is not None]
    return _num(float(np.mean(known))) if known else None


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
