"""``edge-mtl run --serve`` and ``edge-mtl serve`` as a user starts them: a subprocess on an
ephemeral port, its banner line, the routes, Ctrl-C; and the refusals before anything loads."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from edge_mtl.bench.camera import LoopbackCamera
from edge_mtl.cli import main

TOKEN = "cli-test-token-0123456789"


def start(args: list[str], env: dict | None = None) -> tuple[subprocess.Popen, int, str]:
    """Start ``edge-mtl ARGS`` and wait for its URL line; (process, port, that line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_mtl.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if m := re.search(r"http://[\d.]+:(\d+)/", line):
            return proc, int(m.group(1)), line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("no URL line: " + "".join(seen))


def get(port: int, path: str, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def test_run_serve_on_a_live_camera(models, kit, tmp_path: Path):
    video = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(20))
    with LoopbackCamera(str(video), fps=30) as camera:
        args = ["run", "--model", str(models["dense"]), "--provider", "cpu",
                "--source", f"cam={camera.url}", "--no-save", "--serve", "0",
                "--jsonl", str(tmp_path / "cam.jsonl"), "--jsonl-topk", "2"]  # fmt: skip
        proc, port, banner = start(args)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and get(port, "/healthz")[0] != 200:
                time.sleep(0.2)
            assert get(port, "/healthz")[0] == 200
            status = json.loads(get(port, "/api/status")[1])
            (s,) = status["streams"]
            assert s["name"] == "cam" and s["source_kind"] == "live" and s["frames"] > 0
            assert status["provider"] == "cpu" and s["last"]["tasks"]["weather"]["kind"]
            assert len(s["last"]["tasks"]["weather"]["probs"]) == 2  # as --jsonl-topk 2
            code, jpg = get(port, "/stream/cam.jpg")
            assert code == 200 and jpg[:2] == b"\xff\xd8"
        finally:
            out = stop(proc)
    assert banner.startswith("edge-mtl run: live view on http://127.0.0.1:")
    assert "(loopback only, no token)" in banner and "(interrupted)" in out
    lines = [json.loads(ln) for ln in (tmp_path / "cam.jsonl").read_text().splitlines()]
    assert s["last"] in lines  # the status's newest record is one of the JSON lines


def test_serve_answers_infer_and_needs_a_token_off_loopback(models, kit):
    jpg = cv2.imencode(".jpg", kit.make_frames(1)[0])[1].tobytes()
    proc, port, banner = start(["serve", "--model", str(models["dense"]), "--provider", "cpu",
                        "0.0.0.0:0"], env={"EDGE_MTL_TOKEN": TOKEN})  # fmt: skip
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/infer", body=jpg, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        assert r.status == 401 and json.loads(r.read())["status"] == 401
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        auth = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {TOKEN}"}
        conn.request("POST", "/infer", body=jpg, headers=auth)
        r = conn.getresponse()
        rec = json.loads(r.read())
        assert r.status == 200 and rec["type"] == "frame" and "weather" in rec["tasks"]
        conn.close()
        code, body = get(port, "/api/status", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 200 and json.loads(body)["requests"] == 1
    finally:
        out = stop(proc, signal.SIGTERM)  # as systemd or a container runtime stops it
    assert "token required" in banner and "1 images answered" in out


def test_a_network_address_without_a_token_is_refused(models, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_MTL_TOKEN", raising=False)
    code = main(["run", "--model", str(models["dense"]), "--source", "x.mp4",
                 "--serve", "0.0.0.0:8080"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "a non-loopback address needs a token" in err
    assert main(["serve", "--model", "m.onnx", "--token", "short", "8080"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err
    assert main(["serve", "--model", "m.onnx", "host:port"]) == 2
    assert "expected [HOST:]PORT" in capsys.readouterr().err
