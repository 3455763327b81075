"""The engine's enums are the one list behind every CLI's choices."""

import argparse
import subprocess
import sys

import pytest

from edge_mtl.runtime.options import AUTO, GraphOptLevel, OVPrecision, Provider, choices
from edge_mtl.runtime.providers import parse_providers


def _choices(register, command: str, flag: str) -> tuple[str, ...]:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    action = next(a for a in sub._actions if flag in a.option_strings)
    return tuple(action.choices)


def test_choices_follow_the_enums() -> None:
    assert choices(Provider, auto=True) == ("auto", "tensorrt", "cuda", "openvino", "cpu")
    assert choices(Provider) == tuple(p.value for p in Provider)
    assert choices(OVPrecision) == ("auto", "f32", "bf16", "f16")
    assert choices(GraphOptLevel)[-1] == GraphOptLevel.ALL.value
    assert Provider.CUDA.ort_name == "CUDAExecutionProvider"


def test_every_cli_offers_the_enum_choices() -> None:
    from edge_mtl.bench import cli as bench_cli
    from edge_mtl.calibration import cli as quantize_cli
    from edge_mtl.runtime import cli as run_cli

    providers = choices(Provider, auto=True)
    assert _choices(run_cli.register, "run", "--provider") == providers
    assert _choices(run_cli.register, "run", "--ov-precision") == choices(OVPrecision)
    assert _choices(bench_cli.register, "bench", "--provider") == providers
    assert _choices(bench_cli.register, "bench", "--ov-precision") == choices(OVPrecision)
    assert _choices(quantize_cli.register, "quantize", "--eval-provider") == choices(Provider)


def test_every_choice_parses_and_unknown_names_list_them() -> None:
    assert parse_providers(AUTO) == (list(Provider), False)
    for name in choices(Provider):
        assert parse_providers(name) == ([Provider(name)], True)
    with pytest.raises(Exception, match="expected one of: auto, tensorrt, cuda, openvino, cpu"):
        parse_providers("vulkan")


def test_cli_parsers_need_no_onnxruntime() -> None:
    """The choices come from a stdlib-only module: building the parsers loads no onnxruntime."""
    code = (
        "import sys, edge_mtl.runtime.cli, edge_mtl.bench.cli, edge_mtl.calibration.cli\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
