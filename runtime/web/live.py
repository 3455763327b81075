"""The live view of ``edge-mtl run --serve``: one :class:`StreamView` per stream (a sink) and
the :class:`LiveView` app that serves them.

A stream's sink only keeps a reference to the newest frame and its result (one slot, replaced
at every frame, under a lock) and wakes whoever waits for a newer one: the inference loop never
encodes, formats or waits for a viewer. The viewers' threads do the rest, at most ``serve_fps``
times a second each: the overlay and the JPEG are made once per stream and shared (at most
``serve_fps`` encodes a second per stream however many watch; none while nobody does); the
per-frame record is made once per frame asked for. A slow viewer skips to the newest frame;
one that stops reading is dropped after the server's idle timeout; one that disconnects costs
a caught ``BrokenPipeError``.

Routes: ``/`` (+ ``/app.js``, ``/style.css``), ``/stream/<name>.mjpg``, ``/stream/<name>.jpg``
(the newest frame once), ``/api/status``, ``/events`` (server-sent events: each stream's header
record, then its newest frame records, the very records of ``--jsonl``), ``/healthz``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Sequence
from importlib import resources
from typing import Any

import cv2

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.metadata import TaskMeta
from edge_mtl.runtime.overlay import draw_overlay
from edge_mtl.runtime.records import frame_record, header_record
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame
from edge_mtl.runtime.web.server import Handler, HttpError, Route

JPEG_QUALITY = 80
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}  # fmt: skip
BOUNDARY = "edge-mtl-frame"
FPS_WINDOW = 32  # frames the FPS figure is measured over


class StreamView:
    """One stream's share of the live view, and the :class:`~edge_mtl.runtime.sinks.Sink` the
    run writes it through. ``header``: the stream's JSONL header fields
    (:func:`edge_mtl.runtime.records.run_header`); ``source``: its drop and reconnect counters
    are read live; ``cond``: the view's condition, notified at every frame; ``topk``: as the
    run's ``--jsonl-topk``, so the records equal its JSON lines."""

    def __init__(
        self, name: str, header: dict[str, Any], source: Any, tasks: Sequence[TaskMeta],
        cond: threading.Condition, serve_fps: float, stall_s: float, topk: int | None = None,
    ) -> None:  # fmt: skip
        self.name, self.header, self.source, self.tasks = name, header, source, tuple(tasks)
        self._tasks_info = {t["name"]: t for t in header.get("tasks", ())}
        self.topk = topk  # classes kept per classification task, as --jsonl-topk
        self.cond, self.interval, self.stall_s = cond, 1.0 / serve_fps, stall_s
        self.seq = 0  # frames written; the newest is frame seq - 1 in JSONL numbering
        self.closed = False
        self.stalled = False  # closed after no frame for stall_s: the stream stalled
        self.t_start = self.t_last = time.perf_counter()
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._slot: tuple[Frame, FrameResult, StageTimes] | None = None
        self._frame_size: tuple[int, int] | None = None
        self._jpeg: tuple[int, float, bytes] | None = None  # (seq, perf_counter, JPEG)
        self._record: tuple[int, dict[str, Any]] | None = None
        self._record_text: tuple[int, str] | None = None  # the same as one JSON line
        self._encode = threading.Lock()

    # ---- the sink (the run's main thread) ----------------------------------------------------

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Keep the newest frame (replacing the one before) and wake its waiting viewers."""
        now = time.perf_counter()
        with self.cond:
            self._slot = (frame, result, times)
            self.seq += 1
            self.t_last = now
            self._times.append(now)
            if self._frame_size is None:
                self._frame_size = frame.image.shape[:2]
            self.cond.notify_all()

    def close(self) -> None:
        """The stream is over: a stream that had delivered nothing for ``stall_s`` stalled."""
        with self.cond:
            self.stalled = time.perf_counter() - self.t_last > self.stall_s
            self.closed = True
            self.cond.notify_all()

    # ---- what the viewers' threads ask for ---------------------------------------------------

    def header_record(self) -> dict[str, Any]:
        """The stream's JSONL header record (with the frame size once a frame came)."""
        return header_record(self.header, self._frame_size)

    def jpeg(self) -> tuple[int, bytes] | None:
        """(frame count, JPEG of the newest frame with its overlay); encoded at most once per
        ``1/serve_fps`` seconds for every viewer together. ``None`` before the first frame."""
        with self._encode:
            with self.cond:
                slot, seq = self._slot, self.seq
            cached = self._jpeg
            now = time.perf_counter()
            if slot is None:
                return None
            if cached is not None and (cached[0] == seq or now - cached[1] < self.interval):
                return cached[0], cached[2]
            frame, result, _ = slot
            image = draw_overlay(frame.image, result, self.fps(), tasks=self.tasks)
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise HttpError(500, "OpenCV could not encode the frame as JPEG")
            self._jpeg = (seq, now, data.tobytes())
            return seq, self._jpeg[2]

    def record(self) -> tuple[int, dict[str, Any]] | None:
        """(frame count, the newest frame's JSONL record); ``None`` before the first frame."""
        with self.cond:
            slot, seq, cached = self._slot, self.seq, self._record
        if slot is None:
            return None
        if cached is None or cached[0] != seq:
            frame, result, times = slot
            info, topk = self._tasks_info, self.topk
            rec = frame_record(seq - 1, frame, result, times.as_dict(), info, topk)
            cached = self._record = (seq, rec)
        return cached

    def record_text(self) -> tuple[int, str] | None:
        """:meth:`record` as compact JSON, serialised once per frame for every event viewer."""
        cached = self._record_text
        if cached is not None and cached[0] == self.seq:
            return cached
        got = self.record()
        if got is None:
            return None
        self._record_text = (got[0], json.dumps(got[1], separators=(",", ":")))
        return self._record_text

    def fps(self) -> float | None:
        """Frames per second over the last :data:`FPS_WINDOW` frames."""
        t = list(self._times)
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else None

    def state(self) -> str:
        """``waiting`` (no frame yet), ``running``, ``stalled`` (no frame for ``stall_s``, or
        closed that way) or ``ended``."""
        if self.closed:
            return "stalled" if self.stalled else "ended"
        if time.perf_counter() - self.t_last > self.stall_s:
            return "stalled"
        return "running" if self.seq else "waiting"

    def status(self) -> dict[str, Any]:
        """The stream's figures for ``/api/status``."""
        rec = self.record()
        fps = self.fps()
        return {
            "name": self.name,
            "source": self.header.get("source"),
            "source_kind": self.header.get("source_kind"),
            "state": self.state(),
            "frames": self.seq,
            "fps": None if fps is None else round(fps, 2),
            "seconds_since_frame": round(time.perf_counter() - self.t_last, 3),
            "frame_size": list(self._frame_size) if self._frame_size else None,
            "drops": int(getattr(self.source, "drops", 0)),
            "reconnects": int(getattr(self.source, "reconnects", 0)),
            "last": None if rec is None else rec[1],
        }


class LiveView:
    """The app of ``run --serve``: streams by name, the page and the streaming routes.
    ``run``: what ``/api/status`` says about the run (model, provider, precision, tasks);
    ``serve_fps``: frames (and records) a second per viewer and stream at most; ``stall_s``:
    a stream without a frame this long makes ``/healthz`` answer 503."""

    def __init__(self, run: dict[str, Any], serve_fps: float = 12.0, stall_s: float = 10.0):
        self.run, self.serve_fps, self.stall_s = run, serve_fps, stall_s
        self.streams: dict[str, StreamView] = {}
        self.cond = threading.Condition()
        self.server: Any = None  # the WebServer, set once it serves this app
        self.t_start = time.perf_counter()
        pkg = resources.files("edge_mtl.runtime.web") / "static"
        self._static = {p: ((pkg / f).read_bytes(), t) for p, (f, t) in STATIC.items()}

    def add_stream(
        self, name: str, header: dict[str, Any], source: Any, tasks: Sequence[TaskMeta],
        topk: int | None = None,
    ) -> StreamView:  # fmt: skip
        """A new stream's sink (a name used twice gets ``_<position>``)."""
        if name in self.streams:
            name = f"{name}_{len(self.streams)}"
        fps, stall = self.serve_fps, self.stall_s
        view = StreamView(name, header, source, tasks, self.cond, fps, stall, topk)
        self.streams[name] = view
        return view

    def route(self, path: str) -> Route | None:
        """The routes listed in the module docstring; nothing else exists."""
        if path in self._static:
            return Route(("GET",), self._page)
        fixed = {"/api/status": self._status, "/events": self._events, "/healthz": self._health}
        if path in fixed:
            return Route(("GET",), fixed[path])
        for ext, fn in ((".mjpg", self._mjpeg), (".jpg", self._snapshot)):
            name = path[len("/stream/") : -len(ext)] if path.endswith(ext) else None
            if path.startswith("/stream/") and name in self.streams:
                return Route(("GET",), fn)
        return None

    def _stream_of(self, req: Handler) -> StreamView:
        return self.streams[req.route_path[len("/stream/") :].rsplit(".", 1)[0]]

    def _page(self, req: Handler) -> None:
        body, ctype = self._static[req.route_path]
        req.send_body(body, ctype)

    def status(self) -> dict[str, Any]:
        """``/api/status``: the run, the viewers, and every stream's figures."""
        viewers = self.server.viewers if self.server is not None else 0
        return {
            **self.run,
            "serve_fps": self.serve_fps,
            "uptime_s": round(time.perf_counter() - self.t_start, 3),
            "viewers": viewers,
            "streams": [s.status() for s in self.streams.values()],
        }

    def health(self) -> tuple[bool, str]:
        """(healthy, why): every stream delivers frames (none stalled), at least one runs."""
        states = {name: s.state() for name, s in self.streams.items()}
        bad = [f"{n} {st}" for n, st in states.items() if st in ("stalled", "waiting")]
        if bad:
            return False, ", ".join(bad)
        if not any(st == "running" for st in states.values()):
            return False, "no stream running"
        return True, "ok"

    def _status(self, req: Handler) -> None:
        req.send_json(self.status())

    def _health(self, req: Handler) -> None:
        ok, why = self.health()
        req.send_json({"status": "ok" if ok else "unhealthy", "detail": why}, 200 if ok else 503)

    def _snapshot(self, req: Handler) -> None:
        got = self._stream_of(req).jpeg()
        if got is None:
            raise HttpError(503, "no frame yet", {"Retry-After": "1"})
        req.send_body(got[1], "image/jpeg")

    def _wait_newer(self, view: StreamView, seen: int) -> bool:
        """Wait until ``view`` has a frame past ``seen``; False once it or the server closed."""
        closing = self.server.closing
        with self.cond:
            while view.seq <= seen and not view.closed and not closing.is_set():
                self.cond.wait(0.5)
            return view.seq > seen and not closing.is_set()

    def _mjpeg(self, req: Handler) -> None:
        view = self._stream_of(req)
        with req.server.viewer():
            req.start_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            if req.command == "HEAD":
                return
            sent, t_next = 0, 0.0
            while True:
                time.sleep(max(0.0, t_next - time.perf_counter()))  # at most serve_fps
                if not self._wait_newer(view, sent) or (got := view.jpeg()) is None:
                    return
                t_next = time.perf_counter() + view.interval
                sent, jpeg = got
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n").encode()  # fmt: skip
                req.wfile.write(head + jpeg + b"\r\n")
                req.wfile.flush()

    def _events(self, req: Handler) -> None:
        """Server-sent events: per stream, ``event: <stream name>`` then a JSONL record as
        ``data`` (its header first); at most ``serve_fps`` frame records a second per stream,
        each the newest (the ``frame`` numbers show what was skipped)."""
        only = req.query.get("stream")
        if only is not None and only not in self.streams:
            raise HttpError(404, f"no stream named {only[:100]!r}")
        with req.server.viewer():
            req.start_stream("text/event-stream")
            if req.command == "HEAD":
                return
            seen: dict[str, int] = {}  # stream -> frames seen; a stream added later joins
            interval = 1.0 / self.serve_fps
            while not req.server.closing.is_set():
                t0 = time.perf_counter()
                views = [v for n, v in list(self.streams.items()) if only in (None, n)]
                for v in views:
                    if v.name not in seen:
                        seen[v.name] = 0
                        self._event(
                            req, v.name, json.dumps(v.header_record(), separators=(",", ":"))
                        )
                    got = v.record_text() if v.seq > seen[v.name] else None
                    if got is not None:
                        seen[v.name] = got[0]
                        self._event(req, v.name, got[1])
                if views and all(v.closed for v in views):
                    return
                with self.cond:
                    if all(v.seq <= seen[v.name] for v in views):
                        self.cond.wait(0.5)
                time.sleep(max(0.0, t0 + interval - time.perf_counter()))

    @staticmethod
    def _event(req: Handler, name: str, data: str) -> None:
        req.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
        req.wfile.flush()
