"""Keep ONNX Runtime's quantization tools quiet unless ``edge-mtl --debug``.

They print progress on stdout ("Collecting tensor data and making histogram ...", "Finding
optimal threshold ..."), draw tqdm bars on stderr, warn through ``logging`` (on the root logger
and ``onnxruntime.*``) and ``warnings``, and the sessions they open log C++ warnings. None of it
is for the user of ``edge-mtl quantize``, whose own report says what was done.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

import onnxruntime as ort

from edge_mtl.runtime.errors import DEBUG_ENV

ORT_WARNING, ORT_ERROR = 2, 3  # onnxruntime logger severities (2 is its default)


class _DropRootChatter(logging.Filter):
    """On the root logger: drop records logged there directly (``logging.warning(...)`` in the
    library) below ERROR; records of named loggers (edge-mtl's own) propagate past it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.ERROR


@contextlib.contextmanager
def library_quiet() -> Iterator[None]:
    """Inside the block the library's prints, bars, log lines and warnings go nowhere (all of
    them shown with ``--debug``, i.e. when ``EDGE_MTL_DEBUG`` is set). Exceptions pass through.
    Process-wide while it lasts: stdout/stderr of Python code are redirected, so keep it to the
    library calls."""
    if os.environ.get(DEBUG_ENV):
        yield
        return
    root, ort_log = logging.getLogger(), logging.getLogger("onnxruntime")
    chatter, level = _DropRootChatter(), ort_log.level
    root.addFilter(chatter)
    ort_log.setLevel(logging.ERROR)
    ort.set_default_logger_severity(ORT_ERROR)
    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        ort.set_default_logger_severity(ORT_WARNING)
        ort_log.setLevel(level)
        root.removeFilter(chatter)
