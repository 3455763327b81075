"""Malformed annotation entries: an error naming the file and the entry, or skipped and counted.

Every reader reports a bad entry (a BDD frame or label, a KITTI label line, a COCO image or
annotation, an image file that is missing or empty) through one :class:`BadEntries`. By default
the first one raises; a source with ``skip_bad: true`` drops each one, counts it and keeps a few
examples for the source's report line. A malformed object (a bad box, a label line that does not
parse) drops its whole image, not just the object: kept without it, the object's pixels would
train as background. A file that cannot be parsed at all (bad JSON, a missing label directory)
is no entry: it raises either way, since there is nothing to skip to.
"""

from __future__ import annotations

import stat
from pathlib import Path

from edge_mtl.runtime.errors import InputError

# What parsing one entry of a label file may raise: a missing key, a value of the wrong type...
MALFORMED = (AttributeError, KeyError, TypeError, ValueError)


class EntryError(ValueError):
    """One entry is malformed; the message says how (without the file or the entry)."""


class BadEntries:
    """Collects the malformed entries of one source.

    ``skip`` False: :meth:`add` raises InputError at once. ``skip`` True: it counts the entry in
    ``count`` and keeps the first ``shown`` messages (file name only, not the full path) in
    ``examples``; the reader then drops the entry and goes on. Images dropped whole for a
    malformed object in them are counted once each in ``images_dropped``.
    """

    def __init__(self, skip: bool = False, shown: int = 3) -> None:
        self.skip = skip
        self.shown = shown
        self.count = 0
        self.examples: list[str] = []
        self._dropped: set[Path] = set()

    @property
    def images_dropped(self) -> int:
        """Images dropped because an object annotated in them was malformed."""
        return len(self._dropped)

    def add(
        self,
        file: Path,
        entry: str | int | None,
        problem: str | Exception,
        image: Path | None = None,
    ) -> None:
        """Report that ``entry`` of ``file`` is malformed. ``entry`` is a line number
        (``labels.txt:12``), a description (``labels.json: frame 3``) or None (the file is the
        entry, e.g. a missing image). ``problem`` is text, or the exception parsing raised (one
        of MALFORMED). ``image``: the entry is an object annotated in this image, which the
        reader drops whole. Raises InputError unless skipping."""
        if isinstance(problem, Exception) and not isinstance(problem, EntryError):
            problem = f"malformed entry ({problem!r})"
        if self.skip:
            self.count += 1
            if image is not None:
                self._dropped.add(image)
            if len(self.examples) < self.shown:
                self.examples.append(f"{_where(Path(file.name), entry)}: {problem}")
            return
        raise InputError(f"{_where(file, entry)}: {problem}")

    def summary(self) -> str:
        """``skipped 2 bad entries (a.txt:3: ...; b.txt:1: ...); 1 image dropped for bad
        objects``, or "" when none were; the last part only when an object made one go."""
        if not self.count:
            return ""
        more = f"; first {self.shown} shown" if self.count > len(self.examples) else ""
        noun = "entry" if self.count == 1 else "entries"
        text = f"skipped {self.count} bad {noun} ({'; '.join(self.examples)}{more})"
        if self._dropped:
            images = "image" if len(self._dropped) == 1 else "images"
            text += f"; {len(self._dropped)} {images} dropped for bad objects"
        return text


def _where(file: Path, entry: str | int | None) -> str:
    if entry is None:
        return str(file)
    if isinstance(entry, int):
        return f"{file}:{entry}"
    return f"{file}: {entry}"


def image_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used, from one ``stat`` (it is not decoded):
    ``"image file not found"``, ``"not a file"``, ``"empty image file"``; None if it looks fine."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "image file not found"
    except OSError as e:
        return f"cannot read the image file ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return "not a file"
    if st.st_size == 0:
        return "empty image file"
    return None
