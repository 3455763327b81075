"""``edge-mtl env``: the documented JSON keys, true ISA flags and cores from /proc, providers
that initialise, the plugin-absent case, the text screen, and no torch or eager onnxruntime."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_mtl.bench import machine as bench
from edge_mtl.cli import main
from edge_mtl.runtime import hardware, providers
from tests.runtime.conftest import BLOCK_TORCH

REPO = Path(__file__).resolve().parents[2]

# The keys docs/env.md documents, level by level.
TOP_KEYS = {
    "schema_version", "host", "cpu", "memory", "gpus", "gpu_notes", "onnxruntime", "providers",
    "auto_picks", "tensorrt", "openvino", "precision_paths",
}  # fmt: skip
HOST_KEYS = {"hostname", "os", "python"}
CPU_KEYS = {"model", "vendor", "logical_cores", "physical_cores", "usable_cores", "isa"}
ISA_KEYS = {
    "avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16",
    "avx_ne_convert", "f16c", "avx512_fp16", "amx_fp16",
}  # fmt: skip
MEMORY_KEYS = {"total_mb", "available_mb"}
ORT_KEYS = {"version", "build_providers"}
PROVIDER_KEYS = {"name", "ort_name", "available", "initialises", "detail"}
OPENVINO_KEYS = {
    "plugin_version", "plugin_library", "runtime_version", "bundled_runtime", "devices", "detail",
}  # fmt: skip
PATH_KEYS = {"precision", "provider", "fast", "why"}


def _env_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["env", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _proc_flags() -> set[str]:
    """The first ``flags`` line of /proc/cpuinfo, read here independently of runtime.hardware."""
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(m.group(1).split()) if m else set()


@pytest.fixture(scope="module")
def probed() -> dict:
    """One full report with a real session per provider (shared: probing takes seconds)."""
    from edge_mtl.bench.env import collect

    return collect(probe=True)


def test_json_has_the_documented_keys(probed) -> None:
    doc = probed
    assert set(doc) == TOP_KEYS and doc["schema_version"] == 1
    assert set(doc["host"]) == HOST_KEYS
    assert set(doc["cpu"]) == CPU_KEYS and set(doc["cpu"]["isa"]) == ISA_KEYS
    assert all(isinstance(v, bool) for v in doc["cpu"]["isa"].values())
    assert set(doc["memory"]) == MEMORY_KEYS
    assert set(doc["onnxruntime"]) == ORT_KEYS
    assert set(doc["openvino"]) == OPENVINO_KEYS
    assert set(doc["tensorrt"]) == {"version"}
    assert [p["name"] for p in doc["providers"]] == ["tensorrt", "cuda", "openvino", "cpu"]
    assert all(set(p) == PROVIDER_KEYS for p in doc["providers"])
    assert doc["precision_paths"] and all(set(q) == PATH_KEYS for q in doc["precision_paths"])
    for g in doc["gpus"]:
        assert set(g) == {"name", "memory_total_mb", "driver"}
    json.dumps(doc)  # JSON-ready as it is


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo (not Linux)")
def test_isa_flags_and_cores_are_what_proc_says(probed) -> None:
    flags = _proc_flags()
    assert probed["cpu"]["isa"] == {k: k in flags for k in ISA_KEYS}
    assert probed["cpu"]["logical_cores"] == os.cpu_count()
    assert probed["cpu"]["usable_cores"] == len(os.sched_getaffinity(0))
    cores = set()
    for block in Path("/proc/cpuinfo").read_text().split("\n\n"):  # one block per CPU
        fields = dict(re.findall(r"^(physical id|core id)\s*:\s*(\S+)", block, re.MULTILINE))
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    if cores:  # x86 lists them; ARM does not
        assert probed["cpu"]["physical_cores"] == len(cores)
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    assert probed["memory"]["total_mb"] == pytest.approx(total_kb * 1024 / 1e6)


def test_providers_probe_and_auto_pick(probed) -> None:
    import onnxruntime as ort

    by_name = {p["name"]: p for p in probed["providers"]}
    assert by_name["cpu"]["initialises"] is True and by_name["cpu"]["available"] is True
    listed = ort.get_available_providers()
    for name in ("tensorrt", "cuda"):
        p = by_name[name]
        assert p["available"] == (p["ort_name"] in listed)
        assert isinstance(p["initialises"], bool)
        if not p["initialises"]:
            assert p["detail"]  # says why
    first = next(p["name"] for p in probed["providers"] if p["initialises"])
    assert probed["auto_picks"] == first
    assert probed["onnxruntime"]["version"] == ort.__version__
    paths = {(q["precision"], q["provider"]): q for q in probed["precision_paths"]}
    int8 = paths[("int8", "cpu")]["why"]
    assert ("reduce_range on" in int8) == (not hardware.has_vnni())
    bf16 = paths[("bf16", "openvino")]
    assert bf16["why"].startswith("native" if hardware.has_native_bf16() else "not native")
    assert paths[("int8", "cuda")]["fast"] is False  # QDQ on the CUDA provider: no int8 kernels


def test_openvino_section_when_the_plugin_is_absent(capsys, monkeypatch) -> None:
    monkeypatch.setattr(providers, "find_openvino_plugin", lambda: None)
    doc = _env_json(capsys, "--no-probe")
    ov = next(p for p in doc["providers"] if p["name"] == "openvino")
    assert ov["available"] is False and ov["initialises"] is None
    assert doc["openvino"]["plugin_version"] is None and doc["openvino"]["devices"] == []
    assert "not installed" in doc["openvino"]["detail"]
    assert all(p["initialises"] is None for p in doc["providers"])  # --no-probe
    assert doc["auto_picks"] is None


@pytest.mark.skipif(
    providers.find_openvino_plugin() is None, reason="onnxruntime-ep-openvino not installed"
)
def test_openvino_section_when_the_plugin_is_present(probed) -> None:
    ov = probed["openvino"]
    assert ov["plugin_version"] and Path(ov["plugin_library"]).is_file()
    usable = next(p for p in probed["providers"] if p["name"] == "openvino")
    assert usable["available"] is True
    assert usable["initialises"] == ("CPU" in ov["devices"])
    if not ov["devices"]:
        assert ov["detail"]


def test_text_screen(capsys) -> None:
    assert main(["env", "--no-probe"]) == 0
    out = capsys.readouterr().out
    for head in ("CPU ", "ISA ", "memory ", "GPU ", "onnxruntime ", "OpenVINO ", "providers "):
        assert any(line.startswith(head) for line in out.splitlines()), head
    assert hardware.cpu_model() in out
    has = next(line for line in out.splitlines() if line.startswith("ISA"))
    for flag, name in hardware.ISA_FEATURES:
        assert (name in has.split("has: ")[1].split(", ")) == (flag in hardware.cpu_flags())


def test_no_probe_says_what_auto_would_try_not_that_it_picks_nothing(capsys) -> None:
    import onnxruntime as ort

    assert main(["env", "--no-probe"]) == 0
    lines = capsys.readouterr().out.splitlines()
    in_build, plugin = set(ort.get_available_providers()), providers.find_openvino_plugin()
    ov = providers.Provider.OPENVINO
    order = [
        p.value
        for p in providers.Provider
        if (plugin is not None if p is ov else p.ort_name in in_build)
    ]
    auto = next(line for line in lines if line.startswith("auto picks"))
    assert auto == (
        f"auto picks   not probed (--no-probe); auto tries {', '.join(order)} in that order and "
        "takes the first that initialises"
    )
    assert "providers    initialise? (auto order; not probed: --no-probe)" in lines
    assert not any("does not initialise" in line for line in lines)  # unknown, not failed


def test_a_probe_that_finds_nothing_says_so() -> None:
    from edge_mtl.bench.env import auto_line

    failed = [{"name": "cpu", "available": True, "initialises": False}]
    assert auto_line(failed, None) == "nothing (no provider initialised)"
    assert auto_line([{**failed[0], "initialises": True}], "cpu") == "cpu"


def test_bench_machine_records_the_isa_features() -> None:
    machine = bench.machine_info()
    assert machine["isa_features"] == hardware.isa_features()
    if Path("/proc/cpuinfo").is_file():
        flags = _proc_flags()
        assert machine["isa_features"] == {k: k in flags for k in ISA_KEYS}


def test_env_needs_neither_torch_nor_eager_onnxruntime() -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import argparse, contextlib, io, json
        import edge_mtl.bench.env
        assert "onnxruntime" not in sys.modules, "onnxruntime imported at module level"
        parser = argparse.ArgumentParser()
        edge_mtl.bench.env.register(parser.add_subparsers())
        args = parser.parse_args(["env", "--json", "--no-probe"])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = args.func(args)
        assert rc == 0 and json.loads(out.getvalue())["cpu"]["isa"]
        assert not any(m.split(".")[0] in ("torch", "onnx") for m in sys.modules), "leaked"
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
