"""The pieces of :mod:`edge_mtl.runtime.web.guard` and the server's Host parsing on their own:
bind addresses, the token rules, the rate limiter, and the upload checks."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.web.guard import (
    TOKEN_ENV,
    Bind,
    RateLimiter,
    image_problem,
    jpeg_size,
    parse_bind,
    resolve_token,
    token_matches,
)
from edge_mtl.runtime.web.server import host_name

TOKEN = "abcdefghijklmnop-0123"


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [("8080", "127.0.0.1", 8080, True), ("0.0.0.0:80", "0.0.0.0", 80, False),
     ("[::1]:9000", "::1", 9000, True), ("localhost:0", "localhost", 0, True),
     ("cam-box:8080", "cam-box", 8080, False), ("[::]:8080", "::", 8080, False)],
)  # fmt: skip
def test_parse_bind(text, host, port, loopback):
    bind = parse_bind(text)
    assert (bind.host, bind.port, bind.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["", "host:", "80800", "a:b", "1.2.3.4:-1"])
def test_parse_bind_refuses(text):
    with pytest.raises(InputError, match="expected \\[HOST:\\]PORT"):
        parse_bind(text)


def test_token_rules(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert resolve_token(Bind("127.0.0.1", 80), None) is None
    with pytest.raises(InputError, match="needs a token; set EDGE_MTL_TOKEN"):
        resolve_token(Bind("0.0.0.0", 80), None)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert resolve_token(Bind("0.0.0.0", 80), None) == TOKEN
    assert resolve_token(Bind("0.0.0.0", 80), TOKEN + "x") == TOKEN + "x"  # --token wins
    with pytest.raises(InputError, match="at least 16"):
        resolve_token(Bind("0.0.0.0", 80), "short")
    with pytest.raises(InputError, match="only letters, digits"):
        resolve_token(Bind("0.0.0.0", 80), "abcdefgh; ijklmnopq")
    assert token_matches(TOKEN, TOKEN) and not token_matches(TOKEN, TOKEN[:-1])
    assert not token_matches(TOKEN, None) and not token_matches(TOKEN, "é" * 20)


def test_rate_limiter_is_a_token_bucket_per_client():
    rl = RateLimiter(rate_per_s=1e-6, burst=3)  # no refill within the test
    assert [rl.allow("a") for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b")  # another client has its own bucket
    assert all(RateLimiter(0, 1).allow("a") for _ in range(100))  # rate 0: no limit


def test_host_name():
    assert host_name("127.0.0.1:8080") == "127.0.0.1"
    assert host_name("[::1]:8080") == "::1" and host_name("[::1]") == "::1"
    assert host_name("localhost") == "localhost" and host_name("evil.example") == "evil.example"


def test_image_checks():
    jpg = cv2.imencode(".jpg", np.zeros((30, 50, 3), np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.zeros((30, 50, 3), np.uint8))[1].tobytes()
    assert jpeg_size(jpg) == (30, 50)
    assert image_problem(jpg, "image/jpeg") is None and image_problem(png, "image/png") is None
    assert "not a PNG" in image_problem(jpg, "image/png")
    assert "truncated JPEG" in image_problem(jpg[:-10], "image/jpeg")
    big = jpg.replace(struct.pack(">HH", 30, 50), struct.pack(">HH", 20000, 20000), 1)
    assert "over the 40000000 pixel limit" in image_problem(big, "image/jpeg")
