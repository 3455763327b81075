"""The ``edge-mtl run`` subcommand: a model on a source, into a window, a video and/or JSON lines.

Only argparse is imported at module level; numpy, OpenCV and onnxruntime load inside
:func:`cmd_run`, so ``edge-mtl --help`` stays instant and nothing here ever touches torch.
"""

from __future__ import annotations

import argparse
import logging

PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``run`` subcommand to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "run",
        help="run an exported ONNX model on a camera, stream, video or images",
        description=(
            "Run an exported edge-mtl ONNX model on SRC: a camera index (0), an RTSP/HTTP URL, a "
            "video file, an image, a folder of images or a quoted glob ('frames/*.jpg'). "
            "Ctrl-C stops cleanly; a summary line is printed at the end."
        ),
    )
    p.add_argument("--model", required=True, help="ONNX file exported by edge-mtl")
    p.add_argument("--source", required=True, metavar="SRC", help="camera/URL/video/image/dir/glob")
    p.add_argument(
        "--provider",
        default="auto",
        choices=PROVIDER_CHOICES,
        help="auto tries tensorrt > cuda > cpu; a named provider must work or the run fails",
    )
    p.add_argument("--show", action="store_true", help="show an overlay window (needs a display)")
    p.add_argument("--save", metavar="OUT.mp4", help="write the annotated video here")
    p.add_argument("--jsonl", metavar="OUT.jsonl", help="write one JSON record per frame here")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--conf", type=float, help="detection score threshold (default: the model's)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--threads", type=int, default=0, metavar="K", help="CPU intra-op threads")
    p.add_argument(
        "--imgsz",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size; required for models without edge-mtl metadata",
    )
    p.add_argument("--device", type=int, default=0, help="GPU device id (CUDA/TensorRT)")
    p.add_argument("--trt-cache", metavar="DIR", help="TensorRT engine + timing cache folder")
    p.add_argument(
        "--reconnect-timeout", type=float, default=10.0, metavar="S",
        help="give up on a lost live stream after S seconds",
    )  # fmt: skip
    p.set_defaults(func=cmd_run)


def _check_args(args: argparse.Namespace) -> None:
    from runtime.errors import InputError

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    for name in ("conf", "iou"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise InputError(f"--{name} must be in [0, 1], got {v}")
    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    if args.imgsz is not None and (min(args.imgsz) < 1):
        raise InputError(f"--imgsz must be positive, got {args.imgsz[0]} {args.imgsz[1]}")
    if args.reconnect_timeout <= 0:
        raise InputError(f"--reconnect-timeout must be > 0, got {args.reconnect_timeout}")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline; returns 0 (also after Ctrl-C, which ends a live run normally)."""
    from runtime.engine import Engine, EngineConfig
    from runtime.pipeline import Pipeline
    from runtime.sinks import JsonlSink, Sink, VideoSink, WindowSink, display_available
    from runtime.sources import open_source

    _check_args(args)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="edge-mtl run: %(message)s")
    log = logging.getLogger("edge_mtl.runtime")
    config = EngineConfig(
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        imgsz=tuple(args.imgsz) if args.imgsz else None,
        intra_op_threads=args.threads,
        device_id=args.device,
        trt_cache_dir=args.trt_cache,
    )
    engine = Engine(args.model, providers=args.provider, config=config)
    source = open_source(args.source, reconnect_timeout_s=args.reconnect_timeout)
    sinks: list[Sink] = []
    try:
        if args.show:
            if display_available():
                sinks.append(WindowSink())
            else:
                log.warning("--show ignored: no display here (or OpenCV lacks GUI support)")
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl))
        if args.save:
            sinks.append(VideoSink(args.save, fps=source.fps))
    except BaseException:
        for s in sinks:
            s.close()
        source.close()
        raise
    summary = Pipeline(engine, source, sinks, max_frames=args.max_frames).run()
    print(f"edge-mtl run: {summary.line()}, provider {engine.provider.value}")
    return 0
