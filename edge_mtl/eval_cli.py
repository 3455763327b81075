"""The ``edge-mtl eval`` subcommand: score any artifact on labelled data.

A ``.pt`` checkpoint runs in torch (:mod:`edge_mtl.evaluate`, on ``--device``); an ONNX file of
any precision runs through the runtime engine on ``--provider`` with the evaluation thresholds
and the metrics of :mod:`edge_mtl.bench.accuracy`, the very code behind quantize's FP32 vs INT8
report. The data: a config's ``data.val`` (``--config``; a checkpoint's own by default) or a
labelled set given by its path (``--data``, any layout of :mod:`edge_mtl.data.labelled`). Only
argparse at import time; torch and onnxruntime load inside the handler.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mtl.data.cache import data_root_help, default_data_root
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.options import Provider, choices

if TYPE_CHECKING:
    import numpy as np

    from edge_mtl.data.bdd import Record
    from edge_mtl.runtime.metadata import ModelMeta

ONNX_MAGIC = b"\x08"  # an ONNX ModelProto starts with field 1 (ir_version), a varint


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``eval`` subcommand to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "eval",
        help="score a checkpoint or an ONNX model (FP32/FP16/INT8): mAP, accuracy/F1, MAE",
        description=(
            "Score --model on labelled data: a config's validation data (--config; a "
            "checkpoint's own config by default) or a labelled set given by its path (--data: "
            "a BDD100K folder or label file, a COCO .json, a KITTI folder or class folders). "
            "A checkpoint runs in torch on --device; an ONNX file through the runtime engine on "
            "--provider with the metrics of quantize's accuracy report. Reported: detection "
            "mAP@0.5, mAP@0.5:0.95, per size and AP@0.5 per class; accuracy and macro-F1 per "
            "classification task; MAE per regression task; mIoU, IoU, pixel accuracy and IoU "
            "per class per segment task."
        ),
    )
    p.add_argument(
        "--model", "--weights", dest="model", required=True, metavar="FILE",
        help="checkpoint (runs/NAME/best.pt) or ONNX model; --weights is the older spelling",
    )  # fmt: skip
    data = p.add_mutually_exclusive_group()
    data.add_argument(
        "--config", help="config file or built-in name: score on its data.val (a checkpoint's "
        "own config by default; an ONNX model carries none)",
    )  # fmt: skip
    data.add_argument("--data", metavar="PATH", help="labelled set to score on, in any layout")
    p.add_argument(
        "--provider", choices=choices(Provider, auto=True),
        help="ONNX: execution provider, which must work here (default cpu; auto = the best "
        "that works)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, metavar="K", help="ONNX: CPU threads (default: auto)")
    p.add_argument("--device", help="checkpoint: auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--data-root", help=data_root_help())
    p.add_argument(
        "--json", action="store_true",
        help="print the metrics as one JSON object (checkpoint: keys as in metrics.jsonl, "
        "fractions; ONNX: named as quantize's report, points 0-100; NaN as null)",
    )  # fmt: skip
    p.set_defaults(func=cmd_eval)


def is_onnx(path: Path) -> bool:
    """An ``.onnx`` name, or an existing file that starts like an ONNX model."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(1) == ONNX_MAGIC
    except OSError:  # missing, a folder, unreadable: the checkpoint loader names the problem
        return False


def cmd_eval(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if is_onnx(path):
        if args.device is not None:
            raise InputError(f"--device applies to a checkpoint; {path} runs on --provider")
        return _eval_onnx(args, path)
    for flag, value in (("--provider", args.provider), ("--threads", args.threads)):
        if value is not None:
            raise InputError(f"{flag} applies to an ONNX model; {path} runs on --device")
    return _eval_checkpoint(args, path)


def _eval_checkpoint(args: argparse.Namespace, path: Path) -> int:
    import dataclasses

    import torch

    from edge_mtl.checkpoint import load_model
    from edge_mtl.commands import format_metrics
    from edge_mtl.config import load_config
    from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
    from edge_mtl.data.labelled import source_for
    from edge_mtl.evaluate import evaluate, jsonable
    from edge_mtl.train import pick_autocast, pick_device

    model, cfg, _ = load_model(path)
    if args.config:
        val_cfg = load_config(args.config)
        if val_cfg.model != cfg.model:
            print(
                f"note: {args.config} describes a different model; using its data.val only",
                file=sys.stderr,
            )
        cfg = dataclasses.replace(cfg, data=val_cfg.data)
    elif args.data:
        val = (dataclasses.replace(source_for(args.data, cfg.model.classify), name=args.data),)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=val))
    dev = pick_device(args.device or "auto")
    # With --json, stdout carries the JSON alone (for jq and the like): the per-source lines
    # ("synthetic[0]: 300 images, ...") go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        recs = records_for(cfg.data.val, cfg, _data_root(args))
    if not recs:
        raise InputError(f"{args.data or args.config or path}: data.val has no images")
    loader = torch.utils.data.DataLoader(
        MultiTaskDataset(recs, cfg, train=False),
        batch_size=cfg.train.batch_size,
        collate_fn=collate,
    )
    amp_dtype, _ = pick_autocast(cfg.train.amp, dev)
    metrics = evaluate(model.to(dev), loader, cfg, dev, amp_dtype, progress=not args.json)
    if args.json:
        head = {"model": str(path), "weights": str(path), "images": len(recs)}
        print(json.dumps({**head, **jsonable(metrics)}))
    else:
        print(f"{path} on {len(recs)} images")
        print(format_metrics(metrics, cfg.model))
    return 0


def _eval_onnx(args: argparse.Namespace, path: Path) -> int:
    from edge_mtl.bench.accuracy import EvalSet, eval_engine, predict_all, task_metrics
    from edge_mtl.runtime.errors import MetadataError
    from edge_mtl.runtime.metadata import METADATA_KEY

    if not (args.data or args.config):
        raise InputError(
            f"{path}: an ONNX model carries no data config; give --data PATH (a labelled set) "
            "or --config NAME (its data.val)"
        )
    if args.threads is not None and args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    try:
        engine = eval_engine(path, args.provider or "cpu", args.threads or 0)
    except MetadataError as e:
        if "--imgsz" not in str(e):  # the engine's advice to run a foreign model: not for eval
            raise
        raise MetadataError(
            f"{path}: has no '{METADATA_KEY}' metadata (not exported by edge-mtl?); eval needs "
            "the tasks and class names an export stores"
        ) from None
    meta = engine.meta
    det = meta.detect
    if det is not None and det.nms_in_graph:
        print(
            f"note: {path} has in-graph NMS (score >= {det.score_threshold:g}, IoU "
            f"{det.iou_threshold:g}, {det.max_det} boxes baked in): its mAP is that of the "
            "thresholded detections, lower than the plain export's",
            file=sys.stderr,
        )
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        records, source = _onnx_records(args, meta)
    data = EvalSet.of_records(records, source, read_task_mask)
    preds = predict_all({"model": engine}, data, None if args.json else _progress)["model"]
    metrics = task_metrics(preds, data, meta, breakdown=True)
    head = {
        "model": str(path),
        "precision": str(engine.precision),
        "provider": engine.provider.value,
        "images": len(records),
    }
    if args.json:
        finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
        print(json.dumps({**head, **finite}))
        return 0
    print(f"{path} ({head['precision']}, provider {head['provider']}) on {len(records)} images")
    units = {f"{t.name} MAE": t.unit for t in meta.tasks if t.unit}
    width = max(map(len, metrics), default=0)
    for name, v in metrics.items():
        if math.isnan(v):
            text = "n/a (no labels)"
        elif name.endswith(" MAE"):
            text = f"{v:.4g} {units.get(name, '')}".rstrip()
        else:
            text = f"{v:.2f}"
        print(f"  {name:<{width}}  {text}")
    return 0


def _progress(done: int, total: int) -> None:
    """``eval 120/500 images`` on a terminal's stderr, rewritten in place, cleared at the end."""
    if sys.stderr.isatty():
        end = "\r" + " " * 40 + "\r" if done == total else ""
        print(f"\reval {done}/{total} images", end=end, file=sys.stderr, flush=True)


def _onnx_records(args: argparse.Namespace, meta: ModelMeta) -> tuple[list[Record], str]:
    """The labelled records to score an ONNX model on, read with the model's own class names,
    and what they are; one line per source says what was read."""
    import dataclasses

    from edge_mtl.bench.accuracy import label_tasks

    det_classes, classify, regress = label_tasks(meta)
    if args.data:
        from edge_mtl.data.labelled import read_source, source_for

        s = source_for(args.data, classify)
        records, unknown = read_source(s, det_classes, classify, regress)
        boxes = sum(len(r.boxes) for r in records)
        skipped = ", ".join(f"{k} {v}" for k, v in unknown.most_common(10))
        print(
            f"{args.data} ({s.kind}): {len(records)} images, {boxes} boxes"
            + (f"; categories of no model class skipped: {skipped}" if skipped else "")
        )
        return records, f"{args.data} ({s.kind})"
    from edge_mtl.config import load_config
    from edge_mtl.data.dataset import records_for

    cfg = load_config(args.config)
    segment = {t.name: t.classes for t in meta.tasks if t.kind_name == "segment"}
    model = dataclasses.replace(
        cfg.model, detect=det_classes, classify=classify, regress=regress, segment=segment
    )
    cfg = dataclasses.replace(cfg, model=model)
    return records_for(cfg.data.val, cfg, _data_root(args)), f"{args.config} data.val"


def read_task_mask(
    record: Record, task: str, classes: tuple[str, ...], frame_hw: tuple[int, int]
) -> np.ndarray | None:
    """The ``MaskReader`` of :mod:`edge_mtl.bench.accuracy` (ONNX evaluation, ``bench
    --accuracy``, quantize's report): ``record``'s pixel label of the label kind ``task`` names
    as the task's class indices, uint8 (H, W) at ``frame_hw`` (255 = no label), None when the
    record has none."""
    from edge_mtl.data.masks import to_task

    label = record.masks.get(task)
    return None if label is None else to_task(label.load(frame_hw), task, classes)


def _data_root(args: argparse.Namespace) -> Path:
    """``--data-root``, else the per-user cache (the same folder from any working directory)."""
    return Path(args.data_root) if args.data_root else default_data_root()
