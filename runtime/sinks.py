"""Where results go: an on-screen window, an annotated video file, a JSON-lines log.

Sinks take ``(frame, result, times)`` per frame and are closed exactly once (the pipeline does it
in ``finally``), so Ctrl-C leaves a playable video and complete JSON lines behind.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import cv2
import numpy as np

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import IMAGE_SUFFIXES, check_writable, check_writable_dir
from edge_mtl.runtime.imagefile import stderr_silenced
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
H264 = "avc1"  # preferred for the mp4 family: browsers play it, not mp4v


@functools.lru_cache(maxsize=1)
def h264_available() -> bool:
    """Whether this OpenCV build can write H.264 (``avc1``) into an .mp4: probed once by opening a
    writer on a temp file, with the encoder's own stderr lines kept off the console."""
    with tempfile.TemporaryDirectory() as d, stderr_silenced():
        writer = cv2.VideoWriter(str(Path(d) / "probe.mp4"), cv2.VideoWriter_fourcc(*H264), 30.0,
                                 (64, 64))  # fmt: skip
        ok = writer.isOpened()
        writer.release()
    if not ok:
        log.info(
            "OpenCV here cannot write H.264; writing mp4v (plays in VLC/ffmpeg, not in browsers)"
        )
    return ok


def video_codec(suffix: str) -> str | None:
    """The FourCC written for a video file extension (``None``: not a video extension we write):
    H.264 for the mp4 family where OpenCV has it, else mp4v; MJPG for .avi."""
    codec = VIDEO_CODECS.get(suffix.lower())
    if codec == "mp4v" and h264_available():
        return H264
    return codec


class VideoSink:
    """Writes annotated frames to a video file (codec from the extension: H.264 for .mp4, .m4v,
    .mov and .mkv where this OpenCV build can write it, else mp4v; MJPG for .avi). The size is
    fixed by the first frame; later frames of another size (image folders) are letterbox-free
    resized to it. The file is created on the first frame and ``release`` in ``close``
    finalises it. A path that cannot be written or has another extension fails here, before any
    frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = check_writable(path, "video file", create_parents=False)
        if self.path.suffix.lower() not in VIDEO_CODECS:
            raise InputError(
                f"{self.path}: cannot write a video with extension {self.path.suffix!r} "
                f"(use {', '.join(VIDEO_CODECS)})"
            )
        self._codec = video_codec(self.path.suffix)
        self.fps = fps if fps and fps > 0 else 30.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open(self, w: int, h: int) -> cv2.VideoWriter:
        codec = self._codec
        assert codec is not None, "checked in __init__"
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), self.fps, (w, h))
        if not writer.isOpened() and codec == H264:  # x264 refuses odd sizes: mp4v takes them
            codec = self._codec = "mp4v"
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), self.fps,
                                     (w, h))  # fmt: skip
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


class ImageSink:
    """Writes each annotated frame as an image: into ``folder`` under the frame's file name
    (``<index>.jpg`` for frames without one), or, with ``file``, into that one file. The format
    follows the file name's extension. Folder and file are created on the first frame, so a run
    that fails before it leaves nothing behind."""

    def __init__(
        self,
        folder: str | os.PathLike[str] | None = None,
        file: str | os.PathLike[str] | None = None,
    ) -> None:
        if (folder is None) == (file is None):
            raise ValueError("ImageSink: give exactly one of folder and file")
        self.folder = Path(folder) if folder is not None else None
        self.file = check_writable(file, "image file", create_parents=False) if file else None
        if self.file is not None and self.file.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(
                f"{self.file}: cannot write an image with extension {self.file.suffix!r}"
            )
        self.frames = 0

    def _target(self, frame: Frame) -> Path:
        if self.file is not None:
            return self.file
        assert self.folder is not None
        if self.frames == 0:
            check_writable_dir(self.folder, "folder for the annotated images")
        name = frame.name if Path(frame.name).suffix.lower() in IMAGE_SUFFIXES else ""
        return self.folder / (name or f"{frame.index:06d}.jpg")

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Encode the frame with its overlay and write it (temp file, then rename)."""
        path = self._target(frame)
        ok, data = cv2.imencode(path.suffix, draw_overlay(frame.image, result))
        if not ok:
            raise RuntimeFailure(f"{path}: OpenCV cannot encode a {path.suffix} image")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise RuntimeFailure(f"{path}: cannot write the image ({e.strerror or e})") from None
        self.frames += 1

    def close(self) -> None:
        """Nothing to finish: every image is complete once written."""


class JsonlSink:
    """One JSON object per line and per frame::

        {"capture_time": 1732352000.123456, "age_ms": 9.1, "frame": 7, "source_frame": 7,
         "file": "",
         "detections": [{"box": [x1, y1, x2, y2], "score": 0.91, "class_id": 0, "label": "car"}],
         "tasks": {"weather": {"label": "rain", "prob": 0.8}, "curvature": 0.012},
         "latency_ms": {"preprocess": 1.2, "inference": 5.0, "postprocess": 0.3, "total": 9.1}}

    ``capture_time`` is wall-clock Unix seconds when the capture thread got the frame;
    ``age_ms`` the frame's age in milliseconds when its result was ready (``latency_ms.total``).
    ``frame`` counts written records; ``source_frame`` is the source's index (gaps = drops).
    Boxes are frame pixels. Each line is flushed as written, so an interrupted run leaves only
    complete lines.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any] | None = None) -> None:
        self.header = header  # the stream's header record (edge_mtl.runtime.records.run_header)
        self.path = check_writable(path, "JSON-lines file", create_parents=False)
        try:
            self._fh: IO[str] | None = open(self.path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as e:
            raise InputError(f"{self.path}: cannot write ({e.strerror})") from None
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Append one record (see the class docstring) and flush the line."""
        assert self._fh is not None, "write after close"
        record = {
            "capture_time": round(frame.timestamp, 6),
            "age_ms": round(times.total, 3),
            "frame": self.frames,
            "source_frame": frame.index,
            "file": frame.name,
            **result.to_record(),
            "latency_ms": times.as_dict(),
        }
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.frames += 1

    def close(self) -> None:
        """Close the file; every line written is complete."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
