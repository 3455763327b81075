"""The ``edge-mtl eval-video`` subcommand: a model and its tracker scored on a clip with ground
truth (:mod:`edge_mtl.bench.video_eval`). Only the standard library and the flag helpers load at
module level."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from edge_mtl.runtime.cli import PROVIDER_CHOICES
from edge_mtl.runtime.track_cli import add_track_arguments, check_track_args

if TYPE_CHECKING:
    from edge_mtl.runtime.engine import Engine


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``eval-video`` to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "eval-video",
        help="score tracking (HOTA, MOTA, IDF1, ID switches), detection mAP and label flicker on a "
        "clip with ground truth",
        description=(
            "Run an exported model with the tracker of `run --track` over each VIDEO and score it "
            "against the clip's MOTChallenge ground truth (written by `edge-mtl synth --video`: "
            "clip.gt.txt and clip.frames.json beside clip.mp4): HOTA with DetA and AssA, MOTA, "
            "IDF1, ID switches (per class and over all classes, with py-motmetrics and the "
            "HOTA paper's matching), per-frame detection mAP "
            "(pycocotools), and how often each classification label changes per 100 frames, "
            "raw and --smooth'ed, against the ground truth's changes. Several clips are "
            "scored one by one and pooled: MOTA and IDF1 from their summed counts, the rest "
            "averaged. Needs the track-eval extra (pip install 'edge-mtl[track-eval]')."
        ),
    )
    p.add_argument("--model", required=True, help="ONNX file exported by edge-mtl")
    p.add_argument("--video", required=True, nargs="+", metavar="VIDEO",
                   help="the clip (a video file), or several to pool")  # fmt: skip
    p.add_argument("--gt", metavar="GT.txt", help="MOTChallenge ground truth of a single "
                   "VIDEO (default: each VIDEO's .gt.txt beside it)")  # fmt: skip
    p.add_argument("--frames", metavar="FRAMES.json", help="per-frame attributes of a single "
                   "VIDEO (default: beside its ground truth)")  # fmt: skip
    p.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES)
    p.add_argument("--conf", type=float, help="detection score threshold (default: the model's)")
    p.add_argument("--threads", type=int, default=0, metavar="K", help="CPU intra-op threads")
    p.add_argument("--max-frames", type=int, metavar="N", help="score the first N frames only")
    add_track_arguments(p, switch=False)
    p.add_argument("--json", metavar="OUT.json", help="write the report as JSON here (- for "
                   "stdout, where nothing else is printed then)")  # fmt: skip
    p.set_defaults(func=cmd_eval_video)


def cmd_eval_video(args: argparse.Namespace) -> int:
    """Run and score; prints the table (and writes ``--json``); returns 0."""
    from pathlib import Path

    from edge_mtl.runtime.errors import InputError
    from edge_mtl.runtime.files import write_json_atomic

    check_track_args(args)
    if args.conf is not None and not 0.0 <= args.conf <= 1.0:
        raise InputError(f"--conf must be in [0, 1], got {args.conf}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    if len(args.video) > 1 and (args.gt or args.frames):
        raise InputError("--gt and --frames name one clip's files: give them with one --video")
    from edge_mtl.bench.video_eval import read_truth

    truths = []
    for video in args.video:
        gt = args.gt or str(Path(video).with_suffix(".gt.txt"))
        if not Path(gt).is_file():
            raise InputError(f"--gt {gt}: no such file (edge-mtl synth --video writes it)")
        truths.append((video, gt, read_truth(gt, args.frames)))
    try:
        import motmetrics  # noqa: F401
    except ImportError:
        raise InputError(
            "eval-video needs py-motmetrics: pip install 'edge-mtl[track-eval]'"
        ) from None
    from edge_mtl.bench.video_eval import clip_line, pool, table

    engine = _engine(args)
    quiet = args.json == "-"
    reports = []
    for video, gt, truth in truths:
        reports.append(_evaluate(args, engine, video, gt, truth))
        if len(truths) > 1 and not quiet:
            print(clip_line(reports[-1]), flush=True)
    report = reports[0]
    if len(reports) > 1:
        report = {"pooled": pool(reports), "clips": reports, "model": args.model,
                  "smooth_s": args.smooth, "provider": engine.provider.value}  # fmt: skip
    if quiet:
        print(json.dumps(report, indent=2))
        return 0
    print(table(report.get("pooled", report)))
    if args.json:
        write_json_atomic(args.json, report, indent=2)
    return 0


def _engine(args: argparse.Namespace) -> Engine:
    from edge_mtl.runtime.engine import Engine, EngineConfig
    from edge_mtl.runtime.errors import InputError

    config = EngineConfig(conf_threshold=args.conf, intra_op_threads=args.threads)
    engine = Engine(args.model, providers=args.provider, config=config)
    if engine.meta.detect is None:
        raise InputError(f"--model {args.model}: the model has no detection task to track")
    return engine


def _evaluate(
    args: argparse.Namespace, engine: Engine, video: str, gt: str, truth_info: tuple
) -> dict:
    """Run ``engine`` with the tracker over ``video`` and score it against its truth."""
    from edge_mtl.bench.video_eval import evaluate, run_clip
    from edge_mtl.runtime.track_cli import stabilize_config

    truth, info = truth_info
    classes = list(info.get("classes") or engine.meta.detect.classes)
    run = run_clip(engine, video, stabilize_config(args), args.max_frames)
    report = evaluate(run, truth, info, classes)
    report.update(model=args.model, video=video, gt=gt,
                  smooth_s=args.smooth, provider=engine.provider.value)  # fmt: skip
    return report
