"""Detection options that always mean something: ``--conf``, ``--iou``, ``--classes``,
``--agnostic-nms`` and ``--max-det`` are applied, or refused with the reason on a model whose
NMS is in the graph (the tiny NMS model bakes score 0.3, IoU 0.5, 300 detections; its rows are
car 0.9, sign 0.5, person 0.2 and padding)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_mtl.cli import main
from edge_mtl.runtime.decoders import DecodeOptions, DetectDecoder
from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, TaskKind, TaskMeta
from edge_mtl.runtime.postprocess import (
    box_iou_matrix,
    detections_to_frame,
    postprocess_detections,
)
from edge_mtl.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, Letterbox, preprocess

FRAME = np.zeros((64, 64, 3), np.uint8)  # 2x the 32x32 input: frame boxes = input boxes * 2


def _engine(path: Path, **config) -> Engine:
    return Engine(path, "cpu", EngineConfig(intra_op_threads=1, warmup_runs=0, **config))


def _scores(path: Path, **config) -> list[float]:
    return [round(float(s), 3) for s in _engine(path, **config)(FRAME).detections.scores]


# ---- a model with in-graph NMS -----------------------------------------------------------


def test_lower_conf_on_nms_model_is_refused(models) -> None:
    with pytest.raises(InputError) as e:
        _engine(models["nms"], conf_threshold=0.1)
    msg = str(e.value)
    assert msg == (
        f"{models['nms']}: --conf 0.1 is below the score threshold 0.3 baked into its NMS; "
        "re-export with `edge-mtl export --nms --conf 0.1` or use the plain export "
        "(edge-mtl export without --nms)"
    )


def test_raised_conf_on_nms_model_is_applied(models) -> None:
    assert _scores(models["nms"]) == [0.9, 0.5]  # the baked 0.3: the 0.2 row is below it
    assert _scores(models["nms"], conf_threshold=0.3) == [0.9, 0.5]
    assert _scores(models["nms"], conf_threshold=0.6) == [0.9]


def test_other_iou_on_nms_model_is_refused(models) -> None:
    with pytest.raises(InputError, match=r"--iou 0.6 differs from the IoU threshold 0.5 baked"):
        _engine(models["nms"], iou_threshold=0.6)
    assert _scores(models["nms"], iou_threshold=0.5) == [0.9, 0.5]  # the baked value is fine


def test_agnostic_nms_on_nms_model_is_refused(models) -> None:
    with pytest.raises(InputError, match=r"--agnostic-nms cannot apply: .*NMS is in the graph"):
        _engine(models["nms"], agnostic_nms=True)


def test_max_det_on_nms_model(models) -> None:
    with pytest.raises(InputError, match=r"--max-det 301 is above the 300 detections baked"):
        _engine(models["nms"], max_det=301)
    assert _scores(models["nms"], max_det=1) == [0.9]  # the graph ranks by score
    assert _scores(models["nms"], max_det=300) == [0.9, 0.5]


def test_classes_on_nms_model_filter_its_rows(models) -> None:
    r = _engine(models["nms"], classes=("sign",))(FRAME)
    assert r.det_labels == ("sign",) and r.detections.scores.tolist() == [0.5]  # exact in fp32
    assert _engine(models["nms"], classes=(0,))(FRAME).det_labels == ("car",)


def test_bad_ranges_are_refused_by_the_engine(models) -> None:
    for config, flag in (({"conf_threshold": 1.5}, "--conf"), ({"max_det": 0}, "--max-det")):
        with pytest.raises(InputError, match=flag):
            _engine(models["dense"], **config)


# ---- a plain model: numpy NMS ------------------------------------------------------------


def test_classes_by_name_and_id_keep_only_those(models, kit) -> None:
    frames = kit.make_frames(3)
    everything = _engine(models["dense"], conf_threshold=0.05).infer_batch(frames)
    assert all(set(r.det_labels) == {"car", "person", "sign"} for r in everything[:1])
    for classes in (("car", "sign"), (0, 2), ("0", "sign")):
        got = _engine(models["dense"], conf_threshold=0.05, classes=classes).infer_batch(frames)
        for r, ref in zip(got, everything):
            assert len(r.detections) > 0 and set(r.det_labels) <= {"car", "sign"}
            # class-aware NMS: the kept classes' detections are exactly the unfiltered ones
            mine = np.isin(ref.detections.classes, [0, 2])
            np.testing.assert_array_equal(r.detections.scores, ref.detections.scores[mine])


def test_unknown_class_is_refused_listing_the_classes(models) -> None:
    with pytest.raises(InputError, match=r"--classes bus: not a class .*car, person, sign"):
        _engine(models["dense"], classes=("car", "bus"))
    with pytest.raises(InputError, match=r"--classes 3: not a class .*ids 0-2"):
        _engine(models["dense"], classes=(3,))


def _duplicate() -> tuple[np.ndarray, np.ndarray]:
    """Two anchors boxing one object (IoU 0.9) as class 0 (0.8) and class 1 (0.7)."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], np.float32)
    scores = np.array([[0.8, 0.1], [0.1, 0.7]], np.float32)
    assert box_iou_matrix(boxes[:1], boxes[1:])[0, 0] == pytest.approx(0.9)
    return boxes, scores


def test_agnostic_nms_suppresses_a_cross_class_duplicate() -> None:
    boxes, scores = _duplicate()
    aware = postprocess_detections(boxes, scores, 0.25, 0.5)
    assert aware.classes.tolist() == [0, 1]  # class-aware NMS keeps both labels
    agnostic = postprocess_detections(boxes, scores, 0.25, 0.5, agnostic=True)
    assert agnostic.classes.tolist() == [0] and agnostic.scores.tolist() == [pytest.approx(0.8)]
    # the engine's decoder path, with the task's classes
    t = TaskMeta("det", TaskKind.DETECT, ("det_boxes", "det_scores"), ("light", "sign"))
    raw = {"det_boxes": boxes, "det_scores": scores}
    lb = Letterbox(1.0, 0, 0, (10, 10))
    for opts, labels in (
        (DecodeOptions(), ("light", "sign")),
        (DecodeOptions(agnostic_nms=True), ("light",)),
    ):
        assert DetectDecoder().decode(t, raw, lb, opts)["det_labels"] == labels


def test_agnostic_nms_on_the_engine(models, kit) -> None:
    frames = kit.make_frames(2)
    aware = _engine(models["dense"], conf_threshold=0.05).infer_batch(frames)
    agnostic = _engine(models["dense"], conf_threshold=0.05, agnostic_nms=True).infer_batch(frames)
    sess = ort.InferenceSession(str(models["dense"]), providers=["CPUExecutionProvider"])
    for f, a, b in zip(frames, agnostic, aware):
        assert 0 < len(a.detections) < len(b.detections)
        x, (lb,) = preprocess([f], (32, 32), IMAGENET_MEAN, IMAGENET_STD, 114)
        boxes, scores = sess.run(["det_boxes", "det_scores"], {"images": x})
        want = postprocess_detections(boxes[0], scores[0], 0.05, 0.5, agnostic=True)
        assert (box_iou_matrix(want.boxes, want.boxes) > 0.5).sum() == len(want)  # itself only
        np.testing.assert_allclose(a.detections.scores, want.scores, rtol=1e-5)
        np.testing.assert_allclose(
            a.detections.boxes, detections_to_frame(want, lb).boxes, atol=1e-3
        )


def test_max_det_caps_and_defaults_to_the_metadata(models, kit, tmp_path) -> None:
    frames = kit.make_frames(1)
    many = len(_engine(models["dense"], conf_threshold=0.05).infer_batch(frames)[0].detections)
    assert many > 5
    top = _engine(models["dense"], conf_threshold=0.05, max_det=5).infer_batch(frames)[0]
    assert len(top.detections) == 5 and np.all(np.diff(top.detections.scores) <= 0)
    # a model exported with --max-det 3 (no --nms): the runtime's default becomes 3
    proto = onnx.load(str(models["dense"]))
    prop = next(p for p in proto.metadata_props if p.key == METADATA_KEY)
    meta = ModelMeta.from_json(prop.value)
    det = dataclasses.replace(meta.tasks[0], max_det=3)
    prop.value = meta.replace(tasks=(det, *meta.tasks[1:])).to_json()
    capped = tmp_path / "max3.onnx"
    onnx.save(proto, str(capped))
    assert len(_engine(capped, conf_threshold=0.05).infer_batch(frames)[0].detections) == 3


# ---- the run command ---------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", "--provider", "cpu", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def png(kit, tmp_path) -> str:
    import cv2

    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), kit.make_frames(1, h=64, w=64)[0])
    return str(path)


def test_cli_refuses_a_lower_conf_on_an_nms_model_in_one_line(models, png, capsys) -> None:
    code, _, err = _run(capsys, "--model", str(models["nms"]), "--source", png, "--conf", "0.1")
    assert code == 2
    assert err.strip().splitlines() == [
        f"edge-mtl run: error: {models['nms']}: --conf 0.1 is below the score threshold 0.3 "
        "baked into its NMS; re-export with `edge-mtl export --nms --conf 0.1` or use the plain "
        "export (edge-mtl export without --nms)"
    ]


def test_cli_unknown_class_and_bad_max_det(models, png, capsys) -> None:
    code, _, err = _run(
        capsys, "--model", str(models["dense"]), "--source", png, "--classes", "bus"
    )
    assert code == 2 and "its classes: car, person, sign" in err
    code, _, err = _run(capsys, "--model", str(models["dense"]), "--source", png, "--max-det", "0")
    assert code == 2 and "--max-det must be >= 1, got 0" in err


def _labels(record: object) -> list[str]:
    """Every detection label in a JSON record, wherever the schema puts the detections."""
    if isinstance(record, dict):
        found = [record["label"]] if "box" in record and "label" in record else []
        return found + [x for v in record.values() for x in _labels(v)]
    if isinstance(record, list):
        return [x for v in record for x in _labels(v)]
    return []


def test_cli_classes_and_max_det_reach_the_engine(models, png, capsys, tmp_path) -> None:
    out = tmp_path / "dets.jsonl"
    args = ["--model", str(models["dense"]), "--source", png, "--conf", "0.05", "--jsonl", str(out)]
    code, _, err = _run(capsys, *args, "--classes", "sign", "0", "--max-det", "4")
    assert code == 0, err
    labels = [x for line in out.read_text().splitlines() for x in _labels(json.loads(line))]
    assert 0 < len(labels) <= 4 and set(labels) <= {"car", "sign"}


def test_within_graph_nms_scores_at_the_baked_thresholds(models) -> None:
    """Evaluation asks for 'as loose as the model allows': on an --nms model a lower conf is
    raised to the baked one instead of refused, and the graph's IoU and max_det are taken."""
    loose = {"conf_threshold": 0.001, "iou_threshold": 0.6, "max_det": 1000}
    with pytest.raises(InputError):
        _engine(models["nms"], **loose)
    engine = _engine(models["nms"], within_graph_nms=True, **loose)
    det = engine.meta.detect
    opts = engine._decode_options()
    assert (opts.conf_threshold, opts.iou_threshold, opts.max_det) == (
        det.score_threshold, det.iou_threshold, det.max_det,
    )  # fmt: skip
    assert _scores(models["nms"], within_graph_nms=True, **loose) == [0.9, 0.5]
