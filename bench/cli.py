"""The ``edge-mtl bench`` subcommand: measure models (and merge results from other machines),
print the table, write JSON / markdown / plot.

Only argparse is imported at module level; onnxruntime loads inside :func:`cmd_bench`, and
torch only through the :class:`~edge_mtl.bench.baseline.Baseline` when ``--torch`` is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_mtl.runtime.cli import PROVIDER_CHOICES, add_openvino_arguments

if TYPE_CHECKING:
    from edge_mtl.bench.accuracy import LabelReader, MaskReader
    from edge_mtl.bench.baseline import Baseline, BaselineFactory
    from edge_mtl.bench.schema import BenchSettings, Row


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    baseline: BaselineFactory | None = None,
    read_labels: LabelReader | None = None,
    read_mask: MaskReader | None = None,
) -> None:
    """Add the ``bench`` subcommand to the ``edge-mtl`` parser.

    ``baseline`` makes the :class:`~edge_mtl.bench.baseline.Baseline` that measures the
    ``--torch CKPT`` rows (called only then); ``read_labels`` reads the ``--accuracy`` data,
    ``read_mask`` its pixel labels (segment tasks). The
    composition root (``edge_mtl.cli``) passes them in, so bench never imports torch or the
    training code itself. Without them ``--torch`` / ``--accuracy`` are an error.
    """
    p = sub.add_parser(
        "bench",
        help="benchmark ONNX models: latency, throughput, memory; table, JSON, plot",
        description=(
            "Time every combination of --model x --provider x --batch after a warm-up, all of "
            "them in turns (--sequential: one after another): latency "
            "p50/p90/p99/mean/std, images/s, peak RSS (and GPU memory on CUDA), model size. "
            "A provider that cannot run here is reported as skipped. --e2e adds the real "
            "pipeline on a video or stream; --merge combines result files from several machines."
        ),
    )
    p.add_argument("--model", nargs="+", default=[], metavar="ONNX", help="exported models")
    p.add_argument(
        "--provider", nargs="+", default=["auto"], choices=PROVIDER_CHOICES,
        help="providers to compare (auto = best that works here; a named one must work)",
    )  # fmt: skip
    p.add_argument("--batch", nargs="+", type=int, default=[1], metavar="N", help="batch sizes")
    p.add_argument(
        "--imgsz", type=int, nargs=2, metavar=("H", "W"),
        help="input size for models without edge-mtl metadata (others keep their export size)",
    )  # fmt: skip
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--runs", type=int, metavar="N", help="timed calls per row (default 100)")
    amount.add_argument("--seconds", type=float, metavar="S", help="time each row for S seconds")
    p.add_argument("--warmup", type=int, default=10, metavar="N", help="untimed calls first")
    p.add_argument(
        "--sequential", action="store_true",
        help="time each row alone, one after another, holding one model at a time (default: "
        "load all rows' models, then time them in turns of ~0.5 s, and run their --e2e rounds "
        "in turns too, so a change in the machine's speed hits every row alike)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=0, metavar="K", help="CPU threads (0 = auto)")
    add_openvino_arguments(p)
    p.add_argument(
        "--openvino-runtime", action="store_true",
        help="also time each model through OpenVINO's own runtime (the openvino package, "
        "[openvino] extra) on the same input and threads, with its parity against the CPU "
        "provider; --ov-device/--ov-precision/--ov-cache apply (on AMD CPUs, where the "
        "onnxruntime plugin offers no device, this is the OpenVINO path)",
    )  # fmt: skip
    p.add_argument(
        "--e2e", metavar="SRC",
        help="also run the real pipeline on this source; camera:VIDEO@FPS serves VIDEO looped at "
        "FPS as a live MJPEG camera on 127.0.0.1 for the run (capture-to-result age on a live "
        "source, no hardware needed)",
    )  # fmt: skip
    p.add_argument("--e2e-frames", type=int, default=300, metavar="N", help="e2e frame cap")
    p.add_argument(
        "--streams", nargs="+", type=int, default=[], metavar="N",
        help="with --e2e: also open SRC N times and batch the copies through one engine "
        "(e.g. --streams 1 2 4); aggregate FPS against 1 stream, measured in the same run",
    )  # fmt: skip
    _add_accuracy_arguments(p)
    p.add_argument("--torch", metavar="CKPT", help="add a torch eager baseline (needs [train])")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON", help="bench results to add")
    p.add_argument("--json", metavar="OUT.json", help="write the results here")
    p.add_argument("--md", metavar="OUT.md", help="write a markdown table here")
    p.add_argument("--plot", metavar="OUT.png", help="write a latency plot here (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench, baseline=baseline, read_labels=read_labels, read_mask=read_mask)


def _add_accuracy_arguments(p: argparse.ArgumentParser) -> None:
    """``--accuracy`` and ``--profile``: passes over the ONNX rows after their timing."""
    p.add_argument(
        "--accuracy", metavar="DATA",
        help="also score each measured ONNX row on this labelled set (any layout eval --data "
        "takes) on the row's own provider with evaluation thresholds, after the timing: mAP, "
        "accuracy, MAE as columns beside latency",
    )  # fmt: skip
    p.add_argument(
        "--profile", action="store_true",
        help="also profile each measured ONNX row with onnxruntime's profiler (top operators "
        "by time, ms per call) in a separate pass after the timing, so the latency "
        "figures are not slowed by it",
    )  # fmt: skip


def _settings(args: argparse.Namespace, e2e_source: str | None) -> BenchSettings:
    """Checked settings from the arguments (one-line InputError on a bad value)."""
    from edge_mtl.bench.schema import BenchSettings
    from edge_mtl.runtime.errors import InputError

    if not (args.model or args.merge or args.torch):
        raise InputError("nothing to do: give --model, --torch and/or --merge")
    if args.e2e and not args.model:
        raise InputError("--e2e needs --model")
    if args.streams and not args.e2e:
        raise InputError("--streams needs --e2e SRC (the source each stream opens)")
    for flag, on in (("--accuracy", args.accuracy), ("--profile", args.profile)):
        if on and not args.model:
            raise InputError(f"{flag} needs --model (it applies to the ONNX rows)")
    if args.accuracy and args.read_labels is None:
        raise InputError("--accuracy: this build of the CLI has no label reader")
    if args.accuracy and not Path(args.accuracy).exists():  # before the timing, not after
        raise InputError(f"{args.accuracy}: evaluation data not found")
    checks = [
        ("--runs", args.runs, args.runs is None or args.runs >= 1, ">= 1"),
        ("--seconds", args.seconds, args.seconds is None or args.seconds > 0, "> 0"),
        ("--warmup", args.warmup, args.warmup >= 0, ">= 0"),
        ("--threads", args.threads, args.threads >= 0, ">= 0"),
        ("--batch", args.batch, min(args.batch) >= 1, ">= 1"),
        ("--imgsz", args.imgsz, args.imgsz is None or min(args.imgsz) >= 1, "positive"),
        ("--e2e-frames", args.e2e_frames, args.e2e_frames >= 1, ">= 1"),
        ("--streams", args.streams, not args.streams or min(args.streams) >= 1, ">= 1"),
    ]
    for name, value, ok, want in checks:
        if not ok:
            raise InputError(f"{name} must be {want}, got {value}")
    return BenchSettings(
        providers=tuple(dict.fromkeys(args.provider)),
        batches=tuple(dict.fromkeys(args.batch)),
        imgsz=tuple(args.imgsz) if args.imgsz else None,
        runs=args.runs if args.runs is not None else 100,
        seconds=args.seconds,
        warmup=args.warmup,
        threads=args.threads,
        e2e_source=e2e_source,
        e2e_frames=args.e2e_frames,
        e2e_streams=tuple(sorted(set(args.streams))),
        ov_device=args.ov_device,
        ov_precision=args.ov_precision,
        ov_cache_dir=args.ov_cache,
        turns=not args.sequential,
        accuracy_data=args.accuracy,
        profile=args.profile,
    )


def _baseline(args: argparse.Namespace) -> Baseline:
    """The torch eager baseline of ``--torch`` (one-line InputError without torch)."""
    from edge_mtl.runtime.errors import InputError

    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except ImportError:  # an import hook that forbids torch
        has_torch = False
    if not has_torch:
        raise InputError("--torch needs PyTorch: pip install edge-mtl[train]")
    if args.baseline is None:
        raise InputError("--torch: this build of the CLI has no torch baseline")
    return args.baseline()


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure, merge, print, save (``--e2e camera:VIDEO@FPS``: with a loopback camera serving
    VIDEO for the whole run, measured at its URL). Returns 0."""
    from edge_mtl.bench import camera

    spec = camera.parse_spec(args.e2e) if args.e2e else None
    if spec is None:
        return _bench(args, args.e2e)
    with camera.LoopbackCamera(*spec) as cam:
        return _bench(args, cam.url)


def _bench(args: argparse.Namespace, e2e_source: str | None) -> int:
    """:func:`cmd_bench` with the e2e source to open (a camera spec already served)."""
    from edge_mtl.bench import measure, schema
    from edge_mtl.bench.plot import save_plot
    from edge_mtl.bench.report import render_markdown, render_text
    from edge_mtl.runtime.files import check_writable, write_text_atomic

    settings = _settings(args, e2e_source)
    for flag, path in (("--json", args.json), ("--md", args.md), ("--plot", args.plot)):
        if path:
            check_writable(path, f"{flag} file")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="edge-mtl bench: %(message)s")
    docs = [schema.load_document(p) for p in args.merge]  # fail on a bad file before measuring
    if e2e_source:
        from edge_mtl.runtime.sources import open_source

        open_source(e2e_source).close()  # a wrong --e2e fails now, not after the first row

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"edge-mtl bench: {msg}", file=sys.stderr, flush=True)

    labelled: dict = {}  # the --accuracy set as read for each model's class names
    if settings.accuracy_data:
        from edge_mtl.bench.accuracy import check_data

        for m in args.model:  # a wrong --accuracy set fails now, not after the timing
            check_data(m, settings.accuracy_data, args.read_labels, labelled, args.read_mask)
    if args.model or args.torch:
        argv = sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else []
        session = schema.new_session(settings, argv)
        rows: list[Row] = []
        for m in args.model:
            rows += measure.bench_model(
                m, settings, session["machine"], 0, log, openvino_runtime=args.openvino_runtime
            )
        baseline = _baseline(args) if args.torch else None
        if baseline is not None:  # at the input size the ONNX rows ran at
            hw = next((tuple(r.input_hw) for r in rows if r.input_hw), None)
            rows += baseline.rows(args.torch, settings, session["machine"], 0, hw, log)
        if settings.turns:
            measure.retime_in_turns(rows, settings, baseline, log)
        if settings.accuracy_data:  # after every timed call: evaluation shares no time with them
            from edge_mtl.bench.accuracy import row_accuracy

            row_accuracy(
                rows, settings.accuracy_data, args.read_labels, settings, log, labelled,
                args.read_mask,
            )  # fmt: skip
        if settings.profile:
            from edge_mtl.bench.profile import profile_rows

            profile_rows(rows, settings, log)
        docs.insert(0, schema.document([session], rows))
    doc = docs[0] if len(docs) == 1 else schema.merge_documents(docs)
    print(render_text(doc))
    if args.json:
        schema.write_json(doc, args.json)
        log(f"wrote {args.json}")
    if args.md:
        write_text_atomic(args.md, render_markdown(doc))
        log(f"wrote {args.md}")
    if args.plot:
        why = save_plot(doc, args.plot)
        if why:
            print(f"edge-mtl bench: {why}", file=sys.stderr)
        else:
            log(f"wrote {args.plot}")
    return 0
