"""Execution providers: which to try, how to configure each, and proof that one initialised.

onnxruntime lists providers its build *contains* (``get_available_providers``), not ones that
*work*: onnxruntime-gpu on a box without CUDA/TensorRT libraries lists all three and quietly
runs on CPU. So every candidate gets a real session, and ``session.get_providers()`` decides.

OpenVINO is in no onnxruntime build: it is the plugin package ``onnxruntime-ep-openvino``,
registered at run time with ``onnxruntime.register_execution_provider_library``. Its devices
come from ``onnxruntime.get_ep_devices()`` and a session gets one through
``SessionOptions.add_provider_for_devices``; precision, threads and cache go in its
``load_config`` (the plugin ignores them as plain provider options).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import onnxruntime as ort

from edge_mtl.runtime.cuda_libs import nvidia_gpu_present, preload_cuda_libraries
from edge_mtl.runtime.errors import (
    DEBUG_ENV,
    EdgeMTLError,
    InputError,
    MetadataError,
    RuntimeFailure,
)
from edge_mtl.runtime.files import check_model_file, invalid_model_error
from edge_mtl.runtime.hardware import (
    cpu_flags,
    cpu_model,
    cpu_vendor,
    has_native_bf16,
    has_native_fp16,
)
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, Precision
from edge_mtl.runtime.options import (  # the enums live there so CLIs need no onnxruntime
    AUTO,
    CUDA_INT8,
    FILE_PRECISION,
    GPU_PROVIDERS,  # engine imports it from here too
    GraphOptLevel,
    OVPrecision,
    Provider,
    choices,
)

SEE_ORT = "(edge-mtl --debug shows onnxruntime's own message)"

log = logging.getLogger("edge_mtl.runtime")


_ORT_OPT = {
    GraphOptLevel.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    GraphOptLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    GraphOptLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    GraphOptLevel.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def default_trt_cache_dir() -> Path:
    """Where TensorRT engines and timing caches go unless told (``EngineConfig.trt_cache_dir``):
    ``$XDG_CACHE_HOME/edge-mtl/tensorrt``, else ``~/.cache/edge-mtl/tensorrt``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-mtl" / "tensorrt"


def parse_providers(providers: str | Sequence[str | Provider]) -> tuple[list[Provider], bool]:
    """``"auto"`` -> all, best first, with fallback; one name -> only that one (strict);
    a list -> that order with fallback. Returns (candidates, strict)."""
    if isinstance(providers, (str, Provider)):
        if str(getattr(providers, "value", providers)).lower() == AUTO:
            return list(Provider), False
        names, strict = [providers], True
    else:
        names, strict = list(providers), False
    out: list[Provider] = []
    for n in names:
        try:
            out.append(Provider(str(getattr(n, "value", n)).lower()))
        except ValueError:
            known = ", ".join(choices(Provider, auto=True))
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
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception:  # an unloadable file: the real session creation reports why
        return None
    text = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        return ModelMeta.from_json(text).precision if text else None
    except MetadataError:
        return None


# ---- OpenVINO: the onnxruntime-ep-openvino plugin -------------------------------------------

OPENVINO_PACKAGE = "onnxruntime-ep-openvino"
OPENVINO_NOT_INSTALLED = (
    f"openvino: plugin {OPENVINO_PACKAGE} not installed (pip install 'edge-mtl[openvino]')"
)


class OpenVINOPlugin(NamedTuple):
    """The installed plugin: its shared library, the EP name it registers, its version."""

    library_path: str
    ep_name: str
    version: str


class ProviderUnavailable(Exception):
    """A provider cannot be set up here; ``reason`` starts with its name, ``brief`` says it in a
    few words. ``not_installed``: a package the user can install (an input error, exit 2), not a
    runtime failure. ``expected``: simply absent here (no package or device), not broken."""

    def __init__(
        self, reason: str, brief: str, not_installed: bool = False, expected: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.brief = brief
        self.not_installed = not_installed
        self.expected = expected


def find_openvino_plugin() -> OpenVINOPlugin | None:
    """The ``onnxruntime-ep-openvino`` package if it is installed and has its library, else None."""
    try:
        import onnxruntime_ep_openvino as plugin
    except ImportError:
        return None
    try:
        library = plugin.get_library_path()
    except FileNotFoundError:  # a broken install: the package without its shared library
        return None
    try:
        version = importlib.metadata.version(OPENVINO_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return OpenVINOPlugin(library, plugin.get_ep_name(), version)


@functools.cache
def _register_library(ep_name: str, library_path: str) -> str | None:
    """Register the plugin with onnxruntime once per process; None, or why it failed."""
    try:
        ort.register_execution_provider_library(ep_name, library_path)
    except Exception as e:  # onnxruntime's Fail type
        why = first_line(e)
        if "already registered" not in why:  # registered by the host application: fine
            return why
    return None


def openvino_ep_devices() -> tuple[OpenVINOPlugin, list[Any]]:
    """The plugin and its ``OrtEpDevice`` list (physical devices only), registering the plugin
    on first use. Raises :class:`ProviderUnavailable` when it is absent or will not register."""
    plugin = find_openvino_plugin()
    if plugin is None:
        raise ProviderUnavailable(OPENVINO_NOT_INSTALLED, "not installed", not_installed=True)
    why = _register_library(plugin.ep_name, plugin.library_path)
    if why is not None:
        reason = f"openvino: cannot register {plugin.library_path} ({why})"
        raise ProviderUnavailable(reason, "plugin failed to register", expected=False)
    devices = [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == plugin.ep_name and d.device.metadata.get("is_virtual") != "1"
    ]
    return plugin, devices


def ov_device_name(ep_device: Any) -> str:
    """OpenVINO's name for an ``OrtEpDevice`` of the plugin: ``CPU``, ``GPU.0``, ``NPU``..."""
    return str(ep_device.ep_metadata.get("ov_device", ep_device.device.type.name))


def select_openvino_device(want: str) -> Any:
    """The plugin's ``OrtEpDevice`` for ``want`` (``CPU``, ``GPU``, ``GPU.1``, ``NPU``; ``GPU``
    takes the first GPU). Raises :class:`ProviderUnavailable` with the reason."""
    _, devices = openvino_ep_devices()
    want = want.upper()
    for d in devices:
        name = ov_device_name(d).upper()
        if name == want or name.startswith(want + "."):
            return d
    listed = ", ".join(ov_device_name(d) for d in devices)
    no_device = f"openvino: the plugin offers no {want} device here"
    if listed:
        raise ProviderUnavailable(f"{no_device} ({listed})", f"no {want} device")
    vendor = cpu_vendor()
    if vendor != "GenuineIntel":
        why = f"it serves Intel hardware only and this CPU is {vendor} ({cpu_model()})"
        raise ProviderUnavailable(f"{no_device} ({why})", "Intel hardware only")
    why = "OpenVINO found no supported device"
    raise ProviderUnavailable(f"{no_device} ({why})", f"no {want} device", expected=False)


def openvino_options(
    device: str, precision: OVPrecision, threads: int, cache_dir: Path | None
) -> dict[str, str]:
    """Options for the plugin: ``device_type`` (ours, used to pick the ``OrtEpDevice``; popped
    before the plugin sees it) and ``load_config``, the JSON map of OpenVINO properties per
    device, which is where the plugin takes precision, threads and the model cache."""
    device = device.upper()
    props: dict[str, str] = {}
    hint = OVPrecision(precision)
    if hint is not OVPrecision.AUTO:
        props["INFERENCE_PRECISION_HINT"] = hint.value
    if threads > 0 and device.startswith("CPU"):
        props["INFERENCE_NUM_THREADS"] = str(int(threads))
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        props["CACHE_DIR"] = str(cache_dir)
    return {"device_type": device, "load_config": json.dumps({device: props})}


def _ov_cpu_computes(hint: OVPrecision) -> bool:
    """Whether OpenVINO's CPU plugin runs a ``bf16``/``f16`` hint as asked on this CPU (its
    rule: AVX512-BF16/AMX for bf16, AVX512-FP16/AMX-FP16 for f16, AVX-NE-CONVERT for both)."""
    native = has_native_bf16() if OVPrecision(hint) is OVPrecision.BF16 else has_native_fp16()
    return native or "avx_ne_convert" in cpu_flags()


def openvino_precision(device: str, hint: OVPrecision, stored: Precision) -> tuple[str, str]:
    """(precision OpenVINO runs a ``stored``-precision file in, the reason). The plugin cannot be
    asked, so this applies OpenVINO's documented rules to the device and this CPU's ISA: an
    unsupported hint falls back to f32 on CPUs; ``auto`` is bf16 on CPUs with native bf16.
    int8 files run their quantized ops in int8 and the rest in the float precision given."""
    hint = OVPrecision(hint)
    if not device.upper().startswith("CPU"):
        run, why = ("fp32", "f32 hint") if hint is OVPrecision.F32 else ("fp16", "GPU/NPU f16")
    elif hint is OVPrecision.F32:
        run, why = "fp32", "f32 hint"
    elif hint is OVPrecision.AUTO:
        run = "bf16" if has_native_bf16() else "fp32"
        why = (
            f"auto: OpenVINO's CPU default, {'native bf16' if run == 'bf16' else 'no native bf16'}"
        )
    else:
        ok = _ov_cpu_computes(hint)
        run = {OVPrecision.BF16: "bf16", OVPrecision.F16: "fp16"}[hint] if ok else "fp32"
        why = f"{hint.value} hint" + ("" if ok else ", not native on this CPU: OpenVINO keeps f32")
    if stored is Precision.INT8:
        return "int8", f"quantized ops int8, the rest {run} ({why})"
    return run, why


def executed_precision(
    provider: Provider,
    stored: Precision,
    trt_fp16: bool = False,
    ov: tuple[str, OVPrecision] = ("CPU", OVPrecision.AUTO),
) -> tuple[str, str]:
    """(the precision a model stored in ``stored`` really runs in on ``provider``, the reason).
    ``trt_fp16``: TensorRT's fp16 flag; ``ov``: OpenVINO's (device, precision hint)."""
    if provider is Provider.OPENVINO:
        return openvino_precision(ov[0], ov[1], stored)
    if provider is Provider.TENSORRT and stored is Precision.FP32 and trt_fp16:
        return "fp16", "TensorRT fp16 flag on an fp32 file"
    if provider is Provider.CUDA and stored is Precision.INT8:
        return "int8", CUDA_INT8
    return stored.value, FILE_PRECISION


def node_split(session: ort.InferenceSession) -> dict[str, int]:
    """Nodes per execution provider, for a session created with
    ``session.record_ep_graph_assignment_info`` on (else empty)."""
    counts: dict[str, int] = {}
    try:
        for sub in session.get_provider_graph_assignment_info():
            counts[sub.ep_name] = counts.get(sub.ep_name, 0) + len(sub.get_nodes())
    except Exception:  # recording off, or an onnxruntime without the API: nothing to say
        return {}
    return counts


# ---- sessions --------------------------------------------------------------------------------


class Skip(NamedTuple):
    """A provider passed over: ``reason`` in full (starting with its name), ``brief`` in a few
    words for the engine's one line; ``expected``: simply absent here (not in the build, not
    installed, no device for it) rather than broken."""

    provider: Provider
    reason: str
    brief: str
    expected: bool = True


class SessionChoice(NamedTuple):
    """The session created, the provider it runs on, and why each better one was skipped."""

    session: ort.InferenceSession
    provider: Provider
    skipped: list[Skip]


def _openvino_session_options(
    so: ort.SessionOptions, options: dict[str, Any]
) -> ort.SessionOptions:
    """``so`` with the plugin's device attached (raises :class:`ProviderUnavailable`)."""
    opts = {k: str(v) for k, v in options.items()}
    device = select_openvino_device(opts.pop("device_type", "CPU"))
    if "load_config" in opts:  # keyed by the device's own name ("GPU" asked, "GPU.0" found)
        props: dict[str, Any] = {}
        for per_device in json.loads(opts["load_config"]).values():
            props.update(per_device)
        opts["load_config"] = json.dumps({ov_device_name(device): props})
    so.add_provider_for_devices([device], opts)
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    # OpenVINO runs the graph on its own threads; idle onnxruntime workers spinning beside
    # them would take cores from it.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _not_initialised(captured: str, p: Provider) -> Skip:
    """Why ``p`` came up as a CPU session: onnxruntime's "EP Error" line if it printed one, else
    the likely cause; in brief, "no NVIDIA GPU" where the driver shows none (whatever else
    onnxruntime says is missing, TensorRT and CUDA cannot run there)."""
    reason = f"{p.value}: did not initialise ({_ep_reason(captured, p)})"
    if p is Provider.OPENVINO:
        return Skip(p, reason, "could not compile the model", expected=False)
    if nvidia_gpu_present() is False:
        return Skip(p, reason, "no NVIDIA GPU")
    if p is Provider.TENSORRT and "install TensorRT" in reason:  # its libraries are not found
        return Skip(p, reason, "TensorRT not installed")
    return Skip(p, reason, "did not initialise", expected=False)


def fallback_summary(skipped: Sequence[Skip]) -> str:
    """The skipped providers in brief, those with the same brief together, best first:
    ``tensorrt, cuda: no NVIDIA GPU; openvino: not installed`` ('' when none)."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        names = groups.setdefault(s.brief, [])
        if s.provider.value not in names:
            names.append(s.provider.value)
    return "; ".join(f"{', '.join(names)}: {brief}" for brief, names in groups.items())


def create_session(
    path: Path,
    candidates: list[Provider],
    strict: bool,
    make_options: Callable[[], ort.SessionOptions],
    options_for: Callable[[Provider], dict[str, Any]],
) -> SessionChoice:
    """A session on the first candidate that initialises; ``make_options`` gives fresh session
    options for each try. ``strict``: the only candidate must work, else
    :class:`RuntimeFailure` (:class:`InputError` when its plugin is not installed). A model
    onnxruntime cannot load: :class:`InputError`."""
    check_model_file(path)
    # The providers skipped are summed up in the engine's one line; each full reason, and
    # onnxruntime's own "[E:onnxruntime:...] Failed to load library" lines naming the missing
    # library, are printed only with ``edge-mtl --debug``.
    debug = bool(os.environ.get(DEBUG_ENV))  # edge-mtl --debug
    ort.set_default_logger_severity(2 if debug else 4)
    available = ort.get_available_providers()
    if any(p in GPU_PROVIDERS and p.ort_name in available for p in candidates):
        preload_cuda_libraries()  # pip-installed CUDA/cuDNN, without LD_LIBRARY_PATH
    skipped: list[Skip] = []

    def skip(s: Skip, error: type[EdgeMTLError] = RuntimeFailure) -> None:
        if strict:
            raise error(f"{path}: provider {s.reason}")
        skipped.append(s)
        log.log(logging.WARNING if debug else logging.DEBUG, "provider %s", s.reason)

    last_error: Exception | None = None
    cpu_session: ort.InferenceSession | None = None
    for p in candidates:
        if p is Provider.CPU and cpu_session is not None:
            return SessionChoice(cpu_session, p, skipped)  # what the failed one fell back to
        so = make_options()
        if p is Provider.OPENVINO:
            try:
                so = _openvino_session_options(so, options_for(p))
            except ProviderUnavailable as e:
                error = InputError if e.not_installed else RuntimeFailure
                skip(Skip(p, e.reason, e.brief, e.expected), error)
                continue
            providers: list[Any] | None = None  # the session options carry the plugin's device
        elif p.ort_name not in available:
            why = f"{p.value}: not in this onnxruntime build (it offers {available})"
            skip(Skip(p, why, "not in this onnxruntime build"))
            continue
        else:
            fallback = [] if p is Provider.CPU else ["CPUExecutionProvider"]
            providers = [(p.ort_name, options_for(p)), *fallback]
        captured = io.StringIO()
        try:
            # onnxruntime prints its own "EP Error ... falling back" banner to stdout.
            with contextlib.redirect_stdout(captured):
                sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            last_error = e
            why = _openvino_error(e) if p is Provider.OPENVINO else first_line(e)
            failed = Skip(
                p, f"{p.value}: failed to create a session ({why})", "failed to start", False
            )
            if p is Provider.OPENVINO and strict:  # the plugin's compile error, not the file's
                skip(failed)
            if p is candidates[-1] or strict:
                break
            skip(failed)
            continue
        got = sess.get_providers()[0]
        if got == p.ort_name:
            return SessionChoice(sess, p, skipped)
        skip(_not_initialised(captured.getvalue(), p))
        # Reuse the CPU session a failed GPU provider fell back to (the OpenVINO one carries
        # settings meant for the plugin).
        keep = got == Provider.CPU.ort_name and p is not Provider.OPENVINO
        cpu_session = sess if keep else None
    if last_error is not None:
        raise invalid_model_error(path, last_error) from None
    reasons = "; ".join(s.reason for s in skipped)
    raise RuntimeFailure(f"{path}: no usable execution provider ({reasons})")


def first_line(e: BaseException) -> str:
    """The part of an (onnxruntime) error message a user can act on, on one line."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    line = re.sub(r"^.*?\.(?:cc|cpp|h):\d+\s+", "", line)  # source location prefix
    line = re.sub(r"^(?:[\w:<>*&]+\s+)?[\w:<>~]+\([^()]*\)\s+", "", line)  # C++ signature
    return line[:300]


def _openvino_error(e: BaseException) -> str:
    """OpenVINO nests its exceptions ("Exception from core.cpp: / Exception from plugin.cpp:
    / ..."); the innermost, last line is the one that says what went wrong."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def _ep_reason(captured: str, p: Provider) -> str:
    for line in captured.splitlines():
        if line.startswith("EP Error"):
            return first_line(Exception(line.removeprefix("EP Error ").strip()))
    if p is Provider.OPENVINO:
        return f"the plugin could not compile the model {SEE_ORT}"
    missing = preload_cuda_libraries()  # cached: which CUDA/cuDNN libraries failed to load
    guess = f"its CUDA/cuDNN/TensorRT libraries or a GPU are missing {SEE_ORT}"
    return f"onnxruntime lists {p.ort_name} but could not load it; {missing or guess}"
