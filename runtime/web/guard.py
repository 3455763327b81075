"""What keeps the HTTP server safe: where it binds, the token, the limits, the rate limiter and
the checks on uploaded images.

Loopback (127.0.0.1, ::1, localhost) is the default bind; any other address needs a token
(``--token`` or the ``EDGE_MTL_TOKEN`` environment variable), compared in constant time on every
request. Standard library only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import struct
import threading
import time
from dataclasses import dataclass

from edge_mtl.runtime.errors import InputError

TOKEN_ENV = "EDGE_MTL_TOKEN"
MIN_TOKEN_CHARS = 16  # a guessable token on a network address is no protection
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")  # safe in a header, a cookie and a URL
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
MAX_IMAGE_PIXELS = 40_000_000  # an uploaded image's declared width x height (a 40 MP photo)
MAX_CLIENTS_TRACKED = 4096  # rate buckets kept (oldest forgotten first)


@dataclass(frozen=True)
class Bind:
    """The address the server listens on. ``port`` 0 picks a free port."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)

    def url(self, port: int | None = None) -> str:
        """``http://host:port/`` (IPv6 in brackets), with the bound ``port`` when given."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP literal or a name) names this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to a network address


def parse_bind(text: str, flag: str = "--serve") -> Bind:
    """``"8080"`` (127.0.0.1), ``"0.0.0.0:8080"``, ``"[::1]:8080"`` or ``"host:8080"`` -> Bind."""
    host, _, port_text = text.rpartition(":") if ":" in text else ("", "", text)
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(f"{flag} {text}: expected [HOST:]PORT with a port in 0..65535")
    return Bind(host, int(port_text))


def resolve_token(bind: Bind, token: str | None, flag: str = "--serve") -> str | None:
    """The token requests must carry: ``token`` (``--token``), else ``$EDGE_MTL_TOKEN``, else
    ``None`` (allowed on a loopback bind only). Raises :class:`InputError` for a non-loopback
    bind without one and for a token shorter than :data:`MIN_TOKEN_CHARS`."""
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if token is None and not bind.loopback:
        raise InputError(
            f"{flag} {bind.host}:{bind.port}: a non-loopback address needs a token; set "
            f"{TOKEN_ENV} (or --token), e.g. {TOKEN_ENV}=$(python -c "
            "'import secrets; print(secrets.token_urlsafe())')"
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"the token must have at least {MIN_TOKEN_CHARS} characters")
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise InputError("the token may hold only letters, digits and . _ ~ + / = -")
    return token


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (``hmac.compare_digest``) of a presented token."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Limits:
    """What one client and all of them together may take. ``max_viewers``: open MJPEG and
    event streams at once; ``max_body_bytes``: an uploaded image; ``rate_per_s`` requests per
    second per client IP with bursts of ``burst`` (0: no limit); ``max_connections``: open
    connections at once; ``idle_timeout_s``: a connection that sends or takes nothing this long
    is closed (a stuck viewer frees its slot)."""

    max_viewers: int = 8
    max_body_bytes: int = 16 << 20
    rate_per_s: float = 50.0
    burst: int = 100
    max_connections: int = 64
    idle_timeout_s: float = 10.0


class RateLimiter:
    """A token bucket per client IP: ``rate_per_s`` tokens a second up to ``burst``; a request
    takes one. Thread-safe; remembers at most :data:`MAX_CLIENTS_TRACKED` clients."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, perf_counter)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Take a token for ``client``; False when its bucket is empty (answer 429)."""
        if self.rate <= 0:
            return True
        now = time.perf_counter()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if ok else tokens, now)  # newest last
            if len(self._buckets) > MAX_CLIENTS_TRACKED:
                del self._buckets[next(iter(self._buckets))]
        return ok


JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
IMAGE_TYPES = {"image/jpeg": JPEG_MAGIC, "image/jpg": JPEG_MAGIC, "image/png": PNG_MAGIC}


def image_problem(body: bytes, content_type: str) -> str | None:
    """Why an uploaded ``image/jpeg`` or ``image/png`` body cannot be decoded safely, or
    ``None``: the magic bytes must match the type, a JPEG must end with its end-of-image marker,
    and the declared size must stay under :data:`MAX_IMAGE_PIXELS` (a small file declaring a
    huge image would make the decoder allocate gigabytes)."""
    magic = IMAGE_TYPES[content_type]
    if not body.startswith(magic):
        return f"the body is not a {content_type.split('/')[1].upper()} image"
    if magic == JPEG_MAGIC and not body.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    size = png_size(body) if magic == PNG_MAGIC else jpeg_size(body)
    if size is None:
        return "cannot read the image size from its header"
    if size[0] * size[1] > MAX_IMAGE_PIXELS:
        return f"image of {size[1]}x{size[0]} pixels is over the {MAX_IMAGE_PIXELS} pixel limit"
    return None


def png_size(body: bytes) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, or ``None``."""
    if len(body) < 24 or body[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", body[16:24])
    return h, w


def jpeg_size(body: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame marker, or ``None``."""
    i, n = 2, len(body)
    while i + 4 <= n:
        if body[i] != 0xFF:
            return None
        marker = body[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", body[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", body[i + 5 : i + 9])
            return h, w
        i += 2 + length
    return None
