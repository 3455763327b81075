"""Torch dataset over :class:`Record` lists, with the runtime's own letterbox + normalisation."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_mtl.config import AugmentConfig, Config, ModelConfig, SourceConfig, SourceKind
from edge_mtl.data.augment import augment
from edge_mtl.data.bdd import Record
from edge_mtl.data.bdd_masks import mask_counts
from edge_mtl.data.labelled import read_source
from edge_mtl.data.malformed import BadEntries
from edge_mtl.data.masks import letterbox_mask
from edge_mtl.data.synthetic import synthetic_cache_name
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.preprocess import boxes_to_input, letterbox, normalize
from edge_mtl.tasks import KINDS, Sample, declared


def load_image(path: Path) -> np.ndarray:
    """uint8 BGR HWC; raises InputError naming the file when it is missing or corrupt."""
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise InputError(f"{path}: corrupt or unreadable image")
    return img


class MultiTaskDataset(Dataset):
    """Items: (image float32 (3, H, W), target dict). Target: ``boxes`` (K, 4) xyxy input px,
    ``classes`` (K,), ``has_boxes`` (False: the source has no box labels, no detection loss),
    ``letterbox`` (scale, pad_x, pad_y, frame_h, frame_w), ``index``, ``source`` (the source's
    name), and each declared task's entries from its kind's ``targets`` (e.g. ``cls_<t>`` int,
    -1 = no label; ``reg_<t>`` float, NaN = no label; ``seg_<t>`` uint8 (H, W) or None).
    Training items are augmented with a Generator seeded by (train.seed, epoch, index)."""

    def __init__(self, records: list[Record], cfg: Config, train: bool) -> None:
        self.records = records
        self.cfg = cfg
        self.aug: AugmentConfig | None = cfg.data.augment if train else None
        self.epoch_seed = 0
        self.tasks = [(t, KINDS[name]) for name, ts in declared(cfg.model).items() for t in ts]
        self.mask_kinds = tuple(cfg.model.segment)  # label kinds to read: segment task names

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch_seed = epoch

    def __getitem__(self, i: int):
        rec = self.records[i]
        m = self.cfg.model
        frame = load_image(rec.image)
        img, lb = letterbox(frame, m.input_hw)
        boxes = boxes_to_input(rec.boxes, lb) if len(rec.boxes) else rec.boxes.copy()
        classes, targets = rec.classes, dict(rec.targets)
        masks = {
            k: letterbox_mask(rec.masks[k].load(frame.shape[:2]), lb, m.input_hw)
            for k in self.mask_kinds
            if k in rec.masks
        }
        if self.aug is not None:
            rng = np.random.default_rng((self.cfg.train.seed, self.epoch_seed, i))
            img, boxes, classes, targets, masks = augment(
                img, boxes, classes, targets, self.aug, rng, masks
            )
        x = torch.from_numpy(normalize(img, m.mean, m.std)[0])
        t = {
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "classes": torch.from_numpy(np.array(classes, np.int64)),
            "has_boxes": rec.has_boxes,
            "letterbox": (lb.scale, lb.pad_x, lb.pad_y, *lb.frame_hw),
            "index": i,
            "source": rec.source,
        }
        sample = Sample(img, boxes, classes, rec.labels, targets, rec, masks)
        for task, kind in self.tasks:
            t.update(kind.targets(task, sample))
        return x, t


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def records_for(
    sources: tuple[SourceConfig, ...], cfg: Config, cache_root: Path, progress: bool = True
) -> list[Record]:
    """Resolve every source to records carrying its name (``Record.source``); print one line per
    source with its images, boxes, the categories skipped as unknown or ignored on purpose and,
    for a source with ``skip_bad``, the malformed entries skipped. Synthetic sources are
    rendered once into a cache dir."""
    records: list[Record] = []
    for i, s in enumerate(sources):
        name = s.display_name(i)
        ignored: Counter = Counter()
        bad = BadEntries(skip=s.skip_bad)
        recs, unknown = _read_source(s, cfg.model, cache_root, progress, ignored, bad)
        print(source_report(name, recs, unknown, ignored, bad))
        records += [dataclasses.replace(r, source=name) for r in recs]
    return records


def _read_source(
    s: SourceConfig,
    m: ModelConfig,
    cache_root: Path,
    progress: bool,
    ignored: Counter,
    bad: BadEntries,
) -> tuple[list[Record], Counter]:
    from edge_mtl.data.generate import stale_reason, write_synthetic

    if s.kind == "synthetic":
        root = (
            Path(s.path) if s.path else cache_root / synthetic_cache_name(s.seed, s.n, s.frame_hw)
        )
        if not (root / "labels.json").is_file():
            print(f"rendering {s.n} synthetic scenes into {root} (cached for later runs)")
            write_synthetic(root, s.n, s.seed, s.frame_hw, progress=progress)
        elif why := stale_reason(root, s.seed, s.n, s.frame_hw):
            print(f"re-rendering {s.n} synthetic scenes into {root}: the set there is stale: {why}")
            write_synthetic(root, s.n, s.seed, s.frame_hw, progress=progress, replace=True)
        else:
            print(f"reusing {s.n} synthetic scenes from {root}")
        s = dataclasses.replace(s, kind=SourceKind.BDD100K, path=str(root))  # written as BDD
    elif s.kind == "bdd100k" and not Path(s.path).exists():
        raise InputError(f"{s.path}: data directory not found")
    return read_source(s, m.detect, m.classify, m.regress, ignored, bad, tuple(m.segment))


def source_report(
    name: str,
    recs: list[Record],
    unknown: Counter,
    ignored: Counter,
    bad: BadEntries | None = None,
) -> str:
    """One line: ``kitti[0]: 3 images, 5 boxes; unknown categories skipped: Misc 1; ...;
    skipped 1 bad entry (000004.txt:2: degenerate box ...)``; a source with pixel labels adds
    ``, 3 with drivable-area labels, 2 with lane labels`` after the boxes."""
    line = f"{name}: {len(recs)} images"
    boxed = [r for r in recs if r.has_boxes]
    if boxed:
        line += f", {sum(len(r.boxes) for r in boxed)} boxes"
    line += mask_counts(recs)
    if unknown:
        line += f"; unknown categories skipped (map them in categories): {_counts(unknown)}"
    if ignored:
        line += f"; ignored: {_counts(ignored)}"
    if bad is not None and bad.count:
        line += f"; {bad.summary()}"
    return line


def _counts(c: Counter, most: int = 10) -> str:
    text = ", ".join(f"{k} {v}" for k, v in c.most_common(most))
    return text + (f" (+{len(c) - most} more)" if len(c) > most else "")
