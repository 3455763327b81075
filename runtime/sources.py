"""Where frames come from: cameras, streams, video files, images, folders and globs.

Every source hands out :class:`Frame` objects (uint8 BGR HWC) through ``read()``, which returns
``None`` at the end. File sources deliver every frame, in order. Live sources (camera index,
RTSP/HTTP URL) run a capture thread that keeps only the newest frame, so a slow consumer sees
fresh frames and a ``drops`` count instead of a growing backlog; a lost stream is reopened with
exponential backoff until ``reconnect_timeout_s`` passes without a frame.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from runtime.errors import InputError, RuntimeFailure

log = logging.getLogger("edge_mtl.runtime")

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


@dataclass(frozen=True)
class Frame:
    """One captured frame. ``image`` uint8 (H, W, 3) BGR; ``index`` counts frames the source
    produced (gaps mean dropped frames); ``t_capture`` is ``time.perf_counter()`` seconds at
    capture; ``timestamp`` is wall-clock Unix seconds; ``name`` the file it came from, if any."""

    image: np.ndarray
    index: int
    t_capture: float
    timestamp: float
    name: str = ""


class FrameSource(Protocol):
    """Anything that hands out frames. ``read`` blocks until a frame or the end (``None``)."""

    name: str
    live: bool
    fps: float | None
    drops: int
    reconnects: int

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` we use (tests plug in fakes)."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


def _frame(image: np.ndarray, index: int, name: str = "") -> Frame:
    return Frame(image, index, time.perf_counter(), time.time(), name)


class ImageFilesSource:
    """A fixed list of image files, decoded one by one in order (every frame delivered)."""

    live = False
    fps: float | None = None

    def __init__(self, paths: list[Path], name: str) -> None:
        if not paths:
            raise InputError(f"source {name}: no image files found")
        self.name, self._paths, self._next = name, paths, 0
        self.drops = self.reconnects = 0

    def read(self) -> Frame | None:
        if self._next >= len(self._paths):
            return None
        path = self._paths[self._next]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"source {path}: cannot decode image")
        self._next += 1
        return _frame(image, self._next - 1, path.name)

    def close(self) -> None:
        self._next = len(self._paths)


class VideoFileSource:
    """A video file read frame by frame; every frame delivered, in order."""

    live = False

    def __init__(self, path: str) -> None:
        self.name = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise InputError(f"source {path}: cannot open as a video (unsupported or corrupt?)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None
        self.drops = self.reconnects = 0
        self._index = 0

    def read(self) -> Frame | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            return None
        self._index += 1
        return _frame(image, self._index - 1)

    def close(self) -> None:
        self._cap.release()


class LiveSource:
    """A camera or stream behind a capture thread that keeps only the newest frame.

    ``open_capture()`` returns an opened :class:`Capture` or raises/returns ``None``. The first
    open happens in the constructor (failure: :class:`InputError`). When a read fails, the thread
    releases the capture and reopens it with backoff ``backoff_s`` doubling to ``max_backoff_s``;
    each loss counts in ``reconnects``. After ``reconnect_timeout_s`` without a frame ``read``
    raises :class:`RuntimeFailure`. Frames replaced before anyone read them count in ``drops``.
    """

    live = True

    def __init__(
        self,
        open_capture: Callable[[], Capture | None],
        name: str,
        fps: float | None = None,
        reconnect_timeout_s: float = 10.0,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
    ) -> None:
        self.name, self.fps = name, fps
        self.drops = self.reconnects = 0
        self._open = open_capture
        self._timeout = reconnect_timeout_s
        self._backoff0, self._backoff_max = backoff_s, max_backoff_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        cap = self._try_open()
        if cap is None:
            raise InputError(f"source {name}: cannot open (no such camera/stream, or it refused)")
        self._thread = threading.Thread(
            target=self._capture_loop, args=(cap,), name="edge-mtl-capture", daemon=True
        )
        self._thread.start()

    def _try_open(self) -> Capture | None:
        try:
            return self._open()
        except (OSError, cv2.error) as e:
            log.debug("source %s: open failed: %s", self.name, e)
            return None

    def _capture_loop(self, cap: Capture | None) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                ok, image = cap.read() if cap is not None else (False, None)
            except cv2.error as e:  # a broken stream can raise instead of returning False
                log.debug("source %s: read failed: %s", self.name, e)
                ok, image = False, None
            if ok and image is not None:
                with self._cond:
                    if self._latest is not None:
                        self.drops += 1  # replaced unread: the consumer is slower than the source
                    self._latest = _frame(image, index)
                    self._cond.notify_all()
                index += 1
                continue
            if cap is not None:
                cap.release()
            cap = self._reconnect()
            if cap is None:
                return
        if cap is not None:
            cap.release()

    def _reconnect(self) -> Capture | None:
        """Reopen with backoff; ``None`` when stopped or after the timeout (error recorded)."""
        self.reconnects += 1
        log.warning("source %s: stream lost, reconnecting (loss #%d)", self.name, self.reconnects)
        start, delay, attempts = time.monotonic(), self._backoff0, 0
        while not self._stop.wait(delay):
            attempts += 1
            cap = self._try_open()
            if cap is not None:
                log.warning("source %s: reconnected after %d attempt(s)", self.name, attempts)
                return cap
            if time.monotonic() - start >= self._timeout:
                with self._cond:
                    self._error = (
                        f"source {self.name}: stream lost, gave up after {self._timeout:g} s "
                        f"of reconnecting ({attempts} attempts)"
                    )
                    self._cond.notify_all()
                return None
            delay = min(delay * 2, self._backoff_max)
        return None

    def read(self) -> Frame | None:
        """The newest frame not yet handed out; waits for one. ``None`` once closed."""
        with self._cond:
            while self._latest is None and self._error is None and not self._stop.is_set():
                self._cond.wait(0.1)
            if self._error is not None and self._latest is None:
                raise RuntimeFailure(self._error)
            frame, self._latest = self._latest, None
            return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


def _video_capture(target: int | str) -> Callable[[], Capture | None]:
    def open_capture() -> Capture | None:
        cap = cv2.VideoCapture(target)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    return open_capture


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _images_in(paths: list[str]) -> list[Path]:
    return sorted(
        Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_EXTS and os.path.isfile(p)
    )


def open_source(spec: str, reconnect_timeout_s: float = 10.0) -> FrameSource:
    """Open ``spec``: a camera index (``"0"``), an RTSP/HTTP(S) URL, an image file, a folder of
    images, a glob of images (``"frames/*.png"``) or a video file. Raises :class:`InputError`
    naming ``spec`` when it is none of these or cannot be opened."""
    if spec.isdigit():
        cam = int(spec)
        return LiveSource(_video_capture(cam), f"camera {cam}", None, reconnect_timeout_s)
    if spec.lower().startswith(URL_SCHEMES):
        return LiveSource(_video_capture(spec), spec, None, reconnect_timeout_s)
    path = Path(spec)
    if path.is_dir():
        return ImageFilesSource(_images_in([str(p) for p in path.iterdir()]), spec)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTS:
            return ImageFilesSource([path], spec)
        return VideoFileSource(spec)
    if _is_glob(spec):
        return ImageFilesSource(_images_in(globlib.glob(spec)), spec)
    raise InputError(f"source {spec}: no such file, folder, camera index or URL")


def iter_frames(source: FrameSource) -> Iterator[Frame]:
    """Iterate a source until it ends."""
    while (frame := source.read()) is not None:
        yield frame
