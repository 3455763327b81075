"""The ``edge-mtl`` command line. Subcommands import their heavy modules lazily, so
``edge-mtl run`` and ``edge-mtl bench`` never import torch."""

from __future__ import annotations

import argparse
import sys
import traceback

from runtime.errors import EdgeMTLError


def build_parser() -> argparse.ArgumentParser:
    from edge_mtl import commands
    from export import cli as export_cli
    from export import quantize_cli
    from runtime import bench_cli
    from runtime import cli as runtime_cli

    parser = argparse.ArgumentParser(
        prog="edge-mtl",
        description="Train, export, quantize, run and benchmark multi-task driving models.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.register(sub)
    export_cli.register(sub)
    quantize_cli.register(sub)
    runtime_cli.register(sub)
    bench_cli.register(sub, torch_baseline=_torch_baseline)
    return parser


def _torch_baseline(*args, **kwargs):
    """``bench --torch``: imported only when asked for, since it needs torch."""
    from edge_mtl.bench_torch import bench_torch

    return bench_torch(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EdgeMTLError as e:
        if args.debug:
            traceback.print_exc()
        print(f"edge-mtl {args.command}: error: {e}", file=sys.stderr)
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
        print(f"edge-mtl {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
