"""The ``edge-mtl run`` subcommand: a model on a source, into a window, a video and/or JSON lines.

Only the standard library and the enums of ``options`` (stdlib only) load at module level; numpy,
OpenCV and onnxruntime load inside :func:`cmd_run`, so ``edge-mtl --help`` stays instant and
nothing here ever touches torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path
from typing import Any

from edge_mtl.runtime.options import OVPrecision, Provider, choices
from edge_mtl.runtime.track_cli import add_track_arguments, check_track_args
from edge_mtl.runtime.web.cli import add_serve_arguments, live_view

PROVIDER_CHOICES = choices(Provider, auto=True)
OV_PRECISIONS = choices(OVPrecision)

log = logging.getLogger("edge_mtl.runtime")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``run`` subcommand to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "run",
        help="run an exported ONNX model on a camera, stream, video or images",
        description=(
            "Run an exported edge-mtl ONNX model on SRC: a camera index (0), an RTSP/HTTP URL, a "
            "video file, an image, a folder of images or a quoted glob ('frames/*.jpg'). "
            "Annotated output is saved into a new run folder (runs/run/exp, exp2, ...) unless "
            "--save or --no-save says otherwise: images as images under their own names, videos "
            "and streams as a video (H.264 where this OpenCV can write it, else mp4v). Each "
            "image gets a console line (detections per class, every task); videos and streams "
            "a progress line. Ctrl-C stops cleanly; a summary line is printed at the end."
        ),
        epilog=(
            "Several streams: repeat --source (or list them in --sources FILE) to run every "
            "stream through one engine, the newest frame of each batched into one inference "
            "call (a model exported with --dynamic-batch). Files deliver every frame in order, "
            "live streams only their newest. A stream is named by NAME=SRC, else after its "
            "source. --jsonl and --save then take a template: {stream} is the stream's position "
            "(0, 1, ... in the order given) and {name} its name, e.g. --jsonl 'out/{name}.jsonl' "
            "--save 'out/cam{stream}.mp4'; or a folder (existing, or ending in /) that gets "
            "0.jsonl, 1.jsonl, ... (0.mp4, ...). A stream that ends, fails or stalls is dropped "
            "and the others go on; the summary has one line per stream plus the total, and "
            "the exit code is 1 when a stream failed or stalled."
        ),
    )
    p.add_argument("--model", required=True, help="ONNX file exported by edge-mtl")
    p.add_argument(
        "--source", action="append", default=[], metavar="SRC",
        help="camera/URL/video/image/dir/glob, or NAME=SRC; repeat for several streams",
    )  # fmt: skip
    p.add_argument(
        "--sources", metavar="FILE",
        help="a text file with one SRC or NAME=SRC per line (# comments; relative paths are "
        "relative to FILE's folder); adds to --source",
    )  # fmt: skip
    p.add_argument(
        "--provider",
        default="auto",
        choices=PROVIDER_CHOICES,
        help="auto tries tensorrt > cuda > openvino > cpu; a named provider must work or the "
        "run fails",
    )
    p.add_argument("--show", action="store_true", help="show an overlay window (needs a display)")
    add_save_arguments(p)
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (per stream)")
    add_detection_arguments(p)
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
    add_openvino_arguments(p)
    add_track_arguments(p)
    p.add_argument(
        "--reconnect-timeout", type=float, default=10.0, metavar="S",
        help="give up on a lost live stream after S seconds",
    )  # fmt: skip
    p.add_argument(
        "--max-wait-ms", type=float, default=3.0, metavar="MS",
        help="several streams: once one frame is ready, wait at most MS for the other streams "
        "before running the batch",
    )  # fmt: skip
    p.add_argument(
        "--stall-timeout", type=float, default=30.0, metavar="S",
        help="several streams: drop a stream whose source gives no frame for S seconds (keep "
        "it above --reconnect-timeout, or reconnecting cameras are dropped while retrying)",
    )  # fmt: skip
    add_serve_arguments(p)
    p.set_defaults(func=cmd_run)


def add_save_arguments(p: argparse.ArgumentParser) -> None:
    """``--save``, ``--no-save``, ``--exist-ok``: where ``run`` saves its annotated output;
    ``--save-masks``: its class maps; ``--jsonl``, ``--jsonl-topk``: its JSON lines."""
    save = p.add_mutually_exclusive_group()
    save.add_argument(
        "--save", metavar="PATH",
        help="save the annotated output here instead of the run folder: a folder (existing, or "
        "ending in /), a video file (.mp4, .avi, ...) or, for one image, an image file "
        "(several streams: a template with {stream} or {name}, or a folder)",
    )  # fmt: skip
    save.add_argument("--no-save", action="store_true", help="save no annotated output")
    p.add_argument(
        "--exist-ok", action="store_true",
        help="save into runs/run/exp as it is instead of the next free runs/run/expN",
    )  # fmt: skip
    p.add_argument(
        "--save-masks", metavar="DIR",
        help="write each pixel task's class map as a PNG per frame: DIR/<task>/<image stem or "
        "frame index>.png at the frame's size, pixel = class index (several streams: "
        "DIR/<stream name>/<task>/...)",
    )  # fmt: skip
    p.add_argument(
        "--jsonl", metavar="OUT.jsonl",
        help="write JSON lines here (docs/jsonl.md: a header, then one record per frame; - "
        "for stdout; several streams: a template with {stream} or {name}, or a folder)",
    )  # fmt: skip
    p.add_argument(
        "--jsonl-topk", type=int, metavar="K",
        help="with --jsonl: keep the K most probable classes of each classification task "
        "(default: every class)",
    )  # fmt: skip


def add_detection_arguments(p: argparse.ArgumentParser) -> None:
    """``--conf``, ``--iou``, ``--classes``, ``--agnostic-nms``, ``--max-det``: applied, or
    refused with the reason when the model's in-graph NMS cannot honour them."""
    p.add_argument(
        "--conf", type=float, metavar="C",
        help="detection score threshold, 0-1 (default: the model's, 0.25 unless set at export); "
        "a model exported with --nms takes only values at or above its baked-in one",
    )  # fmt: skip
    p.add_argument(
        "--iou", type=float, metavar="I",
        help="NMS IoU threshold, 0-1 (default: the model's, 0.5 unless set at export); fixed "
        "in a model exported with --nms",
    )  # fmt: skip
    p.add_argument(
        "--classes", nargs="+", metavar="CLS",
        help="keep only these detection classes, by name or id (e.g. --classes car person, "
        "--classes 0 2)",
    )  # fmt: skip
    p.add_argument(
        "--agnostic-nms", action="store_true",
        help="one NMS across classes: an object boxed as two classes keeps only its best one",
    )  # fmt: skip
    p.add_argument(
        "--max-det", type=int, metavar="K",
        help="at most K detections per frame (default: the model's, 300 unless set at export)",
    )  # fmt: skip


def add_openvino_arguments(p: argparse.ArgumentParser) -> None:
    """``--ov-device``, ``--ov-precision``, ``--ov-cache`` (``run`` and ``bench``)."""
    p.add_argument(
        "--ov-device", default="CPU", metavar="DEV",
        help="OpenVINO device: CPU, GPU, GPU.N or NPU (default CPU)",
    )  # fmt: skip
    p.add_argument(
        "--ov-precision", default="auto", choices=OV_PRECISIONS,
        help="OpenVINO inference precision; auto = its default (bf16 on CPUs with native bf16)",
    )  # fmt: skip
    p.add_argument("--ov-cache", metavar="DIR", help="OpenVINO compiled-model cache folder")


def _check_args(args: argparse.Namespace) -> None:
    from edge_mtl.runtime.errors import InputError

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    for name in ("conf", "iou"):
        v = getattr(args, name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise InputError(f"--{name} must be in [0, 1], got {v}")
    if args.max_det is not None and args.max_det < 1:
        raise InputError(f"--max-det must be >= 1, got {args.max_det}")
    if args.threads < 0:
        raise InputError(f"--threads must be >= 0, got {args.threads}")
    if args.imgsz is not None and (min(args.imgsz) < 1):
        raise InputError(f"--imgsz must be positive, got {args.imgsz[0]} {args.imgsz[1]}")
    if args.reconnect_timeout <= 0:
        raise InputError(f"--reconnect-timeout must be > 0, got {args.reconnect_timeout}")
    if args.max_wait_ms < 0:
        raise InputError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.stall_timeout <= 0:
        raise InputError(f"--stall-timeout must be > 0, got {args.stall_timeout}")
    check_track_args(args)
    if args.exist_ok and (args.save is not None or args.no_save):
        other = "--no-save" if args.no_save else f"--save {args.save}"
        raise InputError(
            f"--exist-ok reuses the run folder runs/run/exp; it does nothing with {other}"
        )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the pipeline (one source) or the multi-stream batcher (several); returns 0 (also
    after Ctrl-C, which ends a live run normally)."""
    from edge_mtl.runtime.engine import Engine, EngineConfig, OVPrecision
    from edge_mtl.runtime.session import RunSession
    from edge_mtl.runtime.sinks import display_available
    from edge_mtl.runtime.sources import check_source

    _check_args(args)
    web = live_view(args)  # --serve: address, token and limits checked before the model loads
    streams = stream_specs(args.source, args.sources)
    for _, spec in streams:
        check_source(spec)
    names = [name for name, _ in streams]
    jsonl = stream_outputs(args.jsonl, "--jsonl", ".jsonl", names)
    save = stream_outputs(args.save, "--save", ".mp4", names)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="edge-mtl run: %(message)s")
    show = args.show and display_available()
    if args.show and not show:
        log.warning("--show ignored: no display here (or OpenCV lacks GUI support)")
    config = EngineConfig(
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        max_det=args.max_det,
        classes=tuple(args.classes) if args.classes else None,
        agnostic_nms=args.agnostic_nms,
        imgsz=tuple(args.imgsz) if args.imgsz else None,
        intra_op_threads=args.threads,
        device_id=args.device,
        trt_cache_dir=args.trt_cache,
        ov_device=args.ov_device,
        ov_precision=OVPrecision(args.ov_precision),
        ov_cache_dir=args.ov_cache,
    )
    engine = Engine(args.model, providers=args.provider, config=config)
    run = RunSession(args, engine, len(streams) > 1)
    if web is not None:
        run.web = web.start(engine)
        run.print(run.web.banner())
    if len(streams) == 1:
        return _run_one(args, run, streams[0], show, jsonl[0], save[0])
    return _run_many(args, run, streams, show, jsonl, save)


def _run_one(
    args: argparse.Namespace,
    run: Any,
    stream: tuple[str, str],
    show: bool,
    jsonl: str | None,
    save: str | None,
) -> int:
    from edge_mtl.runtime.pipeline import Pipeline
    from edge_mtl.runtime.sources import open_source

    name, spec = stream
    source = open_source(spec, reconnect_timeout_s=args.reconnect_timeout)
    try:
        sinks = run.sinks("edge-mtl" if show else None, jsonl, save, source, (0, name))
    except BaseException:
        source.close()
        run.finish()
        raise
    try:  # the pipeline closes the source and the sinks
        summary = Pipeline(
            run.engine, source, sinks, args.max_frames, on_result=run.delivered
        ).run()
    finally:
        run.finish()
    run.report(save, [f"{summary.line()}, {_ran_on(run.engine)}"])
    return 0


def _run_many(
    args: argparse.Namespace,
    run: Any,
    streams: list[tuple[str, str]],
    show: bool,
    jsonl: list[str | None],
    save: list[str | None],
) -> int:
    from edge_mtl.runtime.errors import RuntimeFailure
    from edge_mtl.runtime.multistream import MultiStream, MultiStreamConfig
    from edge_mtl.runtime.save import unique_names
    from edge_mtl.runtime.sources import open_source

    sources: list[Any] = []
    sinks: list[list[Any]] = []
    outs = unique_names([name for name, _ in streams])  # names of the saved outputs
    try:
        for i, (name, spec) in enumerate(streams):
            sources.append(open_source(spec, reconnect_timeout_s=args.reconnect_timeout))
            title = f"edge-mtl {i}: {name}" if show else None
            sinks.append(run.sinks(title, jsonl[i], save[i], sources[-1], (i, name), outs[i]))
    except BaseException:
        for s in [k for ks in sinks for k in ks] + sources:
            s.close()
        run.finish()
        raise
    config = MultiStreamConfig(
        max_wait_ms=args.max_wait_ms,
        stall_timeout_s=args.stall_timeout,
        max_frames=args.max_frames,
    )
    names = [name for name, _ in streams]
    try:
        summary = MultiStream(run.engine, sources, sinks, names, config, run.delivered).run()
    finally:
        run.finish()
    lost = summary.lost
    run.report(args.save, [*summary.lines()[:-1], f"{summary.line()}, {_ran_on(run.engine)}"])
    if lost:
        more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
        s = lost[0]
        raise RuntimeFailure(f"stream {s.index} {s.name} {s.state.value}: {s.error}{more}")
    return 0


# ---- several streams: specs, names, output paths ---------------------------------------------

_NAMED = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)=(.+)")


def stream_specs(sources: list[str], sources_file: str | None) -> list[tuple[str, str]]:
    """(name, spec) of every stream: ``--source`` values, then the lines of ``--sources``.

    ``NAME=SRC`` names a stream (unless the whole text is an existing path); otherwise the
    name comes from the source (file stem, folder name, ``camera0``, URL host and path).
    """
    from edge_mtl.runtime.errors import InputError

    texts = [(t, None) for t in sources]
    if sources_file is not None:
        folder = Path(sources_file).parent
        texts += [(t, folder) for t in read_sources_file(sources_file)]
    if not texts:
        raise InputError("no source: give --source SRC (repeatable) or --sources FILE")
    out = []
    for text, folder in texts:
        m = _NAMED.fullmatch(text)
        name, spec = (m.group(1), m.group(2)) if m and not os.path.exists(text) else (None, text)
        if folder is not None:
            spec = _relative_to(folder, spec)
        out.append((name or default_name(spec), spec))
    return out


def read_sources_file(path: str) -> list[str]:
    """The non-empty lines of a sources file, without ``#`` comments (a ``#`` that starts the
    line or follows a space)."""
    from edge_mtl.runtime.errors import InputError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InputError(f"--sources {path}: cannot read ({why})") from None
    lines = [re.split(r"(?:^|\s)#", ln, maxsplit=1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputError(f"--sources {path}: no sources in it (one SRC or NAME=SRC per line)")
    return lines


def _relative_to(folder: Path, spec: str) -> str:
    from edge_mtl.runtime.sources import URL_SCHEMES

    if spec.isdigit() or spec.lower().startswith(URL_SCHEMES) or os.path.isabs(spec):
        return spec
    return str(folder / spec)


def default_name(spec: str) -> str:
    """A file-name-safe name for a stream: ``camera0``, ``clip`` (from ``videos/clip.mp4``),
    ``frames`` (a folder or ``frames/*.jpg``), ``10.0.0.5_live`` (``rtsp://10.0.0.5/live``)."""
    from edge_mtl.runtime.sources import URL_SCHEMES

    if spec.isdigit():
        return f"camera{spec}"
    if spec.lower().startswith(URL_SCHEMES):
        raw = spec.split("://", 1)[1]
    elif any(ch in spec for ch in "*?["):
        raw = Path(spec).parent.name
    else:
        p = Path(spec)
        raw = p.name if os.path.isdir(spec) else p.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")[:48] or "stream"


def stream_outputs(value: str | None, flag: str, ext: str, names: list[str]) -> list[str | None]:
    """One output path per stream for ``--jsonl``/``--save`` (see the ``run`` help): a
    template with ``{stream}``/``{name}``, a folder, or (one stream only) a plain path. The
    folders of templated paths are created."""
    from edge_mtl.runtime.errors import InputError

    n = len(names)
    if value is None:
        return [None] * n
    if "{" in value or "}" in value:
        try:
            paths = [value.format(stream=i, name=name) for i, name in enumerate(names)]
        except (KeyError, IndexError, ValueError):
            raise InputError(
                f"{flag} {value}: only {{stream}} and {{name}} may appear in braces"
            ) from None
    elif n == 1:
        return [value]
    elif value.endswith(("/", os.sep)) or os.path.isdir(value):
        Path(value).mkdir(parents=True, exist_ok=True)
        paths = [str(Path(value) / f"{i}{ext}") for i in range(n)]
    else:
        raise InputError(
            f"{flag} {value}: {n} streams cannot share one file; give a template such as "
            f"out/{{stream}}{ext} or out/{{name}}{ext}, or a folder"
        )
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        if path in first:
            raise InputError(
                f"{flag} {value}: streams {first[path]} and {i} would both write {path} "
                "(use {stream})"
            )
        first[path] = i
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return paths


def _ran_on(engine: Any) -> str:
    """The end of a run's summary line: the provider and the precision the model really ran in
    (an FP16 file on the CPU provider, for instance, runs in fp32)."""
    return f"provider {engine.provider.value}, precision {engine.precision}"
