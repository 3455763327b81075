"""The web options of ``edge-mtl run`` (``--serve`` and its limits) and the ``edge-mtl serve``
subcommand. Standard library only at module level: the parser is built without loading numpy,
OpenCV or onnxruntime."""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass
from typing import Any

DEFAULT_SERVE_FPS = 10.0  # a fluent live view; each frame drawn costs ~4 ms of Python


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """``run``'s ``--serve [HOST:]PORT`` and the options of its live view."""
    g = p.add_argument_group("live view in a browser (--serve)")
    g.add_argument(
        "--serve", metavar="[HOST:]PORT",
        help="serve a live page of every stream at http://HOST:PORT/ (HOST defaults to "
        "127.0.0.1; any other address needs a token); also /stream/NAME.mjpg, /api/status, "
        "/events, /healthz",
    )  # fmt: skip
    g.add_argument(
        "--serve-fps", type=float, default=DEFAULT_SERVE_FPS, metavar="F",
        help=f"frames a second sent to each viewer at most (default {DEFAULT_SERVE_FPS:g}); "
        "frames are encoded only while someone watches",
    )  # fmt: skip
    g.add_argument(
        "--health-stall", type=float, default=10.0, metavar="S",
        help="/healthz answers 503 once a stream gave no frame for S seconds (default 10)",
    )  # fmt: skip
    add_security_arguments(g, viewers=True)


def add_security_arguments(g: Any, viewers: bool) -> None:
    """``--token``, ``--max-viewers``, ``--max-body-mb``, ``--rate``: shared by both features."""
    g.add_argument(
        "--token", metavar="TOKEN",
        help="require this token (Authorization: Bearer TOKEN, or open /?token=TOKEN once); "
        "default $EDGE_MTL_TOKEN; needed for any non-loopback address",
    )  # fmt: skip
    if viewers:
        g.add_argument(
            "--max-viewers", type=int, default=8, metavar="N",
            help="open video and event streams at once (default 8; more get 503)",
        )  # fmt: skip
    else:
        g.add_argument(
            "--max-body-mb", type=float, default=16.0, metavar="MB",
            help="largest image accepted (default 16 MB; larger get 413)",
        )  # fmt: skip
    g.add_argument(
        "--rate", type=float, default=50.0 if viewers else 200.0, metavar="R",
        help="requests a second per client address, bursts of 2R (default %(default)g; "
        "0: no limit; more get 429)",
    )  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``serve`` subcommand to the ``edge-mtl`` parser."""
    from edge_mtl.runtime.cli import PROVIDER_CHOICES

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: POST /infer with a JPEG or PNG answers its record",
        description=(
            "Serve an exported edge-mtl ONNX model at http://HOST:PORT/. POST /infer with a "
            "JPEG or PNG body (Content-Type image/jpeg or image/png) answers the frame's JSON "
            "record, as `edge-mtl run --jsonl` writes it; requests arriving together run as one "
            "batch on a model exported with --dynamic-batch. Also /api/status and /healthz. "
            "HOST defaults to 127.0.0.1; any other address needs a token. Ctrl-C stops."
        ),
    )
    p.add_argument("address", metavar="[HOST:]PORT", help="where to listen, e.g. 8080")
    p.add_argument("--model", required=True, help="ONNX file exported by edge-mtl")
    p.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES)
    p.add_argument("--conf", type=float, help="detection score threshold (default: the model's)")
    p.add_argument("--iou", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--threads", type=int, default=0, metavar="K", help="CPU intra-op threads")
    p.add_argument("--imgsz", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--device", type=int, default=0, help="GPU device id (CUDA/TensorRT)")
    p.add_argument(
        "--max-batch", type=int, default=8, metavar="B",
        help="requests per inference call at most (dynamic-batch models; default 8)",
    )  # fmt: skip
    p.add_argument(
        "--max-wait-ms", type=float, default=5.0, metavar="MS",
        help="after a request arrives, wait at most MS for others to batch with it (default 5)",
    )  # fmt: skip
    p.add_argument("--topk", type=int, metavar="K", help="keep the K most probable classes")
    add_security_arguments(p, viewers=False)
    p.set_defaults(func=cmd_serve)


def check_numbers(
    args: argparse.Namespace, positive: tuple[str, ...], non_negative: tuple[str, ...]
) -> None:
    """Raise :class:`InputError` naming the first option out of its range."""
    from edge_mtl.runtime.errors import InputError

    for name in positive + non_negative:
        value = getattr(args, name)
        if value < 0 or (value == 0 and name in positive):
            flag = "--" + name.replace("_", "-")
            want = "positive" if name in positive else ">= 0"
            raise InputError(f"{flag} must be {want}, got {value:g}")


def live_view(args: argparse.Namespace) -> Any:
    """``run --serve``: the checked address, token and limits (before the model loads), as a
    :class:`LiveViewPlan`; ``None`` without ``--serve``."""
    if args.serve is None:
        return None
    from edge_mtl.runtime.errors import InputError
    from edge_mtl.runtime.web.guard import Limits, parse_bind, resolve_token

    bind = parse_bind(args.serve)
    token = resolve_token(bind, args.token)
    if not 0 < args.serve_fps <= 120:
        raise InputError(f"--serve-fps must be in (0, 120], got {args.serve_fps}")
    check_numbers(args, positive=("health_stall", "max_viewers"), non_negative=("rate",))
    limits = Limits(max_viewers=args.max_viewers, rate_per_s=args.rate,
                    burst=max(1, int(2 * args.rate)))  # fmt: skip
    return LiveViewPlan(bind, token, limits, args.serve_fps, args.health_stall)


@dataclass(frozen=True)
class LiveViewPlan:
    """What ``--serve`` asked for (a :class:`~edge_mtl.runtime.web.guard.Bind`, the token or
    ``None``, the :class:`~edge_mtl.runtime.web.guard.Limits`, frames a second per viewer,
    the health stall in seconds); :meth:`start` serves it once the engine is loaded."""

    bind: Any
    token: str | None
    limits: Any
    fps: float
    stall_s: float

    def start(self, engine: Any) -> Any:
        """The running :class:`~edge_mtl.runtime.web.live.LiveView` server for ``engine``:
        returns a :class:`LiveServer` (``add_stream`` per stream, ``close`` at the end)."""
        from edge_mtl.runtime.records import task_entries
        from edge_mtl.runtime.web.live import LiveView
        from edge_mtl.runtime.web.server import WebServer

        run = {
            "model": str(engine.path),
            "provider": engine.provider.value,
            "precision": str(engine.precision),
            "tasks": task_entries(engine.meta.tasks),
        }
        view = LiveView(run, self.fps, self.stall_s)
        server = WebServer(self.bind, view, self.token, self.limits)
        view.server = server
        return LiveServer(view, server.start())


class LiveServer:
    """A serving live view: the sink of each stream, the banner line, and ``close``."""

    def __init__(self, view: Any, server: Any) -> None:
        self.view, self.server = view, server

    def add_stream(
        self, name: str, header: dict[str, Any], source: Any, tasks: Any, topk: int | None = None
    ) -> Any:
        """The sink of one stream (``topk``: the run's ``--jsonl-topk``)."""
        return self.view.add_stream(name, header, source, tasks, topk)

    def banner(self) -> str:
        """``live view on http://127.0.0.1:8080/ (loopback only)``."""
        s = self.server
        who = "token required" if s.token else "loopback only, no token"
        return f"live view on {s.url} ({who})"

    def close(self) -> None:
        """Stop serving (the run is over)."""
        self.server.close()


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (what systemd and container runtimes send to stop)."""
    import signal

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the model until Ctrl-C; returns 0."""
    from edge_mtl.runtime.engine import Engine, EngineConfig
    from edge_mtl.runtime.errors import InputError
    from edge_mtl.runtime.web.guard import Limits, parse_bind, resolve_token
    from edge_mtl.runtime.web.infer import InferApp
    from edge_mtl.runtime.web.server import WebServer

    bind = parse_bind(args.address, "serve")
    token = resolve_token(bind, args.token, "serve")
    check_numbers(args, ("max_batch", "max_body_mb"), ("max_wait_ms", "rate"))
    if args.topk is not None and args.topk < 1:
        raise InputError(f"--topk must be at least 1, got {args.topk}")
    config = EngineConfig(
        conf_threshold=args.conf, iou_threshold=args.iou,
        imgsz=tuple(args.imgsz) if args.imgsz else None,
        intra_op_threads=args.threads, device_id=args.device,
    )  # fmt: skip
    engine = Engine(args.model, providers=args.provider, config=config)
    app = InferApp(engine, args.max_batch, args.max_wait_ms, args.topk)
    limits = Limits(max_body_bytes=int(args.max_body_mb * (1 << 20)), rate_per_s=args.rate,
                    burst=max(1, int(2 * args.rate)))  # fmt: skip
    server = WebServer(bind, app, token, limits).start()
    app.server = server
    who = "token required" if token else "loopback only, no token"
    batch = f"batches up to {app.batcher.max_batch}" if app.dynamic else "fixed batch"
    print(f"edge-mtl serve: POST images to {server.url}infer ({who}; {batch}); Ctrl-C stops",
          flush=True)  # fmt: skip
    try:
        wait_for_stop()
    finally:
        server.close()
        app.batcher.close()
    print(f"edge-mtl serve: {app.requests} images answered", flush=True)
    return 0
