"""Execution providers: which to try, how to configure each, and proof that one initialised.

onnxruntime lists providers its build *contains* (``get_available_providers``), not ones that
*work*: onnxruntime-gpu on a box without CUDA/TensorRT libraries lists all three and quietly
runs on CPU. So every candidate gets a real session, and ``session.get_providers()`` decides.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import onnxruntime as ort

from runtime.errors import InputError, MetadataError, RuntimeFailure
from runtime.metadata import METADATA_KEY, ModelMeta, Precision

log = logging.getLogger("edge_mtl.runtime")


class Provider(str, Enum):
    """Execution providers we know how to configure, best first."""

    TENSORRT = "tensorrt"
    CUDA = "cuda"
    CPU = "cpu"

    @property
    def ort_name(self) -> str:
        return _ORT_NAMES[self]


_ORT_NAMES = {
    Provider.TENSORRT: "TensorrtExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.CPU: "CPUExecutionProvider",
}


class GraphOptLevel(str, Enum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


_ORT_OPT = {
    GraphOptLevel.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    GraphOptLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    GraphOptLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    GraphOptLevel.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def default_trt_cache_dir() -> Path:
    """Where TensorRT engines and timing caches go unless told: ``$XDG_CACHE_HOME/edge-mtl/trt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-mtl" / "tensorrt"


def parse_providers(providers: str | Sequence[str | Provider]) -> tuple[list[Provider], bool]:
    """``"auto"`` -> all, best first, with fallback; one name -> only that one (strict);
    a list -> that order with fallback. Returns (candidates, strict)."""
    if isinstance(providers, (str, Provider)):
        if str(getattr(providers, "value", providers)).lower() == "auto":
            return list(Provider), False
        names, strict = [providers], True
    else:
        names, strict = list(providers), False
    out: list[Provider] = []
    for n in names:
        try:
            out.append(Provider(str(getattr(n, "value", n)).lower()))
        except ValueError:
            known = ", ".join(["auto", *(p.value for p in Provider)])
            raise InputError(f"provider {n!r} is unknown (expected one of: {known})") from None
    if not out:
        raise InputError("providers: the list is empty")
    return out, strict


def session_options(intra_op_threads: int, graph_opt: GraphOptLevel) -> ort.SessionOptions:
    """Sequential execution, ``intra_op_threads`` (0 = onnxruntime's choice), one inter-op
    thread (our pipeline already overlaps stages), warnings off (errors still print)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _ORT_OPT[GraphOptLevel(graph_opt)]
    return so


def tensorrt_options(
    device_id: int, fp16: bool, int8: bool, cache_dir: Path, workspace_bytes: int
) -> dict[str, Any]:
    """TensorRT provider options. Engines and the timing cache persist in ``cache_dir`` (created
    here), so only the first start on a machine pays for the engine build."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {
        "device_id": device_id,
        "trt_fp16_enable": fp16,
        "trt_int8_enable": int8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_max_workspace_size": int(workspace_bytes),
    }


def stored_precision(path: Path) -> Precision | None:
    """The precision in a model's metadata, read before the real session exists (a bare CPU
    session without graph optimisation: cheap next to a TensorRT engine build)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    text = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        return ModelMeta.from_json(text).precision if text else None
    except MetadataError:
        return None


class SessionChoice(NamedTuple):
    session: ort.InferenceSession
    provider: Provider
    fallback_reasons: list[str]


def create_session(
    path: Path,
    candidates: list[Provider],
    strict: bool,
    so: ort.SessionOptions,
    options_for: Callable[[Provider], dict[str, Any]],
) -> SessionChoice:
    """A session on the first candidate that initialises. ``strict``: the only candidate must
    work, else :class:`RuntimeFailure`. A model onnxruntime cannot load: :class:`InputError`."""
    available = ort.get_available_providers()
    reasons: list[str] = []

    def skip(reason: str) -> None:
        if strict:
            raise RuntimeFailure(f"{path}: provider {reason}")
        reasons.append(reason)
        log.warning("provider %s; trying the next one", reason)

    last_error: Exception | None = None
    cpu_session: ort.InferenceSession | None = None
    for p in candidates:
        if p is Provider.CPU and cpu_session is not None:
            return SessionChoice(cpu_session, p, reasons)  # what the failed one fell back to
        if p.ort_name not in available:
            skip(f"{p.value}: not in this onnxruntime build (it offers {available})")
            continue
        captured = io.StringIO()
        fallback = [] if p is Provider.CPU else ["CPUExecutionProvider"]
        try:
            # onnxruntime prints its own "EP Error ... falling back" banner to stdout.
            with contextlib.redirect_stdout(captured):
                sess = ort.InferenceSession(
                    str(path), so, providers=[(p.ort_name, options_for(p)), *fallback]
                )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            last_error = e
            if p is candidates[-1] or strict:
                break
            skip(f"{p.value}: failed to create a session ({first_line(e)})")
            continue
        got = sess.get_providers()[0]
        if got == p.ort_name:
            return SessionChoice(sess, p, reasons)
        skip(f"{p.value}: did not initialise ({_ep_reason(captured.getvalue(), p)})")
        cpu_session = sess if got == Provider.CPU.ort_name else None
    if last_error is not None:
        raise InputError(f"{path}: cannot load the model ({first_line(last_error)})") from None
    raise RuntimeFailure(f"{path}: no usable execution provider ({'; '.join(reasons)})")


def first_line(e: BaseException) -> str:
    """The part of an (onnxruntime) error message a user can act on, on one line."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    line = re.sub(r"^.*?\.(?:cc|cpp|h):\d+\s+", "", line)  # source location prefix
    line = re.sub(r"^(?:[\w:<>*&]+\s+)?[\w:<>~]+\([^()]*\)\s+", "", line)  # C++ signature
    return line[:300]


def _ep_reason(captured: str, p: Provider) -> str:
    for line in captured.splitlines():
        if line.startswith("EP Error"):
            return first_line(Exception(line.removeprefix("EP Error ").strip()))
    return (
        f"onnxruntime lists {p.ort_name} but could not load it; its CUDA/cuDNN/TensorRT "
        "libraries or a GPU are missing (see the onnxruntime message above)"
    )
