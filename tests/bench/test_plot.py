"""The bench plot (edge_mtl.bench.plot): whiskers attached to their bars, speed-ups against the
first row, an e2e and an accuracy panel when the rows have them, a PNG that decodes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mtl.bench.plot import (
    TORCH_COLOR,
    accuracy_metric,
    measured,
    panels,
    row_color,
    save_plot,
    short_labels,
    speedups,
    title,
    whiskers,
)
from edge_mtl.bench.schema import Row, document, skipped_row

REPO = Path(__file__).resolve().parents[2]
MACHINE = {"cpu_model": "Test CPU 9000", "gpus": [{"name": "Test GPU"}]}


def _row(model: str, precision: str, p50: float, **extra) -> Row:
    """A measured row as bench writes it (p90/p99 above p50)."""
    base = dict(
        session=0, device="Test CPU 9000", runtime="onnxruntime", model=model,
        model_path=f"/m/{model}", model_size_mb=10.0, precision=precision,
        provider_requested="cpu", provider="cpu", fallback_reasons=[], batch=1, input_hw=[64, 64],
        status="ok", reason=None, runs=10, warmup=2, threads=1, throughput_ips=1000 / p50,
        peak_rss_mb=100.0, gpu_memory_mb=None, e2e=None,
        latency_ms={"p50": p50, "p90": p50 * 1.3, "p99": p50 * 1.6, "mean": p50, "std": 0.1,
                    "min": p50 * 0.9, "max": p50 * 1.7},
    )  # fmt: skip
    base.update(extra)
    return Row(**base)


def _e2e(fps: float) -> dict:
    return {"frames": 50, "fps": fps, "bare_fps": fps * 1.05, "ratio": 0.95, "stage_ms": {}}


def _doc(e2e: bool = True, accuracy: bool = True) -> dict:
    acc = (
        (lambda m: {"det mAP@0.5": m + 20, "det mAP@0.5:0.95": m}) if accuracy else (lambda m: None)
    )
    rows = [
        _row("model.onnx", "fp32", 12.0, e2e=_e2e(70.0) if e2e else None, accuracy=acc(41.2)),
        _row("model.fp16.onnx", "fp16", 8.0, accuracy=acc(41.1)),
        _row("model.int8.onnx", "int8", 4.0, e2e=_e2e(160.0) if e2e else None, accuracy=acc(39.8)),
        _row("best.pt", "fp32", 30.0, runtime="torch"),
    ]
    base = {k: getattr(rows[2], k) for k in ("session", "device", "runtime", "model")}
    base |= {k: getattr(rows[2], k) for k in ("model_path", "model_size_mb", "precision")}
    base |= dict(provider_requested="tensorrt", provider=None, fallback_reasons=[], input_hw=None,
                 runs=0, warmup=0, threads=1)  # fmt: skip
    rows.insert(1, skipped_row(base, 1, "TensorRT is not installed"))
    session = {"created": "2026-12-04T08:00:00+00:00", "command": "edge-mtl bench",
               "machine": MACHINE, "settings": {}}  # fmt: skip
    return document([session], rows)


def test_whiskers_start_where_the_bars_end() -> None:
    rows = measured(_doc())
    assert [r["model"] for r in rows] == [
        "model.onnx", "model.fp16.onnx", "model.int8.onnx", "best.pt",
    ]  # fmt: skip
    for (bar_end, start, tick, end), r in zip(whiskers(rows), rows):
        lat = r["latency_ms"]
        assert bar_end == start == lat["p50"]
        assert (tick, end) == (lat["p90"], lat["p99"])


def test_speedups_are_against_the_first_measured_row() -> None:
    rows = measured(_doc())  # the skipped row (second in the file) is not the reference
    assert speedups(rows) == pytest.approx([1.0, 1.5, 3.0, 0.4])


def test_panels_follow_what_the_rows_carry() -> None:
    assert panels(measured(_doc())) == ["latency", "e2e", "accuracy"]
    assert panels(measured(_doc(e2e=False))) == ["latency", "accuracy"]
    assert panels(measured(_doc(accuracy=False))) == ["latency", "e2e"]
    assert panels(measured(_doc(e2e=False, accuracy=False))) == ["latency"]


def test_accuracy_metric_prefers_map_50_95() -> None:
    rows = measured(_doc())
    assert accuracy_metric(rows) == "det mAP@0.5:0.95"
    rows[0]["accuracy"] = {"weather acc": 90.0}
    for r in rows[1:]:
        r["accuracy"] = None
    assert accuracy_metric(rows) == "weather acc"


def test_colours_and_title() -> None:
    rows = measured(_doc())
    assert row_color(rows[-1]) == TORCH_COLOR  # torch grey even though fp32
    assert len({row_color(r) for r in rows}) == 4
    assert title(_doc()) == "edge-mtl bench on Test CPU 9000 + Test GPU"


def test_scatter_labels_are_short_but_distinct() -> None:
    rows = measured(_doc())
    assert short_labels(rows) == ["fp32", "fp16", "int8", "fp32 torch"]
    rows[1]["precision"] = "fp32"  # two fp32 ONNX rows on one provider: the model names them
    assert short_labels(rows)[:2] == ["model.onnx fp32", "model.fp16.onnx fp32"]


def test_save_plot_writes_a_png_whose_width_follows_the_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    widths = {}
    for name, doc in (("all", _doc()), ("latency", _doc(e2e=False, accuracy=False))):
        path = tmp_path / "sub" / f"{name}.png"
        assert save_plot(doc, path) is None
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] >= 300
        widths[name] = image.shape[1]
    assert widths["latency"] == 8 * 120  # 8 inches at 120 dpi
    assert widths["all"] == round((8 + 3.6 + 4.6) * 120)


def test_nothing_measured_and_no_matplotlib_return_the_reason(tmp_path, monkeypatch) -> None:
    doc = _doc()
    doc["results"] = [r for r in doc["results"] if r["status"] != "ok"]
    assert save_plot(doc, tmp_path / "a.png") == "no plot: no row was measured"
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry: ImportError
    why = save_plot(_doc(), tmp_path / "b.png")
    assert why == "no plot: matplotlib is not installed (pip install matplotlib)"
    assert not (tmp_path / "b.png").exists()


# ---- scripts/readme_figures.py on tiny artifacts --------------------------------------------


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_figures", REPO / "scripts" / "readme_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_renders_both_files(models, tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    script = _script()
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    for i in range(4):
        writer.write(np.full((64, 96, 3), 40 + 40 * i, np.uint8))
    writer.release()
    doc = _doc()
    doc["results"][0]["model"] = models["dense"].name  # its e2e FPS goes on the frame
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(doc))
    out = tmp_path / "docs"
    argv = ["--model", str(models["dense"]), "--source", str(video), "--bench", str(bench)]
    assert script.main([*argv, "--out", str(out), "--provider", "cpu", "--scan", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'overlay-demo.jpg'} (frame " in printed
    assert f"wrote {out / 'bench-demo.png'}" in printed
    frame = cv2.imread(str(out / "overlay-demo.jpg"))
    assert frame.shape == (64, 96, 3) and frame.std() > 10  # uniform frames: the FPS panel drawn
    assert cv2.imread(str(out / "bench-demo.png")) is not None
    assert script.e2e_fps(doc, str(models["dense"])) == 70.0
    # --frame past the end: one line, exit 2
    assert script.main([*argv[:4], "--out", str(out), "--frame", "9", "--provider", "cpu"]) == 2
    assert "has no frame 9" in capsys.readouterr().err
