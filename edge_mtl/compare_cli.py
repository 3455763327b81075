"""``edge-mtl compare``: the command line of :mod:`edge_mtl.compare`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edge_mtl.data.cache import data_root_help, default_data_root

if TYPE_CHECKING:
    from edge_mtl.bench.baseline import BaselineFactory


def register(sub: argparse._SubParsersAction, baseline: BaselineFactory) -> None:  # type: ignore[type-arg]
    """``baseline`` makes the :class:`~edge_mtl.bench.baseline.Baseline` whose ``latency`` times
    the variants' ONNX exports (made only without ``--no-latency``: it needs onnx)."""
    p = sub.add_parser(
        "compare",
        help="multi-task model vs single-task models on the same data and budget",
        description="Train one single-task model per task and the multi-task model with the "
        "same data, schedule and budget (train.time_limit_min / train.epochs each), then "
        "report per task the metric of each, the delta and its standard error (SE) from the "
        "validation set size: negative transfer is flagged only when the multi-task model is "
        "worse by more than 2 SE, a smaller difference is 'within noise', and mAP (no "
        "closed-form SE) is 'not tested'. Then parameters, GFLOPs and CPU latency of the one "
        "multi-task model against the sum of the single-task models. Writes "
        "OUT/compare.json and OUT/compare.md. "
        "Interrupted? Run the same command again: finished variants are reused and the "
        "unfinished one resumes from its last.pt.",
    )
    p.add_argument(
        "--config", required=True, help="YAML config or built-in name, two or more tasks"
    )
    p.add_argument("--out", default="runs/compare", help="output directory (runs/compare)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MIN",
        help="override train.time_limit_min: the training budget of EACH model",
    )
    p.add_argument("--epochs", type=int, help="override train.epochs of each model")
    p.add_argument("--data-root", help=data_root_help())
    p.add_argument("--no-latency", action="store_true", help="skip the ONNX latency measurement")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=lambda args: cmd_compare(args, baseline))


def cmd_compare(args: argparse.Namespace, baseline: BaselineFactory) -> int:
    from edge_mtl.compare import compare, to_markdown
    from edge_mtl.config import load_config, with_overrides

    cfg = with_overrides(load_config(args.config), args.epochs, args.time_limit)
    report = compare(
        cfg,
        args.out,
        None if args.no_latency else baseline().latency,
        device=args.device,
        data_root=args.data_root or default_data_root(),
        progress=not args.quiet,
    )
    print(to_markdown(report), end="")
    flagged = [r["task"] for r in report["tasks"] if r["negative_transfer"]]
    if flagged:
        print(
            "negative transfer (multi-task worse than single-task by more than 2 standard "
            f"errors): {', '.join(flagged)}"
        )
    untested = [r["task"] for r in report["tasks"] if r["negative_transfer"] is None]
    if untested:
        print(f"not tested against noise (no standard error): {', '.join(untested)}")
    print(f"wrote {args.out}/compare.json and {args.out}/compare.md")
    return 0
