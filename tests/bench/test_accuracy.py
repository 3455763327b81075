"""``bench --accuracy`` (the eval metrics as columns beside latency) and ``bench --profile``
(onnxruntime's profiler: the top operators per row), on the runtime's tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest

from edge_mtl.bench.accuracy import EvalSet, eval_engine, predict_all, task_metrics
from edge_mtl.bench.env import probe_provider
from edge_mtl.bench.profile import TOP, top_operators
from edge_mtl.bench.report import render_markdown, render_text
from edge_mtl.cli import main, read_labels
from edge_mtl.runtime.providers import Provider
from tests.bench.labelled import labelled_by_model
from tests.bench.test_bench import FAST


@pytest.fixture(scope="module")
def labelled(models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_by_model(models["dense"], tmp_path_factory.mktemp("acc") / "set")


def _bench(tmp_path: Path, *argv: str) -> tuple[dict, str]:
    out = tmp_path / "b.json"
    assert main(["bench", *argv, *FAST, "--json", str(out), "--md", str(tmp_path / "b.md")]) == 0
    return json.loads(out.read_text()), (tmp_path / "b.md").read_text()


def test_accuracy_columns_are_the_eval_metrics_of_each_row(models, labelled, tmp_path, capsys):
    argv = ["--model", str(models["dense"]), str(models["batch1"]), "--provider", "cpu"]
    doc, md = _bench(tmp_path, *argv, "--batch", "1", "2", "--accuracy", str(labelled))
    printed = capsys.readouterr().out
    engine = eval_engine(models["dense"], Provider.CPU, 1)
    data = EvalSet.labelled(labelled, engine.meta, read_labels)
    want = task_metrics(predict_all({"m": engine}, data)["m"], data, engine.meta)
    assert set(want) == {"det mAP@0.5", "det mAP@0.5:0.95", "weather acc", "curvature MAE"}
    assert want["det mAP@0.5"] > 50  # labelled by this model: far from the trivial 0
    rows = {(r["model"], r["batch"]): r for r in doc["results"]}
    for batch in (1, 2):  # one evaluation per file and provider, every batch row carries it
        assert rows["tiny.onnx", batch]["accuracy"] == pytest.approx(want)
    assert rows["batch1.onnx", 2]["status"] == "skipped"
    assert rows["batch1.onnx", 2]["accuracy"] is None
    assert rows["batch1.onnx", 1]["accuracy"] == pytest.approx(want)  # same weights, fixed batch
    assert doc["sessions"][0]["settings"]["accuracy_data"] == str(labelled)
    head = next(line for line in printed.splitlines() if line.startswith("model "))
    assert head.split("  ")[-1] == "status" and "det mAP@0.5:0.95" in head
    assert f"{want['det mAP@0.5']:.1f}" in printed and f"{want['curvature MAE']:.4g}" in printed
    assert "| det mAP@0.5 | det mAP@0.5:0.95 | weather acc | curvature MAE | status |" in md
    assert f"Accuracy on {labelled}" in md


def test_accuracy_needs_models_and_existing_data(models, tmp_path, capsys):
    assert main(["bench", "--merge", str(tmp_path / "x.json"), "--accuracy", "d"]) == 2
    assert "--accuracy needs --model" in capsys.readouterr().err
    argv = ["bench", "--model", str(models["dense"]), "--accuracy", str(tmp_path / "nope")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"edge-mtl bench: error: {tmp_path / 'nope'}: evaluation data not found"
    (tmp_path / "frames").mkdir()  # images but no labels: refused before any timing
    argv = ["bench", "--model", str(models["dense"]), "--accuracy", str(tmp_path / "frames")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "frames: not a labelled set" in err and "measuring" not in err


def test_a_model_without_metadata_is_timed_and_says_why_it_is_not_scored(
    models, labelled, tmp_path
):
    argv = ["--model", str(models["nometa"]), str(models["dense"]), "--imgsz", "32", "32"]
    doc, _ = _bench(tmp_path, *argv, "--provider", "cpu", "--accuracy", str(labelled))
    foreign, ours = doc["results"]
    assert foreign["status"] == "ok" and foreign["accuracy"] is None
    assert (
        "accuracy: not scored (no edge-mtl metadata: tasks and classes unknown)" in foreign["notes"]
    )
    assert ours["accuracy"]["det mAP@0.5"] > 50


def test_profile_lists_the_top_operators_of_each_row(models, tmp_path, capsys):
    argv = ["--model", str(models["dense"]), "--provider", "cpu", "--profile"]
    doc, md = _bench(tmp_path, *argv)
    printed = capsys.readouterr().out
    (row,) = doc["results"]
    prof = row["profile"]
    graph_ops = {n.op_type for n in onnx.load(str(models["dense"])).graph.node}
    assert 0 < len(prof) <= TOP and all(set(p) == {"op", "ms", "share"} for p in prof)
    assert [p["ms"] for p in prof] == sorted((p["ms"] for p in prof), reverse=True)
    assert all(p["ms"] > 0 for p in prof) and 0.5 < sum(p["share"] for p in prof) <= 1 + 1e-9
    ops = {p["op"] for p in prof}  # the graph's, plus layout ops onnxruntime inserts
    assert "Conv" in ops and len(ops & graph_ops) >= 3
    # ms per call: the operators cannot add up to more than a whole call of the timed pass
    assert sum(p["ms"] for p in prof) < 50 * row["latency_ms"]["max"]
    section = printed[printed.index("operators by time") :]
    assert "tiny.onnx  cpu" in section and prof[0]["op"] in section.splitlines()[3]
    assert "## Operators by time" in md and f"| {prof[0]['op']} |" in md


def test_top_operators_skips_warmup_and_fences() -> None:
    def node(op: str, ts: int, dur: int, kind: str = "kernel_time") -> dict:
        return {"cat": "Node", "name": f"n_{op}_{kind}", "ts": ts, "dur": dur,
                "args": {"op_name": op}}  # fmt: skip

    run = lambda ts: {"cat": "Session", "name": "model_run", "ts": ts, "dur": 5}  # noqa: E731
    events = [
        run(0), node("Conv", 1, 9000),  # warm-up: left out
        run(100), node("Conv", 101, 3000), node("Add", 102, 1000),
        node("Conv", 103, 7, "fence_after"),  # a wait around a kernel, not operator time
        run(200), node("Conv", 201, 3000), node("Add", 202, 1000),
    ]  # fmt: skip
    got = top_operators(events, calls=2, skip=1)
    assert got == [
        {"op": "Conv", "ms": pytest.approx(3.0), "share": pytest.approx(0.75)},
        {"op": "Add", "ms": pytest.approx(1.0), "share": pytest.approx(0.25)},
    ]


def test_tables_show_missing_and_unlabelled_metrics(models, tmp_path):
    doc, _ = _bench(tmp_path, "--model", str(models["dense"]), "--provider", "cpu")
    row = doc["results"][0]
    other = {**row, "model": "other.onnx", "accuracy": {"det mAP@0.5": 41.234, "x MAE": math.nan}}
    legacy = {k: v for k, v in row.items() if k not in ("accuracy", "profile")}  # older file
    text = render_text({**doc, "results": [other, legacy]})
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert lines[head].split()[-5:] == ["det", "mAP@0.5", "x", "MAE", "status"]
    assert lines[head + 2].split()[-3:] == ["41.2", "n/a", "ok"]
    assert lines[head + 3].split()[-3:] == ["-", "-", "ok"]
    assert "operators by time" not in text and "| x MAE |" in render_markdown(
        {**doc, "results": [other]}
    )


def test_profile_on_tensorrt_gives_build_time_and_says_why_no_layers(models, tmp_path):
    ok, why = probe_provider(Provider.TENSORRT)
    if not ok:
        pytest.skip(f"TensorRT cannot run here: {why}")
    doc, _ = _bench(
        tmp_path, "--model", str(models["dense"]), "--provider", "tensorrt", "--profile"
    )
    (row,) = doc["results"]
    assert row["status"] == "ok" and row["profile"]
    assert any(n.startswith("TensorRT session build") for n in row["notes"])
    assert any(n.startswith("per-layer times:") for n in row["notes"])
