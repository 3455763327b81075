"""``edge-mtl serve``'s app over real sockets: ``POST /infer`` answers the record ``run
--jsonl`` writes for the same image, concurrent requests are batched on a dynamic-batch model
(one by one on a fixed batch of 1), and bad bodies get their error while the server goes on."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import zlib
from pathlib import Path

import cv2
import pytest

from edge_mtl.cli import main
from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.web.guard import Bind, Limits
from edge_mtl.runtime.web.infer import InferApp
from edge_mtl.runtime.web.server import WebServer


def post(port, body, ctype="image/jpeg", headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST", "/infer", body=body, headers={"Content-Type": ctype, **(headers or {})}
        )
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        if own:
            conn.close()


def serve(model, max_batch=8, max_wait_ms=5.0, limits=None):
    app = InferApp(Engine(model, providers="cpu"), max_batch, max_wait_ms)
    server = WebServer(Bind("127.0.0.1", 0), app, None, limits or Limits(rate_per_s=0)).start()
    app.server = server
    return app, server


def images(kit, folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, img in enumerate(kit.make_frames(n, 48, 64, seed=7)):
        ext = ".png" if i % 2 else ".jpg"
        cv2.imwrite(str(folder / f"{i:02d}{ext}"), img)
        paths.append(folder / f"{i:02d}{ext}")
    return paths


def run_records(model: Path, folder: Path, tmp_path: Path) -> dict[str, dict]:
    """``edge-mtl run --jsonl`` on the folder: file name -> frame record."""
    out = tmp_path / "run.jsonl"
    assert main(["run", "--model", str(model), "--source", str(folder), "--provider", "cpu",
                 "--no-save", "--jsonl", str(out)]) == 0  # fmt: skip
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    return {Path(r["file"]).name: r for r in lines if r["type"] == "frame"}


def concurrent_posts(port, paths, clients=8):
    """Every image posted by ``clients`` threads at once (released together)."""
    barrier = threading.Barrier(clients)
    answers: dict[str, tuple[int, dict]] = {}

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for p in paths[k::clients]:
            barrier.wait(timeout=30) if p == paths[k] else None
            ctype = "image/png" if p.suffix == ".png" else "image/jpeg"
            answers[p.name] = post(port, p.read_bytes(), ctype, {"X-Filename": p.name}, conn)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def same_answers(a: dict, b: dict) -> None:
    assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
    for da, db in zip(a["detections"], b["detections"]):
        assert da["box"] == pytest.approx(db["box"], abs=0.02)
        assert da["score"] == pytest.approx(db["score"], abs=2e-4)
    assert a["tasks"].keys() == b["tasks"].keys()
    for name, ta in a["tasks"].items():
        tb = b["tasks"][name]
        assert ta["kind"] == tb["kind"] and ta.get("label") == tb.get("label")
        if "probs" in ta:
            assert ta["probs"] == pytest.approx(tb["probs"], abs=2e-4)
        if "value" in ta:
            assert ta["value"] == pytest.approx(tb["value"], abs=1e-5)


def test_concurrent_clients_get_run_records_in_batches(models, kit, tmp_path):
    paths = images(kit, tmp_path / "imgs", 24)
    expected = run_records(models["dense"], tmp_path / "imgs", tmp_path)
    app, server = serve(models["dense"], max_wait_ms=50.0)
    try:
        answers = concurrent_posts(server.port, paths)
        assert sorted(answers) == sorted(expected)
        for name, (status, rec) in answers.items():
            assert status == 200 and rec["type"] == "frame" and rec["file"] == name
            same_answers(rec, expected[name])
        st = server.app.status()
        assert st["requests"] == 24 and st["dynamic_batch"] is True
        assert max(int(k) for k in st["batch_sizes"]) > 1, st["batch_sizes"]
        assert sum(int(k) * v for k, v in st["batch_sizes"].items()) == 24
    finally:
        server.close()
        app.batcher.close()


def test_a_fixed_batch_1_model_runs_one_by_one(models, kit, tmp_path):
    paths = images(kit, tmp_path / "imgs", 8)
    app, server = serve(models["batch1"], max_wait_ms=50.0)
    try:
        answers = concurrent_posts(server.port, paths)
        assert all(status == 200 for status, _ in answers.values())
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/status")
        st = json.loads(conn.getresponse().read())
        assert st["batch_sizes"] == {"1": 8} and st["dynamic_batch"] is False
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"status": "ok"})
        app.batcher.close()  # the model's thread is gone: unhealthy
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())["status"]) == (503, "unhealthy")
        conn.close()
    finally:
        server.close()
        app.batcher.close()


def png_declaring(w: int, h: int) -> bytes:
    """A tiny PNG whose header declares a w x h image (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))  # fmt: skip


def test_bad_bodies_get_their_error_and_the_server_goes_on(models, kit):
    app, server = serve(models["dense"], limits=Limits(max_body_bytes=50_000, rate_per_s=0))
    port = server.port
    good = cv2.imencode(".jpg", kit.make_frames(1)[0])[1].tobytes()
    try:
        cases = [
            (b"x" * 60_000, "image/jpeg", 413, "over the 50000 byte limit"),
            (good, "text/plain", 415, "not image/jpeg or image/png"),
            (good, "", 415, "not image/jpeg"),
            (b"\xff\xd8garbage\xff\xd9", "image/jpeg", 400, "cannot decode"),
            (good[: len(good) // 2], "image/jpeg", 400, "truncated JPEG"),
            (good, "image/png", 400, "not a PNG"),
            (png_declaring(100_000, 100_000), "image/png", 400, "pixel limit"),
        ]
        for body, ctype, status, words in cases:
            got_status, got = post(port, body, ctype)
            assert (got_status, got["status"]) == (status, status), (ctype, got)
            assert words in got["error"]
            assert post(port, good)[0] == 200  # still serving
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: image/jpeg\r\n\r\n")  # fmt: skip
            answer = b""  # headers and body may arrive in separate packets: read to the close
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 411") and b"Content-Length header" in answer
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/infer")
        assert conn.getresponse().status == 405
        conn.close()
        assert app.status()["refused"] == {"400": 4, "411": 1, "413": 1, "415": 2}
        assert app.status()["requests"] == len(cases)
    finally:
        server.close()
        app.batcher.close()
