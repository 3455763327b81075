"""ONNX evaluation of segment tasks (``eval --model x.onnx``, ``bench --accuracy``, quantize's
report): the engine's class maps against BDD100K-convention mask PNGs give the figures training's
own metric gives on the same records, under the keys the reports show; agreement between two
models counts equal pixels."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_mtl.bench.accuracy import EvalSet, eval_engine, predict_all, row_accuracy, task_metrics
from edge_mtl.calibration.accuracy import agreement
from edge_mtl.checkpoint import load_model
from edge_mtl.cli import main
from edge_mtl.data.dataset import MultiTaskDataset, collate
from edge_mtl.eval_cli import read_task_mask
from edge_mtl.evaluate import evaluate
from edge_mtl.export.onnx_export import ExportConfig, export
from tests.bench.labelled import seg_labelled_by_model

from .conftest import HW

DRIVABLE = ("background", "direct", "alternative")


@pytest.fixture(scope="module")
def seg_onnx(seg_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evalseg") / "m.onnx"
    export(ExportConfig(weights=str(seg_checkpoint), out=str(out), parity_images=1))
    return out


@pytest.fixture(scope="module")
def records(seg_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> list:
    return seg_labelled_by_model(seg_onnx, tmp_path_factory.mktemp("segset"))


@pytest.fixture(scope="module")
def scored(seg_onnx, records):
    engine = eval_engine(seg_onnx, "cpu", 1)
    data = EvalSet.of_records(records, "segset", read_task_mask)
    pred = predict_all({"m": engine}, data)["m"]
    return pred, data, engine.meta


def test_onnx_segment_metrics_equal_trainings_on_the_same_records(scored, seg_checkpoint):
    pred, data, meta = scored
    got = task_metrics(pred, data, meta, breakdown=True)
    model, cfg, _ = load_model(seg_checkpoint)
    torch.set_num_threads(1)
    loader = torch.utils.data.DataLoader(
        MultiTaskDataset(list(data.records), cfg, train=False), batch_size=3, collate_fn=collate
    )
    want = evaluate(model, loader, cfg, torch.device("cpu"), None, progress=False)
    pairs = {"mIoU": "miou", "IoU": "iou", "pixel acc": "pixel_acc", "mIoU all": "miou_all"}
    for task, classes in (("drivable", DRIVABLE), ("lanes", ("background", "lane"))):
        names = {f"{task} {a}": f"{task}/{b}" for a, b in pairs.items()}
        names.update({f"{task} IoU {c}": f"{task}/iou_{c}" for c in classes})
        for ours, theirs in names.items():
            assert got[ours] == pytest.approx(100 * want[theirs], abs=1e-6), ours
    # labelled as the model says, but for the relabelled top rows: high, below 100
    assert 60 < got["drivable mIoU"] < 100 and got["drivable IoU alternative"] < 100
    assert got["lanes IoU"] > 90  # only the nearest-neighbour round trip through frame size


def test_headline_keys_and_no_mask_reader_means_no_labels(scored, records):
    pred, data, meta = scored
    head = task_metrics(pred, data, meta)
    seg = [k for k in head if k.startswith(("drivable", "lanes"))]
    assert seg == ["drivable mIoU", "lanes mIoU", "lanes IoU"]  # IoU: the binary task's figure
    blind = task_metrics(pred, EvalSet.of_records(records, "no reader"), meta)
    assert all(math.isnan(blind[k]) for k in seg)


def test_read_task_mask_maps_bdd_values_to_the_tasks_classes(records):
    rec = records[0]
    frame_hw = cv2.imread(str(rec.image)).shape[:2]
    drivable = read_task_mask(rec, "drivable", DRIVABLE, frame_hw)
    assert drivable.shape == frame_hw and (drivable[:8] == 2).all()
    merged = read_task_mask(rec, "drivable", ("background", "direct"), frame_hw)
    assert (merged[:8] == 0).all()  # a class the task leaves out is its background
    assert np.array_equal(merged == 1, drivable == 1)
    assert read_task_mask(records[1], "lanes", ("background", "lane"), frame_hw) is None


def test_pixel_agreement_between_two_models(scored):
    pred, _, meta = scored
    assert agreement(pred, pred, meta)["drivable pixel agreement"] == 100.0
    other = type(pred)(pred.dets, pred.cls, pred.reg, {k: list(v) for k, v in pred.seg.items()})
    first = pred.seg_map("lanes", 0).copy()
    first[:2] = 1 - first[:2]  # two rows of the first image flipped
    other.seg["lanes"][0] = cv2.imencode(".png", first)[1].tobytes()
    total = sum(pred.seg_map("lanes", i).size for i in range(len(pred.seg["lanes"])))
    want = 100 * (1 - 2 * first.shape[1] / total)
    assert agreement(pred, other, meta)["lanes pixel agreement"] == pytest.approx(want)


def test_bench_accuracy_rows_carry_the_segment_headline(seg_onnx, records, scored):
    """``bench --accuracy``: the row's columns are the headline metrics, as eval computes them."""
    from edge_mtl.bench.report import main_columns
    from edge_mtl.bench.schema import BenchSettings, Row

    row = Row(
        0, "cpu", "onnxruntime", "m", str(seg_onnx), 1.0, "fp32", "cpu", "cpu", [], 1, list(HW),
        "ok", None, 1, 0, 1, None, None, None, None, None,
    )  # fmt: skip
    row_accuracy(
        [row], "segset", lambda root, *tasks: (records, Counter()), BenchSettings(threads=1),
        read_mask=read_task_mask,
    )  # fmt: skip
    pred, data, meta = scored
    want = task_metrics(pred, data, meta)
    assert {k: row.accuracy[k] for k in ("drivable mIoU", "lanes mIoU", "lanes IoU")} == {
        k: pytest.approx(want[k]) for k in ("drivable mIoU", "lanes mIoU", "lanes IoU")
    }
    cells = {name: cell(row.to_dict()) for name, cell, _ in main_columns([row.to_dict()])}
    assert cells["drivable mIoU"] == f"{want['drivable mIoU']:.1f}"


def test_eval_json_names_the_segment_metrics(seg_onnx, records, capsys):
    """``eval --model x.onnx --json`` on a BDD-format folder: the segment keys are there (null
    where the reader finds no masks for the folder)."""
    root = records[0].image.parent.parent
    entries = [{"name": r.image.name, "attributes": {}, "labels": []} for r in records]
    (root / "labels.json").write_text(json.dumps(entries))
    rc = main(["eval", "--model", str(seg_onnx), "--data", str(root), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["images"] == len(records)
    for key in ("drivable mIoU", "drivable IoU", "drivable pixel acc", "drivable IoU direct",
                "drivable mIoU all", "lanes mIoU", "lanes IoU", "lanes IoU lane"):  # fmt: skip
        assert key in out and (out[key] is None or 0 <= out[key] <= 100), key
