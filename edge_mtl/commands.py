"""Subcommands that need the training stack: synth, train, eval. Each handler imports torch
lazily, so ``edge-mtl --help`` and the runtime commands stay torch-free."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import check_writable, check_writable_dir

if TYPE_CHECKING:
    from edge_mtl.config import ModelConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="render synthetic driving scenes (BDD100K-style JSON) or a clip",
        description="Render procedural driving scenes with boxes, weather/scene/"
        "time-of-day labels and road curvature, deterministic by seed.",
    )
    p.add_argument("--out", help="output directory for images/ + labels.json")
    p.add_argument("--n", type=int, default=200, help="number of scenes (default 200)")
    p.add_argument("--seed", type=int, default=0, help="first seed (scene i uses seed+i)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(360, 640),
        metavar=("H", "W"),
        help="frame size in pixels (default 360 640)",
    )
    p.add_argument("--video", help="also (or only) write a driving clip to this .mp4")
    p.add_argument("--frames", type=int, default=300, help="frames in --video (default 300)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of --video")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser(
        "train",
        help="train a multi-task model from a YAML config",
        description="Train the model described by --config; writes last.pt, "
        "best.pt and metrics.jsonl into --out.",
    )
    p.add_argument(
        "--config", required=True, help="YAML config file, or a built-in name (e.g. synthetic)"
    )
    p.add_argument("--out", required=True, help="run directory, e.g. runs/demo")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MIN",
        help="override train.time_limit_min (schedule anneals to fit)",
    )
    p.add_argument("--pretrained", help="local torchvision ResNet state dict for the trunk")
    p.add_argument("--data-root", default="data", help="where synthetic data is cached")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine (runs this command under torchrun: "
        "NCCL on GPUs, gloo on CPU); train.batch_size stays the global batch",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: mAP, accuracy/F1, MAE",
        description="Evaluate --weights on the config's validation data "
        "(or the config stored in the checkpoint).",
    )
    p.add_argument("--weights", required=True, help="checkpoint, e.g. runs/demo/best.pt")
    p.add_argument(
        "--config", help="config file or built-in name: use its data.val (default: checkpoint's)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default="data")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=cmd_eval)


def cmd_synth(args: argparse.Namespace) -> int:
    from edge_mtl.data.generate import truth_paths, write_synthetic, write_video

    if not args.out and not args.video:
        raise InputError("synth: give --out DIR, --video FILE.mp4, or both")
    hw = tuple(args.size)
    if min(hw) < 64:
        raise InputError(f"--size {hw[0]} {hw[1]}: frames must be at least 64 pixels each way")
    if args.out and args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.video and args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    if args.video and not args.fps > 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    # Every output is checked before the first scene is rendered.
    if args.out:
        check_writable_dir(args.out, "output folder")
    if args.video:
        check_writable(args.video, "video file", create_parents=False)
    if args.out:
        out = write_synthetic(args.out, args.n, args.seed, hw)
        print(f"wrote {args.n} scenes to {out}/images and {out}/labels.json")
    if args.video:
        path = write_video(args.video, args.frames, args.seed, hw, args.fps)
        gt, info = truth_paths(path)
        print(f"wrote {args.frames} frames to {path} (ground truth: {gt}, {info})")
    return 0


def _args_config(args: argparse.Namespace):
    """The config ``args.config`` names (a path or a built-in name) with the command line's
    overrides (``--epochs``, ``--time-limit``, ``--pretrained`` where the command has them)."""
    from edge_mtl.config import load_config, with_overrides

    return with_overrides(
        load_config(args.config),
        epochs=getattr(args, "epochs", None),
        time_limit_min=getattr(args, "time_limit", None),
        pretrained=getattr(args, "pretrained", None),
    )


def _launch_distributed(args: argparse.Namespace) -> int:
    """Re-run this train command as ``args.devices`` torchrun workers."""
    from edge_mtl.distributed import launch

    argv = ["train", "--config", args.config, "--out", args.out, "--device", args.device]
    argv += ["--data-root", args.data_root]
    for flag, value in (("--epochs", args.epochs), ("--time-limit", args.time_limit)):
        if value is not None:
            argv += [flag, str(value)]
    if args.pretrained:
        argv += ["--pretrained", args.pretrained]
    argv += [f for f, on in (("--resume", args.resume), ("--quiet", args.quiet)) if on]
    if args.debug:
        argv.insert(0, "--debug")
    return launch(args.devices, argv)


def cmd_train(args: argparse.Namespace) -> int:
    from edge_mtl.train import train

    cfg = _args_config(args)
    check_writable_dir(args.out, "run folder")
    if args.devices > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_distributed(args)
    metrics = train(
        cfg, args.out, args.device, args.resume, progress=not args.quiet, data_root=args.data_root
    )
    if not metrics and int(os.environ.get("RANK", "0")) != 0:
        return 0  # a worker of a distributed run: rank 0 reports
    print(f"done: {args.out}/best.pt, {args.out}/last.pt, {args.out}/metrics.jsonl")
    print(format_metrics(metrics, cfg.model))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from edge_mtl.checkpoint import load_model
    from edge_mtl.data.dataset import MultiTaskDataset, collate, records_for
    from edge_mtl.evaluate import evaluate, jsonable
    from edge_mtl.train import pick_autocast, pick_device

    model, cfg, _ = load_model(args.weights)
    if args.config:
        val_cfg = _args_config(args)
        if val_cfg.model != cfg.model:
            print(
                f"note: {args.config} describes a different model; using its data.val only",
                file=sys.stderr,
            )
        cfg = type(cfg)(model=cfg.model, data=val_cfg.data, train=cfg.train, source=cfg.source)
    dev = pick_device(args.device)
    # With --json, stdout carries the JSON alone (for jq and the like): the per-source lines
    # ("synthetic[0]: 300 images, ...") go to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        recs = records_for(cfg.data.val, cfg, Path(args.data_root))
    if not recs:
        raise InputError(f"{args.config or args.weights}: data.val has no images")
    loader = torch.utils.data.DataLoader(
        MultiTaskDataset(recs, cfg, train=False),
        batch_size=cfg.train.batch_size,
        collate_fn=collate,
    )
    amp_dtype, _ = pick_autocast(cfg.train.amp, dev)
    metrics = evaluate(model.to(dev), loader, cfg, dev, amp_dtype, progress=not args.json)
    if args.json:
        print(json.dumps({"weights": str(args.weights), "images": len(recs), **jsonable(metrics)}))
    else:
        print(f"{args.weights} on {len(recs)} images")
        print(format_metrics(metrics, cfg.model))
    return 0


def format_metrics(metrics: dict[str, float], model: ModelConfig) -> str:
    """The summary lines of ``metrics`` for every task of ``model`` (a ``ModelConfig``), each
    written by its kind in the task registry."""
    from edge_mtl.tasks import KINDS, declared

    return "\n".join(
        line
        for name, tasks in declared(model).items()
        for t in tasks
        for line in KINDS[name].metric_lines(t, metrics)
    )
