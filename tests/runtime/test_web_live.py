"""The live view of ``run --serve`` over real sockets on 127.0.0.1: every route, the token on a
non-loopback bind, the limits and their errors, and the records of ``/events`` equal to the
JSON lines of ``--jsonl``."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.records import run_header
from edge_mtl.runtime.sinks import JsonlSink, StageTimes
from edge_mtl.runtime.sources import Frame
from edge_mtl.runtime.web.guard import Bind, Limits
from edge_mtl.runtime.web.live import LiveView
from edge_mtl.runtime.web.server import WebServer

TOKEN = "s3cret-token-for-tests-0123"


class Source:
    """Stands in for a source: a name and the counters the status reads."""

    name, live, fps, drops, reconnects = "clip.mp4", False, 10.0, 3, 1


def request(port, method, path, body=None, headers=None, timeout=10.0):
    """(status, headers, body bytes) of one request on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def get_json(port, path, headers=None):
    status, _, body = request(port, "GET", path, headers=headers)
    return status, json.loads(body)


@pytest.fixture
def engine(models):
    return Engine(models["dense"], providers="cpu")


def serve(engine, host="127.0.0.1", token=None, limits=None, stall_s=10.0, fps=50.0):
    run = {"model": str(engine.path), "provider": "cpu", "precision": "fp32", "tasks": []}
    view = LiveView(run, serve_fps=fps, stall_s=stall_s)
    server = WebServer(Bind(host, 0), view, token, limits or Limits(rate_per_s=0)).start()
    view.server = server
    return view, server


def feed(view_stream, engine, frames, jsonl=None):
    """Write ``frames`` with their results to the stream (and to ``jsonl``, a JsonlSink)."""
    for i, img in enumerate(frames):
        frame = Frame(img, i, time.perf_counter(), 1.7e9 + i, "clip.mp4", i / 10)
        result = engine(img)
        times = StageTimes(1.0, 2.0, 0.5, 4.0)
        view_stream.write(frame, result, times)
        if jsonl is not None:
            jsonl.write(frame, result, times)


def read_part(resp) -> bytes:
    """The next JPEG of a multipart/x-mixed-replace response."""
    length = None
    while True:
        line = resp.fp.readline()
        assert line, "stream ended"
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        if line == b"\r\n" and length is not None:
            return resp.fp.read(length)


def test_every_route_answers(engine, kit, tmp_path: Path):
    view, server = serve(engine)
    try:
        header = run_header(engine, Source(), "front")
        stream = view.add_stream("front", header, Source(), engine.meta.tasks)
        assert get_json(server.port, "/healthz")[0] == 503  # no frame yet
        jsonl = JsonlSink(tmp_path / "a.jsonl", header=header)
        frames = kit.make_frames(5)
        feed(stream, engine, frames, jsonl)
        jsonl.close()
        lines = [json.loads(ln) for ln in (tmp_path / "a.jsonl").read_text().splitlines()]

        status, body = get_json(server.port, "/healthz")
        assert (status, body["status"]) == (200, "ok")
        status, s = get_json(server.port, "/api/status")
        assert status == 200 and s["model"] == str(engine.path)
        (st,) = s["streams"]
        assert (st["name"], st["state"], st["frames"]) == ("front", "running", 5)
        assert (st["drops"], st["reconnects"], st["frame_size"]) == (3, 1, [48, 64])
        assert st["last"] == lines[-1]  # the newest frame's record, as --jsonl wrote it

        status, h, page = request(server.port, "GET", "/")
        assert status == 200 and b"/app.js" in page and h["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in h["Content-Security-Policy"]
        for path in ("/app.js", "/style.css"):
            assert request(server.port, "GET", path)[0] == 200

        status, h, jpg = request(server.port, "GET", "/stream/front.jpg")
        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        assert status == 200 and img.shape == (48, 64, 3)

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/stream/front.mjpg")
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Content-Type").startswith("multipart/x-mixed")
        first = cv2.imdecode(np.frombuffer(read_part(r), np.uint8), cv2.IMREAD_COLOR)
        assert first.shape == (48, 64, 3)
        feed(stream, engine, frames[:1])  # a newer frame: the viewer gets it
        assert read_part(r)[:2] == b"\xff\xd8"
        conn.close()

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/events")
        r = conn.getresponse()
        assert r.getheader("Content-Type") == "text/event-stream"
        events = []
        while len(events) < 2:
            line = r.fp.readline().decode()
            if line.startswith("event: "):
                name = line[7:].strip()
            if line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
        conn.close()
        assert events[0] == ("front", lines[0])  # the header record, frame size and all
        assert events[1][1]["type"] == "frame" and events[1][1]["frame"] == 5
        assert events[1][1]["tasks"] == lines[1]["tasks"]  # frame 0 again: same answers
    finally:
        server.close()


def test_healthz_turns_503_when_a_stream_stalls(engine, kit):
    view, server = serve(engine, stall_s=0.3)
    try:
        a = view.add_stream("a", {}, Source(), ())
        b = view.add_stream("a", {}, Source(), ())  # a name used twice gets _<position>
        assert b.name == "a_1"
        feed(a, engine, kit.make_frames(1))
        feed(b, engine, kit.make_frames(1))
        assert get_json(server.port, "/healthz")[0] == 200
        time.sleep(0.4)
        feed(a, engine, kit.make_frames(1))
        status, body = get_json(server.port, "/healthz")
        assert (status, body["detail"]) == (503, "a_1 stalled")
        b.close()  # dropped after it stalled: stays stalled
        assert get_json(server.port, "/healthz")[1]["detail"] == "a_1 stalled"
    finally:
        server.close()


def test_token_on_a_non_loopback_bind(engine, kit):
    """Bound to 0.0.0.0 (connected through 127.0.0.1): 401 without the token, 200 with it as a
    bearer header, a query parameter or the cookie the page keeps."""
    view, server = serve(engine, host="0.0.0.0", token=TOKEN)
    try:
        feed(view.add_stream("s", {}, Source(), ()), engine, kit.make_frames(1))
        for path in ("/", "/api/status", "/healthz", "/events", "/stream/s.mjpg", "/nope"):
            status, h, body = request(server.port, "GET", path)
            assert status == 401 and json.loads(body)["status"] == 401, path
            assert h["WWW-Authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert request(server.port, "GET", "/api/status", headers=wrong)[0] == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert request(server.port, "GET", "/api/status", headers=good)[0] == 200
        assert request(server.port, "GET", f"/healthz?token={TOKEN}")[0] == 200

        status, h, _ = request(server.port, "GET", f"/?token={TOKEN}")
        assert status == 303 and h["Location"] == "/"
        cookie = h["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        assert request(server.port, "GET", "/", headers=jar)[0] == 200
        assert request(server.port, "GET", "/stream/s.jpg", headers=jar)[0] == 200
    finally:
        server.close()


def test_unknown_paths_methods_and_foreign_hosts_are_refused(engine, kit):
    view, server = serve(engine)
    try:
        feed(view.add_stream("s", {}, Source(), ()), engine, kit.make_frames(1))
        for path in ("/nope", "/../../etc/passwd", "/static/../cli.py", "/%2e%2e/server.py",
                     "/stream/../live.py", "/stream/x.mjpg", "/app.js/", "/static/app.js",
                     "/index.html", "//etc/passwd"):  # fmt: skip
            status, _, body = request(server.port, "GET", path)
            assert status == 404 and "no such route" in json.loads(body)["error"], path
        status, _, body = request(server.port, "GET", "/events?stream=nope")
        assert status == 404 and "no stream named 'nope'" in json.loads(body)["error"]
        status, h, body = request(server.port, "HEAD", "/stream/s.mjpg")
        assert status == 200 and body == b"" and h["Content-Type"].startswith("multipart/")
        status, h, body = request(server.port, "POST", "/api/status", body=b"{}")
        assert status == 405 and h["Allow"] == "GET" and json.loads(body)["status"] == 405
        evil = {"Host": "evil.example:80"}  # DNS rebinding onto a token-less loopback server
        assert request(server.port, "GET", "/api/status", headers=evil)[0] == 403
        assert request(server.port, "GET", "/healthz")[0] == 200  # still serving
    finally:
        server.close()


def test_rate_and_viewer_limits(engine, kit):
    limits = Limits(max_viewers=1, rate_per_s=1.0, burst=3)
    view, server = serve(engine, limits=limits)
    try:
        feed(view.add_stream("s", {}, Source(), ()), engine, kit.make_frames(1))
        codes = [request(server.port, "GET", "/healthz")[0] for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        status, h, body = request(server.port, "GET", "/healthz")
        assert status == 429 and "too many requests" in json.loads(body)["error"]
        assert h["Retry-After"] == "1"
    finally:
        server.close()
    view, server = serve(engine, limits=Limits(max_viewers=1, rate_per_s=0))
    try:
        stream = view.add_stream("s", {}, Source(), ())
        feed(stream, engine, kit.make_frames(1))
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/stream/s.mjpg")
        assert conn.getresponse().status == 200
        status, _, body = request(server.port, "GET", "/events")
        assert status == 503 and "too many viewers" in json.loads(body)["error"]
        conn.close()
        deadline = time.monotonic() + 10  # the viewer's slot frees once its loop sees it gone
        while time.monotonic() < deadline and server.viewers:
            feed(stream, engine, kit.make_frames(1))
            time.sleep(0.05)
        assert server.viewers == 0
    finally:
        server.close()


def test_a_viewer_gone_mid_stream_costs_nothing(engine, kit):
    view, server = serve(engine)
    try:
        stream = view.add_stream("s", {}, Source(), ())
        feed(stream, engine, kit.make_frames(1))
        for _ in range(3):  # connect, read the headers, hang up
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /stream/s.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
            sock.close()
        feed(stream, engine, kit.make_frames(20))
        assert get_json(server.port, "/api/status")[1]["streams"][0]["frames"] == 21
        assert request(server.port, "GET", "/healthz")[0] == 200
    finally:
        server.close()


def test_a_stream_added_later_joins_open_event_streams(engine, kit):
    view, server = serve(engine)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/events")  # before any stream exists (the run is starting)
        r = conn.getresponse()
        time.sleep(0.2)
        feed(view.add_stream("late", {"stream": "late"}, Source(), ()), engine,
             kit.make_frames(1))  # fmt: skip
        lines = [r.fp.readline().decode() for _ in range(6)]
        conn.close()
        assert lines[0] == "event: late\n" and json.loads(lines[1][6:])["type"] == "header"
        assert lines[3] == "event: late\n" and json.loads(lines[4][6:])["type"] == "frame"
    finally:
        server.close()


def test_server_close_ends_open_streams(engine, kit):
    view, server = serve(engine)
    stream = view.add_stream("s", {}, Source(), ())
    feed(stream, engine, kit.make_frames(1))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/events")
    r = conn.getresponse()
    got = threading.Event()
    threading.Thread(target=lambda: (r.read(), got.set()), daemon=True).start()
    server.close()
    assert got.wait(5), "the event stream did not end when the server closed"
    conn.close()
