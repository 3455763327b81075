"""The ``edge-mtl eval-video`` subcommand: a model and its tracker scored on a clip with ground
truth (:mod:`edge_mtl.bench.video_eval`). Only the standard library and the flag helpers load at
module level."""

from __future__ import annotations

import argparse
import json

from edge_mtl.runtime.cli import PROVIDER_CHOICES
from edge_mtl.runtime.track_cli import add_track_arguments, check_track_args


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``eval-video`` to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "eval-video",
        help="score tracking (HOTA, MOTA, IDF1, ID switches), detection mAP and label flicker on a "
        "clip with ground truth",
        description=(
            "Run an exported model with the tracker of `run --track` over VIDEO and score it "
            "against the clip's MOTChallenge ground truth (written by `edge-mtl synth --video`: "
            "clip.gt.txt and clip.frames.json beside clip.mp4): HOTA with DetA and AssA, MOTA, "
            "IDF1, ID switches (per class and over all classes, with py-motmetrics and the "
            "HOTA paper's matching), per-frame detection mAP "
            "(pycocotools), and how often each classification label changes per 100 frames, "
            "raw and --smooth'ed, against the ground truth's changes. Needs the track-eval "
            "extra (pip install 'edge-mtl[track-eval]')."
        ),
    )
    p.add_argument("--model", required=True, help="ONNX file exported by edge-mtl")
    p.add_argument("--video", required=True, help="the clip (a video file)")
    p.add_argument("--gt", metavar="GT.txt", help="MOTChallenge ground truth (default: "
                   "VIDEO's .gt.txt beside it)")  # fmt: skip
    p.add_argument("--frames", metavar="FRAMES.json", help="per-frame attributes (default: "
                   "beside the ground truth)")  # fmt: skip
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
    from edge_mtl.bench.video_eval import read_truth

    gt = args.gt or str(Path(args.video).with_suffix(".gt.txt"))
    if not Path(gt).is_file():
        raise InputError(f"--gt {gt}: no such file (edge-mtl synth --video writes it)")
    truth = read_truth(gt, args.frames)
    try:
        import motmetrics  # noqa: F401
    except ImportError:
        raise InputError(
            "eval-video needs py-motmetrics: pip install 'edge-mtl[track-eval]'"
        ) from None
    report = _evaluate(args, gt, truth)
    from edge_mtl.bench.video_eval import table

    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    print(table(report))
    if args.json:
        write_json_atomic(args.json, report, indent=2)
    return 0


def _evaluate(args: argparse.Namespace, gt: str, truth_info: tuple) -> dict:
    from edge_mtl.bench.video_eval import evaluate, run_clip
    from edge_mtl.runtime.engine import Engine, EngineConfig
    from edge_mtl.runtime.errors import InputError
    from edge_mtl.runtime.track_cli import stabilize_config

    truth, info = truth_info
    config = EngineConfig(conf_threshold=args.conf, intra_op_threads=args.threads)
    engine = Engine(args.model, providers=args.provider, config=config)
    det = engine.meta.detect
    if det is None:
        raise InputError(f"--model {args.model}: the model has no detection task to track")
    classes = list(info.get("classes") or det.classes)
    run = run_clip(engine, args.video, stabilize_config(args), args.max_frames)
    report = evaluate(run, truth, info, classes)
    report.update(model=args.model, video=args.video, gt=gt,
                  smooth_s=args.smooth, provider=engine.provider.value)  # fmt: skip
    return report
