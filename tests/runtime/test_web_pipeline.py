"""The live view inside a real pipeline: a viewer that reads nothing does not stop frames
flowing, and 4 viewers over 2,000 frames leave memory bounded (one frame per stream held)."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import tracemalloc

import numpy as np

from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.sources import Frame
from edge_mtl.runtime.web.guard import Bind, Limits
from edge_mtl.runtime.web.live import LiveView
from edge_mtl.runtime.web.server import WebServer


class ListSource:
    """A file-like source handing out ``n`` frames (a new array each, like a decoder)."""

    live, fps, drops, reconnects, stalls, corrupt = False, None, 0, 0, 0, 0

    def __init__(self, n: int, hw=(48, 64)) -> None:
        self.name, self.n, self.hw, self.i = "list", n, hw, 0

    def read(self):
        if self.i >= self.n:
            return None
        img = np.full((*self.hw, 3), self.i % 256, np.uint8)
        img[8:20, (self.i * 3) % 40 : (self.i * 3) % 40 + 12] = 255
        self.i += 1
        return Frame(img, self.i - 1, time.perf_counter(), time.time())

    def close(self) -> None:
        pass


def serve(fps=200.0, limits=None):
    view = LiveView({"model": "m"}, serve_fps=fps, stall_s=30.0)
    server = WebServer(Bind("127.0.0.1", 0), view, None, limits or Limits(rate_per_s=0)).start()
    view.server = server
    return view, server


def stalled_viewer(port: int, path: str) -> socket.socket:
    """Connects, asks for ``path`` with a tiny receive buffer, and never reads a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def reader(port: int, path: str, stop: threading.Event, got: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    while not stop.is_set():
        chunk = r.fp.read1(65536) if hasattr(r.fp, "read1") else r.fp.read(4096)
        if not chunk:
            break
        got[0] += len(chunk)
    conn.close()


def run_pipeline(engine, view, n: int) -> tuple[int, float]:
    source = ListSource(n)
    sink = view.add_stream(f"s{len(view.streams)}", {"source": "list"}, source, ())
    summary = Pipeline(engine, source, [sink]).run()
    return summary.frames, summary.fps


def test_a_viewer_that_reads_nothing_does_not_stop_the_pipeline(models):
    engine = Engine(models["dense"], providers="cpu")
    view, server = serve()
    try:
        frames_alone, fps_alone = run_pipeline(engine, view, 300)
        alone = view.streams["s0"]
        assert alone._jpeg is None and alone._record is None  # nobody watched: nothing made
        socks = [stalled_viewer(server.port, "/stream/s1.mjpg"),
                 stalled_viewer(server.port, "/events")]  # fmt: skip
        time.sleep(0.2)  # they are connected before the frames flow
        frames_stalled, fps_stalled = run_pipeline(engine, view, 300)
        print(f"FPS alone {fps_alone:.0f}, with 2 stalled viewers {fps_stalled:.0f}")
        assert frames_alone == frames_stalled == 300
        assert view.streams["s1"].seq == 300
        for s in socks:
            s.close()
    finally:
        server.close()


def test_memory_stays_bounded_over_2000_frames_with_4_viewers(models):
    engine = Engine(models["dense"], providers="cpu")
    view, server = serve(fps=1000.0)
    stop = threading.Event()
    got = [[0] for _ in range(4)]
    source = ListSource(2000)
    sink = view.add_stream("s", {"source": "list"}, source, ())
    paths = ["/stream/s.mjpg", "/stream/s.mjpg", "/events", "/stream/s.mjpg"]
    threads = [
        threading.Thread(target=reader, args=(server.port, p, stop, g), daemon=True)
        for p, g in zip(paths, got)
    ]
    for t in threads:
        t.start()
    traced: dict[int, int] = {}

    def on_result(frame, result, times) -> None:
        if frame.index == 200:
            tracemalloc.start()
        if frame.index in (500, 1999):
            traced[frame.index] = tracemalloc.get_traced_memory()[0]

    try:
        summary = Pipeline(engine, source, [sink], on_result=on_result).run()
    finally:
        tracemalloc.stop()
        stop.set()
        server.close()
    assert summary.frames == 2000 and sink.seq == 2000
    assert all(g[0] > 0 for g in got), "every viewer received data"
    growth = traced[1999] - traced[500]
    print(f"traced memory growth frames 500 -> 1999: {growth / 1024:.0f} KiB, bytes {got}")
    assert growth < 1 << 20  # no per-frame buffer anywhere: under 1 MiB over 1,500 frames
    assert sink._slot[0].index == 1999  # the one slot holds only the newest frame
