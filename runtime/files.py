"""Files written so that nothing is ever half-written; files read with errors for the user.

Every output of edge-mtl (checkpoints, ONNX models, label files, reports) goes through
:func:`atomic_write`: a temp file beside the target, fsync, the usual file mode, rename, then
fsync of the folder. A crash at any point leaves either the old file or the new one.
:func:`check_writable` and :func:`check_writable_dir` prove an output path can be written before
any slow work starts; :func:`check_model_file` and :func:`invalid_model_error` turn a model file
that is missing, empty, a folder or not ONNX into one line naming it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from edge_mtl.runtime.errors import InputError

# File suffixes (lower case) read as images everywhere: sources, calibration sets, training
# folders and KITTI. All of them decode with cv2.imread, which every stage uses.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on success it replaces ``path``."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike[str], data: Any, indent: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a final newline when ``indent`` is set)."""
    write_text_atomic(path, json.dumps(data, indent=indent) + ("\n" if indent else ""))


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file is an InputError naming it."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not a {what}")
    if not p.is_file():
        raise InputError(f"{p}: {what} not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise InputError(f"{p}: not valid JSON (not a UTF-8 text file)") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read the {what} ({e.strerror or e})") from None


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing component of ``folder`` (or its ancestors) that is not a folder."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create folder ``path`` (and its parents) if needed and prove files can be written in it;
    otherwise raise :class:`InputError` naming ``path`` and the reason."""
    p = Path(path)
    blocker = _file_in_the_way(p)
    if blocker is not None:
        raise InputError(f"{p}: cannot use as the {what} ({blocker} is a file, not a folder)")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise InputError(f"{p}: cannot write in the {what} ({e.strerror or e})") from None
    return p


def check_writable(
    path: str | os.PathLike[str], what: str = "output file", create_parents: bool = True
) -> Path:
    """Prove a file can be written at ``path`` (creating missing parent folders unless
    ``create_parents`` is False) without touching ``path`` itself; otherwise raise
    :class:`InputError` naming ``path`` and the reason. Call it before slow work starts."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give a file name for the {what}")
    blocker = _file_in_the_way(p.parent)
    if blocker is not None:
        raise InputError(f"{p}: cannot write the {what} ({blocker} is a file, not a folder)")
    if not create_parents and not p.parent.is_dir():
        raise InputError(f"{p}: cannot write the {what} (folder {p.parent} does not exist)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise InputError(f"{p}: cannot write the {what} ({e.strerror or e})") from None
    return p


# Leading bytes of files people give instead of an ONNX model (which has no magic of its own).
_NOT_ONNX = (
    (b"PK\x03\x04", "a zip archive, e.g. a PyTorch checkpoint; export it with `edge-mtl export`"),
    (b"\x80", "a Python pickle, e.g. a PyTorch checkpoint; export it with `edge-mtl export`"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"{", "a JSON text file"),
)


def check_model_file(path: str | os.PathLike[str]) -> Path:
    """Cheap checks on a model file before onnxruntime parses it (its parser then validates
    the graph): it exists, is a readable non-empty file, and is not obviously something else
    (a checkpoint, a pickle). Raises :class:`InputError` naming ``path``. Never executes or
    unpickles anything."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: model file not found")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an ONNX model file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise InputError(f"{p}: cannot read the model file ({e.strerror or e})") from None
    if not head:
        raise InputError(f"{p}: not a valid ONNX model (the file is empty)")
    for magic, what in _NOT_ONNX:
        if head.startswith(magic):
            raise InputError(f"{p}: not a valid ONNX model (it is {what})")
    return p


_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_PREFIX = re.compile(r"^Load model from .*? failed:\s*")
_SOURCE_PREFIX = re.compile(r"^\S*\.(?:cc|cpp|h):\d+\s+")  # where in onnxruntime it failed
_CPP_SIGNATURE = re.compile(r"^(?:[\w:<>*&]+\s+)?[\w:<>~]+\([^()]*\)\s+")
_INVALID_MODEL_TYPES = {
    "InvalidProtobuf",
    "InvalidGraph",
    "NoModel",
    "DecodeError",
    "ValidationError",
}


def invalid_model_error(path: str | os.PathLike[str], error: BaseException) -> InputError:
    """onnxruntime's error on creating a session for ``path`` as one line for the user:
    ``"<path>: not a valid ONNX model (<reason>)"`` when the file itself was rejected (bad
    protobuf, invalid graph, unsupported IR version), else ``"<path>: cannot load the model
    (<reason>)"``."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    rejected = type(error).__name__ in _INVALID_MODEL_TYPES or bool(
        _LOAD_PREFIX.match(_ORT_PREFIX.sub("", text))
    )
    reason = _LOAD_PREFIX.sub("", _ORT_PREFIX.sub("", text))
    reason = _CPP_SIGNATURE.sub("", _SOURCE_PREFIX.sub("", reason)).strip()
    reason = reason or type(error).__name__
    what = "not a valid ONNX model" if rejected else "cannot load the model"
    return InputError(f"{path}: {what} ({reason[:240]})")


def next_run_dir(root: str | os.PathLike[str], name: str = "exp", exist_ok: bool = False) -> Path:
    """Create and return the run folder ``root/name`` (``exist_ok``: reuse it as it is), else the
    first free of ``root/name``, ``root/name2``, ``root/name3``, ... Each try is one ``mkdir``
    without ``exist_ok``, so two runs racing for a number never share a folder."""
    base = Path(root)
    blocker = _file_in_the_way(base)
    if blocker is not None:
        raise InputError(f"{base}: cannot make a run folder here ({blocker} is a file)")
    try:
        base.mkdir(parents=True, exist_ok=True)
        if exist_ok:
            (base / name).mkdir(exist_ok=True)
            return base / name
        taken = [p.name for p in base.iterdir()]
    except OSError as e:
        raise InputError(f"{base / name}: cannot make the run folder ({e.strerror or e})") from None
    used = [
        int(m.group(1) or 1) for t in taken if (m := re.fullmatch(rf"{re.escape(name)}(\d*)", t))
    ]
    n = max(used, default=0) + 1
    while True:
        p = base / (name if n == 1 else f"{name}{n}")
        try:
            p.mkdir()
            return p
        except FileExistsError:
            n += 1  # another run took this number meanwhile
        except OSError as e:
            raise InputError(f"{p}: cannot make the run folder ({e.strerror or e})") from None
