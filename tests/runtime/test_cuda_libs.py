"""Loading pip-installed CUDA libraries before a GPU session: only where a GPU may be, quietly."""

from __future__ import annotations

import onnxruntime as ort

from edge_mtl.runtime import cuda_libs


def test_no_gpu_means_no_preload(monkeypatch):
    called = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: called.append(1), raising=False)
    monkeypatch.setattr(cuda_libs, "nvidia_gpu_present", lambda: False)
    assert cuda_libs.preload_cuda_libraries.__wrapped__() == ""
    assert called == []


def test_failures_are_returned_not_printed(monkeypatch, capsys):
    def preload():
        print("Failed to load libcudnn.so.9: not found")
        print("Please follow https://onnxruntime.ai/docs/install/ to install CUDA.")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(cuda_libs, "nvidia_gpu_present", lambda: True)
    failed = cuda_libs.preload_cuda_libraries.__wrapped__()
    assert failed.startswith("Failed to load libcudnn.so.9: not found")
    assert "\n" not in failed
    assert capsys.readouterr().out == ""


def test_an_exception_in_preload_is_a_reason(monkeypatch):
    def preload():
        raise RuntimeError("Invalid parameter of directory")

    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(cuda_libs, "nvidia_gpu_present", lambda: None)
    assert "Invalid parameter" in cuda_libs.preload_cuda_libraries.__wrapped__()


def test_tensorrt_without_its_libraries_says_so_in_brief(monkeypatch):
    from edge_mtl.runtime import providers
    from edge_mtl.runtime.options import Provider

    monkeypatch.setattr(providers, "nvidia_gpu_present", lambda: True)
    captured = (
        "EP Error Please install TensorRT libraries as mentioned in the GPU requirements page, "
        "make sure they're in the PATH or LD_LIBRARY_PATH.\n"
    )
    skip = providers._not_initialised(captured, Provider.TENSORRT)
    assert skip.brief == "TensorRT not installed" and skip.expected
    assert skip.reason.startswith("tensorrt: did not initialise (Please install TensorRT")
    other = providers._not_initialised("EP Error CUDA failure 999: unknown error\n", Provider.CUDA)
    assert other.brief == "did not initialise" and not other.expected


def test_int8_on_the_cuda_provider_says_why_it_is_slow():
    from edge_mtl.runtime.metadata import Precision
    from edge_mtl.runtime.options import CUDA_INT8, FILE_PRECISION, Provider
    from edge_mtl.runtime.providers import executed_precision

    assert executed_precision(Provider.CUDA, Precision.INT8) == ("int8", CUDA_INT8)
    assert executed_precision(Provider.CUDA, Precision.FP16) == ("fp16", FILE_PRECISION)
    assert executed_precision(Provider.CPU, Precision.INT8) == ("int8", FILE_PRECISION)


def test_a_cuda_provider_that_did_not_load_names_the_libraries_that_failed(monkeypatch):
    from edge_mtl.runtime import providers
    from edge_mtl.runtime.options import Provider

    monkeypatch.setattr(providers, "nvidia_gpu_present", lambda: True)
    monkeypatch.setattr(providers, "preload_cuda_libraries", lambda: "Failed to load libcudnn.so.9")
    skip = providers._not_initialised("", Provider.CUDA)
    assert skip.reason.endswith("could not load it; Failed to load libcudnn.so.9)")
    monkeypatch.setattr(providers, "preload_cuda_libraries", lambda: "")
    assert "libraries or a GPU are missing" in providers._not_initialised("", Provider.CUDA).reason
