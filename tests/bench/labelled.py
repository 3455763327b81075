"""Labelled sets for accuracy tests, labelled by a model's own FP32 answers, so its metrics are
far from 0 (a random-weight model scores ~0 on real labels, and then every comparison holds
trivially): a BDD100K folder, the same labels as COCO JSON, and as class folders."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from edge_mtl.bench.accuracy import eval_engine
from tests.runtime.conftest import make_frames

SIZE = (48, 64)  # frame H, W


def labelled_by_model(model: Path, root: Path, n: int = 12, boxes: int = 3) -> Path:
    """``root/labels.json`` + ``root/images/``: ``n`` frames, each labelled with the model's
    ``boxes`` highest-scoring detections (jittered by a pixel), its weather answer for the
    first two thirds of the frames (the rest a fixed class) and its curvature plus noise."""
    engine = eval_engine(model, "cpu", 1)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    weather = engine.meta.tasks[1].classes
    det_names = engine.meta.detect.classes
    frames, entries = make_frames(n, *SIZE, seed=5), []
    for i, (frame, r) in enumerate(zip(frames, engine.infer_batch(frames))):
        name = f"{i:04d}.jpg"
        cv2.imwrite(str(root / "images" / name), frame)
        d = r.detections
        top = np.argsort(-d.scores)[:boxes]
        labels = []
        for j, k in enumerate(top):
            x1, y1, x2, y2 = (float(v) + rng.uniform(-1, 1) for v in d.boxes[k])
            x1, y1 = max(x1, 0.0), max(y1, 0.0)
            x2, y2 = min(max(x2, x1 + 2), SIZE[1]), min(max(y2, y1 + 2), SIZE[0])
            box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
            labels.append({"id": j, "category": det_names[int(d.classes[k])], "box2d": box})
        said = r.classifications["weather"].label
        attrs = {
            "weather": said if i < 2 * n // 3 else weather[0],
            "curvature": float(r.regressions["curvature"]) + float(rng.normal(0, 0.05)),
        }
        entries.append({"name": name, "attributes": attrs, "labels": labels})
    (root / "labels.json").write_text(json.dumps(entries))
    return root


def as_coco(bdd: Path, out: Path) -> Path:
    """The boxes of the BDD folder ``bdd`` as a COCO file ``out`` (images: ``bdd/images``)."""
    frames = json.loads((bdd / "labels.json").read_text())
    cats = sorted({lab["category"] for f in frames for lab in f["labels"]})
    images, anns = [], []
    for i, f in enumerate(frames):
        images.append({"id": i, "file_name": f["name"], "width": SIZE[1], "height": SIZE[0]})
        for lab in f["labels"]:
            b = lab["box2d"]
            anns.append({
                "id": len(anns) + 1, "image_id": i, "category_id": cats.index(lab["category"]),
                "bbox": [b["x1"], b["y1"], b["x2"] - b["x1"], b["y2"] - b["y1"]], "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": k, "name": c} for k, c in enumerate(cats)]
    out.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return out


SEG_SIZE = (48, 80)  # frame H, W of the pixel-labelled set: letterboxed with rows of padding


def seg_labelled_by_model(model: Path, root: Path, n: int = 6) -> list:
    """``n`` rendered scenes in ``root/images`` with BDD100K-convention mask PNGs in
    ``root/drivable`` and ``root/lanes`` made from the model's own class maps at frame size, so
    its figures are far from 0: drivable as the model says except the top 8 rows, relabelled
    ``alternative``; lanes as the model says, on the even frames only (the odd ones have no lane
    label). Returns the records (``edge_mtl.data.bdd.Record``, no boxes) pointing at them."""
    from edge_mtl.data.bdd import Record
    from edge_mtl.data.masks import MaskLabel, drivable_to_bdd, lanes_to_bdd
    from edge_mtl.data.synthetic import render_scene

    engine = eval_engine(model, "cpu", 1)
    for sub in ("images", "drivable", "lanes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    frames = [render_scene(40 + i, SEG_SIZE).image for i in range(n)]
    records = []
    for i, (frame, r) in enumerate(zip(frames, engine.infer_batch(frames))):
        image = root / "images" / f"{i:04d}.png"  # lossless: ONNX and torch read equal pixels
        cv2.imwrite(str(image), frame)
        drivable = r.segmentations["drivable"].at_frame_size().copy()
        drivable[:8] = 2
        masks = {"drivable": MaskLabel("drivable", png=root / "drivable" / image.name)}
        cv2.imwrite(str(masks["drivable"].png), drivable_to_bdd(drivable))
        if i % 2 == 0:
            masks["lanes"] = MaskLabel("lanes", png=root / "lanes" / image.name)
            lanes = r.segmentations["lanes"].at_frame_size()
            cv2.imwrite(str(masks["lanes"].png), lanes_to_bdd(lanes))
        empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        records.append(Record(image, *empty, has_boxes=False, masks=masks))
    return records
