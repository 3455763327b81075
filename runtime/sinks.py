"""Where results go: an on-screen window, an annotated video file, a JSON-lines log.

Sinks take ``(frame, result, times)`` per frame and are closed exactly once (the pipeline does it
in ``finally``), so Ctrl-C leaves a playable video and complete JSON lines behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import check_writable
from edge_mtl.runtime.records import frame_record, header_record
from edge_mtl.runtime.sources import Frame

log = logging.getLogger("edge_mtl.runtime")

# BGR colours, one per class id modulo the palette length (distinct on dark and bright scenes).
PALETTE = np.array(
    [
        (56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
        (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0),
        (168, 153, 44), (255, 194, 0), (147, 69, 52), (255, 115, 100), (236, 24, 0),
    ],
    np.uint8,
)  # fmt: skip


@dataclass
class StageTimes:
    """Per-frame latency in milliseconds. ``total`` runs from capture (as the capture thread
    saw it) to the result being ready: the frame's age at its result."""

    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    total: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Stage name -> milliseconds rounded to 3 decimals (``extra`` stages included)."""
        d = {
            "preprocess": self.preprocess,
            "inference": self.inference,
            "postprocess": self.postprocess,
            "total": self.total,
            **self.extra,
        }
        return {k: round(v, 3) for k, v in d.items()}


class Sink(Protocol):
    """Where results go, frame by frame, on the caller's (main) thread. A sink may set
    ``stop_requested`` True to end the run (a window's q)."""

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Take one frame's result: ``frame.image`` uint8 BGR HWC, boxes in its pixels, ms."""
        ...

    def close(self) -> None:
        """Finish the output (file complete, window gone); called exactly once."""
        ...


def draw_overlay(image: np.ndarray, result: FrameResult, fps: float | None = None) -> np.ndarray:
    """A copy of ``image`` (uint8 BGR HWC) with boxes, labels, task answers and FPS drawn on."""
    out = image.copy()
    h = out.shape[0]
    thick = max(1, round(h / 400))
    font_scale = max(0.35, h / 1200)
    d = result.detections
    for k in range(len(d)):
        x1, y1, x2, y2 = (round(float(v)) for v in d.boxes[k])
        color = tuple(int(c) for c in PALETTE[int(d.classes[k]) % len(PALETTE)])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
        text = f"{result.det_labels[k]} {float(d.scores[k]):.2f}"
        cv2.putText(out, text, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color,
                    thick, cv2.LINE_AA)  # fmt: skip
    lines = [f"{n}: {c.label} {c.prob:.2f}" for n, c in result.classifications.items()]
    lines += [f"{n}: {v:+.3f}" for n, v in result.regressions.items()]
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    step = int(22 * font_scale / 0.5)
    for i, text in enumerate(lines):
        org = (6, step * (i + 1))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick + 2,
                    cv2.LINE_AA)  # fmt: skip
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick,
                    cv2.LINE_AA)  # fmt: skip
    return out


def display_available() -> bool:
    """True when a window can be shown: a display exists and OpenCV was built with a GUI."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    info = cv2.getBuildInformation()
    gui = next((ln for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    return bool(gui) and "NONE" not in gui.upper()


class WindowSink:
    """Shows the overlay in a window; ``stop_requested`` turns True when q or Esc is pressed.
    Must be used from the main thread (GUI toolkits demand it)."""

    def __init__(self, title: str = "edge-mtl") -> None:
        if not display_available():
            raise RuntimeFailure("--show: no display here (or OpenCV has no GUI support)")
        self.title = title
        self.stop_requested = False
        self._fps: float | None = None
        self._last: float | None = None

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Show the frame with its overlay and a smoothed FPS; poll the keyboard for q/Esc."""
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            inst = 1.0 / (now - self._last)
            self._fps = inst if self._fps is None else 0.9 * self._fps + 0.1 * inst
        self._last = now
        cv2.imshow(self.title, draw_overlay(frame.image, result, self._fps))
        if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        """Close the window."""
        cv2.destroyWindow(self.title)


VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class VideoSink:
    """Writes annotated frames to a video file (codec from the extension: mp4v for .mp4, .m4v,
    .mov and .mkv, MJPG for .avi). The size is fixed by the first frame; later frames of another
    size (image folders) are letterbox-free resized to it. ``release`` in ``close`` finalises the
    file. A path that cannot be written or has another extension fails here, before any frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = check_writable(path, "video file", create_parents=False)
        self._codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if self._codec is None:
            raise InputError(
                f"{self.path}: cannot write a video with extension {self.path.suffix!r} "
                f"(use {', '.join(VIDEO_CODECS)})"
            )
        self.fps = fps if fps and fps > 0 else 30.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open(self, w: int, h: int) -> cv2.VideoWriter:
        codec = self._codec
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), self.fps, (w, h))
        if not writer.isOpened():
            raise RuntimeFailure(f"{self.path}: cannot write a video here (codec {codec})")
        return writer

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Append the frame with its overlay (the file opens on the first frame)."""
        image = draw_overlay(frame.image, result)
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            self._writer = self._open(*self._size)
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finalise the video file (playable from here on)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class JsonlSink:
    """JSON lines of schema ``edge-mtl.jsonl`` version 1 (docs/jsonl.md): a header record, then
    one record per frame, each line flushed as written so an interrupted run leaves only complete
    lines. ``path`` ``"-"`` writes to standard output (never closed here).

    ``header``: what :func:`edge_mtl.runtime.records.run_header` says about the run (model,
    tasks with classes and units, source, fps); it is written at the first frame, with that
    frame's size, or at ``close`` without a size if no frame came. ``topk``: keep only the k most
    probable classes of each classification task (``None``: all of them).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: dict[str, Any] | None = None,
        topk: int | None = None,
    ) -> None:
        if topk is not None and topk < 1:
            raise InputError(f"--jsonl-topk: must be at least 1, got {topk}")
        self.header, self.topk = header, topk
        self.stop_requested = False  # set when standard output's reader has gone
        self._tasks = {t["name"]: t for t in (header or {}).get("tasks", ())}
        self._header_written = False
        self._stdout = str(path) == "-"
        if self._stdout:
            self.path = Path("-")
            self._fh: IO[str] | None = sys.stdout
        else:
            self.path = check_writable(path, "JSON-lines file", create_parents=False)
            try:
                self._fh = open(self.path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as e:
                raise InputError(f"{self.path}: cannot write ({e.strerror})") from None
        self.frames = 0

    def _line(self, record: dict[str, Any]) -> None:
        assert self._fh is not None, "write after close"
        if self.stop_requested:
            return  # standard output's reader has gone
        try:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()
        except BrokenPipeError:
            if not self._stdout:
                raise
            self._reader_gone()

    def _reader_gone(self) -> None:
        """``--jsonl - | head``: the reader closed the pipe. End the run as a Unix filter does,
        quietly; later output to fd 1 goes to /dev/null instead of failing again at exit."""
        self.stop_requested = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout without a file descriptor (captured)
            pass

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Append the frame's record (the header first, at the first frame) and flush it."""
        if not self._header_written:
            self._line(header_record(self.header, frame.image.shape[:2]))
            self._header_written = True
        rec = frame_record(self.frames, frame, result, times.as_dict(), self._tasks, self.topk)
        self._line(rec)
        self.frames += 1

    def close(self) -> None:
        """Write the header if no frame came, close the file (standard output stays open)."""
        if self._fh is None:
            return
        if not self._header_written:
            self._line(header_record(self.header, None))
            self._header_written = True
        if not self._stdout:
            self._fh.close()
        self._fh = None
