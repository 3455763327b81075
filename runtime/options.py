"""The engine's closed sets of names (execution providers, OpenVINO precision hints, graph
optimisation levels) and the CLI choices derived from them.

Standard library only: the ``run``, ``bench`` and ``quantize`` parsers offer these choices
without importing onnxruntime (``edge-mtl --help`` stays instant); ``providers`` configures them.
"""

from __future__ import annotations

from enum import Enum

AUTO = "auto"  # "pick the best provider that works here", a choice beside the providers


class Provider(str, Enum):
    """Execution providers we know how to configure, best first."""

    TENSORRT = "tensorrt"
    CUDA = "cuda"
    OPENVINO = "openvino"
    CPU = "cpu"

    @property
    def ort_name(self) -> str:
        """onnxruntime's name for it, e.g. ``CUDAExecutionProvider``."""
        return _ORT_NAMES[self]


_ORT_NAMES = {
    Provider.TENSORRT: "TensorrtExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.OPENVINO: "OpenVINOExecutionProvider",
    Provider.CPU: "CPUExecutionProvider",
}
GPU_PROVIDERS = (Provider.TENSORRT, Provider.CUDA)  # outputs can stay on an NVIDIA GPU


class OVPrecision(str, Enum):
    """OpenVINO's inference precision hint. ``auto`` keeps OpenVINO's default: on CPUs bf16
    where the CPU computes bf16 natively (AMX, AVX512-BF16), f32 elsewhere; f16 on GPU/NPU."""

    AUTO = "auto"
    F32 = "f32"
    BF16 = "bf16"
    F16 = "f16"


class GraphOptLevel(str, Enum):
    """onnxruntime's graph optimisation level: none, basic, extended or all (the default)."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


def choices(names: type[Enum], auto: bool = False) -> tuple[str, ...]:
    """The values of enum ``names`` as argparse choices, in declaration order; ``auto`` puts
    :data:`AUTO` first (``choices(Provider, auto=True)``: auto, tensorrt, cuda, openvino, cpu)."""
    return ((AUTO,) if auto else ()) + tuple(str(m.value) for m in names)


# Why a model runs in the precision it does (``providers.executed_precision``).
FILE_PRECISION = "the model file's precision"
# Measured on an H200 (docs/results.md): the QDQ file ran slower there than the fp32 one.
CUDA_INT8 = (
    "the CUDA provider has no int8 convolutions for QDQ files: their quantize/dequantize pairs "
    "run apart, slower than fp32 or fp16; TensorRT runs them in int8"
)
