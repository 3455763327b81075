"""OpenVINO provider: selection with the plugin absent and present, its options, the precision
it really runs in, and (where the plugin offers a CPU device) parity with the CPU provider.

The plugin (``onnxruntime-ep-openvino``) serves Intel hardware only: on other CPUs it installs
and registers but offers no device, and the parity tests skip with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.bench import measure as bench
from edge_mtl.bench.machine import machine_info
from edge_mtl.cli import main
from edge_mtl.runtime import hardware, providers
from edge_mtl.runtime.engine import Engine, EngineConfig, OVPrecision, Provider
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.metadata import Precision
from edge_mtl.runtime.providers import OPENVINO_NOT_INSTALLED, openvino_options, parse_providers

PLUGIN = providers.find_openvino_plugin()
needs_plugin = pytest.mark.skipif(
    PLUGIN is None,
    reason="onnxruntime-ep-openvino not installed (pip install 'edge-mtl[openvino]')",
)

# Tolerances of OpenVINO against the CPU provider on the same fp32 file. f32 hint: only the
# summation order differs. bf16: 8-bit mantissas for weights and activations (~0.4% each).
F32_TOL = {"rtol": 1e-4, "atol": 1e-5, "box_atol": 1e-3}  # box_atol in input pixels
BF16_TOL = {"rtol": 3e-2, "atol": 5e-2, "box_atol": 0.5}


@pytest.fixture()
def no_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend onnxruntime-ep-openvino is not installed."""
    monkeypatch.setattr(providers, "find_openvino_plugin", lambda: None)


def _flags(monkeypatch: pytest.MonkeyPatch, *flags: str) -> None:
    """Pretend the CPU has exactly ``flags``."""
    fake = frozenset(flags)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: fake)
    monkeypatch.setattr(providers, "cpu_flags", lambda: fake)


def _ov_cpu_or_skip() -> None:
    if PLUGIN is None:
        pytest.skip("onnxruntime-ep-openvino not installed (pip install 'edge-mtl[openvino]')")
    try:
        providers.select_openvino_device("CPU")
    except providers.ProviderUnavailable as e:
        pytest.skip(e.reason)


# ---- selection -------------------------------------------------------------------------------


def test_auto_order_is_tensorrt_cuda_openvino_cpu() -> None:
    order = [Provider.TENSORRT, Provider.CUDA, Provider.OPENVINO, Provider.CPU]
    assert parse_providers("auto") == (order, False)
    assert parse_providers("OpenVINO") == ([Provider.OPENVINO], True)
    assert Provider.OPENVINO.ort_name == "OpenVINOExecutionProvider"


def test_absent_plugin_is_a_clear_fallback_reason(models, no_plugin) -> None:
    engine = Engine(models["dense"], ["openvino", "cpu"], EngineConfig(warmup_runs=0))
    assert engine.provider is Provider.CPU
    assert engine.fallback_reasons == [
        "openvino: plugin onnxruntime-ep-openvino not installed (pip install 'edge-mtl[openvino]')"
    ]
    assert engine.fallback_reasons == [OPENVINO_NOT_INSTALLED]


def test_auto_without_plugin_names_it_among_the_skipped(models, no_plugin, monkeypatch) -> None:
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    engine = Engine(models["dense"], "auto", EngineConfig(warmup_runs=0))
    assert engine.provider is Provider.CPU
    assert [r.split(":")[0] for r in engine.fallback_reasons] == ["tensorrt", "cuda", "openvino"]
    assert engine.fallback_reasons[2] == OPENVINO_NOT_INSTALLED


def test_explicit_openvino_without_plugin_is_an_input_error(models, no_plugin) -> None:
    with pytest.raises(InputError, match=r"provider openvino: plugin onnxruntime-ep-openvino not"):
        Engine(models["dense"], "openvino")


def test_cli_explicit_openvino_without_plugin_exits_2(models, no_plugin, tmp_path, capsys) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((24, 40, 3), 90, np.uint8))
    argv = ["run", "--model", str(models["dense"]), "--source", str(folder)]
    assert main([*argv, "--provider", "openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-mtl run: error: ")
    assert err[0].endswith(OPENVINO_NOT_INSTALLED)


def test_bench_reports_an_absent_plugin_as_a_skipped_row(models, no_plugin) -> None:
    settings = bench.BenchSettings(providers=("openvino", "cpu"), runs=2, warmup=0, threads=1)
    ov, cpu = bench.bench_model(models["dense"], settings, machine_info())
    assert ov.status == "skipped" and ov.provider is None and ov.latency_ms is None
    assert ov.reason == f"provider {OPENVINO_NOT_INSTALLED}"
    assert cpu.status == "ok" and cpu.provider == "cpu" and cpu.precision == "fp32"


@needs_plugin
def test_present_plugin_registers_once_and_lists_its_devices() -> None:
    plugin, devices = providers.openvino_ep_devices()
    again, same = providers.openvino_ep_devices()  # a second registration is not an error
    assert plugin.ep_name == again.ep_name == "OpenVINOExecutionProvider"
    assert Path(plugin.library_path).is_file()
    names = [providers.ov_device_name(d) for d in devices]
    assert names == [providers.ov_device_name(d) for d in same]
    if hardware.cpu_vendor() != "GenuineIntel":
        assert "CPU" not in names  # the plugin offers Intel devices only


@needs_plugin
def test_present_plugin_is_used_or_skipped_with_the_reason(models) -> None:
    engine = Engine(models["dense"], ["openvino", "cpu"], EngineConfig(warmup_runs=0))
    try:
        providers.select_openvino_device("CPU")
    except providers.ProviderUnavailable as e:
        assert engine.provider is Provider.CPU
        assert engine.fallback_reasons == [e.reason]
        assert e.reason.startswith("openvino: the plugin offers no CPU device here")
        with pytest.raises(RuntimeFailure, match="provider openvino: the plugin offers no CPU"):
            Engine(models["dense"], "openvino")  # installed but unusable: a runtime failure
        return
    assert engine.provider is Provider.OPENVINO and engine.fallback_reasons == []
    assert engine.nodes.get("OpenVINOExecutionProvider", 0) > 0
    assert "provider openvino (CPU" in engine.describe()


@needs_plugin
def test_a_real_plugin_session_takes_our_options_and_fails_cleanly(models, monkeypatch) -> None:
    """On any machine: the plugin's *virtual* NPU device (offered for offline compilation, on
    every CPU) goes through add_provider_for_devices with our load_config; the plugin must
    parse it, and where it cannot compile, the engine reports why instead of crashing."""
    import onnxruntime as ort

    plugin, _ = providers.openvino_ep_devices()
    providers._register_library(plugin.ep_name + ".virtual", plugin.library_path)
    virtual = [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == plugin.ep_name and d.device.metadata.get("is_virtual") == "1"
    ]
    if not virtual:
        pytest.skip("this plugin version offers no virtual devices")
    monkeypatch.setattr(providers, "select_openvino_device", lambda want: virtual[0])
    config = EngineConfig(ov_precision=OVPrecision.F32, intra_op_threads=1, warmup_runs=0)
    try:
        engine = Engine(models["dense"], "openvino", config)
    except RuntimeFailure as e:
        assert "provider openvino: " in str(e) and "JSON" not in str(e)
    else:
        assert engine.provider is Provider.OPENVINO  # an NPU compiler is installed here
    engine = Engine(models["dense"], ["openvino", "cpu"], config)
    if engine.provider is Provider.CPU:
        (reason,) = engine.fallback_reasons
        assert reason.startswith("openvino: ") and "JSON" not in reason


# ---- options and precision -----------------------------------------------------------------


def test_options_go_through_load_config(tmp_path) -> None:
    opts = openvino_options("cpu", OVPrecision.F32, 2, tmp_path / "ov")
    assert opts["device_type"] == "CPU"
    assert json.loads(opts["load_config"]) == {
        "CPU": {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": "2",
            "CACHE_DIR": str(tmp_path / "ov"),
        }
    }
    assert (tmp_path / "ov").is_dir()
    auto = json.loads(openvino_options("CPU", OVPrecision.AUTO, 0, None)["load_config"])
    assert auto == {"CPU": {}}  # OpenVINO's own default precision and threads
    gpu = json.loads(openvino_options("GPU", OVPrecision.BF16, 4, None)["load_config"])
    assert gpu == {"GPU": {"INFERENCE_PRECISION_HINT": "bf16"}}  # threads are a CPU property


def test_precision_on_a_cpu_with_amx(monkeypatch) -> None:
    _flags(monkeypatch, "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    ov = providers.openvino_precision
    assert ov("CPU", OVPrecision.AUTO, Precision.FP32)[0] == "bf16"  # not reported as fp32
    assert ov("CPU", OVPrecision.F32, Precision.FP32)[0] == "fp32"
    assert ov("CPU", OVPrecision.BF16, Precision.FP32)[0] == "bf16"
    assert ov("CPU", OVPrecision.F16, Precision.FP32)[0] == "fp32"  # no AVX512-FP16/AMX-FP16
    run, why = ov("CPU", OVPrecision.AUTO, Precision.INT8)
    assert run == "int8" and "the rest bf16" in why


def test_precision_on_an_avx2_cpu(monkeypatch) -> None:
    _flags(monkeypatch, "avx2", "fma", "f16c")
    ov = providers.openvino_precision
    assert ov("CPU", OVPrecision.AUTO, Precision.FP32)[0] == "fp32"
    run, why = ov("CPU", OVPrecision.BF16, Precision.FP32)
    assert run == "fp32" and "not native" in why
    assert ov("CPU", OVPrecision.F16, Precision.FP32)[0] == "fp32"
    assert ov("CPU", OVPrecision.AUTO, Precision.INT8) == (
        "int8",
        "quantized ops int8, the rest fp32 (auto: OpenVINO's CPU default, no native bf16)",
    )


def test_precision_on_gpu_and_other_providers(monkeypatch) -> None:
    _flags(monkeypatch, "avx2")
    assert providers.openvino_precision("GPU.0", OVPrecision.AUTO, Precision.FP32)[0] == "fp16"
    assert providers.openvino_precision("GPU", OVPrecision.F32, Precision.FP32)[0] == "fp32"
    ex = providers.executed_precision
    assert ex(Provider.CPU, Precision.FP32)[0] == "fp32"
    assert ex(Provider.TENSORRT, Precision.FP32, trt_fp16=True)[0] == "fp16"
    assert ex(Provider.TENSORRT, Precision.INT8, trt_fp16=True)[0] == "int8"
    assert ex(Provider.OPENVINO, Precision.FP32, ov=("CPU", OVPrecision.F32))[0] == "fp32"


def test_cpu_engine_reports_the_file_precision(models) -> None:
    engine = Engine(models["dense"], "cpu", EngineConfig(warmup_runs=0))
    assert engine.precision == "fp32" and engine.nodes == {}
    assert "runs in" not in engine.describe()


# ---- parity where the plugin runs ------------------------------------------------------------


@pytest.mark.parametrize(
    ("hint", "tol"), [(OVPrecision.F32, F32_TOL), (OVPrecision.BF16, BF16_TOL)]
)
def test_openvino_outputs_match_the_cpu_provider(models, kit, hint, tol) -> None:
    _ov_cpu_or_skip()
    if hint is OVPrecision.BF16 and not providers._ov_cpu_computes(OVPrecision.BF16):
        pytest.skip(f"bf16 is not native on this CPU ({hardware.isa_summary()}): OpenVINO runs f32")
    cpu = Engine(models["dense"], "cpu", EngineConfig(intra_op_threads=1, warmup_runs=0))
    config = EngineConfig(intra_op_threads=1, ov_precision=hint, warmup_runs=0)
    ov = Engine(models["dense"], "openvino", config)
    assert ov.provider is Provider.OPENVINO
    assert ov.precision == {"f32": "fp32", "bf16": "bf16"}[hint.value]
    x, _ = cpu.preprocess(kit.make_frames(3) + kit.make_frames(1, h=80, w=40, seed=5))
    want, got = cpu.run(x), ov.run(x)
    assert set(got) == set(want)
    for name in want:
        atol = tol["box_atol"] if name == "det_boxes" else tol["atol"]
        np.testing.assert_allclose(got[name], want[name], rtol=tol["rtol"], atol=atol, err_msg=name)
