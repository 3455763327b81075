"""A real MJPEG-over-HTTP stream on 127.0.0.1, served by Python, through ``open_source``:
frames arrive, the stream stops, comes back on the same port, and is reconnected to."""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np

from edge_mtl.runtime.sources import LiveSource, open_source

FRAME = np.zeros((48, 64, 3), np.uint8)
FRAME[:, :32] = 200
JPEG = cv2.imencode(".jpg", FRAME)[1].tobytes()


class MjpegServer:
    """A multipart/x-mixed-replace JPEG stream on 127.0.0.1 (``url``). Each connection gets
    ``frames`` frames (endless when ``None``), then silence with the socket open (a stall, not
    a disconnect); ``stop`` drops every client connection."""

    def __init__(self, port: int = 0, frames: int | None = None) -> None:
        stopped = self.stopped = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                deadline = time.monotonic() + 30  # bounded: the test never hangs on a client
                sent = 0
                try:
                    while not stopped.is_set() and time.monotonic() < deadline and sent != frames:
                        self.wfile.write(part % len(JPEG) + JPEG + b"\r\n")
                        sent += 1
                        time.sleep(0.02)
                    stopped.wait(max(0.0, deadline - time.monotonic()))  # silent, still open
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/live.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _read_frame(src, seconds: float = 10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = src.read()
        if frame is not None:
            return frame
    return None


def test_http_stream_is_read_and_reconnected_after_a_restart() -> None:
    server = MjpegServer()
    src = open_source(server.url, reconnect_timeout_s=20)
    assert isinstance(src, LiveSource)
    try:
        first = _read_frame(src)
        assert first is not None and first.image.shape == FRAME.shape
        assert abs(float(first.image[:, :32].mean()) - 200) < 10  # the served picture
        server.stop()
        time.sleep(0.5)  # the stream is down: the capture thread starts reconnecting
        server = MjpegServer(server.port)
        deadline = time.monotonic() + 20
        while src.reconnects == 0 and time.monotonic() < deadline:
            src.read()
        assert src.reconnects >= 1
        assert _read_frame(src) is not None
    finally:
        src.close()
        server.stop()
