"""``edge-mtl run --save-masks DIR``: the class map of every pixel task as a PNG per frame.

Each task gets its own folder, ``DIR/<task>/``; a frame's file is named after its image
(``<stem>.png``) or, for videos and live streams, after its index in the source
(``<index, 6 digits>.png``). Each PNG is single-channel uint8 at the frame's size (the class map
resized with nearest neighbour where the model's map is smaller), each pixel its class index,
so it opens beside the frame in any image tool and reads back with ``cv2.IMREAD_UNCHANGED``.
Files are written atomically (temp file, rename): a reader never sees half a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.files import IMAGE_SUFFIXES, check_writable_dir
from edge_mtl.runtime.imagefile import write_image_file
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.sinks import StageTimes
from edge_mtl.runtime.sources import Frame

PNG_LEVEL = 1  # zlib level: class maps are runs of few values, level 1 is near the best size


def mask_stem(frame: Frame) -> str:
    """The file name (without ``.png``) of a frame's masks: the image's stem for an image file,
    else the frame's index in its source, 6 digits (``000042``)."""
    name = Path(frame.name)
    if name.suffix.lower() in IMAGE_SUFFIXES:
        return name.stem
    return f"{frame.index:06d}"


class MaskSink:
    """Writes ``DIR/<task>/<stem>.png`` (:func:`mask_stem`) for every pixel task of every frame.
    ``tasks``: the model's tasks; a model without a ``segment`` task is refused here, before
    any frame. The folders are made at the first frame, so a run that fails before it leaves
    nothing behind."""

    def __init__(self, folder: str | os.PathLike[str], tasks: Sequence[TaskMeta]) -> None:
        self.folder = Path(folder)
        self.tasks = tuple(t.name for t in tasks if t.kind is TaskKind.SEGMENT)
        if not self.tasks:
            have = ", ".join(f"{t.name} ({t.kind_name})" for t in tasks) or "none"
            raise InputError(
                f"--save-masks {folder}: the model has no segment task to save (its tasks: {have})"
            )
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"--save-masks {folder}: is a file, not a folder")
        self.frames = 0

    def write(self, frame: Frame, result: FrameResult, times: StageTimes) -> None:
        """Encode each class map at the frame's size as PNG and write it atomically."""
        stem = mask_stem(frame)
        for name, m in result.segmentations.items():
            folder = self.folder / name
            if self.frames == 0:
                check_writable_dir(folder, "--save-masks folder")
            write_image_file(
                folder / f"{stem}.png", m.at_frame_size(), "the class map",
                (cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL),
            )  # fmt: skip
        self.frames += 1

    def close(self) -> None:
        """Nothing to finish: every PNG is complete once written."""
