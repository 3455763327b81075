"""``bench --openvino-runtime``: the same ONNX file through OpenVINO's own runtime, a row beside
the onnxruntime ones (timed in turns with them), its parity against the CPU provider, and one
skip line when the ``openvino`` package is absent. Structure and values, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mtl.bench import measure as bench
from edge_mtl.bench import openvino_runtime as ovr
from edge_mtl.bench.machine import machine_info
from edge_mtl.bench.report import render_text
from edge_mtl.bench.schema import BenchSettings, document
from edge_mtl.cli import main
from edge_mtl.runtime.engine import Engine
from tests.runtime.conftest import make_frames

REPO = Path(__file__).resolve().parents[2]
FAST = ["--runs", "3", "--warmup", "1", "--threads", "1"]
needs_openvino = pytest.mark.skipif(
    ovr.import_openvino() is None,
    reason="openvino not installed (pip install 'edge-mtl[openvino]' or pip install openvino)",
)


@pytest.fixture()
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import openvino`` fails, as on an install without the [openvino] extra."""
    monkeypatch.setitem(sys.modules, "openvino", None)


@needs_openvino
def test_the_row_sits_beside_the_cpu_row_and_agrees_with_it(models, tmp_path) -> None:
    out = tmp_path / "b.json"
    argv = ["bench", "--model", str(models["dense"]), "--provider", "cpu", "--openvino-runtime"]
    assert main([*argv, "--ov-precision", "f32", *FAST, "--quiet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    cpu, ov = doc["results"]
    assert (cpu["runtime"], cpu["provider"]) == ("onnxruntime", "cpu")
    assert (ov["runtime"], ov["provider"], ov["status"]) == ("openvino", "openvino-runtime", "ok")
    assert ov["model_path"] == cpu["model_path"] and ov["input_hw"] == cpu["input_hw"] == [32, 32]
    assert (ov["precision"], ov["batch"], ov["threads"], ov["runs"]) == ("fp32", 1, 1, 3)
    lat = ov["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"] and ov["throughput_ips"] > 0
    assert ov["peak_rss_mb"] > 0
    assert ov["notes"][0].startswith("OpenVINO 20") and "input fixed at 1x3x32x32" in ov["notes"][0]
    assert "fp32 file runs fp32 (precision hint f32)" in ov["notes"][0]
    assert ov["notes"][1].startswith("parity with onnxruntime cpu on 8 frame(s)")
    assert "openvino-runtime" in render_text(doc)


@needs_openvino
def test_f32_parity_is_exact_to_float_rounding(models) -> None:
    """OpenVINO with the f32 hint against the CPU provider on real-looking frames: the same
    classes and detections, probabilities equal to float32 rounding."""
    engine = Engine(models["dense"], "cpu")
    s = BenchSettings(ov_precision="f32", threads=1)
    model = ovr._compile(ovr.import_openvino(), engine, 2, s)
    frames = make_frames(5, 48, 64)
    p = ovr.parity(engine, model, frames, batch=2)  # chunks of 2, the last one padded
    assert p.frames == 5 and p.top1 == 1.0 and p.prob_diff < 1e-4
    assert p.matched == p.ref == p.other
    x = engine.preprocess(frames[:2])[0]
    ref, got = engine.run(x), model.run(x)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4)


@needs_openvino
def test_rows_are_timed_in_turns_with_the_onnxruntime_rows(models, monkeypatch) -> None:
    seen: list[int] = []
    real = bench.time_in_turns

    def spy(calls, blocks, warmup, on_round=None):
        seen.append(len(calls))
        return real(calls, blocks, warmup, on_round)

    monkeypatch.setattr(bench, "time_in_turns", spy)
    s = BenchSettings(providers=("cpu",), batches=(1, 2), runs=4, warmup=1, threads=1, turns=True)
    rows = bench.bench_model(models["dense"], s, machine_info(), 0, openvino_runtime=True)
    assert [(r.runtime, r.batch) for r in rows] == [
        ("onnxruntime", 1), ("onnxruntime", 2), ("openvino", 1), ("openvino", 2),
    ]  # fmt: skip
    bench.retime_in_turns(rows, s)
    assert seen == [4]  # all four rows in one pass of turns
    assert all(r.runs == 4 and r.status == "ok" for r in rows)


def test_compare_counts_what_agrees(models) -> None:
    engine = Engine(models["dense"], "cpu")
    results = engine.infer_batch(make_frames(3, 48, 64))
    same = ovr.compare(results, results)
    n = sum(len(r.detections) for r in results)
    assert (same.frames, same.prob_diff, same.top1, same.matched, same.ref) == (3, 0.0, 1.0, n, n)
    assert f"detections {n} matched of {n}" in same.note()


def test_without_openvino_the_row_is_skipped_in_one_line(models, no_openvino, capsys) -> None:
    argv = ["bench", "--model", str(models["dense"]), "--provider", "cpu", "--openvino-runtime"]
    assert main([*argv, *FAST]) == 0
    captured = capsys.readouterr()
    skips = [ln for ln in captured.err.splitlines() if "openvino" in ln]
    assert skips == [
        "edge-mtl bench: tiny.onnx [openvino-runtime]: skipped (openvino runtime: package "
        "openvino not installed (pip install 'edge-mtl[openvino]'))"
    ]
    s = BenchSettings(providers=("cpu",), runs=2, warmup=0)
    rows = bench.bench_model(models["dense"], s, machine_info(), 0, openvino_runtime=True)
    assert [(r.runtime, r.status, r.reason) for r in rows] == [
        ("onnxruntime", "ok", None), ("openvino", "skipped", ovr.NOT_INSTALLED),
    ]  # fmt: skip
    assert "skipped: " + ovr.NOT_INSTALLED in render_text(document([], rows))


def test_bench_imports_openvino_only_when_asked() -> None:
    code = (
        "import sys, edge_mtl.bench.cli, edge_mtl.bench.measure, edge_mtl.bench.openvino_runtime;"
        "assert 'openvino' not in sys.modules, 'imported eagerly'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
