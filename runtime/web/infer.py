"""``edge-mtl serve``: ``POST /infer`` with a JPEG or PNG body answers the frame's record, the
very record ``edge-mtl run --jsonl`` writes for that image (docs/jsonl.md).

Each request is decoded and letterboxed on its own connection thread; the model runs on one
:class:`MicroBatcher` thread, which takes the first waiting request, then whatever else is
waiting or still decoding (for at most ``max_wait_ms``), up to ``max_batch`` requests, and
runs them as one batch (a model
exported with a dynamic batch; a fixed-batch model gets batches of its own size, batch 1 one
by one). Postprocessing runs back on each request's thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.records import frame_record, task_entries
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame
from edge_mtl.runtime.web.guard import image_problem
from edge_mtl.runtime.web.server import Handler, HttpError, Route

RESULT_TIMEOUT_S = 60.0  # a request waits this long for its batch at most (then 503)


@dataclass
class _Job:
    """One request's model input ``x`` (1, 3, H, W); ``outputs`` its rows once run."""

    x: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    inference_s: float = 0.0


class MicroBatcher:
    """Runs ``engine`` on one thread over the inputs :meth:`submit` hands it, up to
    ``max_batch`` at once. After the first it waits at most ``max_wait_ms`` for more, and only
    while requests are on their way (announced with :meth:`announce`, still decoding): a lone
    client never waits. ``batch_sizes`` counts the batches run by size."""

    def __init__(self, engine: Engine, max_batch: int, max_wait_ms: float) -> None:
        self.engine, self.max_batch, self.max_wait_s = engine, max(1, max_batch), max_wait_ms / 1e3
        self.batch_sizes: Counter[int] = Counter()
        self._arriving = 0  # requests announced and not yet submitted
        self._lock = threading.Lock()
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="edge-mtl-batcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the batching thread still runs."""
        return self._thread.is_alive()

    def announce(self) -> None:
        """A request is on its way (decoding): a batch being gathered may wait for it. Every
        announcement ends in :meth:`submit` or :meth:`withdraw`."""
        with self._lock:
            self._arriving += 1

    def withdraw(self) -> None:
        """An announced request will not come (its image did not decode)."""
        with self._lock:
            self._arriving -= 1

    def submit(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
        """Run one announced input (1, 3, H, W): its raw outputs (batch of 1 each) and the
        seconds its batch's ``session.run`` took."""
        job = _Job(x)
        self._q.put(job)
        self.withdraw()  # in the queue now: no longer on its way
        if not job.done.wait(RESULT_TIMEOUT_S):
            raise HttpError(503, f"no result within {RESULT_TIMEOUT_S:g} s (server overloaded)")
        if job.error is not None:
            raise HttpError(500, f"inference failed: {job.error}")
        assert job.outputs is not None
        return job.outputs, job.inference_s

    def _collect(self, first: _Job) -> list[_Job]:
        jobs = [first]
        deadline = time.perf_counter() + self.max_wait_s
        while len(jobs) < self.max_batch:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                left = deadline - time.perf_counter()
                if self._arriving <= 0 or left <= 0:
                    break
                try:
                    job = self._q.get(timeout=min(left, 0.001))
                except queue.Empty:
                    continue
            if job is None:
                self._q.put(None)  # close() after this batch
                break
            jobs.append(job)
        return jobs

    def _loop(self) -> None:
        while (first := self._q.get()) is not None:
            jobs = self._collect(first)
            try:
                t0 = time.perf_counter()
                out = self.engine.run(np.concatenate([j.x for j in jobs]))
                dt = time.perf_counter() - t0
                for k, j in enumerate(jobs):
                    j.outputs = {name: v[k : k + 1] for name, v in out.items()}
                    j.inference_s = dt
            except Exception as e:  # handed to each request, which answers 500
                for j in jobs:
                    j.error = e
            self.batch_sizes[len(jobs)] += 1
            for j in jobs:
                j.done.set()

    def close(self) -> None:
        """Finish the batches in hand, then stop the thread."""
        self._q.put(None)
        self._thread.join(timeout=10.0)


class InferApp:
    """The app of ``edge-mtl serve``: ``POST /infer``, ``/api/status``, ``/healthz``.
    ``max_batch``: requests per inference call on a dynamic-batch model (a fixed-batch model
    uses its own batch); ``topk``: classes kept per classification task (``None``: all)."""

    def __init__(
        self, engine: Engine, max_batch: int = 8, max_wait_ms: float = 5.0, topk: int | None = None
    ) -> None:
        self.engine, self.topk = engine, topk
        self.dynamic = engine.meta.batch is None
        batch = max_batch if self.dynamic else int(engine.meta.batch or 1)
        self.batcher = MicroBatcher(engine, batch, max_wait_ms)
        self.tasks = task_entries(engine.meta.tasks)
        self._tasks_info = {t["name"]: t for t in self.tasks}
        self._lock = threading.Lock()
        self.requests = 0  # images answered
        self.errors: Counter[int] = Counter()  # refused /infer requests by status
        self.t_start = time.perf_counter()
        self.server: Any = None

    def route(self, path: str) -> Route | None:
        """The three routes; nothing else exists."""
        routes = {
            "/infer": Route(("POST",), self._infer),
            "/api/status": Route(("GET",), lambda req: req.send_json(self.status())),
            "/healthz": Route(("GET",), self._health),
        }
        return routes.get(path)

    def status(self) -> dict[str, Any]:
        """Model, provider, precision, tasks, requests served, batch sizes seen."""
        e = self.engine
        sizes = self.batcher.batch_sizes.copy()
        batches = sum(sizes.values())
        return {
            "model": str(e.path),
            "provider": e.provider.value,
            "precision": str(e.precision),
            "input_hw": list(e.meta.input_hw),
            "tasks": self.tasks,
            "dynamic_batch": self.dynamic,
            "max_batch": self.batcher.max_batch,
            "requests": self.requests,
            "refused": {str(k): v for k, v in sorted(self.errors.items())},
            "batches": batches,
            "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "mean_batch": round(sum(k * v for k, v in sizes.items()) / batches, 3)
            if batches
            else 0.0,
            "uptime_s": round(time.perf_counter() - self.t_start, 3),
        }

    def _health(self, req: Handler) -> None:
        ok = self.batcher.alive
        req.send_json({"status": "ok" if ok else "unhealthy"}, 200 if ok else 503)

    def _infer(self, req: Handler) -> None:
        try:
            record = self.infer(*req.read_image(), name=req.headers.get("X-Filename", ""))
        except HttpError as e:
            with self._lock:
                self.errors[e.status] += 1
            raise
        req.send_json(record)

    def infer(self, body: bytes, content_type: str, name: str = "") -> dict[str, Any]:
        """An image body -> its JSONL frame record (400 when it cannot be decoded)."""
        t0, wall = time.perf_counter(), time.time()
        self.batcher.announce()
        try:
            problem = image_problem(body, content_type)
            if problem is not None:
                raise HttpError(400, f"cannot decode the image: {problem}")
            image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise HttpError(400, "cannot decode the image (corrupt or not an image)")
            t1 = time.perf_counter()
            x, lbs = self.engine.preprocess([image])
            t2 = time.perf_counter()
        except BaseException:
            self.batcher.withdraw()
            raise
        outputs, t_inf = self.batcher.submit(x)
        t3 = time.perf_counter()
        result = self.engine.postprocess(outputs, lbs)[0]
        t4 = time.perf_counter()
        with self._lock:
            n = self.requests
            self.requests += 1
        times = StageTimes((t2 - t1) * 1e3, t_inf * 1e3, (t4 - t3) * 1e3, (t4 - t0) * 1e3)
        times.extra["decode"] = (t1 - t0) * 1e3
        times.extra["queue"] = max(0.0, (t3 - t2 - t_inf) * 1e3)
        frame = Frame(image, n, t0, wall, name=name[:255])
        return frame_record(n, frame, result, times.as_dict(), self._tasks_info, self.topk)
