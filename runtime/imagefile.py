"""Reading one image file without the C decoder's own lines on stderr.

libjpeg prints "Premature end of JPEG file" / "Corrupt JPEG data: ..." straight to the process's
stderr (fd 2) while OpenCV decodes a truncated JPEG, without naming the file; the folder source
reports the file in one line of its own instead (skipped, or decoded what it has).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_mtl.runtime.errors import RuntimeFailure
from edge_mtl.runtime.files import atomic_write

JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"  # a JPEG file's first and last markers


def truncated_jpeg(path: Path) -> bool:
    """Whether ``path`` starts like a JPEG but lacks its end-of-image marker (trailing zero
    padding allowed): the files libjpeg complains about on stderr."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
            tail = f.read()
    except OSError:  # unreadable: imread fails and the source says so
        return False
    return head == JPEG_SOI and not tail.rstrip(b"\x00").endswith(JPEG_EOI)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """fd 2 points at /dev/null inside the block (process-wide: kept to one decode call)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def read_image(path: Path) -> tuple[np.ndarray | None, bool]:
    """``cv2.imread(path, IMREAD_COLOR)`` (uint8 BGR HWC, or None when it cannot decode) and
    whether the file is a truncated JPEG, whose decoder messages were kept off stderr."""
    if not truncated_jpeg(path):
        return cv2.imread(str(path), cv2.IMREAD_COLOR), False
    with stderr_silenced():
        return cv2.imread(str(path), cv2.IMREAD_COLOR), True


def write_image_file(path: Path, image: np.ndarray, what: str, params: Sequence[int] = ()) -> None:
    """Encode ``image`` by ``path``'s suffix (``params``: OpenCV's encoder flags) and write it
    atomically; RuntimeFailure naming the file and ``what`` it is when either step fails."""
    ok, data = cv2.imencode(path.suffix, image, list(params))
    if not ok:
        raise RuntimeFailure(f"{path}: OpenCV cannot encode {what} as {path.suffix}")
    try:
        with atomic_write(path) as f:
            f.write(data.tobytes())
    except OSError as e:
        raise RuntimeFailure(f"{path}: cannot write {what} ({e.strerror or e})") from None
