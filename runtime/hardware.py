"""What this machine's CPU can do, read from /proc/cpuinfo and /proc/meminfo (Linux) without
extra packages. Elsewhere the functions answer with what the standard library knows."""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

# ISA extensions that decide which precision paths are fast, as (Linux flag, display name),
# in the order a user reads them: vector width, int8 dot products, bf16, fp16.
ISA_FEATURES: tuple[tuple[str, str], ...] = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512F"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("amx_int8", "AMX-INT8"),
    ("amx_bf16", "AMX-BF16"),
    ("avx512_bf16", "AVX512-BF16"),
    ("avx_ne_convert", "AVX-NE-CONVERT"),
    ("f16c", "F16C"),
    ("avx512_fp16", "AVX512-FP16"),
    ("amx_fp16", "AMX-FP16"),
)
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})  # int8 dot products
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # bf16 arithmetic
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})  # fp16 arithmetic (F16C only converts)


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _first(key: str) -> str | None:
    """The value of the first ``key : value`` line of /proc/cpuinfo (x86 and most ARM)."""
    for line in _cpuinfo().splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


@functools.cache
def cpu_flags() -> frozenset[str]:
    """ISA feature flags of the first CPU, e.g. {'avx2', 'avx512_vnni', 'amx_bf16'}."""
    flags = _first("flags") or _first("Features")  # x86 | ARM
    return frozenset(flags.split()) if flags else frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo ``model name``), else what ``platform`` knows."""
    return _first("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_vendor() -> str:
    """``GenuineIntel``, ``AuthenticAMD``, ... (/proc/cpuinfo ``vendor_id``), else ``unknown``."""
    return _first("vendor_id") or "unknown"


def isa_features() -> dict[str, bool]:
    """Each extension of :data:`ISA_FEATURES` by its Linux flag name: present or not."""
    flags = cpu_flags()
    return {flag: flag in flags for flag, _ in ISA_FEATURES}


def isa_names(
    isa: dict[str, bool], among: frozenset[str] | None = None, present: bool = True
) -> list[str]:
    """Display names, in :data:`ISA_FEATURES` order, of the extensions that ``isa`` (an
    :func:`isa_features` dict, maybe another machine's) marks present (or absent), limited to
    the flags in ``among``."""
    return [
        name
        for flag, name in ISA_FEATURES
        if bool(isa.get(flag)) == present and (among is None or flag in among)
    ]


def has_native_bf16() -> bool:
    """True on CPUs that compute bf16 in hardware (AMX or AVX-512 BF16)."""
    return bool(BF16_FLAGS & cpu_flags())


def has_native_fp16() -> bool:
    """True on CPUs with fp16 arithmetic (AVX512-FP16 or AMX-FP16); F16C only converts."""
    return bool(FP16_FLAGS & cpu_flags())


def has_vnni() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
    return bool(VNNI_FLAGS & cpu_flags())


def isa_summary() -> str:
    """The speed-relevant ISA flags this CPU has (Linux names, e.g. ``avx2, avx512f``), in the
    order of :data:`ISA_FEATURES`; ``baseline`` when it has none."""
    flags = cpu_flags()
    named = [f for f, _ in ISA_FEATURES if f in flags and f != "f16c"]
    return ", ".join(named) or "baseline"


def cpu_cores() -> tuple[int, int | None, int]:
    """(logical CPUs, physical cores or None when unknown, CPUs this process may use)."""
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = logical
    cores: set[tuple[str, str]] = set()
    phys = core = None
    for line in [*_cpuinfo().splitlines(), ""]:
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "physical id":
            phys = value.strip()
        elif name == "core id":
            core = value.strip()
        elif not line.strip():  # a blank line ends one processor's block
            if core is not None:
                cores.add((phys or "0", core))
            phys = core = None
    return logical, (len(cores) or None), usable


def memory_mb() -> tuple[float | None, float | None]:
    """(total, available) memory in MB (10^6 bytes) from /proc/meminfo; None where unknown."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None, None

    def kb(key: str) -> float | None:
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
        return int(m.group(1)) * 1024 / 1e6 if m else None

    return kb("MemTotal"), kb("MemAvailable")
