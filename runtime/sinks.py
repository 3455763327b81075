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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import cv2

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import (
    IMAGE_SUFFIXES,
    check_writable,
    check_writable_dir,
)
from edge_mtl.runtime.imagefile import stderr_silenced, write_image_file
from edge_mtl.runtime.metadata import TaskMeta
from edge_mtl.runtime.overlay import draw_overlay
from edge_mtl.runtime.records import frame_record, header_record
from edge_mtl.runtime.sources import Frame

log = logging.getLogger("edge_mtl.runtime")


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

    def __init__(self, title: str = "edge-mtl", tasks: Sequence[TaskMeta] = ()) -> None:
        if not display_available():
            raise RuntimeFailure("--show: no display here (or OpenCV has no GUI support)")
        self.title, self.tasks = title, tuple(tasks)  # tasks: class names, units for the overlay
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
        cv2.imshow(self.title, draw_overlay(frame.image, result, self._fps, tasks=self.tasks))
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

    def __init__(
        self, path: str | os.PathLike[str], fps: float | None = None, tasks: Sequence[TaskMeta] = ()
    ) -> None:
        self.tasks = tuple(tasks)  # the model's tasks: class names and units for the overlay
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
        image = draw_overlay(frame.image, result, tasks=self.tasks)
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
        tasks: Sequence[TaskMeta] = (),
    ) -> None:
        self.tasks = tuple(tasks)  # the model's tasks: class names and units for the overlay
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
        """Encode the frame with its overlay and write it (:func:`atomic_write`)."""
        image = draw_overlay(frame.image, result, tasks=self.tasks)
        write_image_file(self._target(frame), image, "the annotated image")
        self.frames += 1

    def close(self) -> None:
        """Nothing to finish: every image is complete once written."""


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
