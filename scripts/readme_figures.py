"""Render the README's two figures from a finished demo:

    python scripts/readme_figures.py --model demo/model.onnx --source demo/drive.mp4 \\
        --bench demo/bench.json --out docs

writes ``docs/overlay-demo.jpg`` (the annotated frame: of the first ``--scan`` frames the one
showing the most classes, then the most boxes, unless ``--frame`` picks one; its FPS is the
model's e2e FPS from the bench file, so the figure agrees with ``demo/bench.md``) and
``docs/bench-demo.png`` (the bench plot). Either half runs alone: ``--model``/``--source``
without ``--bench``, or ``--bench`` alone. Exit 0 when written, 2 with one line on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_mtl.bench.plot import save_plot
from edge_mtl.bench.schema import load_document
from edge_mtl.runtime.engine import Engine, EngineConfig, FrameResult
from edge_mtl.runtime.errors import EdgeMTLError, InputError
from edge_mtl.runtime.files import atomic_write, check_writable_dir
from edge_mtl.runtime.overlay import draw_overlay
from edge_mtl.runtime.sources import iter_frames, open_source

OVERLAY_NAME, PLOT_NAME = "overlay-demo.jpg", "bench-demo.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="readme_figures", allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--model", help="ONNX model to annotate the frame with")
    p.add_argument("--source", help="video file, image file or image folder to take a frame from")
    p.add_argument("--bench", help="bench JSON (edge-mtl bench --json) to plot")
    p.add_argument("--out", default="docs", help="output folder (default: docs)")
    p.add_argument("--frame", type=int, help="use this frame index instead of the busiest one")
    p.add_argument("--scan", type=int, default=60, help="frames searched for the busiest one")
    p.add_argument("--conf", type=float, help="score threshold (default: the model's)")
    p.add_argument("--provider", default="auto", help="engine provider (default: auto)")
    args = p.parse_args(argv)
    if (args.model is None) != (args.source is None):
        p.error("--model and --source go together")
    if args.model is None and args.bench is None:
        p.error("give --model and --source, --bench, or all three")
    if args.scan < 1 or (args.frame is not None and args.frame < 0):
        p.error("--scan must be at least 1 and --frame at least 0")
    return args


def busiest_frame(
    engine: Engine, source: str, frame: int | None, scan: int
) -> tuple[np.ndarray, FrameResult, int]:
    """Frame ``frame`` of ``source`` (uint8 BGR HWC) with its result, or of the first ``scan``
    frames the one with the most distinct classes, then the most boxes (the earliest on a tie)."""
    src = open_source(source)
    best: tuple[tuple[int, int], np.ndarray, FrameResult, int] | None = None
    try:
        for i, f in enumerate(iter_frames(src)):
            if frame is not None and i != frame:
                continue
            result = engine(f.image)
            classes = result.detections.classes
            key = (len(set(classes.tolist())), len(classes))
            if best is None or key > best[0]:
                best = (key, f.image, result, i)
            if frame is not None or i + 1 >= scan:
                break
    finally:
        src.close()
    if best is None:
        at = f"frame {frame}" if frame is not None else "any frame"
        raise InputError(f"source {source}: has no {at}")
    return best[1], best[2], best[3]


def e2e_fps(doc: dict[str, Any] | None, model: str) -> float | None:
    """The e2e FPS the bench measured for ``model`` (matched by file name), if any."""
    for r in (doc or {}).get("results", []):
        if r["model"] == Path(model).name and r["status"] == "ok" and r.get("e2e"):
            return float(r["e2e"]["fps"])
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = check_writable_dir(args.out, "output folder")
        doc = load_document(args.bench) if args.bench else None
        if args.model:
            config = EngineConfig(conf_threshold=args.conf)
            engine = Engine(args.model, providers=args.provider, config=config)
            image, result, index = busiest_frame(engine, args.source, args.frame, args.scan)
            fps = e2e_fps(doc, args.model)
            drawn = draw_overlay(image, result, fps, tasks=engine.meta.tasks)
            ok, jpg = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok, "OpenCV always encodes a uint8 BGR image as JPEG"
            with atomic_write(out / OVERLAY_NAME) as fh:
                fh.write(jpg.tobytes())
            n = len(result.detections)
            print(f"wrote {out / OVERLAY_NAME} (frame {index}, {n} boxes)")
        if doc is not None:
            why = save_plot(doc, out / PLOT_NAME)
            if why:
                raise InputError(f"{args.bench}: {why.removeprefix('no plot: ')}")
            print(f"wrote {out / PLOT_NAME}")
    except EdgeMTLError as e:  # bad input or a model that cannot run: one line
        print(f"readme_figures: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
