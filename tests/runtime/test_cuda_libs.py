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
