"""``edge-mtl env``: what this machine can do for edge-mtl, on one screen or as JSON.

CPU model, cores, the ISA extensions that decide which precisions are fast, memory, NVIDIA GPUs
and driver, onnxruntime and the execution providers its build lists *and* which of them really
initialise (a real session on a tiny model each), TensorRT and OpenVINO versions, and the
precision paths expected to be fast here. The JSON keys are documented in docs/env.md.

Only the standard library is imported at module level (``edge-mtl --help`` stays instant);
onnxruntime loads inside :func:`collect`. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.metadata
import json
import tempfile
from pathlib import Path
from typing import Any

from edge_mtl.runtime import hardware
from edge_mtl.runtime.options import CUDA_INT8

ENV_SCHEMA_VERSION = 1
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-libs")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``env`` subcommand to the ``edge-mtl`` parser."""
    p = sub.add_parser(
        "env",
        help="what this machine can do: CPU ISA, GPUs, providers that initialise, fast paths",
        description=(
            "Describe this machine for edge-mtl: CPU model, cores and the ISA extensions that "
            "matter (AVX2, AVX-512, VNNI, AMX, bf16, fp16), memory, NVIDIA GPUs and driver, "
            "onnxruntime and which execution providers really initialise (a tiny session on "
            "each), TensorRT/OpenVINO versions, and the precision paths expected to be fast."
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (docs/env.md)")
    p.add_argument(
        "--no-probe", action="store_true",
        help="do not create a session per provider (faster; 'initialises' is then null)",
    )  # fmt: skip
    p.set_defaults(func=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    """Print the report; returns 0."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # a provider that fails to load is a result here, not noise
    doc = collect(probe=not args.no_probe)
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


# ---- collecting ------------------------------------------------------------------------------


def collect(probe: bool = True) -> dict[str, Any]:
    """The whole report as a JSON-ready dict (keys in docs/env.md). ``probe``: create a tiny
    session on every provider to see which initialise."""
    import onnxruntime as ort

    from edge_mtl.bench.machine import machine_info

    machine = machine_info()
    logical, physical, usable = hardware.cpu_cores()
    total, available = hardware.memory_mb()
    providers = provider_report(probe)
    openvino = openvino_report()
    cpu = {
        "model": hardware.cpu_model(),
        "vendor": hardware.cpu_vendor(),
        "logical_cores": logical,
        "physical_cores": physical,
        "usable_cores": usable,
        "isa": hardware.isa_features(),
    }
    return {
        "schema_version": ENV_SCHEMA_VERSION,
        "host": {"hostname": machine["hostname"], "os": machine["os"], "python": machine["python"]},
        "cpu": cpu,
        "memory": {"total_mb": total, "available_mb": available},
        "gpus": machine["gpus"],
        "gpu_notes": machine["notes"],
        "onnxruntime": {
            "version": ort.__version__,
            "build_providers": machine["providers_available"],
        },
        "providers": providers,
        "auto_picks": next((p["name"] for p in providers if p["initialises"]), None),
        "tensorrt": {"version": tensorrt_version()},
        "openvino": openvino,
        "precision_paths": precision_paths(cpu["isa"], providers, machine["gpus"]),
    }


def provider_report(probe: bool) -> list[dict[str, Any]]:
    """Every provider in auto order: in the build (or, for OpenVINO, plugin installed), and,
    when ``probe``, whether a real session on a tiny model initialises (else ``None``)."""
    import onnxruntime as ort

    from edge_mtl.runtime.providers import Provider, find_openvino_plugin

    listed = set(ort.get_available_providers())
    out = []
    for p in Provider:
        if p is Provider.OPENVINO:
            available = find_openvino_plugin() is not None
        else:
            available = p.ort_name in listed
        ok, detail = probe_provider(p) if probe else (None, "not probed (--no-probe)")
        if not probe and not available:
            detail = "not installed" if p is Provider.OPENVINO else "not in this onnxruntime build"
        out.append(
            {"name": p.value, "ort_name": p.ort_name, "available": available,
             "initialises": ok, "detail": detail}
        )  # fmt: skip
    return out


def probe_provider(p: Any) -> tuple[bool, str]:
    """(does ``p`` initialise, what happened): a strict session on onnxruntime's own tiny
    ``mul_1.onnx`` with default options (TensorRT's cache in a temporary folder)."""
    from onnxruntime.datasets import get_example

    from edge_mtl.runtime.errors import EdgeMTLError
    from edge_mtl.runtime.providers import (
        SEE_ORT,
        GraphOptLevel,
        OVPrecision,
        Provider,
        create_session,
        openvino_options,
        session_options,
        tensorrt_options,
    )

    model = Path(get_example("mul_1.onnx"))
    with tempfile.TemporaryDirectory(prefix="edge-mtl-env-") as tmp:

        def options(q: Provider) -> dict[str, Any]:
            if q is Provider.TENSORRT:
                return tensorrt_options(0, False, False, Path(tmp), 1 << 28)
            if q is Provider.CUDA:
                return {"device_id": 0}
            if q is Provider.OPENVINO:
                return openvino_options("CPU", OVPrecision.AUTO, 0, None)
            return {}

        try:
            create_session(
                model, [p], True, lambda: session_options(1, GraphOptLevel.BASIC), options
            )
        except EdgeMTLError as e:
            why = str(e).removeprefix(f"{model}: ").removeprefix(f"provider {p.value}: ")
            return False, why.replace(f" {SEE_ORT}", "")
    return True, ""


def tensorrt_version() -> str | None:
    """TensorRT's version from its pip distribution, else the ``libnvinfer`` the loader finds."""
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return f"{importlib.metadata.version(dist)} (pip {dist})"
        except importlib.metadata.PackageNotFoundError:
            continue
    lib = ctypes.util.find_library("nvinfer")
    return f"{lib} (system library)" if lib else None


def openvino_report() -> dict[str, Any]:
    """The plugin's version, the OpenVINO it carries, and the devices it offers here."""
    from edge_mtl.runtime.providers import (
        ProviderUnavailable,
        find_openvino_plugin,
        openvino_ep_devices,
        ov_device_name,
    )

    plugin = find_openvino_plugin()
    try:
        runtime_version = importlib.metadata.version("openvino")  # the standalone package
    except importlib.metadata.PackageNotFoundError:
        runtime_version = None
    out: dict[str, Any] = {
        "plugin_version": plugin.version if plugin else None,
        "plugin_library": plugin.library_path if plugin else None,
        "runtime_version": runtime_version,
        "bundled_runtime": None,
        "devices": [],
        "detail": None,
    }
    if plugin is None:
        out["detail"] = "plugin onnxruntime-ep-openvino not installed"
        return out
    bundled = sorted(Path(plugin.library_path).parent.glob("libopenvino.so.*"))
    if bundled:  # the soname encodes the release: libopenvino.so.2641 is 2026.4.1
        digits = bundled[0].name.rsplit(".", 1)[-1]
        out["bundled_runtime"] = (
            f"20{digits[:2]}.{digits[2]}.{digits[3]}" if len(digits) == 4 else bundled[0].name
        )
    try:
        _, devices = openvino_ep_devices()
    except ProviderUnavailable as e:
        out["detail"] = e.reason
        return out
    out["devices"] = [ov_device_name(d) for d in devices]
    if not devices:
        vendor = hardware.cpu_vendor()
        out["detail"] = (
            f"the plugin serves Intel hardware only; this CPU is {vendor}"
            if vendor != "GenuineIntel"
            else "OpenVINO found no supported device"
        )
    return out


# ---- what should be fast -----------------------------------------------------------------------


def precision_paths(
    isa: dict[str, bool], providers: list[dict[str, Any]], gpus: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Which precision x provider paths are expected to be fast here, and why, from the ISA and
    the providers that initialise. Speed-ups are rules of thumb, not measurements."""
    ok = {p["name"]: p["initialises"] for p in providers}
    vnni = hardware.isa_names(isa, hardware.VNNI_FLAGS)
    bf16 = hardware.isa_names(isa, hardware.BF16_FLAGS)
    fp16 = hardware.isa_names(isa, hardware.FP16_FLAGS)
    vec = "AVX-512F" if isa.get("avx512f") else "AVX2" if isa.get("avx2") else "SSE"
    paths = [
        _path("fp32", "cpu", True, f"{vec} + FMA kernels: the baseline"),
        _path(
            "int8", "cpu", True,
            f"{'/'.join(vnni)} present -> 8-bit weights, ~2-3x over fp32 expected"
            if vnni
            else "VNNI absent -> reduce_range on (7-bit weights), ~1.5-1.8x over fp32 expected",
        ),
        _path(
            "fp16", "cpu", False,
            "the CPU provider runs fp16 files through fp32 kernels behind casts"
            + (f" ({'/'.join(fp16)} present, unused by it)" if fp16 else "; F16C only converts"),
        ),
    ]  # fmt: skip
    ov = ok.get("openvino")
    ov_note = "" if ov else f" (OpenVINO {_initialises(ov)})"
    if bf16:
        why = f"native ({'/'.join(bf16)}): OpenVINO runs fp32 files in bf16 by default"
        paths.append(_path("bf16", "openvino", bool(ov), why + ", ~2-4x over fp32" + ov_note))
    else:
        why = "not native: OpenVINO runs f32 here (a bf16 hint falls back to f32)"
        paths.append(_path("bf16", "openvino", False, why + ov_note))
    why = f"{'/'.join(vnni)}: int8 dot products in hardware" if vnni else "no VNNI/AMX: AVX2 int8"
    paths.append(_path("int8", "openvino", bool(ov and vnni), why + ov_note))
    gpu = gpus[0]["name"] if gpus else "no NVIDIA GPU"
    for name, precisions in (("tensorrt", "fp16/int8"), ("cuda", "fp16")):
        state = _initialises(ok.get(name))
        paths.append(_path(precisions, name, bool(ok.get(name)), f"{gpu}; {name} {state}"))
    paths.append(_path("int8", "cuda", False, CUDA_INT8))
    return paths


def auto_line(providers: list[dict[str, Any]], picked: str | None) -> str:
    """What ``--provider auto`` uses here; without a probe, what it would try, in order."""
    if picked:
        return picked
    if any(p["initialises"] is not None for p in providers):
        return "nothing (no provider initialised)"
    tried = [p["name"] for p in providers if p["available"]]
    return (
        f"not probed (--no-probe); auto tries {', '.join(tried) or 'no provider'} in that "
        "order and takes the first that initialises"
    )


def _initialises(ok: bool | None) -> str:
    """A provider's probe result in words (None: not probed, or not in the report)."""
    return {True: "initialises", False: "does not initialise here"}.get(ok, "not probed")


def gb(mb: float | None) -> str:
    """Megabytes (10^6 bytes) as gigabytes for the screen."""
    return "?" if mb is None else f"{mb / 1e3:.1f} GB"


def _path(precision: str, provider: str, fast: bool, why: str) -> dict[str, Any]:
    return {"precision": precision, "provider": provider, "fast": fast, "why": why}


# ---- rendering ---------------------------------------------------------------------------------


def render(doc: dict[str, Any]) -> str:
    """The one-screen text form of :func:`collect`'s report."""
    cpu, mem = doc["cpu"], doc["memory"]
    have = hardware.isa_names(cpu["isa"])
    lack = hardware.isa_names(cpu["isa"], present=False)
    phys = cpu["physical_cores"] if cpu["physical_cores"] is not None else "?"
    gpus = "; ".join(
        f"{g['name']} ({gb(g['memory_total_mb'])}, driver {g['driver']})" for g in doc["gpus"]
    ) or "none" + (f" ({doc['gpu_notes'][0]})" if doc["gpu_notes"] else "")
    ov = doc["openvino"]
    probed = any(p["initialises"] is not None for p in doc["providers"])
    if ov["plugin_version"] is None:
        ov_line = "plugin not installed (pip install 'edge-mtl[openvino]')"
    else:
        carried = ov["runtime_version"] or ov["bundled_runtime"] or "?"
        devices = ", ".join(ov["devices"]) or f"none ({ov['detail']})"
        ov_line = f"plugin {ov['plugin_version']} (OpenVINO {carried}); devices: {devices}"
    lines = [
        f"CPU          {cpu['model']} ({cpu['vendor']}): {cpu['logical_cores']} logical / "
        f"{phys} physical cores, {cpu['usable_cores']} usable",
        f"ISA          has: {', '.join(have) or 'none of the listed'}",
        f"             lacks: {', '.join(lack) or 'nothing listed'}",
        f"memory       {gb(mem['total_mb'])} total, {gb(mem['available_mb'])} available",
        f"GPU          {gpus}",
        f"onnxruntime  {doc['onnxruntime']['version']} "
        f"(build lists: {', '.join(doc['onnxruntime']['build_providers'])})",
        f"TensorRT     {doc['tensorrt']['version'] or 'not found'}",
        f"OpenVINO     {ov_line}",
        "providers    initialise? (auto order; "
        + ("a tiny session on each)" if probed else "not probed: --no-probe)"),
    ]
    width = max(len(p["name"]) for p in doc["providers"])
    for p in doc["providers"]:
        state = {True: "yes", False: "no ", None: "?  "}[p["initialises"]]
        lines.append(f"  {p['name']:<{width}}  {state}  {p['detail']}".rstrip())
    lines.append(f"auto picks   {auto_line(doc['providers'], doc['auto_picks'])}")
    lines.append("precision paths (expected, not measured):")
    for q in doc["precision_paths"]:
        mark = "fast" if q["fast"] else "no  "
        lines.append(f"  {mark}  {q['precision']:<9} {q['provider']:<9} {q['why']}")
    return "\n".join(lines)
