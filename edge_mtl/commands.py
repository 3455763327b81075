"""Subcommands that need the training stack: synth, train (eval: :mod:`edge_mtl.eval_cli`).
Each handler imports torch lazily, so ``edge-mtl --help`` and the runtime commands stay
torch-free."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mtl.data.cache import data_root_help, default_data_root
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import check_writable, check_writable_dir

if TYPE_CHECKING:
    from edge_mtl.config import ModelConfig


def _register_synth(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="replace the images/ and labels.json of a non-empty --out and an existing --video "
        "(refused otherwise)",
    )
    p.set_defaults(func=cmd_synth)


def register(sub: argparse._SubParsersAction) -> None:
    _register_synth(sub)

    p = sub.add_parser(
        "train",
        help="train a multi-task model from a YAML config",
        description="Train the model described by --config; writes last.pt, "
        "best.pt and metrics.jsonl into --out. A run lasts train.epochs or "
        "train.time_limit_min minutes of training, whichever ends first (the learning-rate "
        "schedule anneals to fit that one); the log says which at the start. An --out that "
        "already holds a run is refused unless --resume or --exist-ok.",
    )
    p.add_argument(
        "--config", required=True, help="YAML config file, or a built-in name (e.g. synthetic)"
    )
    p.add_argument("--out", required=True, help="run directory, e.g. runs/demo")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT from its last.pt (a finished run trains further only "
        "with a higher --epochs or --time-limit)",
    )
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="start afresh in an OUT that holds a run, deleting its last.pt, best.pt and "
        "metrics.jsonl (refused otherwise)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="override train.epochs; with a time limit the run ends at whichever comes first",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MIN",
        help="override train.time_limit_min: minutes of training (0 = none); the run ends at "
        "this or at train.epochs, whichever comes first, so raise --epochs to use all the time",
    )
    p.add_argument("--pretrained", help="local torchvision ResNet state dict for the trunk")
    p.add_argument("--data-root", help=data_root_help())
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
        if not args.exist_ok:
            _refuse_non_empty(Path(args.out))
        check_writable_dir(args.out, "output folder")
    if args.video:
        if not args.exist_ok and Path(args.video).is_file():
            raise InputError(
                f"{args.video}: already exists; add --exist-ok to replace it, or choose another "
                "--video"
            )
        check_writable(args.video, "video file", create_parents=False)
    if args.out:
        out = write_synthetic(args.out, args.n, args.seed, hw, replace=args.exist_ok)
        print(f"wrote {args.n} scenes to {out}/images and {out}/labels.json")
    if args.video:
        path = write_video(args.video, args.frames, args.seed, hw, args.fps)
        gt, info = truth_paths(path)
        masks = path.with_name(f"{path.stem}.masks")
        print(f"wrote {args.frames} frames to {path} (ground truth: {gt}, {info}, {masks}/)")
    return 0


def _refuse_non_empty(out: Path) -> None:
    """InputError when ``out`` is a folder with anything in it: rendering fewer scenes into a
    used folder would leave its old images beside the new labels.json."""
    if not out.is_dir():
        return
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    if held:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise InputError(
            f"{out}: the folder is not empty ({shown}); add --exist-ok to replace its images/, "
            "masks (labels/), synthetic.json and labels.json, or choose another --out"
        )


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


def _launch_distributed(args: argparse.Namespace, data_root: str) -> int:
    """Re-run this train command as ``args.devices`` torchrun workers."""
    from edge_mtl.distributed import launch

    argv = ["train", "--config", args.config, "--out", args.out, "--device", args.device]
    argv += ["--data-root", data_root]
    for flag, value in (("--epochs", args.epochs), ("--time-limit", args.time_limit)):
        if value is not None:
            argv += [flag, str(value)]
    if args.pretrained:
        argv += ["--pretrained", args.pretrained]
    flags = (("--resume", args.resume), ("--exist-ok", args.exist_ok), ("--quiet", args.quiet))
    argv += [f for f, on in flags if on]
    if args.debug:
        argv.insert(0, "--debug")
    return launch(args.devices, argv)


def cmd_train(args: argparse.Namespace) -> int:
    from edge_mtl.train import check_run_folder, finished_note, train

    cfg = _args_config(args)
    out = check_writable_dir(args.out, "run folder")
    data_root = args.data_root or str(default_data_root())
    # The launching (or only) process checks the folder before any worker starts; in a torchrun
    # worker, train() has rank 0 check it.
    if "WORLD_SIZE" not in os.environ:
        check_run_folder(out, args.resume, args.exist_ok)
        finished = finished_note(cfg, out) if args.resume else None
        if finished:
            print(finished[0])
            return 0
        if args.devices > 1:
            return _launch_distributed(args, data_root)
    metrics = train(
        cfg,
        out,
        args.device,
        args.resume,
        progress=not args.quiet,
        data_root=data_root,
        exist_ok=args.exist_ok,
    )
    if not metrics and int(os.environ.get("RANK", "0")) != 0:
        return 0  # a worker of a distributed run: rank 0 reports
    print(f"done: {args.out}/best.pt, {args.out}/last.pt, {args.out}/metrics.jsonl")
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
