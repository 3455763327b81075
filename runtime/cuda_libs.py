"""NVIDIA GPUs and the CUDA libraries onnxruntime-gpu needs, found before a session is made.

onnxruntime-gpu links CUDA, cuBLAS, cuFFT and cuDNN dynamically. Installed from pip (the
``nvidia-*`` packages of ``onnxruntime-gpu[cuda,cudnn]``, or those torch brings) they sit in
site-packages, where the loader does not look unless ``LD_LIBRARY_PATH`` says so: the CUDA
provider then fails to load and the session quietly runs on the CPU. Loading them first with
onnxruntime's own ``preload_dlls`` makes that install work as it is.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import sys
import warnings

import onnxruntime as ort

log = logging.getLogger("edge_mtl.runtime")


def nvidia_gpu_present() -> bool | None:
    """Whether the NVIDIA driver shows a GPU (``/dev/nvidia0``; Jetson ``/dev/nvhost-ctrl-gpu``),
    None where that cannot be told (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return any(os.path.exists(d) for d in ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu"))


@functools.cache
def preload_cuda_libraries() -> str:
    """Load the CUDA/cuDNN libraries from NVIDIA's pip packages (else the loader's default
    paths), once per process, where a GPU may be present. Returns what onnxruntime reported
    failing to load, '' when nothing failed or nothing was tried (no GPU, an onnxruntime
    without ``preload_dlls``). Harmless when torch already loaded the same libraries."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or nvidia_gpu_present() is False:
        return ""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            preload()
        except Exception as e:  # a build without CUDA version info, an odd install layout
            return f"preload_dlls failed: {e}"
    failed = " ".join(line.strip() for line in printed.getvalue().splitlines() if line.strip())
    if failed:
        log.debug("CUDA libraries: %s", failed)
    return failed
