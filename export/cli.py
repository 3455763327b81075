"""The ``edge-mtl export`` subcommand. Only argparse at import time; torch and onnx load inside
the handler so ``edge-mtl --help`` and the runtime commands stay light."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``export`` subcommand to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint to a self-describing ONNX file (parity-checked)",
        description=(
            "Export --weights to ONNX with the edge_mtl metadata the runtime needs, then check it: "
            "ONNX checker, shape inference, and torch vs ONNX Runtime parity on synthetic scenes. "
            "Nothing is written if a check fails."
        ),
    )
    p.add_argument("--weights", required=True, help="checkpoint, e.g. runs/demo/best.pt")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument(
        "--imgsz",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="input size in pixels, multiples of 32 (default: the training size)",
    )
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, metavar="N", help="fixed batch size N")
    batch.add_argument(
        "--dynamic-batch", action="store_true", help="dynamic batch dimension (the default)"
    )
    p.add_argument(
        "--half", action="store_true", help="FP16 weights and compute; float32 input and outputs"
    )
    p.add_argument(
        "--nms",
        action="store_true",
        help="in-graph per-class NMS with the --conf, --iou and --max-det below baked in; "
        "outputs det_num, det_boxes, det_scores, det_classes (the runtime can then only raise "
        "--conf or lower --max-det)",
    )
    p.add_argument(
        "--conf", type=float, metavar="C",
        help="detection score threshold in [0, 1) (default 0.25): baked into the NMS with "
        "--nms, else the default `edge-mtl run` reads from the model (its --conf overrides it)",
    )  # fmt: skip
    p.add_argument(
        "--iou", type=float, metavar="I",
        help="NMS IoU threshold in [0, 1] (default 0.5): baked in with --nms, else the runtime's "
        "default",
    )  # fmt: skip
    p.add_argument(
        "--max-det", type=int, metavar="K",
        help="detections kept per image (default 300): baked in with --nms, else the runtime's "
        "default",
    )  # fmt: skip
    p.add_argument(
        "--seg-logits", action="store_true",
        help="segment tasks output float logits [N, K, H, W] (default: a uint8 class map "
        "[N, H, W] from an in-graph argmax, K times smaller)",
    )  # fmt: skip
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    p.add_argument("--simplify", action="store_true", help="simplify the graph with onnxslim")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from edge_mtl.export.onnx_export import ExportConfig, export

    ec = ExportConfig(
        weights=args.weights,
        out=args.out,
        imgsz=tuple(args.imgsz) if args.imgsz else None,
        batch=args.batch,
        half=args.half,
        nms=args.nms,
        opset=args.opset,
        simplify=args.simplify,
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        seg_logits=args.seg_logits,
    )
    res = export(ec)
    m = res.meta
    batch = "dynamic" if m.batch is None else str(m.batch)
    print(
        f"wrote {res.path}: {m.precision.value}, input {m.input_name} [{batch}, 3, "
        f"{m.input_hw[0]}, {m.input_hw[1]}], {res.nodes} nodes, opset {ec.opset}"
        + (", in-graph NMS" if ec.nms else "")
    )
    seg = [t.name for t in m.tasks if t.kind_name == "segment"]
    if seg:
        what = "float logits [N, K, H, W]" if ec.seg_logits else "uint8 class maps [N, H, W]"
        print(f"segment tasks {', '.join(seg)}: {what} at the input resolution")
    det = m.detect
    if det is not None:
        how = "baked into the NMS" if ec.nms else "runtime defaults"
        print(
            f"detection thresholds ({how}): conf {det.score_threshold:g}, "
            f"iou {det.iou_threshold:g}, max-det {det.max_det}"
        )
    for line in res.report.lines():
        print(line)
    return 0
