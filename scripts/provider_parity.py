"""The same models on the CPU provider and on another one (CUDA, TensorRT, OpenVINO): how far
their raw outputs are apart on the same images, and whether the decoded answers agree.

    python scripts/provider_parity.py --provider cuda --images 'data/*/images/*.jpg' \\
        demo/model.onnx demo/model.fp16.onnx demo/model.int8.onnx

Float outputs report the largest and mean absolute difference beside the largest value; integer
outputs (segmentation class maps) the share of equal elements; the decoded answers are held
against each other as bench does for OpenVINO's runtime (class probabilities, top-1, detections
matched by class and IoU). A provider that cannot run a model is reported for that model, and
the others still run.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.bench.openvino_runtime import compare as compare_results
from edge_mtl.runtime import Engine
from edge_mtl.runtime.errors import EdgeMTLError


def output_gap(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """How far one output's values on two providers are apart."""
    if a.dtype.kind in "uib":
        return {"dtype": str(a.dtype), "equal_pct": 100.0 * float((a == b).mean())}
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    return {
        "dtype": str(a.dtype),
        "max_abs": float(diff.max(initial=0.0)),
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_value": float(np.abs(a64).max(initial=0.0)),
    }


def compare(model: Path, provider: str, frames: list[np.ndarray]) -> dict[str, Any]:
    """One model on the CPU provider and on ``provider``, image by image at batch 1."""
    ref = Engine(model, "cpu")
    try:
        other = Engine(model, provider)
    except EdgeMTLError as e:
        return {"error": str(e)}
    x, _ = ref.preprocess(frames)
    outs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i in range(len(frames)):
        a, b = ref.run(x[i : i + 1]), other.run(x[i : i + 1])
        for name in a:
            outs.setdefault(name, []).append((a[name], b[name]))
    gaps = {
        name: output_gap(
            np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        )
        for name, pairs in outs.items()
    }
    answers = compare_results(ref.infer_batch(frames), other.infer_batch(frames))
    return {
        "provider": other.provider.value,
        "precision": other.precision,
        "outputs": gaps,
        "answers": asdict(answers),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="ONNX files exported by edge-mtl")
    ap.add_argument("--provider", required=True, help="the provider to hold against the CPU one")
    ap.add_argument("--images", required=True, help="a glob of images (quote it)")
    ap.add_argument("--n", type=int, default=32, help="images to use (default 32)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    paths = sorted(glob.glob(args.images))[: args.n]
    frames = [f for f in (cv2.imread(p) for p in paths) if f is not None]
    if not frames:
        print(f"provider_parity: no readable images match {args.images}", file=sys.stderr)
        return 2
    report = {str(m): compare(m, args.provider, frames) for m in args.models}
    for model, row in report.items():
        if "error" in row:
            print(f"{model}: {row['error']}")
            continue
        a = row["answers"]
        print(f"{model}: {row['provider']} {row['precision']}, {a['frames']} images: class "
              f"probabilities max |diff| {a['prob_diff']:.4f}, top-1 equal {100 * a['top1']:.0f}%, "
              f"detections {a['matched']} matched of {a['ref']} (cpu) / {a['other']}")  # fmt: skip
        for name, gap in row["outputs"].items():
            shown = ", ".join(f"{k} {v:.6g}" for k, v in gap.items() if k != "dtype")
            print(f"  {name} ({gap['dtype']}): {shown}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
