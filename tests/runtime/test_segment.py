"""The ``segment`` kind on the runtime side: the decoder cuts the letterbox padding away exactly,
takes the argmax of logits, checks metadata and guesses tasks of files without it; the JSON-lines
record is COCO's uncompressed RLE (column-major) that round-trips, plus the summary."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edge_mtl.runtime.engine import Engine, EngineConfig  # noqa: E402
from edge_mtl.runtime.errors import InputError, MetadataError  # noqa: E402
from edge_mtl.runtime.metadata import ModelMeta, TaskKind, TaskMeta  # noqa: E402
from edge_mtl.runtime.preprocess import letterbox  # noqa: E402
from edge_mtl.runtime.segment import (  # noqa: E402
    SegMap,
    SegmentDecoder,
    rle_decode,
    rle_encode,
    segment_record,
)

GREEN, RED = (0, 255, 0), (0, 0, 255)  # BGR: drivable class 1 / class 0 and lane
SIZES = [(48, 64), (64, 48), (20, 100), (100, 20), (32, 32), (33, 17), (7, 31)]


def _engine(path, **config) -> Engine:
    return Engine(path, "cpu", EngineConfig(intra_op_threads=1, **config))


@pytest.mark.parametrize("hw", SIZES)
def test_the_letterbox_padding_is_cut_away_exactly(seg_models, hw) -> None:
    """A green frame is class 1 everywhere; the grey padding would be class 2. The map keeps
    exactly the rows and columns the frame fills in the model input."""
    engine = _engine(seg_models["maps"])
    frame = np.zeros((*hw, 3), np.uint8)
    frame[:] = GREEN
    seg = engine(frame).segmentations
    _, lb = letterbox(frame, (32, 32))
    content = (round(hw[0] * lb.scale), round(hw[1] * lb.scale))
    assert seg["drivable"].classes.shape == content
    assert (seg["drivable"].classes == 1).all()
    assert not seg["lanes"].classes.any()
    assert seg["drivable"].frame_hw == hw
    assert seg["drivable"].at_frame_size().shape == hw
    assert seg["drivable"].labels == ("background", "direct", "alternative")


def test_the_map_lands_where_the_frame_has_the_class(seg_models) -> None:
    """Left half red (background, lane), right half green (direct), a wide frame: at frame size
    the columns away from the seam keep their classes."""
    frame = np.zeros((30, 96, 3), np.uint8)
    frame[:, :48] = RED
    frame[:, 48:] = GREEN
    seg = _engine(seg_models["maps"])(frame).segmentations
    drivable, lanes = seg["drivable"].at_frame_size(), seg["lanes"].at_frame_size()
    assert drivable.shape == lanes.shape == (30, 96)
    assert (drivable[:, :40] == 0).all() and (drivable[:, 56:] == 1).all()
    assert (lanes[:, :40] == 1).all() and (lanes[:, 56:] == 0).all()
    assert seg["lanes"].scale == pytest.approx((3.0, 3.0))


def test_logits_give_their_argmax(seg_models, kit) -> None:
    frames = kit.make_frames(3, 40, 70)
    maps = _engine(seg_models["maps"]).infer_batch(frames)
    logits_engine = _engine(seg_models["logits"])
    assert logits_engine.meta.tasks[0].logits
    for a, b in zip(maps, logits_engine.infer_batch(frames)):
        got = b.segmentations["drivable"].classes
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, a.segmentations["drivable"].classes)


def test_a_coarser_map_is_cut_at_its_stride() -> None:
    """map_stride 4: a 16x32 frame fills input rows 8..24 of 32x32, map rows 2..6."""
    t = TaskMeta("lanes", TaskKind.SEGMENT, ("seg_lanes",), ("background", "lane"), map_stride=4)
    frame = np.zeros((16, 32, 3), np.uint8)
    _, lb = letterbox(frame, (32, 32))
    out = np.full((8, 8), 7, np.uint8)
    out[2:6] = np.arange(8, dtype=np.uint8) % 2
    m = SegmentDecoder().decode(t, {"seg_lanes": out}, lb, None)["segmentations"]["lanes"]
    assert m.classes.shape == (4, 8) and (m.classes != 7).all()
    assert m.scale == (4.0, 4.0)
    assert m.at_frame_size().shape == (16, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["road"]}, "task 'drivable' needs at least two class names"),
        ({"map_stride": 0}, "task 'drivable' has map_stride 0"),
    ],
)
def test_metadata_is_checked(change, message) -> None:
    from tests.runtime.conftest import seg_meta

    d = json.loads(seg_meta().to_json())
    d["tasks"][0].update(change)
    with pytest.raises(MetadataError, match=f"m.onnx: {message}"):
        ModelMeta.from_json(json.dumps(d), "m.onnx")


def test_metadata_round_trips_the_segment_fields() -> None:
    from tests.runtime.conftest import seg_meta

    meta = ModelMeta.from_json(seg_meta(logits=True).to_json())
    t = meta.tasks[0]
    assert (t.kind, t.logits, t.map_stride, t.outputs) == (
        TaskKind.SEGMENT, True, 1, ("seg_drivable",),
    )  # fmt: skip


def test_a_file_without_metadata_gets_its_pixel_tasks_guessed(seg_models) -> None:
    """Class maps do not say how many classes they have: classes are named by index."""
    engine = _engine(seg_models["nometa"], imgsz=(32, 32))
    kinds = {t.name: (t.kind, t.classes) for t in engine.meta.tasks}
    assert kinds == {"drivable": (TaskKind.SEGMENT, ()), "lanes": (TaskKind.SEGMENT, ())}
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, :16] = RED
    frame[:, 16:] = (255, 0, 0)  # blue: class 2
    m = engine(frame).segmentations["drivable"]
    assert m.pixels() == {"0": 16 * 32, "1": 0, "2": 16 * 32}
    guessed = SegmentDecoder().guess({"seg_x": ["N", 3, 8, 8], "cls_y": ["N", 2]})
    assert [(t.name, t.classes, t.logits) for t in guessed] == [("x", ("0", "1", "2"), True)]


# ---- RLE ------------------------------------------------------------------------------------


def test_rle_is_cocos_column_major_convention() -> None:
    """By hand: [[1, 0, 0], [1, 1, 0]] read down the columns is 1 1 | 0 1 | 0 0, so the runs
    are 0 unset, 2 set, 1 unset, 1 set, 2 unset; pycocotools decodes it to the same mask."""
    mask = np.array([[1, 0, 0], [1, 1, 0]], bool)
    rle = rle_encode(mask)
    assert rle == {"size": [2, 3], "counts": [0, 2, 1, 1, 2]}
    assert rle_encode(np.array([[0, 1], [0, 1]], bool))["counts"] == [2, 2]
    coco = pytest.importorskip("pycocotools.mask")
    decoded = coco.decode(coco.frPyObjects(rle, 2, 3))
    np.testing.assert_array_equal(decoded.astype(bool), mask)


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (5, 1), (17, 31), (36, 64), (63, 2)])
def test_rle_round_trips(hw) -> None:
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    for mask in (
        rng.random(hw) < 0.5,
        rng.random(hw) < 0.03,  # sparse, like lane pixels
        np.zeros(hw, bool),
        np.ones(hw, bool),
    ):
        rle = rle_encode(mask)
        assert sum(rle["counts"]) == mask.size
        assert all(c > 0 for c in rle["counts"][1:])  # only the first run may be empty
        np.testing.assert_array_equal(rle_decode(rle), mask)
    assert rle_encode(np.zeros(hw, bool))["counts"] == [hw[0] * hw[1]]
    assert rle_encode(np.ones(hw, bool))["counts"] == [0, hw[0] * hw[1]]


def test_rle_decode_refuses_counts_that_do_not_fill_the_size() -> None:
    with pytest.raises(InputError, match="RLE: counts sum to 5 pixels, size 2x3 has 6"):
        rle_decode({"size": [2, 3], "counts": [1, 4]})
    with pytest.raises(InputError, match="RLE: counts must not be negative"):
        rle_decode({"size": [2, 3], "counts": [7, -1]})
    with pytest.raises(InputError, match=re.escape('RLE: expected {"size": [h, w], "counts"')):
        rle_decode({"counts": [6]})


def test_the_record_has_rle_per_class_scale_and_summary() -> None:
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, (9, 16)).astype(np.uint8)
    m = SegMap(classes[1:7, 2:14], ("background", "direct", "alternative"), (18, 36))
    r = segment_record(m)
    assert (r["kind"], r["size"], r["scale"]) == ("segment", [6, 12], [3.0, 3.0])
    assert [e["class"] for e in r["rle"]] == ["direct", "alternative"]
    for k, e in enumerate(r["rle"], 1):
        assert e["size"] == [6, 12]
        np.testing.assert_array_equal(rle_decode(e), m.classes == k)
    want = {n: int((m.classes == k).sum()) for k, n in enumerate(m.labels)}
    assert r["pixels"] == want and sum(want.values()) == 72
    assert r["fractions"] == {n: round(v / 72, 6) for n, v in want.items()}
    assert m.foreground() == pytest.approx(
        ((72 - want["background"]) / 72, 72 - want["background"])
    )
    json.dumps(r)  # plain JSON types only
