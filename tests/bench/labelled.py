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
