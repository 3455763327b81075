"""Measure what the HTTP side costs and gives, in turns within one run:

1. ``run --serve``: end-to-end FPS of the pipeline over a video with 0 viewers and with N
   viewers attached (each viewer = one MJPEG stream + one event stream, as a browser tab opens),
   alternating rounds. The viewers run in a child process, as browsers would.
2. ``serve``: ``POST /infer`` throughput (images a second) with 1 client and with 8 concurrent
   clients (keep-alive connections, a child process), alternating rounds.

    python scripts/web_bench.py --model demo/model.int8.onnx --video demo/drive.mp4 --passes 2

Prints one line per round and a markdown table of the means; ``--json OUT`` saves the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import cv2

from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.pipeline import Pipeline
from edge_mtl.runtime.records import run_header
from edge_mtl.runtime.sources import open_source
from edge_mtl.runtime.web.guard import Bind, Limits
from edge_mtl.runtime.web.infer import InferApp
from edge_mtl.runtime.web.live import LiveView
from edge_mtl.runtime.web.server import WebServer

VIEWERS = textwrap.dedent(
    """
    import http.client, sys, threading
    port, n = int(sys.argv[1]), int(sys.argv[2])
    def watch(path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path)
        r = conn.getresponse()
        while r.fp.read1(65536):
            pass
    for k in range(n):
        for path in ("/stream/s.mjpg", "/events"):
            threading.Thread(target=watch, args=(path,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes stdin
    """
)

CLIENTS = textwrap.dedent(
    """
    import http.client, sys, threading, time
    port, clients, total, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    body = open(path, "rb").read()
    left = [total]
    lock = threading.Lock()
    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            conn.request("POST", "/infer", body=body, headers={"Content-Type": "image/jpeg"})
            r = conn.getresponse(); r.read()
            assert r.status == 200, r.status
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    print(total / (time.perf_counter() - t0), flush=True)
    """
)


class Looped:
    """``video`` played ``passes`` times in a row, as one file source (longer rounds)."""

    live, fps, drops, reconnects, stalls, corrupt = False, None, 0, 0, 0, 0

    def __init__(self, video: str, passes: int) -> None:
        self.video, self.left, self.name = video, passes - 1, video
        self.src = open_source(video)

    def read(self):
        frame = self.src.read()
        while frame is None and self.left > 0:
            self.src.close()
            self.src, self.left = open_source(self.video), self.left - 1
            frame = self.src.read()
        return frame

    def close(self) -> None:
        self.src.close()


def viewers_round(engine: Engine, source: Looped, viewers: int, serve_fps: float) -> dict:
    """One round over ``source`` with ``viewers`` browser-like viewers attached: its FPS."""
    view = LiveView({"model": str(engine.path)}, serve_fps=serve_fps, stall_s=30.0)
    server = WebServer(Bind("127.0.0.1", 0), view, None,
                       Limits(max_viewers=2 * max(viewers, 1), rate_per_s=0)).start()  # fmt: skip
    view.server = server
    sink = view.add_stream("s", run_header(engine, source, "s"), source, engine.meta.tasks)
    child = None
    if viewers:
        cmd = [sys.executable, "-c", VIEWERS, str(server.port), str(viewers)]
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        time.sleep(0.3)  # connected before the first frame
    try:
        summary = Pipeline(engine, source, [sink]).run()
    finally:
        if child is not None:
            child.stdin.close()
            child.wait(timeout=30)
        server.close()
    return {"viewers": viewers, "fps": summary.fps, "frames": summary.frames}


def infer_round(port: int, clients: int, requests: int, image: str) -> float:
    """Images a second answered with ``clients`` concurrent keep-alive clients."""
    out = subprocess.run([sys.executable, "-c", CLIENTS, str(port), str(clients), str(requests),
                          image], capture_output=True, text=True, check=True)  # fmt: skip
    return float(out.stdout.strip())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--video", required=True)
    p.add_argument("--provider", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: default)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--passes", type=int, default=1, help="plays of the video per round")
    p.add_argument("--viewers", type=int, default=4)
    p.add_argument("--serve-fps", type=float, default=10.0)
    p.add_argument("--requests", type=int, default=200, help="POSTs per /infer round")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--json", metavar="OUT", help="save every round here")
    args = p.parse_args()
    engine = Engine(args.model, providers=args.provider,
                    config=EngineConfig(intra_op_threads=args.threads))  # fmt: skip
    print(engine.describe(), flush=True)
    rows: list[dict] = []
    for r in range(args.rounds):
        for n in (0, args.viewers) if r % 2 == 0 else (args.viewers, 0):  # order alternates
            source = Looped(args.video, args.passes)
            row = {"round": r, **viewers_round(engine, source, n, args.serve_fps)}
            print(f"run --serve round {r}: {n} viewers: {row['fps']:.1f} FPS", flush=True)
            rows.append(row)
    ok, frame = cv2.VideoCapture(args.video).read()
    assert ok, f"cannot read {args.video}"
    image = os.path.join(tempfile.mkdtemp(prefix="web_bench_"), "frame.jpg")
    cv2.imwrite(image, frame)
    app = InferApp(engine, args.max_batch, 5.0)
    server = WebServer(Bind("127.0.0.1", 0), app, None, Limits(rate_per_s=0)).start()
    app.server = server
    infer_round(server.port, 1, 10, image)  # warm-up
    try:
        for r in range(args.rounds):
            for clients in (1, 8):
                ips = infer_round(server.port, clients, args.requests, image)
                print(f"POST /infer round {r}: {clients} clients: {ips:.1f} images/s", flush=True)
                rows.append({"round": r, "clients": clients, "images_per_s": ips})
    finally:
        server.close()
        app.batcher.close()
    print(f"batch sizes seen: {app.status()['batch_sizes']}")
    report(rows, args.viewers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def report(rows: list[dict], viewers: int) -> None:
    """The markdown table of the means over rounds."""
    fps = {n: statistics.mean(r["fps"] for r in rows if r.get("viewers") == n)
           for n in (0, viewers)}  # fmt: skip
    ips = {c: statistics.mean(r["images_per_s"] for r in rows if r.get("clients") == c)
           for c in (1, 8)}  # fmt: skip
    print("\n| measure | baseline | with load | ratio |\n|---|---:|---:|---:|")
    print(f"| run e2e FPS, 0 vs {viewers} viewers | {fps[0]:.1f} | {fps[viewers]:.1f} | "
          f"{fps[viewers] / fps[0]:.3f} |")  # fmt: skip
    print(f"| POST /infer images/s, 1 vs 8 clients | {ips[1]:.1f} | {ips[8]:.1f} | "
          f"{ips[8] / ips[1]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
