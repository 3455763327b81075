"""What this machine's CPU can do, read from /proc/cpuinfo (Linux) without extra packages."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """ISA feature flags of the first CPU, e.g. {'avx2', 'avx512_vnni', 'amx_bf16'}."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16() -> bool:
    """True on CPUs that compute bf16 in hardware (AMX or AVX-512 BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def has_vnni() -> bool:
    """True on CPUs with int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def isa_summary() -> str:
    flags = cpu_flags()
    named = [
        f
        for f in (
            "avx2",
            "avx512f",
            "avx512_vnni",
            "avx_vnni",
            "avx512_bf16",
            "amx_bf16",
            "amx_int8",
        )
        if f in flags
    ]
    return ", ".join(named) or "baseline"
