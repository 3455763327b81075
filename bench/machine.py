"""Where the numbers were taken and what they cost in memory: the machine's description (CPU,
ISA, OS, onnxruntime, GPUs), this process's peak RSS, and the GPU memory nvidia-smi reports."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edge_mtl.runtime.hardware import cpu_model, isa_features, isa_summary

GPU_PROVIDERS = ("cuda", "tensorrt")
MIB = 1.048576  # MB (10^6 bytes) per MiB, as nvidia-smi counts


def reset_peak_rss() -> bool:
    """Reset this process's peak resident set size (Linux ``clear_refs`` 5). False if unable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB: ``VmHWM`` (since the last
    :func:`reset_peak_rss`) where /proc exists, else ``ru_maxrss`` (since start)."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) * 1024 / 1e6
    except OSError:
        pass
    import resource  # POSIX only; reached where /proc is missing (macOS)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6  # bytes vs KiB


def _nvidia_smi(*query: str) -> list[list[str]] | None:
    """Rows of an ``nvidia-smi --query-*`` CSV, or None when nvidia-smi is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, *query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def gpu_memory_mb(pid: int | None = None) -> tuple[float | None, str | None]:
    """GPU memory this process holds, MB, as nvidia-smi reports it; (None, why) if unknown."""
    rows = _nvidia_smi("--query-compute-apps=pid,used_memory")
    if rows is None:
        return None, "GPU memory not measured: nvidia-smi not found or failed"
    pid = os.getpid() if pid is None else pid
    used = [_num(r[1]) for r in rows if len(r) == 2 and r[0] == str(pid)]
    if not used or None in used:
        return None, "GPU memory not measured: nvidia-smi lists no process with this pid"
    return sum(used) * MIB, None


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:  # nvidia-smi prints "[N/A]" for what it cannot read
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: CPU, ISA, OS, onnxruntime and its providers, GPUs (memory
    in MB). The ``sessions[].machine`` object of the bench JSON (docs/bench.md)."""
    import onnxruntime as ort  # here: importing the schema (and the CLI) stays instant

    notes: list[str] = []
    gpus: list[dict[str, Any]] = []
    rows = _nvidia_smi("--query-gpu=name,memory.total,driver_version")
    if rows is None:
        notes.append("nvidia-smi not found: no GPU description")
    for r in rows or []:
        if len(r) == 3:
            mib = _num(r[1])
            mem = None if mib is None else mib * MIB
            gpus.append({"name": r[0], "memory_total_mb": mem, "driver": r[2]})
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_affinity": affinity,
        "isa": isa_summary(),
        "isa_features": isa_features(),
        "onnxruntime": ort.__version__,
        "providers_available": list(ort.get_available_providers()),
        "gpus": gpus,
        "notes": notes,
    }


def device_label(machine: dict[str, Any], provider: str | None) -> str:
    """Short name of the hardware a row ran on: the GPU for CUDA/TensorRT, else the CPU."""
    if provider in GPU_PROVIDERS and machine["gpus"]:
        return str(machine["gpus"][0]["name"])
    return f"{machine['cpu_model']} ({machine['cpu_affinity']} cores)"
