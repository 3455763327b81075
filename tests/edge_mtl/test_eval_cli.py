"""``edge-mtl eval --model``: an ONNX file (FP32 or INT8) scored on a labelled set in any layout
reports what quantize's FP32 vs INT8 report says (the same code), and a checkpoint scores on a
labelled folder without a config."""

from __future__ import annotations

import json
import math

import cv2
import onnx
import pytest

from edge_mtl.calibration.quantize import QuantizeConfig, quantize
from edge_mtl.cli import main
from edge_mtl.data.labelled import read_labelled, source_for
from edge_mtl.runtime.errors import InputError
from tests.bench.labelled import as_coco, labelled_by_model
from tests.runtime.conftest import build_model


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny FP32 model, a set labelled by it, and its INT8 quantization with the report."""
    d = tmp_path_factory.mktemp("evalcli")
    proto = onnx.load(str(build_model(d / "raw.onnx")))
    for i, node in enumerate(proto.graph.node):  # exclusions go by node name, as in an export
        node.name = f"{node.op_type.lower()}_{i}"
    fp32 = d / "tiny.onnx"
    onnx.save(proto, str(fp32))
    data = labelled_by_model(fp32, d / "set")
    qc = QuantizeConfig(
        onnx=str(fp32), calib=str(data), out=str(d / "tiny.int8.onnx"), calib_size=6,
        eval_data=str(data), threads=1, latency_seconds=0.2,
    )  # fmt: skip
    res = quantize(qc, read_labelled)
    return {"fp32": fp32, "int8": res.path, "data": data, "report": res.accuracy, "dir": d}


def _eval_json(capsys, *argv: str) -> dict:
    code = main(["eval", *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))


@pytest.mark.parametrize("label", ["fp32", "int8"])
def test_eval_onnx_reports_what_the_quantize_report_says(artifacts, capsys, label):
    got = _eval_json(capsys, "--model", str(artifacts[label]), "--data", str(artifacts["data"]))
    assert got["precision"] == label and got["provider"] == "cpu" and got["images"] == 12
    metrics = [r for r in artifacts["report"].table if "agreement" not in r and "diff" not in r]
    assert {"det mAP@0.5", "det mAP@0.5:0.95", "weather acc", "curvature MAE"} <= set(metrics)
    for row in metrics:
        assert got[row] == pytest.approx(artifacts["report"].table[row][label], abs=0.1), row
    # labelled by the FP32 model itself: far from the trivial 0
    assert got["det mAP@0.5"] > 50 and got["weather acc"] > 50
    # the breakdown beside the headline figures
    assert {"det AP50 car", "det AP50 sign", "det mAP@0.5:0.95 small", "weather F1"} <= set(got)
    assert got["det AP50 person"] is None  # no person labels: null, not a made-up 0


def test_eval_onnx_on_coco_json_matches_the_bdd_folder(artifacts, capsys):
    coco = as_coco(artifacts["data"], artifacts["data"] / "coco.json")
    args = ["--model", str(artifacts["fp32"])]
    bdd = _eval_json(capsys, *args, "--data", str(artifacts["data"]))
    got = _eval_json(capsys, *args, "--data", str(coco))
    for k in ("det mAP@0.5", "det mAP@0.5:0.95", "det AP50 car", "det AP50 sign"):
        assert got[k] == pytest.approx(bdd[k], abs=1e-9), k
    assert got["weather acc"] is None and got["curvature MAE"] is None  # COCO has no such labels


def test_eval_onnx_on_class_folders_scores_the_task_they_label(artifacts, capsys):
    """Class folders named after the weather classes: weather accuracy as on the BDD folder,
    and no detection figures (the layout has no boxes)."""
    frames = json.loads((artifacts["data"] / "labels.json").read_text())
    root = artifacts["dir"] / "weather"
    for f in frames:
        (root / f["attributes"]["weather"]).mkdir(parents=True, exist_ok=True)
        img = cv2.imread(str(artifacts["data"] / "images" / f["name"]))
        cv2.imwrite(str(root / f["attributes"]["weather"] / f["name"]), img)
    args = ["--model", str(artifacts["fp32"])]
    bdd = _eval_json(capsys, *args, "--data", str(artifacts["data"]))
    got = _eval_json(capsys, *args, "--data", str(root))
    assert got["weather acc"] == pytest.approx(bdd["weather acc"])
    assert got["det mAP@0.5"] is None and got["curvature MAE"] is None


def test_eval_onnx_text_output_names_model_provider_and_metrics(artifacts, capsys):
    code = main(["eval", "--model", str(artifacts["int8"]), "--data", str(artifacts["data"])])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].endswith("12 images, 36 boxes")
    assert out[1] == f"{artifacts['int8']} (int8, provider cpu) on 12 images"
    rows = {line.split("  ")[1].strip(): line.split()[-1] for line in out[2:]}
    assert float(rows["det mAP@0.5"]) > 50 and rows["det AP50 person"] == "labels)"


def test_layouts_are_told_apart(artifacts, tmp_path):
    classify = {"weather": ("clear", "rain", "fog", "snow")}
    data = artifacts["data"]
    assert source_for(data, classify).kind == "bdd100k"
    assert source_for(data / "labels.json", classify).kind == "bdd100k"
    coco = as_coco(data, tmp_path / "c.json")
    assert source_for(coco, classify).kind == "coco"
    (tmp_path / "kitti" / "label_2").mkdir(parents=True)
    (tmp_path / "kitti" / "image_2").mkdir()
    assert source_for(tmp_path / "kitti", classify).kind == "kitti"
    (tmp_path / "cls" / "Rain").mkdir(parents=True)
    s = source_for(tmp_path / "cls", classify)
    assert s.kind == "folder" and s.task == "weather"
    with pytest.raises(InputError, match="not a labelled set"):
        source_for(tmp_path / "kitti" / "label_2", classify)


def test_eval_checkpoint_on_a_labelled_folder_without_config(tmp_path, capsys):
    pytest.importorskip("torch")
    from edge_mtl.data.generate import write_synthetic
    from tests.export.conftest import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "best.pt")
    scenes = write_synthetic(tmp_path / "scenes", 5, hw=(90, 160), progress=False)
    for flag in ("--model", "--weights"):  # --weights: the older spelling still works
        got = _eval_json(capsys, flag, str(ckpt), "--data", str(scenes))
        assert got["images"] == 5 and got["model"] == str(ckpt)
        assert {"det/map50", "weather/acc", "curvature/mae"} <= set(got)
        assert not math.isnan(got["curvature/mae"])


def test_eval_onnx_on_a_configs_val_data_reads_it_with_the_models_classes(artifacts, capsys):
    """--config: its data.val sources, read with the ONNX model's own class names (the config's
    model section describes another model here)."""
    cfg = artifacts["dir"] / "val.yaml"
    cfg.write_text(
        "model: {detect: [truck], classify: {scene: [a, b]}}\n"
        f"data:\n  val:\n    - {{kind: bdd100k, path: {artifacts['data']}}}\n"
    )
    args = ["--model", str(artifacts["int8"])]
    by_path = _eval_json(capsys, *args, "--data", str(artifacts["data"]))
    by_config = _eval_json(capsys, *args, "--config", str(cfg))
    assert by_config == by_path


def test_eval_of_an_nms_export_says_its_thresholds_are_baked_in(artifacts, capsys):
    nms = build_model(artifacts["dir"] / "nms.onnx", nms=True)
    code = main(["eval", "--model", str(nms), "--data", str(artifacts["data"]), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["images"] == 12
    assert f"note: {nms} has in-graph NMS (score >= 0.3, IoU 0.5, 300 boxes baked in)" in (
        captured.err
    )
