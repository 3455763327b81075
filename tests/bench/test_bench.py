"""``edge-mtl bench``: the JSON schema, rows in turns, skipped providers, merge, e2e, no torch.

Models are the tiny ones of conftest; runs are few. Nothing asserts a timing, only structure
and sanity (p50 <= p90 <= p99, positive throughput).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_mtl.bench import measure as bench
from edge_mtl.bench.machine import machine_info
from edge_mtl.bench.schema import SCHEMA_VERSION, BenchSettings
from edge_mtl.cli import main
from tests.runtime.conftest import BLOCK_TORCH

REPO = Path(__file__).resolve().parents[2]
FAST = ["--runs", "3", "--warmup", "1", "--threads", "1", "--quiet"]

TOP_KEYS = {"schema_version", "sessions", "results"}
SESSION_KEYS = {"created", "command", "machine", "settings"}
MACHINE_KEYS = {
    "hostname", "os", "python", "cpu_model", "cpu_count", "cpu_affinity", "isa", "onnxruntime",
    "providers_available", "gpus", "notes", "isa_features",
}  # fmt: skip
SETTINGS_KEYS = {
    "providers", "batches", "imgsz", "runs", "seconds", "warmup", "threads", "e2e_source",
    "e2e_frames", "e2e_streams", "ov_device", "ov_precision", "ov_cache_dir", "turns",
    "accuracy_data", "profile",
}  # fmt: skip
ROW_KEYS = {
    "session", "device", "runtime", "model", "model_path", "model_size_mb", "precision",
    "provider_requested", "provider", "fallback_reasons", "batch", "input_hw", "status", "reason",
    "runs", "warmup", "threads", "latency_ms", "throughput_ips", "peak_rss_mb", "gpu_memory_mb",
    "e2e", "notes", "accuracy", "profile", "fallback",
}  # fmt: skip
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "std", "min", "max"}
E2E_KEYS = {
    "source", "frames", "seconds", "fps", "bare_fps", "ratio", "stage_ms", "latency_p50_ms",
    "latency_p90_ms", "latency_p99_ms", "streams",
}  # fmt: skip
STAGES = {"decode", "preprocess", "inference", "postprocess"}


def _bench(tmp_path: Path, name: str, *argv: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["bench", *argv, *FAST, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _check_ok_row(r: dict) -> None:
    lat = r["latency_ms"]
    assert set(lat) == LATENCY_KEYS
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["std"] >= 0 and lat["min"] <= lat["mean"] <= lat["max"]
    assert r["throughput_ips"] > 0 and r["peak_rss_mb"] > 0 and r["model_size_mb"] > 0
    assert r["runs"] == 3 and r["reason"] is None


# ---- timing in turns ------------------------------------------------------------------------


def test_rows_are_timed_in_turns_unless_sequential(models, tmp_path, monkeypatch) -> None:
    seen: list[list[int]] = []
    real = bench.time_in_turns

    def spy(calls, blocks, warmup, on_round=None):
        seen.append([r for r, _ in blocks])
        return real(calls, blocks, warmup, on_round)

    monkeypatch.setattr(bench, "time_in_turns", spy)
    argv = ["--model", str(models["dense"]), str(models["batch1"]), "--provider", "cpu"]
    out = tmp_path / "t.json"
    assert main(["bench", *argv, *FAST, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert seen == [[1, 1, 1]]  # 3 calls in 3 turns, both rows in one pass
    assert doc["sessions"][0]["settings"]["turns"] is True
    for r in doc["results"]:
        _check_ok_row(r)
    assert main(["bench", *argv, *FAST, "--sequential", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert len(seen) == 1 and doc["sessions"][0]["settings"]["turns"] is False
    for r in doc["results"]:
        _check_ok_row(r)


# ---- a real benchmark of the tiny models --------------------------------------------------


def test_tiny_benchmark_writes_json_markdown_plot(models, tmp_path, capsys) -> None:
    md, png = tmp_path / "b.md", tmp_path / "b.png"
    argv = ["--model", str(models["dense"]), str(models["batch1"]), "--provider", "cpu"]
    doc = _bench(tmp_path, "b", *argv, "--batch", "1", "2", "--md", str(md), "--plot", str(png))
    printed = capsys.readouterr().out
    assert set(doc) == TOP_KEYS and doc["schema_version"] == SCHEMA_VERSION
    (session,) = doc["sessions"]
    assert set(session) == SESSION_KEYS
    assert set(session["machine"]) == MACHINE_KEYS and set(session["settings"]) == SETTINGS_KEYS
    assert session["settings"]["batches"] == [1, 2] and session["settings"]["runs"] == 3
    rows = doc["results"]
    assert [(r["model"], r["batch"], r["status"]) for r in rows] == [
        ("tiny.onnx", 1, "ok"),
        ("tiny.onnx", 2, "ok"),
        ("batch1.onnx", 1, "ok"),
        ("batch1.onnx", 2, "skipped"),
    ]
    for r in rows:
        assert set(r) == ROW_KEYS and r["session"] == 0 and r["e2e"] is None
        assert (r["provider"], r["precision"], r["runtime"]) == ("cpu", "fp32", "onnxruntime")
        assert r["input_hw"] == [32, 32]
    for r in rows[:3]:
        _check_ok_row(r)
    assert "fixed batch of 1" in rows[3]["reason"] and rows[3]["latency_ms"] is None
    # The table shows measured numbers, the same ones the JSON holds.
    assert f"{rows[0]['latency_ms']['p50']:.2f}" in printed and "skipped" in printed
    text = md.read_text()
    assert text.count("| tiny.onnx |") == 2 and "| batch1.onnx |" in text and "p99 ms" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists()
        pytest.skip("matplotlib not installed: plot not written (by design)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_providers_are_skipped_with_reasons(models, monkeypatch) -> None:
    """A provider the onnxruntime build lacks: skipped rows with the reason, never a crash;
    ``auto`` falls back to CPU and says why."""
    monkeypatch.setattr(
        "edge_mtl.runtime.providers.ort.get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    monkeypatch.setattr("edge_mtl.runtime.providers.find_openvino_plugin", lambda: None)
    settings = BenchSettings(providers=("auto", "cuda", "tensorrt"), runs=2, warmup=0, threads=1)
    rows = bench.bench_model(models["dense"], settings, machine_info())
    auto, cuda, trt = rows
    assert auto.status == "ok" and auto.provider == "cpu" and auto.provider_requested == "auto"
    assert len(auto.fallback_reasons) == 3
    assert all("not in this onnxruntime build" in x for x in auto.fallback_reasons[:2])
    assert auto.fallback_reasons[2].startswith("openvino: plugin")
    assert auto.fallback == "tensorrt, cuda: not in this onnxruntime build; openvino: not installed"
    for row, name in ((cuda, "cuda"), (trt, "tensorrt")):
        assert row.status == "skipped" and row.provider is None and row.latency_ms is None
        assert row.reason.startswith(f"provider {name}: not in this onnxruntime build")
        assert set(row.to_dict()) == ROW_KEYS


def test_gpu_providers_on_this_machine_never_crash(models, tmp_path) -> None:
    doc = _bench(tmp_path, "g", "--model", str(models["dense"]), "--provider", "cuda", "tensorrt")
    for r in doc["results"]:
        assert r["status"] in ("ok", "skipped")
        if r["status"] == "skipped":
            assert r["reason"] and r["provider"] is None


def test_bad_inputs_give_one_line_errors(models, tmp_path, capsys) -> None:
    assert main(["bench", "--model", str(tmp_path / "missing.onnx")]) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["bench", "--model", str(bad)]) == 2
    assert main(["bench", "--model", str(models["nometa"]), *FAST]) == 2  # needs --imgsz
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("edge-mtl bench: error: ") for line in err)
    assert "not found" in err[0] and "not a valid ONNX model" in err[1] and "--imgsz" in err[2]


def test_model_without_metadata_uses_imgsz(models, tmp_path) -> None:
    doc = _bench(tmp_path, "n", "--model", str(models["nometa"]), "--imgsz", "32", "32")
    (r,) = doc["results"]
    _check_ok_row(r)
    assert r["input_hw"] == [32, 32] and any("precision inferred" in n for n in r["notes"])


# ---- merge -----------------------------------------------------------------------------


def test_merge_of_two_machines(models, tmp_path, capsys) -> None:
    a = _bench(tmp_path, "a", "--model", str(models["dense"]), "--provider", "cpu")
    b = json.loads(json.dumps(a))  # the same numbers "taken" on another machine
    b["sessions"][0]["machine"].update(hostname="jetson", cpu_model="ARM Cortex-A78AE")
    b["results"][0]["device"] = "ARM Cortex-A78AE (6 cores)"
    (tmp_path / "b.json").write_text(json.dumps(b))
    capsys.readouterr()
    out, md = tmp_path / "m.json", tmp_path / "m.md"
    merge = ["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    assert main(["bench", *merge, "--json", str(out), "--md", str(md), "--quiet"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert set(doc) == TOP_KEYS and len(doc["sessions"]) == 2
    assert [r["session"] for r in doc["results"]] == [0, 1]
    assert all(set(r) == ROW_KEYS for r in doc["results"])
    header = next(line for line in printed.splitlines() if line.startswith("device"))
    assert "precision" in header and "provider" in header
    assert "ARM Cortex-A78AE (6 cores)" in printed and a["results"][0]["device"] in printed
    assert md.read_text().count("session ") == 2


def test_merge_rejects_other_files(tmp_path, capsys) -> None:
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"schema_version": 99, "sessions": [], "results": []}))
    assert main(["bench", "--merge", str(f)]) == 2
    assert f"schema_version {SCHEMA_VERSION}, found 99" in capsys.readouterr().err


# ---- end to end ------------------------------------------------------------------------


def test_e2e_reports_stages_and_ratio(models, kit, tmp_path) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(12, 48, 64))
    argv = ["--model", str(models["dense"]), "--provider", "cpu", "--batch", "1", "2"]
    doc = _bench(tmp_path, "e", *argv, "--e2e", str(clip))
    one, two = doc["results"]
    assert two["e2e"] is None  # the pipeline runs batch 1
    e = one["e2e"]
    assert set(e) == E2E_KEYS and set(e["stage_ms"]) == STAGES
    # 3 rounds, each reopening the clip and taking all of its 12 frames (300 // 3 > 12)
    assert e["frames"] == 3 * kit.count_video_frames(clip) and e["source"] == str(clip)
    assert all(v >= 0 for v in e["stage_ms"].values()) and e["fps"] > 0
    assert e["bare_fps"] > 0  # measured between the passes, not copied from the row
    assert e["ratio"] == pytest.approx(e["fps"] / e["bare_fps"])
    assert 0 < e["latency_p50_ms"] <= e["latency_p90_ms"] <= e["latency_p99_ms"]
    short = _bench(tmp_path, "s", *argv[:-1], "--e2e", str(clip), "--e2e-frames", "6")
    assert short["results"][0]["e2e"]["frames"] == 6  # 3 rounds of 2 frames


def test_e2e_rounds_rotate_across_rows_in_turns(models, kit, tmp_path, monkeypatch) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(6, 48, 64))
    order: list[str] = []
    real = bench.E2ERounds.round

    def spy(self):
        order.append(Path(self.engine.path).stem)
        real(self)

    monkeypatch.setattr(bench.E2ERounds, "round", spy)
    argv = ["--model", str(models["dense"]), str(models["batch1"]), "--provider", "cpu"]
    doc = _bench(tmp_path, "t", *argv, "--e2e", str(clip), "--e2e-frames", "6")
    a, b = Path(models["dense"]).stem, Path(models["batch1"]).stem
    assert order == [a, b, b, a, a, b]  # 3 rounds, the order rotating by one each round
    for r in doc["results"]:
        assert r["e2e"]["frames"] == 6 and r["e2e"]["bare_fps"] > 0  # 3 rounds of 2 frames
    order.clear()
    doc = _bench(tmp_path, "s", *argv, "--sequential", "--e2e", str(clip), "--e2e-frames", "6")
    assert order == [a, a, a, b, b, b]  # each row's rounds in its own pass
    assert [r["e2e"]["frames"] for r in doc["results"]] == [6, 6]


# ---- torch ---------------------------------------------------------------------------------


def test_bench_runs_with_torch_blocked(models, tmp_path) -> None:
    out = tmp_path / "t.json"
    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        from edge_mtl.cli import main
        rc = main(["bench", "--model", {str(models["dense"])!r}, "--provider", "cpu",
                   "--runs", "2", "--warmup", "0", "--json", {str(out)!r}, "--quiet"])
        assert rc == 0, rc
        assert not any(m.split(".")[0] in ("torch", "onnx") for m in sys.modules), "leaked"
        rc = main(["bench", "--torch", "runs/x/best.pt", "--quiet"])
        sys.exit(rc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install edge-mtl[train]" in proc.stderr.strip().splitlines()[-1]
    assert json.loads(out.read_text())["results"][0]["status"] == "ok"


def test_torch_baseline_row(models, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    from edge_mtl.config import config_from_dict
    from edge_mtl.export.torch_baseline import bench_torch
    from edge_mtl.model import MultiTaskModel

    cfg = config_from_dict(
        {"model": {"input_hw": [64, 64], "neck_channels": 16, "classify": {"w": ["a", "b"]}}}
    )
    ckpt = tmp_path / "best.pt"
    model = MultiTaskModel(cfg.model)
    torch.save(
        {"format": "edge-mtl", "version": 1, "config": cfg.to_dict(), "model": model.state_dict()},
        ckpt,
    )
    settings = BenchSettings(batches=(1,), runs=3, warmup=1, threads=1)
    (row,) = bench_torch(ckpt, settings, machine_info(), input_hw=(32, 32))
    d = row.to_dict()
    assert set(d) == ROW_KEYS and d["runtime"] == "torch" and d["precision"] == "fp32"
    assert d["input_hw"] == [32, 32] and any("trained at 64x64" in n for n in d["notes"])
    _check_ok_row(d)
    # In turns, the torch row's call is the same model on the row's input.
    from edge_mtl.export.torch_baseline import TorchBaseline, torch_call

    out = torch_call(row, settings)()
    assert out["cls_w"].shape == (1, 2)
    bench.retime_in_turns([row], settings, TorchBaseline())
    assert row.runs == 3
    _check_ok_row(row.to_dict())


def test_notes_shared_by_several_rows_print_once_naming_them() -> None:
    from edge_mtl.bench.report import _footnotes

    why = "tensorrt: did not initialise (no GPU)"

    def row(model: str, notes: list[str]) -> dict:
        base = {"provider": "cpu", "provider_requested": "auto", "status": "ok", "reason": None}
        return {**base, "model": model, "fallback_reasons": [why], "notes": notes}

    notes = _footnotes([row("a.onnx", []), row("b.onnx", ["int8 weights"]), row("c.onnx", [])])
    assert notes == [
        f"a.onnx [cpu (auto)], b.onnx [cpu (auto)], c.onnx [cpu (auto)]: fell back: {why}",
        "b.onnx [cpu (auto)]: int8 weights",
    ]
    # The brief the engine's line uses, where the row has one (the JSON keeps the reasons).
    brief = {**row("a.onnx", []), "fallback": "tensorrt, cuda: no NVIDIA GPU"}
    assert _footnotes([brief]) == ["a.onnx [cpu (auto)]: fell back: tensorrt, cuda: no NVIDIA GPU"]
