"""A test camera on loopback: a video looped at a fixed frame rate, served as MJPEG over HTTP on
127.0.0.1, so live-source latency can be measured and reproduced without camera hardware.

Like a real network camera it has one clock: a new frame is "captured" every 1/fps seconds and
every connected client gets that frame next (a client that reads slowly skips frames, it never
gets a backlog). Frames are JPEG-encoded once at start, so serving costs next to no CPU beside
the pipeline being measured.

``edge-mtl bench --e2e camera:VIDEO@FPS`` serves one for the run; by hand::

    python -m edge_mtl.bench.camera demo/drive.mp4 --fps 30 --port 8554
    edge-mtl run --model model.onnx --source http://127.0.0.1:8554/live.mjpg
"""

from __future__ import annotations

import argparse
import http.server
import re
import threading
import time
from typing import Any

import cv2

from edge_mtl.runtime.errors import InputError

SPEC_PREFIX = "camera:"
DEFAULT_FPS = 30.0
MAX_FRAMES = 900  # frames encoded and looped at most (30 s at 30 FPS; about 40 MB at 720p)
JPEG_QUALITY = 90
PART = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"


def parse_spec(spec: str) -> tuple[str, float] | None:
    """``camera:VIDEO[@FPS]`` -> (video path, frames per second); ``None`` for any other
    source spec. Raises :class:`InputError` on a bad FPS."""
    if not spec.startswith(SPEC_PREFIX):
        return None
    body = spec[len(SPEC_PREFIX) :]
    m = re.fullmatch(r"(.+)@([0-9.]+)", body)
    video, fps_text = (m.group(1), m.group(2)) if m else (body, str(DEFAULT_FPS))
    try:
        fps = float(fps_text)
    except ValueError:
        fps = 0.0
    if not 0 < fps <= 1000:
        raise InputError(f"--e2e {spec}: the frame rate after @ must be in (0, 1000]")
    return video, fps


def encode_video(path: str, max_frames: int = MAX_FRAMES) -> list[bytes]:
    """The first ``max_frames`` frames of the video at ``path`` as JPEG bytes."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise InputError(f"camera {path}: cannot open as a video")
    frames: list[bytes] = []
    try:
        while len(frames) < max_frames:
            ok, image = cap.read()
            if not ok:
                break
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if ok:
                frames.append(jpeg.tobytes())
    finally:
        cap.release()
    if not frames:
        raise InputError(f"camera {path}: no decodable frame in the video")
    return frames


class LoopbackCamera:
    """Serves ``video`` looped at ``fps`` frames per second as an MJPEG stream on
    ``http://127.0.0.1:<port>/live.mjpg`` (``url``; ``port`` 0 picks a free one) from the moment
    it is made until :meth:`close`. Usable as a context manager."""

    def __init__(self, video: str, fps: float = DEFAULT_FPS, port: int = 0) -> None:
        self.video, self.fps = video, fps
        self._jpegs = encode_video(video)
        self._cond = threading.Condition()
        self._tick = -1  # frames captured so far - 1; frame shown = _jpegs[_tick % len]
        self._stop = threading.Event()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/live.mjpg"
        self._threads = [
            threading.Thread(target=self._clock, name="camera-clock", daemon=True),
            threading.Thread(target=self.httpd.serve_forever, name="camera-http", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _clock(self) -> None:
        """One frame every 1/fps s on an absolute schedule (no drift from late wake-ups)."""
        t0, k = time.perf_counter(), 0
        while not self._stop.is_set():
            with self._cond:
                self._tick = k
                self._cond.notify_all()
            k += 1
            k = max(k, int((time.perf_counter() - t0) * self.fps))  # skip ticks it slept past
            self._stop.wait(max(0.0, t0 + k / self.fps - time.perf_counter()))

    def next_frame(self, after: int) -> tuple[int, bytes] | None:
        """The first frame captured after tick ``after``: (tick, JPEG); ``None`` once closed."""
        with self._cond:
            while self._tick <= after and not self._stop.is_set():
                self._cond.wait(0.5)
            if self._stop.is_set():
                return None
            return self._tick, self._jpegs[self._tick % len(self._jpegs)]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass  # a test camera keeps stderr quiet

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                tick = -1
                try:
                    while (got := camera.next_frame(tick)) is not None:
                        tick, jpeg = got
                        self.wfile.write(PART % len(jpeg) + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away

        return Handler

    def close(self) -> None:
        """Stop the clock and the server; clients see the stream end."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5.0)

    def __enter__(self) -> LoopbackCamera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_mtl.bench.camera VIDEO [--fps F] [--port P]``: serve until Ctrl-C."""
    p = argparse.ArgumentParser(
        prog="python -m edge_mtl.bench.camera",
        description="Serve VIDEO looped at --fps as an MJPEG camera on 127.0.0.1.",
        allow_abbrev=False,
    )
    p.add_argument("video", help="a video file (its first 900 frames are looped)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frames per second (30)")
    p.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (8554)")
    args = p.parse_args(argv)
    if not 0 < args.fps <= 1000:
        p.error(f"--fps must be in (0, 1000], got {args.fps}")
    try:
        camera = LoopbackCamera(args.video, args.fps, args.port)
    except (InputError, OSError) as e:
        p.exit(2, f"camera: error: {e}\n")
    print(f"camera: serving {args.video} at {args.fps:g} FPS on {camera.url} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        camera.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
