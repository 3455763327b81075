"""The ``edge-mtl quantize`` subcommand. Only argparse at import time; onnx and onnxruntime's
quantizer load inside the handler. Nothing here imports torch."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING

from edge_mtl.runtime.options import Provider, choices

if TYPE_CHECKING:
    from edge_mtl.bench.accuracy import LabelReader, MaskReader

# Accuracy is measured on one named provider: with "auto" FP32 and INT8 could land on different
# providers, and the row would compare kernels rather than quantization.
EVAL_PROVIDERS = choices(Provider)


def register(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    read_labels: LabelReader | None = None,
    read_mask: MaskReader | None = None,
) -> None:
    """Add the ``quantize`` subcommand to the ``edge-mtl`` parser. ``read_labels`` reads the
    ``--eval`` folder (the composition root passes the training side's BDD reader; without it
    ``--eval`` is refused), ``read_mask`` its pixel labels (segment tasks)."""
    p = sub.add_parser(
        "quantize",
        help="INT8 (QDQ) quantization with calibration, accuracy report and CPU latency",
        description=(
            "Quantize an FP32 edge-mtl ONNX export to INT8 (QDQ) with ONNX Runtime, calibrated on "
            "a condition-balanced subset of --calib, then report FP32 vs INT8 accuracy (--eval, "
            "on --eval-provider) and batch-1 CPU latency measured side by side. The QDQ file "
            "also runs on TensorRT (explicit quantization; quantize with --target tensorrt)."
        ),
    )
    p.add_argument("--onnx", required=True, help="FP32 model exported by `edge-mtl export`")
    p.add_argument(
        "--calib", required=True, help="calibration images: a BDD-format folder or any folder"
    )
    p.add_argument("--out", required=True, help="INT8 ONNX file to write, e.g. model.int8.onnx")
    p.add_argument(
        "--method", choices=["minmax", "entropy", "percentile"], default="minmax",
        help="activation range calibration (default minmax)",
    )  # fmt: skip
    p.add_argument(
        "--reduce-range", choices=["auto", "on", "off"], default="auto",
        help="7-bit weights; auto = on for CPUs without VNNI (default auto)",
    )  # fmt: skip
    p.add_argument(
        "--target", choices=["cpu", "tensorrt"], default="cpu",
        help="cpu: uint8 activations (default); tensorrt: symmetric int8 activations",
    )  # fmt: skip
    p.add_argument(
        "--exclude", nargs="+", default=[], metavar="NODE",
        help="node names to keep float, or 'auto' for the sensitivity search",
    )  # fmt: skip
    p.add_argument(
        "--eval", dest="eval_data",
        help="labelled set for the report: a BDD100K folder, COCO .json, KITTI folder or class "
        "folders (as eval --data)",
    )  # fmt: skip
    p.add_argument(
        "--eval-provider", choices=EVAL_PROVIDERS, default="cpu",
        help="execution provider that runs FP32 and INT8 for --eval and --exclude auto (INT8 "
        "kernels differ per provider); it must initialise here, checked before calibration. "
        "Latency is always measured on CPU (default cpu)",
    )  # fmt: skip
    p.add_argument("--calib-size", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument(
        "--tolerance", type=float, default=1.0,
        help="allowed metric loss in points (default 1): --exclude auto keeps layers float "
        "until INT8 is within it, and the --eval report flags every metric past it: a drop of "
        "mAP or accuracy in points, an MAE increase in percent of the label's std",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="CPU threads for eval/latency")
    p.add_argument("--report", help="also write the summary and tables as JSON here")
    p.set_defaults(func=cmd_quantize, read_labels=read_labels, read_mask=read_mask)


class StageLines(logging.Handler):
    """The quantizer's stage lines on stderr when it is a terminal (looked up at each line),
    with the seconds since the command started: calibration, evaluation and the search take
    minutes, and stdout gets the report only at the end. A log keeps to the report, and bad
    input found mid-way to its one error line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.start = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if not sys.stderr.isatty():
            return
        elapsed = time.monotonic() - self.start
        print(f"edge-mtl quantize: [{elapsed:.0f} s] {record.getMessage()}", file=sys.stderr)


def show_stages() -> None:
    """Route ``edge_mtl.calibration``'s INFO lines to :class:`StageLines`, once per process."""
    logger = logging.getLogger("edge_mtl.calibration")
    for h in logger.handlers:
        if isinstance(h, StageLines):
            h.start = time.monotonic()
            return
    logger.addHandler(StageLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def cmd_quantize(args: argparse.Namespace) -> int:
    import dataclasses

    from edge_mtl.calibration.quantize import (
        Method,
        QuantizeConfig,
        ReduceRange,
        Target,
        quantize,
    )
    from edge_mtl.runtime.errors import InputError
    from edge_mtl.runtime.hardware import cpu_model, isa_summary
    from edge_mtl.runtime.providers import Provider

    if "auto" in args.exclude and len(args.exclude) > 1:
        raise InputError("--exclude: give either 'auto' or node names, not both")
    if args.eval_data and args.read_labels is None:
        raise InputError("--eval: this build of the CLI has no label reader")
    qc = QuantizeConfig(
        onnx=args.onnx,
        calib=args.calib,
        out=args.out,
        method=Method(args.method),
        reduce_range=ReduceRange(args.reduce_range),
        target=Target(args.target),
        exclude=tuple(args.exclude),
        eval_data=args.eval_data,
        calib_size=args.calib_size,
        seed=args.seed,
        tolerance=args.tolerance,
        eval_provider=Provider(args.eval_provider),
        threads=args.threads,
    )
    show_stages()
    res = quantize(qc, args.read_labels, args.read_mask)
    cal = res.meta.calibration or {}
    sel = cal.get("selection", {})
    print(
        f"wrote {res.path}: int8 QDQ ({cal['activations']} activations, {cal['weights']} "
        f"weights), method {cal['method']}, reduce-range {cal['reduce_range']}"
    )
    print(
        f"calibration: {sel.get('size')} of {sel.get('available')} images from {sel.get('path')} "
        f"({sel.get('source')}, seed {sel.get('seed')})"
    )
    for stratum, n in cal.get("strata", {}).items():
        print(f"  {stratum:<28} {n:>5}")
    print(f"float tail (decode, attention softmax; kept float): {len(res.float_tail)} nodes")
    if qc.auto:
        steps = ", ".join(f"{k} kept -> {d:.2f} pts" for k, d in res.search)
        where = f"tolerance {qc.tolerance:g} pts, provider {qc.eval_provider.value}"
        print(f"--exclude auto ({where}): {steps}")
    if res.kept_float:
        print(f"kept float: {', '.join(res.kept_float)}")
    if res.accuracy is not None:
        acc = res.accuracy = dataclasses.replace(res.accuracy, tolerance=qc.tolerance)
        print(
            f"\naccuracy on {acc.images} images of {args.eval_data} "
            f"(provider {acc.provider.value}):"
        )
        print(acc.markdown())
        warning = acc.warning()  # the metrics past --tolerance, marked in the table above
        if warning:
            print(warning)
    fp32 = res.latency_ms.get("fp32")
    print(f"\nlatency, batch 1, {qc.threads} threads, CPU {cpu_model()} ({isa_summary()}):")
    for label, ms in res.latency_ms.items():
        ratio = f"  {ms / fp32:.2f}x fp32" if fp32 and label != "fp32" else ""
        print(f"  {label:<22} p50 {ms:8.2f} ms{ratio}")
    if args.report:
        evaluated = res.accuracy is not None or qc.auto
        _write_report(args.report, res, qc.eval_provider.value if evaluated else None)
    return 0


def _write_report(path: str, res, eval_provider: str | None) -> None:
    """``eval_provider``: the provider behind the accuracy and search figures (None: none)."""
    from edge_mtl.runtime.files import write_json_atomic

    data = {
        "model": str(res.path),
        "eval_provider": eval_provider,
        "calibration": res.meta.calibration,
        "search": res.search,
        "latency_ms": res.latency_ms,
        "accuracy": res.accuracy.to_dict() if res.accuracy else None,
    }
    write_json_atomic(path, data, indent=2)
