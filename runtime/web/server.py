"""The HTTP server both web features share: ``http.server.ThreadingHTTPServer`` (one thread per
connection; enough for a handful of viewers and clients, and no dependency) with routing, the
token, the limits of :mod:`.guard` and JSON errors.

Every request passes, in order: the rate limit (429), the Host check on a token-less loopback
bind (403, against DNS rebinding), the token (401), the route (404: only the app's exact paths
exist, so there is no listing and no traversal) and the method (405). Every error is JSON:
``{"error": "...", "status": N}``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from edge_mtl.runtime.web.guard import (
    IMAGE_TYPES,
    Bind,
    Limits,
    RateLimiter,
    is_loopback,
    token_matches,
)

log = logging.getLogger("edge_mtl.runtime")

COOKIE = "edge_mtl_token"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}
QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class HttpError(Exception):
    """Answer the request with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Route:
    """A handler for one path: ``methods`` it answers (others: 405), ``fn(request)``."""

    methods: tuple[str, ...]
    fn: Callable[[Handler], None]


class App(Protocol):
    """What the server serves: ``route(path)`` is the route of a path (``None``: 404)."""

    def route(self, path: str) -> Route | None:
        """The route of a URL path (already percent-decoded), or ``None``."""
        ...


class WebServer(ThreadingHTTPServer):
    """Serves ``app`` on ``bind`` from a background thread (:meth:`start`, :meth:`close`).
    ``token``: required on every request when not ``None``."""

    daemon_threads = True  # a viewer's thread never holds the process open
    request_queue_size = 64

    def __init__(self, bind: Bind, app: App, token: str | None, limits: Limits) -> None:
        self.address_family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
        self.bind_spec, self.app, self.token, self.limits = bind, app, token, limits
        self.rate = RateLimiter(limits.rate_per_s, limits.burst)
        self._connections = threading.BoundedSemaphore(limits.max_connections)
        self._viewers = threading.BoundedSemaphore(limits.max_viewers)
        self.viewers = 0
        self._lock = threading.Lock()
        self.closing = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            super().__init__((bind.host, bind.port), Handler)
        except OSError as e:
            from edge_mtl.runtime.errors import InputError

            raise InputError(f"cannot listen on {bind.host}:{bind.port} ({e.strerror})") from None

    @property
    def port(self) -> int:
        """The port bound (the free one picked for port 0)."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        return self.bind_spec.url(self.port)

    def start(self) -> WebServer:
        """Serve on a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="edge-mtl-web",
            daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, end the viewers' loops (they watch ``closing``), free the port."""
        self.closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5.0)
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Refuse a connection beyond ``max_connections`` at once (503, then close)."""
        if not self._connections.acquire(blocking=False):
            with suppress(OSError):
                request.sendall(_raw_error(503, "too many connections"))
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web: error while serving %s", client_address, exc_info=True)

    @contextmanager
    def viewer(self) -> Iterator[None]:
        """Hold a viewer slot for a long-lived stream; 503 when all ``max_viewers`` are taken."""
        if not self._viewers.acquire(blocking=False):
            raise HttpError(503, f"too many viewers (limit {self.limits.max_viewers})",
                            {"Retry-After": "5"})  # fmt: skip
        with self._lock:
            self.viewers += 1
        try:
            yield
        finally:
            with self._lock:
                self.viewers -= 1
            self._viewers.release()


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port: ``[::1]:80`` -> ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _error_body(status: int, message: str) -> bytes:
    """The one error shape of every answer: ``{"error": message, "status": status}``."""
    return json.dumps({"error": message, "status": status}).encode()


def _raw_error(status: int, message: str) -> bytes:
    body = _error_body(status, message)
    phrase = HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class Handler(BaseHTTPRequestHandler):
    """One connection: checks every request (see the module docstring), then calls its route.
    Routes read ``query`` and :meth:`read_image` and answer with :meth:`send_json`,
    :meth:`send_body` or their own streaming loop."""

    server: WebServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client posting images reuses its connection
    # Headers and body go out in two writes: with Nagle's algorithm the body would wait for the
    # client's delayed ACK of the headers (40 ms on Linux), capping a client at ~20 requests/s.
    disable_nagle_algorithm = True
    server_version = "edge-mtl"
    sys_version = ""
    query: dict[str, str]  # the request's query parameters
    route_path: str  # its percent-decoded path

    def version_string(self) -> str:
        """The ``Server`` header: the name alone, no Python version."""
        return self.server_version

    def setup(self) -> None:
        self.timeout = self.server.limits.idle_timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        try:
            route = self._check(method)
            route.fn(self)
        except HttpError as e:
            self.send_error_json(e.status, e.message, e.headers)
        except QUIET_ERRORS:
            self.close_connection = True  # the client went away: nothing to answer
        except OSError as e:
            self.close_connection = True
            log.debug("web: connection error (%s)", e)
        except Exception as e:  # a bug or a model failure: this request fails, not the server
            log.warning("web: %s %s failed: %s: %s", method, self.path[:200], type(e).__name__, e)
            self.close_connection = True
            self.send_error_json(500, f"internal error ({type(e).__name__})")

    def _check(self, method: str) -> Route:
        """The request's route once it passed the rate, Host, token, path and method checks."""
        s = self.server
        if not s.rate.allow(self.client_address[0]):
            raise HttpError(429, "too many requests from this client; slow down",
                            {"Retry-After": "1"})  # fmt: skip
        parts = urllib.parse.urlsplit(self.path)
        self.query = dict(urllib.parse.parse_qsl(parts.query))
        path = self.route_path = urllib.parse.unquote(parts.path)
        if s.token is None:
            host = host_name(self.headers.get("Host") or "")
            if host and not is_loopback(host):
                raise HttpError(403, f"Host {host!r} not allowed on a loopback server")
        elif not self._authorized(s.token):
            raise HttpError(401, "missing or wrong token (Authorization: Bearer TOKEN)",
                            {"WWW-Authenticate": "Bearer"})  # fmt: skip
        route = s.app.route(path)
        if route is None:
            raise HttpError(404, f"no such route: {path[:200]}")
        allowed = (*route.methods, "HEAD") if "GET" in route.methods else route.methods
        if method not in allowed:
            raise HttpError(405, f"{method} not allowed on {path}; use {', '.join(route.methods)}",
                            {"Allow": ", ".join(route.methods)})  # fmt: skip
        if s.token is not None and path == "/" and "token" in self.query:
            return Route(("GET",), self._cookie_redirect)
        return route

    def _authorized(self, token: str) -> bool:
        auth = self.headers.get("Authorization") or ""
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = None
        try:
            morsel = SimpleCookie(self.headers.get("Cookie") or "").get(COOKIE)
            cookie = morsel.value if morsel is not None else None
        except CookieError:
            pass
        candidates = (bearer, cookie, self.query.get("token"))
        return any([token_matches(token, c) for c in candidates])  # every one compared

    def _cookie_redirect(self, _: Handler) -> None:
        """``/?token=...``: keep the token in an HttpOnly cookie and drop it from the URL."""
        cookie = f"{COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
        self.send_body(b"", "text/plain", 303, {"Set-Cookie": cookie, "Location": "/"})

    # ---- responses ---------------------------------------------------------------------------

    def send_body(
        self, body: bytes, ctype: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        """A complete response with ``Content-Length`` and the security headers."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj: Any, status: int = 200) -> None:
        """``obj`` as compact JSON."""
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_body(body, "application/json", status)

    def send_error_json(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """An error as ``{"error": message, "status": status}``."""
        if status >= 400:
            log.debug("web: %d %s (%s %s)", status, message, self.command, self.path[:200])
        self.send_body(_error_body(status, message), "application/json", status, headers)

    def start_stream(self, content_type: str) -> None:
        """Headers of a long-lived response (MJPEG, events): no length, closed at the end."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Connection", "close")
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()

    # ---- request bodies -----------------------------------------------------------------------

    def read_image(self) -> tuple[bytes, str]:
        """The body of an image upload and its type (``image/jpeg`` or ``image/png``): 411
        without a length, 413 over the limit, 415 for another type (the connection closes
        after an error, its body unread)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise HttpError(411, "a Content-Length header is required")
        limit = self.server.limits.max_body_bytes
        if int(length) > limit:
            self.close_connection = True
            raise HttpError(413, f"body of {int(length)} bytes is over the {limit} byte limit")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in IMAGE_TYPES:
            self.close_connection = True
            raise HttpError(415, f"Content-Type {ctype or '(none)'!r} is not image/jpeg or "
                            "image/png")  # fmt: skip
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            raise HttpError(400, "the body ended before Content-Length bytes")
        return body, ctype
