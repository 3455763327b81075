"""Torch dataset over :class:`Record` lists, with the runtime's own letterbox + normalisation."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_mtl.config import AugmentConfig, Config, SourceConfig
from edge_mtl.data.bdd import Record, read_bdd
from runtime.errors import InputError
from runtime.preprocess import boxes_to_input, letterbox, normalize


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
    ``classes`` (K,), ``cls_<t>`` int (-1 = no label), ``reg_<t>`` float (NaN = no label),
    ``letterbox`` (scale, pad_x, pad_y, frame_h, frame_w), ``index``."""

    def __init__(self, records: list[Record], cfg: Config, train: bool) -> None:
        self.records = records
        self.cfg = cfg
        self.aug: AugmentConfig | None = cfg.data.augment if train else None
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch_seed = epoch

    def __getitem__(self, i: int):
        rec = self.records[i]
        m = self.cfg.model
        img, lb = letterbox(load_image(rec.image), m.input_hw)
        boxes = boxes_to_input(rec.boxes, lb) if len(rec.boxes) else rec.boxes.copy()
        targets = dict(rec.targets)
        if self.aug is not None:
            rng = np.random.default_rng((self.cfg.train.seed, self.epoch_seed, i))
            if rng.random() < self.aug.hflip:
                img = np.ascontiguousarray(img[:, ::-1])
                w = img.shape[1]
                boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + [w, 0, w, 0]
                # a mirrored road bends the other way
                targets = {k: -v if "curv" in k else v for k, v in targets.items()}
            if self.aug.hsv > 0:
                img = _photometric(img, rng, self.aug.hsv)
        x = torch.from_numpy(normalize(img, m.mean, m.std)[0])
        t = {
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "classes": torch.from_numpy(rec.classes),
            "letterbox": (lb.scale, lb.pad_x, lb.pad_y, *lb.frame_hw),
            "index": i,
        }
        for task in m.classify:
            t[f"cls_{task}"] = rec.labels.get(task, -1)
        for task in m.regress:
            t[f"reg_{task}"] = targets.get(task, math.nan)
        return x, t


def _photometric(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness/contrast/saturation, scaled by ``strength`` in [0, 1]."""
    f = img.astype(np.float32)
    gain = 1 + rng.uniform(-0.25, 0.25) * strength
    bias = rng.uniform(-15, 15) * strength
    gray = f.mean(axis=2, keepdims=True)
    sat = 1 + rng.uniform(-0.3, 0.3) * strength
    f = (gray + (f - gray) * sat) * gain + bias
    return np.clip(f, 0, 255).astype(np.uint8)


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]


def stack_task_labels(targets: list[dict], key: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([t[key] for t in targets], dtype=dtype)


def records_for(
    sources: tuple[SourceConfig, ...], cfg: Config, cache_root: Path, progress: bool = True
) -> list[Record]:
    """Resolve every source to records; synthetic sources are rendered once into a cache dir."""
    from edge_mtl.data.generate import write_synthetic

    m = cfg.model
    records: list[Record] = []
    for s in sources:
        if s.kind == "synthetic":
            root = (
                Path(s.path)
                if s.path
                else cache_root / (f"synthetic-s{s.seed}-n{s.n}-{s.frame_hw[0]}x{s.frame_hw[1]}")
            )
            if not (root / "labels.json").is_file():
                print(f"rendering {s.n} synthetic scenes into {root} (cached for later runs)")
                write_synthetic(root, s.n, s.seed, s.frame_hw, progress=progress)
        else:
            root = Path(s.path)
            if not root.exists():
                raise InputError(f"{root}: data directory not found")
        recs, unknown = read_bdd(root, m.detect, m.classify, m.regress)
        if unknown:
            print(f"{root}: skipped boxes of unknown categories: {dict(unknown)}")
        records.extend(recs)
    return records
