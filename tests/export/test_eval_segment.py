"""ONNX evaluation of segment tasks (``eval --model x.onnx``, ``bench --accuracy``, quantize's
report): the engine's class maps against BDD100K-convention mask PNGs give the figures training's
own metric gives on the same records, under the keys the reports show; agreement between two
models counts equal pixels."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge_mtl.bench.accuracy import EvalSet, eval_engine, predict_all, task_metrics
from edge_mtl.calibration.accuracy import agreement
from edge_mtl.checkpoint import load_model
from edge_mtl.data.dataset import MultiTaskDataset, collate
from edge_mtl.eval_cli import read_task_mask
from edge_mtl.evaluate import evaluate
from edge_mtl.export.onnx_export import ExportConfig, export
from tests.bench.labelled import seg_labelled_by_model

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
