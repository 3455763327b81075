"""What ``edge-mtl run`` prints while it runs: one line per image for image sources, a progress
line for videos and live streams.

An image line says what the model found, as ``yolo predict`` does::

    image 2/3 frames/b.jpg: 360x640, 2 car, 1 person; weather rain 0.91, curvature 0.012, drivable
    31.5% (72581 px), lanes 2.6% (6083 px); 12.3 ms

(frame height x width, detections counted per class in class-id order, every classification
task's label and probability, every regression value with its unit, every pixel task's share
of the frame and pixels outside its background class, the frame's capture to result time).
The progress line of videos and streams (frames done / total when known, FPS, ETA) is
rewritten in place on a terminal and printed every ``LOG_INTERVAL_S`` otherwise.
Lines are formatted in the sink stage (the main thread), never on the inference thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.save import image_paths
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame

TTY_INTERVAL_S = 0.25  # a terminal's progress line is redrawn at most this often
LOG_INTERVAL_S = 5.0  # elsewhere (a log file, a pipe) one progress line this often


def detection_counts(result: FrameResult) -> str:
    """``"2 car, 1 person"`` in class-id order, or ``"no detections"``."""
    classes = result.detections.classes
    if len(classes) == 0:
        return "no detections"
    _, first, counts = np.unique(classes, return_index=True, return_counts=True)
    return ", ".join(f"{n} {result.det_labels[k]}" for k, n in zip(first, counts))


def task_answers(result: FrameResult, units: dict[str, str]) -> str:
    """``"weather rain 0.91, curvature 0.012 1/m, drivable 31.5% (72581 px)"``:
    classifications, regressions, then pixel tasks: the share of the frame their classes but the
    background cover and those pixels (at the class map's resolution)."""
    parts = [f"{name} {c.label} {c.prob:.2f}" for name, c in result.classifications.items()]
    for name, v in result.regressions.items():
        unit = units.get(name, "")
        parts.append(f"{name} {v:.3f}" + (f" {unit}" if unit else ""))
    for name, m in result.segmentations.items():
        share, pixels = m.foreground()
        parts.append(f"{name} {share:.1%} ({pixels} px)")
    return ", ".join(parts)


def image_line(
    frame: Frame, result: FrameResult, times: StageTimes, units: dict[str, str], detect: bool
) -> str:
    """The part of an image's line after its name: size, detections (``detect``: the model has
    a detection task), tasks, milliseconds."""
    h, w = frame.image.shape[:2]
    parts = [f"{h}x{w}" + (f", {detection_counts(result)}" if detect else "")]
    tasks = task_answers(result, units)
    if tasks:
        parts.append(tasks)
    return "; ".join([*parts, f"{times.total:.1f} ms"])


def eta(seconds: float) -> str:
    """``"42 s"``, ``"3:07"`` (minutes:seconds) or ``"1:02:07"``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


@dataclass
class _Progress:
    name: str
    total: int | None  # frames expected, when known (a video file, or --max-frames)
    done: int = 0


class Console:
    """The console of one run, shared by its streams. ``out``: stdout, or stderr when JSON
    lines go to stdout. ``units``: regression task name -> unit (from the model's metadata);
    ``detect``: whether the model detects (else image lines leave out the box counts)."""

    def __init__(
        self, out: TextIO, units: dict[str, str] | None = None, detect: bool = True
    ) -> None:
        self.out = out
        self.units = units or {}
        self.detect = detect
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._interval = TTY_INTERVAL_S if self.tty else LOG_INTERVAL_S
        self._progress: list[_Progress] = []
        self._t0: float | None = None  # the first result of any stream
        self._last = 0.0  # when the progress line was last shown
        self._width = 0  # length of the progress line on screen (a terminal)

    def sink(self, source: Any, name: str, multi: bool, max_frames: int | None) -> Any:
        """The console sink of one stream: image lines for an image source, else progress."""
        paths = image_paths(source)
        if paths is not None:
            return _ImageLines(self, paths, f"{name}: " if multi else "")
        total = getattr(source, "frame_count", None)
        if max_frames is not None:
            total = min(total, max_frames) if total else (max_frames if not source.live else None)
        p = _Progress(name, total)
        self._progress.append(p)
        return _ProgressSink(self, p)

    def print(self, line: str) -> None:
        """One line for the user (a progress line on screen is ended first)."""
        self._end_progress()
        print(line, file=self.out, flush=True)

    def tick(self, p: _Progress) -> None:
        """Count one frame of ``p``'s stream; show the progress line when it is due."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
            self._last = 0.0 if self.tty else now  # a log gets its first line after an interval
        p.done += 1
        if now - self._last >= self._interval:
            self._last = now
            self._show(self.progress_line(now))

    def progress_line(self, now: float) -> str:
        """``"clip 120/300 frames (40%), 55.2 FPS, ETA 3 s"``; several streams are listed
        ``"a 120/300, b 95 frames, ..."`` with their FPS summed and the longest ETA."""
        elapsed = max(now - (self._t0 or now), 1e-9)
        parts, left = [], []
        for p in self._progress:
            parts.append(f"{p.name} {p.done}" + (f"/{p.total}" if p.total else ""))
            if p.total and p.done > 1:  # one frame gives no rate yet
                left.append(max(p.total - p.done, 0) * elapsed / p.done)
        done = sum(p.done for p in self._progress)
        line = ", ".join(parts) + " frames"
        if len(self._progress) == 1 and self._progress[0].total:
            line += f" ({100 * done // self._progress[0].total}%)"
        line += f", {done / elapsed:.1f} FPS" if done > 1 else ""
        if left and len(left) == len(self._progress) and max(left) > 0:
            line += f", ETA {eta(max(left))}"
        return line

    def _show(self, line: str) -> None:
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self.out.flush()
            self._width = len(line)
        else:
            print(line, file=self.out, flush=True)

    def _end_progress(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
            self._width = 0

    def finish(self) -> None:
        """End of the run: the last state of the progress line stays on a terminal."""
        if self.tty and self._progress and self._t0 is not None:
            self._show(self.progress_line(time.perf_counter()))
        self._end_progress()


class _ImageLines:
    """A sink printing one line per image: ``image 2/3 frames/b.jpg: ...``."""

    def __init__(self, console: Console, paths: list[Any], prefix: str) -> None:
        self.console, self.paths, self.prefix = console, paths, prefix

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Print the image's line (its position among the source's files: a skipped
        undecodable file leaves a gap)."""
        i, n = frame.index, len(self.paths)
        path = self.paths[i] if 0 <= i < n else frame.name
        c = self.console
        line = image_line(frame, result, times, c.units, c.detect)
        c.print(f"{self.prefix}image {i + 1}/{n} {path}: {line}")

    def close(self) -> None:
        """Nothing to finish."""


class _ProgressSink:
    """A sink counting a video's or stream's frames into the shared progress line."""

    def __init__(self, console: Console, progress: _Progress) -> None:
        self.console, self.progress = console, progress

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Count the frame."""
        self.console.tick(self.progress)

    def close(self) -> None:
        """Nothing to finish (the run's :meth:`Console.finish` ends the line)."""
