"""The ``edge-mtl`` command line. Subcommands import their heavy modules lazily, so
``edge-mtl run`` and ``edge-mtl bench`` never import torch."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from edge_mtl.runtime.errors import DEBUG_ENV, EdgeMTLError

if TYPE_CHECKING:
    from collections import Counter
    from pathlib import Path

    from edge_mtl.bench.baseline import Baseline
    from edge_mtl.data.bdd import Record


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error (the usage itself is in --help).
    Flags are never abbreviated (``--data`` must not silently mean ``--data-root``); the
    subcommands' parsers are of this class too, so the rule holds everywhere."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from edge_mtl import commands, compare_cli, eval_cli
    from edge_mtl.bench import cli as bench_cli
    from edge_mtl.bench import env as env_cli
    from edge_mtl.bench import video_eval_cli
    from edge_mtl.calibration import cli as quantize_cli
    from edge_mtl.export import cli as export_cli
    from edge_mtl.runtime import cli as runtime_cli
    from edge_mtl.runtime.web import cli as web_cli

    parser = _Parser(
        prog="edge-mtl",
        description="Train, export, quantize, run and benchmark multi-task driving models.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"edge-mtl {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.register(sub)
    eval_cli.register(sub)
    compare_cli.register(sub, baseline=torch_baseline)
    export_cli.register(sub)
    quantize_cli.register(sub, read_labels=read_labels, read_mask=eval_cli.read_task_mask)
    runtime_cli.register(sub)
    web_cli.register(sub)
    bench_cli.register(
        sub, baseline=torch_baseline, read_labels=read_labels, read_mask=eval_cli.read_task_mask
    )
    env_cli.register(sub)
    video_eval_cli.register(sub)
    parser.set_defaults(subcommands=sub.choices)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edge-mtl")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def torch_baseline() -> Baseline:
    """The one plug from the training side into the measuring tools (``bench --torch`` rows and
    their calls in turns, ``compare``'s exported latency): imported only when a command asks for
    it, since it needs torch."""
    from edge_mtl.export.torch_baseline import TorchBaseline

    return TorchBaseline()


def read_labels(
    root: str | Path,
    det_classes: tuple[str, ...],
    classify: dict[str, tuple[str, ...]],
    regress: tuple[str, ...],
) -> tuple[list[Record], Counter]:
    """``quantize --eval`` and ``bench --accuracy``: the training side's label readers
    (torch-free; any layout: BDD100K, COCO, KITTI, class folders), handed to calibration and
    bench, which may not import the training side (see tests/test_layering.py)."""
    from edge_mtl.data.labelled import read_labelled

    return read_labelled(root, det_classes, classify, regress)


def main(argv: list[str] | None = None) -> int:
    # Log lines reach a file or a pipe (``train ... > run.log``, CI) as they are printed, not in
    # 8 KB blocks: a long run's progress is visible while it runs.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the subcommand's parser, so the line says which command refused it
        args.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.debug:  # read by runtime.providers, here and in any worker process
        os.environ[DEBUG_ENV] = "1"
    else:  # OpenCV's "[ WARN:0@0.01] global cap_v4l.cpp ..." lines: errors only
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # read at its first log line
        if "cv2" in sys.modules:  # already imported (and maybe logged): set it directly too
            cv2 = sys.modules["cv2"]
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return int(args.func(args) or 0)
    except EdgeMTLError as e:
        if args.debug:
            print_with_causes(e)
        print(f"edge-mtl {args.command}: error: {str(e) or type(e).__name__}", file=sys.stderr)
        return e.exit_code
    except ModuleNotFoundError as e:
        if args.debug:
            traceback.print_exc()
        print(
            f"edge-mtl {args.command}: error: needs the training extras, missing module "
            f"{e.name!r}: pip install 'edge-mtl[train]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"edge-mtl {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        why = e.strerror or str(e) or type(e).__name__
        print(f"edge-mtl {args.command}: error: {where}{why}", file=sys.stderr)
        return 1


def print_with_causes(e: BaseException) -> None:
    """``--debug``: the traceback of ``e`` and of every exception behind it, also those a
    wrapper hid with ``raise ... from None`` to keep the user's message to one line."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if cur.__cause__ is None and cur.__context__ is not None:
            cur.__suppress_context__ = False
        cur = cur.__cause__ or cur.__context__
    traceback.print_exception(e)


if __name__ == "__main__":
    sys.exit(main())
