"""Where frames come from: cameras, streams, video files, images, folders and globs.

Every source hands out :class:`Frame` objects (uint8 BGR HWC) through ``read()``, which returns
``None`` at the end. File sources deliver every frame, in order. Live sources (camera index,
RTSP/HTTP URL) run a capture thread that keeps only the newest frame, so a slow consumer sees
fresh frames and a ``drops`` count instead of a growing backlog; a lost stream is reopened with
exponential backoff until ``reconnect_timeout_s`` passes without a frame.

Bad input never ends a run that can go on: a live source survives a dropped connection, a stall
(no frame for ``stall_timeout_s``) and corrupt frames (``None``, empty, wrong shape) by
discarding and reconnecting; a video file skips undecodable frames; a folder skips undecodable
images. Each event is counted on the source (``reconnects``, ``stalls``, ``corrupt``) and
logged, so the run summary can report it.
"""

from __future__ import annotations

import glob as globlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.files import IMAGE_SUFFIXES
from edge_mtl.runtime.imagefile import read_image

log = logging.getLogger("edge_mtl.runtime")

# FFmpeg inside OpenCV prints its own errors ("moov atom not found", "Connection refused") on
# stderr, beside our one-line message that already says what failed. Read when the first capture
# opens; a value set by the user wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
STALL_TIMEOUT_S = 5.0  # a live source with no usable frame for this long is reconnected
MAX_BAD_VIDEO_FRAMES = 30  # consecutive undecodable frames before a video file counts as ended


@dataclass(frozen=True)
class Frame:
    """One captured frame. ``image`` uint8 (H, W, 3) BGR; ``index`` counts frames the source
    produced (gaps mean dropped frames); ``t_capture`` is ``time.perf_counter()`` seconds at
    capture; ``timestamp`` is wall-clock Unix seconds; ``name`` the file it came from, if any
    (an image's file name, a video's path). ``source_time`` is the frame's time on the source's
    own clock in seconds: the position in a video file, the capture time (= ``timestamp``) for
    live sources, ``None`` for images and where the source cannot tell."""

    image: np.ndarray
    index: int
    t_capture: float
    timestamp: float
    name: str = ""
    source_time: float | None = None


class FrameSource(Protocol):
    """Anything that hands out frames. ``read`` blocks until a frame or the end (``None``)."""

    name: str
    live: bool
    fps: float | None
    drops: int  # frames replaced before anyone read them (live sources)
    reconnects: int  # losses of a live source: failed reads and stalls
    stalls: int  # reads that waited ``stall_timeout_s`` for nothing (live sources)
    corrupt: int  # frames or images that could not be decoded, skipped

    def read(self) -> Frame | None:
        """The next frame (uint8 BGR HWC), waiting for it; ``None`` at the end."""
        ...

    def close(self) -> None:
        """Release the file, camera or stream; ``read`` returns ``None`` afterwards."""
        ...


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` we use (tests plug in fakes)."""

    def read(self) -> tuple[bool, np.ndarray | None]:
        """(ok, image): the next decoded image, uint8 BGR HWC as OpenCV gives it."""
        ...

    def release(self) -> None:
        """Close the device or stream."""
        ...


def _frame(
    image: np.ndarray,
    index: int,
    name: str = "",
    video_time: float | None = None,
    live: bool = False,
) -> Frame:
    """A frame captured now; ``source_time`` is ``video_time``, or the capture time if ``live``."""
    now = time.time()
    return Frame(image, index, time.perf_counter(), now, name, now if live else video_time)


def as_bgr(image: object) -> np.ndarray | None:
    """A captured image as uint8 (H, W, 3) BGR, or ``None`` when it is unusable.

    Grey (H, W) or (H, W, 1) and BGRA (H, W, 4) uint8 images are converted; ``None``, empty
    arrays, other dtypes and other layouts (what a broken decoder hands out) give ``None``.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3:
        return None
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image if image.shape[2] == 3 else None


class ImageFilesSource:
    """A fixed list of image files, decoded one by one in order (every frame delivered).

    An undecodable file among several is skipped with a warning and counted in ``corrupt``; when
    not one file decodes, ``read`` raises :class:`InputError` naming the source (or the file).
    """

    live = False
    fps: float | None = None

    def __init__(self, paths: list[Path], name: str) -> None:
        if not paths:
            raise InputError(f"source {name}: no image files found")
        self.name, self._paths, self._next = name, paths, 0
        self.drops = self.reconnects = self.stalls = self.corrupt = 0

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files in delivery order (a frame's ``index`` is its position here)."""
        return tuple(self._paths)

    def read(self) -> Frame | None:
        """The next decodable image, in order; ``None`` after the last one."""
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image, truncated = read_image(path)  # libjpeg's own stderr lines kept off
            if image is not None:
                if truncated:
                    log.warning(
                        "source %s: %s is truncated, decoded what it has", self.name, path.name
                    )
                return _frame(image, self._next - 1, path.name)
            self.corrupt += 1
            if len(self._paths) == 1:
                why = "corrupt or not an image" if os.access(path, os.R_OK) else "not readable"
                raise InputError(f"source {path}: cannot decode image ({why})")
            log.warning("source %s: skipped %s (cannot decode image)", self.name, path.name)
        if self.corrupt == len(self._paths):  # read to the end and not one image decoded
            raise InputError(
                f"source {self.name}: none of its {self.corrupt} images can be decoded"
            )
        return None

    def close(self) -> None:
        """Skip the remaining files."""
        self._next = len(self._paths)


class VideoFileSource:
    """A video file read frame by frame; every decodable frame delivered, in order.

    A frame the decoder rejects is skipped (counted in ``corrupt``, its index left as a gap);
    :data:`MAX_BAD_VIDEO_FRAMES` failures in a row, or a failure at the container's last frame,
    end the video. A video that ends well before its stated length logs a warning (truncated).
    """

    live = False

    def __init__(self, path: str) -> None:
        self.name = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise InputError(f"source {path}: cannot open as a video (unsupported or corrupt?)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self.drops = self.reconnects = self.stalls = self.corrupt = 0
        self._index = 0
        self._last_time: float | None = None  # source_time of the last frame delivered, s
        self._ended = False

    def read(self) -> Frame | None:
        """The next decodable frame, in order; ``None`` at the end of the video."""
        bad = 0
        while not self._ended:
            ok, image = self._cap.read()
            image = as_bgr(image) if ok else None
            self._index += 1
            if image is not None:
                self.corrupt += bad
                return _frame(image, self._index - 1, self.name, self._video_time())
            bad += 1
            at_end = self.frame_count is None or self._index >= self.frame_count
            if at_end or bad >= MAX_BAD_VIDEO_FRAMES:
                self._end(self._index - bad)
        return None

    def _video_time(self) -> float | None:
        """Seconds into the video of the frame just read: the decoder's position when it is
        valid (finite and after the previous frame's), else index / fps; ``None`` if neither."""
        t = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
        last = self._last_time
        after = t > last if last is not None else (t > 0 or self._index == 1)
        if not (math.isfinite(t) and t >= 0 and after):
            t = (self._index - 1) / self.fps if self.fps else None
        if t is not None:
            self._last_time = t
        return t

    def _end(self, frames_read: int) -> None:
        self._ended = True
        if self.frame_count is not None and frames_read < self.frame_count - 1:
            log.warning(
                "source %s: video ends at frame %d of %d (truncated or corrupt)",
                self.name, frames_read, self.frame_count,
            )  # fmt: skip

    def close(self) -> None:
        """Release the file; ``read`` returns ``None`` afterwards."""
        self._ended = True
        self._cap.release()


class LiveSource:
    """A camera or stream behind a capture thread that keeps only the newest frame.

    ``open_capture()`` returns an opened :class:`Capture` or raises/returns ``None``. The first
    open happens in the constructor (failure: :class:`InputError`). Faults are survived, counted
    and logged:

    - a read fails (the stream dropped): the capture is released and reopened with backoff
      ``backoff_s`` doubling to ``max_backoff_s``; counted in ``reconnects``;
    - a stall: one ``read()`` blocks for ``stall_timeout_s``, or only corrupt frames arrive for
      that long. The stuck capture thread is abandoned (it releases its capture if the read ever
      returns) and a fresh one reconnects; counted in ``stalls`` and ``reconnects``;
    - a corrupt frame (``None``, empty, not uint8 HxWx3 after :func:`as_bgr`): discarded,
      counted in ``corrupt``.

    After ``reconnect_timeout_s`` of reconnecting without success ``read`` raises
    :class:`RuntimeFailure`. Frames replaced before anyone read them count in ``drops``.
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
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        self.name, self.fps = name, fps
        self.drops = self.reconnects = self.stalls = self.corrupt = 0
        self._open = open_capture
        self._timeout, self._stall_timeout = reconnect_timeout_s, stall_timeout_s
        self._backoff0, self._backoff_max = backoff_s, max_backoff_s
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._index = 0  # frames produced, across reconnects
        self._generation = 0  # the capture thread of an older generation has been abandoned
        self._read_since: float | None = None  # monotonic start of the current capture read
        cap = self._try_open()
        if cap is None:
            raise InputError(f"source {name}: cannot open (no such camera/stream, or it refused)")
        self._thread = self._start(cap)

    def _start(self, cap: Capture | None) -> threading.Thread:
        thread = threading.Thread(
            target=self._capture_loop,
            args=(cap, self._generation),
            name="edge-mtl-capture",
            daemon=True,
        )
        thread.start()
        return thread

    def _current(self, generation: int) -> bool:
        return not self._stop.is_set() and generation == self._generation

    def _try_open(self) -> Capture | None:
        try:
            return self._open()
        except (OSError, cv2.error) as e:
            log.debug("source %s: open failed: %s", self.name, e)
            return None

    def _capture_loop(self, cap: Capture | None, generation: int) -> None:
        try:
            self._capture(cap, generation)
        except Exception as e:  # a capture bug must not leave read() waiting forever
            with self._cond:
                self._error = f"source {self.name}: capture failed ({type(e).__name__}: {e})"
                self._cond.notify_all()

    def _capture(self, cap: Capture | None, generation: int) -> None:
        last_good = time.monotonic()
        while self._current(generation):
            if cap is None:
                cap = self._reconnect(generation)
                last_good = time.monotonic()
                continue
            ok, raw = self._read(cap, generation)
            if not self._current(generation):
                break  # abandoned while blocked in read: a newer thread owns the source now
            image = as_bgr(raw) if ok else None
            if image is not None:
                self._publish(image)
                last_good = time.monotonic()
                continue
            if ok:  # a frame arrived but is unusable
                with self._cond:
                    self.corrupt += 1
                if time.monotonic() - last_good < self._stall_timeout:
                    continue
                with self._cond:
                    self.stalls += 1
                log.warning(
                    "source %s: only corrupt frames for %g s (stall #%d)",
                    self.name, self._stall_timeout, self.stalls,
                )  # fmt: skip
            cap.release()
            cap = None
        if cap is not None:
            cap.release()

    def _read(self, cap: Capture, generation: int) -> tuple[bool, object]:
        with self._cond:
            self._read_since = time.monotonic()
        try:
            return cap.read()
        except cv2.error as e:  # a broken stream can raise instead of returning False
            log.debug("source %s: read failed: %s", self.name, e)
            return False, None
        finally:
            with self._cond:
                if generation == self._generation:
                    self._read_since = None

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            if self._latest is not None:
                self.drops += 1  # replaced unread: the consumer is slower than the source
            self._latest = _frame(image, self._index, live=True)
            self._index += 1
            self._cond.notify_all()

    def _reconnect(self, generation: int) -> Capture | None:
        """Reopen with backoff. ``None`` when stopped, abandoned or after the timeout (then the
        error is recorded and the generation retired, which ends the capture loop)."""
        with self._cond:
            self.reconnects += 1
        log.warning("source %s: stream lost, reconnecting (loss #%d)", self.name, self.reconnects)
        start, delay, attempts = time.monotonic(), self._backoff0, 0
        while not self._stop.wait(delay) and self._current(generation):
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
                    self._generation += 1
                    self._cond.notify_all()
                return None
            delay = min(delay * 2, self._backoff_max)
        return None

    def _check_stall(self) -> None:
        """With the lock held: abandon a capture thread stuck in one read for too long and
        start a fresh one that reconnects (a blocked read cannot be interrupted from here)."""
        since = self._read_since
        if since is None or time.monotonic() - since < self._stall_timeout:
            return
        self.stalls += 1
        self._generation += 1
        self._read_since = None
        log.warning(
            "source %s: no frame for %g s, reconnecting (stall #%d)",
            self.name, self._stall_timeout, self.stalls,
        )  # fmt: skip
        self._thread = self._start(None)

    def read(self) -> Frame | None:
        """The newest frame not yet handed out; waits for one. ``None`` once closed."""
        with self._cond:
            while self._latest is None and self._error is None and not self._stop.is_set():
                self._cond.wait(0.1)
                self._check_stall()
            if self._error is not None and self._latest is None:
                raise RuntimeFailure(self._error)
            frame, self._latest = self._latest, None
            return frame

    def close(self) -> None:
        """Stop the capture thread (waits up to 5 s for it); ``read`` returns ``None``."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


def _video_capture(
    target: int | str, timeout_s: float | None = None
) -> Callable[[], Capture | None]:
    """A factory of opened ``cv2.VideoCapture`` for ``target``. For URLs, ``timeout_s`` bounds
    how long FFmpeg may block in open and in one read (it aborts and the read fails)."""
    params: list[int] = []
    if isinstance(target, str) and timeout_s:
        ms = max(1, int(timeout_s * 1000))
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]

    def open_capture() -> Capture | None:
        cap = cv2.VideoCapture(target, cv2.CAP_ANY, params) if params else cv2.VideoCapture(target)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    return open_capture


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _images_in(paths: list[str]) -> list[Path]:
    return sorted(
        Path(p) for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(p)
    )


def check_source(spec: str) -> None:
    """Raise :func:`open_source`'s :class:`InputError` for a missing file, folder or glob without
    opening anything (``run`` checks before a TensorRT engine's minutes-long build)."""
    if spec.isdigit() or spec.lower().startswith(URL_SCHEMES) or Path(spec).exists():
        return
    if not _is_glob(spec):
        raise InputError(f"source {spec}: no such file, folder, camera index or URL")
    if not _images_in(globlib.glob(spec)):
        raise InputError(f"source {spec}: no image files found")


def open_source(spec: str, reconnect_timeout_s: float = 10.0) -> FrameSource:
    """Open ``spec``: a camera index (``"0"``), an RTSP/HTTP(S) URL, an image file, a folder of
    images, a glob of images (``"frames/*.png"``) or a video file. Raises :class:`InputError`
    naming ``spec`` when it is none of these or cannot be opened."""
    check_source(spec)
    if spec.isdigit():
        cam = int(spec)
        return LiveSource(_video_capture(cam), f"camera {cam}", None, reconnect_timeout_s)
    if spec.lower().startswith(URL_SCHEMES):
        stall = min(STALL_TIMEOUT_S, reconnect_timeout_s)
        return LiveSource(
            _video_capture(spec, stall), spec, None, reconnect_timeout_s, stall_timeout_s=stall
        )
    path = Path(spec)
    if path.is_dir():
        try:
            entries = [str(p) for p in path.iterdir()]
        except OSError as e:
            raise InputError(f"source {spec}: cannot list the folder ({e.strerror})") from None
        return ImageFilesSource(_images_in(entries), spec)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([path], spec)
        return VideoFileSource(spec)
    return ImageFilesSource(_images_in(globlib.glob(spec)), spec)  # a glob, checked above


def iter_frames(source: FrameSource) -> Iterator[Frame]:
    """The source's frames (uint8 BGR HWC :class:`Frame` objects) until it ends."""
    while (frame := source.read()) is not None:
        yield frame
