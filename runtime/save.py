"""Where ``edge-mtl run`` saves its annotated output: the ``--save`` value or, by default, an
auto-incremented run folder ``runs/run/exp``, ``runs/run/exp2``, ... (relative to the working
directory, as Ultralytics' ``runs/detect/predict``).

Image sources are saved as images under their own file names, videos and live streams as a
video named after the stream. :class:`Outputs` also undoes what a run that failed before its
first frame left behind: the run folder, folders made for ``--save`` and the JSON-lines files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES, check_writable_dir, next_run_dir
from edge_mtl.runtime.metadata import TaskMeta
from edge_mtl.runtime.sinks import VIDEO_CODECS, ImageSink, Sink, VideoSink
from edge_mtl.runtime.sources import ImageFilesSource

RUNS_ROOT = Path("runs") / "run"  # relative to the working directory
RUN_NAME = "exp"


def image_paths(source: Any) -> list[Path] | None:
    """The files of an image source, in delivery order (a frame's ``index`` is its position),
    or ``None`` for a video or live source."""
    if not isinstance(source, ImageFilesSource):
        return None
    return list(source.paths)


def is_folder(value: str) -> bool:
    """Whether a ``--save`` value names a folder: it ends with a slash or is an existing one."""
    return value.endswith(("/", os.sep)) or os.path.isdir(value)


def unique_names(names: list[str]) -> list[str]:
    """Stream names as output names: a name given to several streams gets ``_<position>``."""
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


class Outputs:
    """The output locations of one run. ``exist_ok`` reuses ``runs/run/exp`` instead of taking
    the next free number. The run folder is made when the first sink needs it."""

    def __init__(self, exist_ok: bool = False, root: Path = RUNS_ROOT) -> None:
        self.exist_ok, self.root = exist_ok, root
        self.run_dir: Path | None = None
        self._made: list[Path] = []  # folders this run created (removed again when left empty)
        self._files: list[tuple[int, Path]] = []  # (stream, file): removed if it got no frame

    def run_folder(self) -> Path:
        """The run folder, made on the first call."""
        if self.run_dir is None:
            parents = [q for q in (self.root, *self.root.parents) if not q.exists()]
            existed = (self.root / RUN_NAME).is_dir()
            self.run_dir = next_run_dir(self.root, RUN_NAME, self.exist_ok)
            if not (self.exist_ok and existed):
                self._made.append(self.run_dir)
            self._made += parents  # deepest first: removed in this order
        return self.run_dir

    def folder(self, value: str) -> Path:
        """The ``--save`` folder ``value``, made now (and removed again if the run leaves it
        empty); a file in the way is an error naming it."""
        p = Path(value)
        if not p.is_dir():
            missing = [q for q in (p, *p.parents) if not q.exists()]
            check_writable_dir(p, "--save folder")
            self._made.extend(missing)  # deepest first: removed in this order
        return p

    def track(self, path: str | os.PathLike[str], stream: int = 0) -> None:
        """Remove ``path`` (a JSON-lines file this run created) again if stream ``stream``
        delivers no frame."""
        if str(path) != "-":
            self._files.append((stream, Path(path)))

    def saved_to(self) -> Path | None:
        """The run folder when this run saved something into it, else ``None``."""
        d = self.run_dir
        return d if d is not None and d.is_dir() and any(d.iterdir()) else None

    def cleanup(self, frames: dict[int, int]) -> None:
        """Remove the tracked files of the streams without a frame in ``frames`` (stream ->
        frames delivered), then every folder this run made that is still empty."""
        for stream, f in self._files:
            if not frames.get(stream):
                with contextlib.suppress(OSError):  # gone already: nothing to undo
                    f.unlink()
        for d in self._made:
            with contextlib.suppress(OSError):  # not empty (or gone): kept
                d.rmdir()


def save_sink(
    value: str | None,
    outputs: Outputs,
    source: Any,
    stream: str,
    multi: bool,
    tasks: Sequence[TaskMeta] = (),
) -> Sink:
    """The sink that saves one stream's annotated frames.

    ``value`` is that stream's ``--save`` path (``None``: the run folder), ``stream`` its name,
    ``multi`` whether there are several streams (each then gets its own place in the run
    folder). Raises :class:`InputError` for a path that cannot take this source's output.
    """
    images = image_paths(source)
    if value is None or is_folder(value):
        folder = outputs.run_folder() if value is None else outputs.folder(value)
        if images is not None:
            return ImageSink(folder=folder / stream if multi else folder, tasks=tasks)
        return VideoSink(folder / f"{stream}.mp4", fps=source.fps, tasks=tasks)
    suffix = Path(value).suffix.lower()
    if suffix in VIDEO_CODECS:
        return VideoSink(value, fps=source.fps, tasks=tasks)
    if suffix in IMAGE_SUFFIXES:
        if images is None:
            raise InputError(
                f"--save {value}: a video or stream is saved as a video; give a file such as "
                f"out.mp4, or a folder"
            )
        if len(images) > 1:
            raise InputError(
                f"--save {value}: {len(images)} images cannot share one image file; give a "
                "folder (ending in /) or a video file"
            )
        return ImageSink(file=value, tasks=tasks)
    what = f"extension {suffix!r}" if suffix else "no extension"
    raise InputError(
        f"{value}: cannot save with {what} (use an image file: {', '.join(sorted(IMAGE_SUFFIXES))}"
        f"; a video file: {', '.join(VIDEO_CODECS)}; or a folder ending in /)"
    )
