"""Bench's machine description and memory figures, with a stand-in nvidia-smi."""

from __future__ import annotations

import os

import pytest

from edge_mtl.bench.machine import (
    device_label,
    gpu_memory_mb,
    machine_info,
    peak_rss_mb,
    reset_peak_rss,
)


def test_gpu_description_and_memory_from_nvidia_smi(tmp_path, monkeypatch) -> None:
    """A stand-in nvidia-smi on PATH: GPU name, total memory and this process's memory."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --query-compute-apps*) echo "1, 99"; echo "{os.getpid()}, 512" ;;\n'
        '  *) echo "NVIDIA H100 80GB HBM3, 81559, 560.35.03" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    machine = machine_info()
    (gpu,) = machine["gpus"]
    assert gpu == {"name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559 * 1.048576,
                   "driver": "560.35.03"}  # fmt: skip
    assert device_label(machine, "cuda") == "NVIDIA H100 80GB HBM3"
    assert device_label(machine, "cpu").endswith("cores)")
    assert gpu_memory_mb() == (pytest.approx(512 * 1.048576), None)
    mb, why = gpu_memory_mb(pid=12345)
    assert mb is None and "no process" in why


def test_peak_rss_grows_with_a_large_allocation() -> None:
    if not reset_peak_rss():
        pytest.skip("cannot reset the peak RSS here (no /proc/self/clear_refs)")
    before = peak_rss_mb()
    block = bytearray(64 * 10**6)  # touched below, so the pages are resident
    block[::4096] = b"x" * len(block[::4096])
    assert peak_rss_mb() >= before + 50 and before > 0
