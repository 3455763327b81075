"""Property-based tests (hypothesis) of letterbox, the box transforms, decoding and NMS: any
image shape, any target size, empty and degenerate boxes, NaN/inf scores and boxes. Nothing
crashes, nothing NaN comes out, boxes end inside the frame, and letterbox-then-undo is the
identity within a pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.postprocess import (
    Detections,
    box_iou_one_to_many,
    detections_to_frame,
    nms,
    postprocess_detections,
    softmax,
)
from edge_mtl.runtime.preprocess import boxes_to_frame, boxes_to_input, letterbox, preprocess

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Sides from 1 px to "large": big sides are drawn rarely, so examples stay cheap.
side = st.one_of(st.integers(1, 64), st.integers(65, 2000))
hw = st.tuples(side, side)
# Wild floats: NaN, +-inf, huge and tiny magnitudes, exact zeros.
wild = st.floats(allow_nan=True, allow_infinity=True, width=32)
sane = st.floats(-2000, 2000, allow_nan=False, width=32)


def _frame(frame_hw: tuple[int, int]) -> np.ndarray:
    h, w = frame_hw
    return np.full((h, w, 3), 200, np.uint8)


@st.composite
def boxes_in_frame(draw, frame_hw: tuple[int, int], max_n: int = 8) -> np.ndarray:
    """(K, 4) xyxy float32 boxes inside a frame, including zero-area ones."""
    h, w = frame_hw
    n = draw(st.integers(0, max_n))
    xs = draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(0, w, width=32)))
    ys = draw(hnp.arrays(np.float32, (n, 2), elements=st.floats(0, h, width=32)))
    xs.sort(axis=1)
    ys.sort(axis=1)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1).reshape(n, 4)


def _assert_inside(d: Detections, frame_hw: tuple[int, int]) -> None:
    h, w = frame_hw
    b = d.boxes
    assert b.dtype == np.float32 and b.shape == (len(d), 4)
    assert np.isfinite(b).all() and np.isfinite(d.scores).all()
    assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= w).all()
    assert (b[:, [1, 3]] >= 0).all() and (b[:, [1, 3]] <= h).all()
    assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()  # proper xyxy


# ---- letterbox --------------------------------------------------------------------------


@FAST
@given(frame_hw=hw, size_hw=hw)
def test_letterbox_any_shapes(frame_hw, size_hw) -> None:
    out, lb = letterbox(_frame(frame_hw), size_hw, pad_value=114)
    assert out.shape == (*size_hw, 3) and out.dtype == np.uint8
    assert lb.frame_hw == frame_hw and lb.scale > 0
    assert 0 <= lb.pad_x <= size_hw[1] and 0 <= lb.pad_y <= size_hw[0]
    # The picture is centred and fills one side (to the rounding of the resize).
    content = np.argwhere((out != 114).any(axis=2))
    assert content.size, "the frame vanished"
    (y0, x0), (y1, x1) = content.min(axis=0), content.max(axis=0) + 1
    assert (x0, y0) == (lb.pad_x, lb.pad_y)
    assert x1 - x0 == size_hw[1] or y1 - y0 == size_hw[0] or min(x1 - x0, y1 - y0) == 1


@FAST
@given(frame_hw=hw, size_hw=hw)
def test_letterbox_maps_the_frame_onto_its_picture(frame_hw, size_hw) -> None:
    """The whole-frame box lands on the letterboxed picture, within a pixel."""
    out, lb = letterbox(_frame(frame_hw), size_hw, pad_value=114)
    h, w = frame_hw
    got = boxes_to_input(np.array([[0, 0, w, h]], np.float32), lb)[0]
    content = np.argwhere((out != 114).any(axis=2))
    (y0, x0), (y1, x1) = content.min(axis=0), content.max(axis=0) + 1
    np.testing.assert_allclose(got, [x0, y0, x1, y1], atol=1.0)


@FAST
@given(frame_hw=hw, size_hw=hw, data=st.data())
def test_box_round_trip_is_identity_within_a_pixel(frame_hw, size_hw, data) -> None:
    _, lb = letterbox(_frame(frame_hw), size_hw)
    boxes = data.draw(boxes_in_frame(frame_hw))
    back = boxes_to_frame(boxes_to_input(boxes, lb), lb)
    assert back.shape == boxes.shape
    np.testing.assert_allclose(back, boxes, atol=1.0)


def box_arrays(max_n: int, elements: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, st.tuples(st.integers(0, max_n), st.just(4)), elements=elements)


@FAST
@given(frame_hw=hw, size_hw=hw, raw=box_arrays(6, wild))
def test_boxes_to_frame_always_inside_and_finite(frame_hw, size_hw, raw) -> None:
    """Whatever the model says, undone boxes are finite, ordered and inside the frame."""
    _, lb = letterbox(_frame(frame_hw), size_hw)
    h, w = frame_hw
    with np.errstate(over="ignore"):  # huge coordinates overflow to inf, then clip to the edge
        out = boxes_to_frame(raw, lb)
    assert out.shape == raw.shape and np.isfinite(out).all()
    assert (out[:, [0, 2]] >= 0).all() and (out[:, [0, 2]] <= w).all()
    assert (out[:, [1, 3]] >= 0).all() and (out[:, [1, 3]] <= h).all()


@pytest.mark.parametrize("size_hw", [(0, 32), (32, 0), (-1, 5)])
def test_letterbox_rejects_empty_target(size_hw) -> None:
    with pytest.raises(InputError, match="size"):
        letterbox(_frame((8, 8)), size_hw)


def test_preprocess_of_no_frames_is_an_empty_batch() -> None:
    x, lbs = preprocess([], (32, 48))
    assert x.shape == (0, 3, 32, 48) and x.dtype == np.float32 and lbs == []


@FAST
@given(frame_hw=hw, flip=st.booleans())
def test_letterbox_accepts_views(frame_hw, flip) -> None:
    """Flipped or sliced (non-contiguous) frames, as numpy hands them out, work too."""
    h, w = frame_hw
    frame = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    view = frame[::-1, ::-1] if flip else frame[:, ::2]
    out, _ = letterbox(view, (16, 24))
    assert out.shape == (16, 24, 3)


# ---- decoding and NMS ---------------------------------------------------------------------


@st.composite
def dense_outputs(draw, max_anchors: int = 24, max_classes: int = 4):
    """Raw (A, 4) boxes and (A, C) scores as a broken or odd model might give them: NaN, inf,
    inverted and zero-area boxes, scores outside [0, 1]."""
    a = draw(st.integers(0, max_anchors))
    c = draw(st.integers(1, max_classes))
    boxes = draw(hnp.arrays(np.float32, (a, 4), elements=st.one_of(sane, wild)))
    scores = draw(
        hnp.arrays(np.float32, (a, c), elements=st.one_of(st.floats(0, 1, width=32), wild))
    )
    return boxes, scores


@FAST
@given(out=dense_outputs(), conf=st.floats(0, 1), iou=st.floats(0, 1), max_det=st.integers(1, 50))
def test_postprocess_never_crashes_nor_emits_nan(out, conf, iou, max_det) -> None:
    boxes, scores = out
    with np.errstate(all="ignore"):  # overflow warnings are fine, NaN results are not
        d = postprocess_detections(boxes, scores, conf, iou, max_det=max_det)
    assert len(d) <= max_det and len(d.classes) == len(d) and d.boxes.shape == (len(d), 4)
    assert np.isfinite(d.boxes).all() and np.isfinite(d.scores).all()
    assert (d.scores > conf).all()
    assert (d.boxes[:, 2] >= d.boxes[:, 0]).all() and (d.boxes[:, 3] >= d.boxes[:, 1]).all()
    assert ((d.classes >= 0) & (d.classes < scores.shape[1])).all()


@FAST
@given(out=dense_outputs(), frame_hw=hw, size_hw=hw)
def test_detections_end_inside_the_frame(out, frame_hw, size_hw) -> None:
    boxes, scores = out
    _, lb = letterbox(_frame(frame_hw), size_hw)
    with np.errstate(all="ignore"):
        d = detections_to_frame(postprocess_detections(boxes, scores, 0.25, 0.5), lb)
    _assert_inside(d, frame_hw)


@FAST
@given(boxes=box_arrays(16, st.one_of(sane, wild)), data=st.data(), iou=st.floats(0, 1))
def test_nms_never_crashes(boxes, data, iou) -> None:
    scores = data.draw(hnp.arrays(np.float32, len(boxes), elements=wild))
    with np.errstate(all="ignore"):
        keep = nms(boxes, scores, iou)
    assert keep.dtype == np.int64 and len(set(keep.tolist())) == len(keep)
    assert ((keep >= 0) & (keep < len(boxes))).all()
    if len(boxes):
        assert len(keep) >= 1  # the best box always survives


def test_empty_inputs() -> None:
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)
    d = postprocess_detections(np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32))
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.classes.dtype == np.int64
    _, lb = letterbox(_frame((10, 20)), (32, 32))
    assert len(detections_to_frame(Detections.empty(), lb)) == 0


def test_degenerate_boxes() -> None:
    """Zero-area boxes never suppress anything; inverted corners are put in order (ONNX
    NonMaxSuppression accepts either diagonal, so the numpy path does too)."""
    point = np.array([5, 5, 5, 5], np.float32)
    assert box_iou_one_to_many(point, point[None]).tolist() == [0.0]
    boxes = np.array([[10, 10, 0, 0], [0, 0, 10, 10], [3, 3, 3, 3]], np.float32)
    scores = np.array([[0.9], [0.8], [0.7]], np.float32)
    d = postprocess_detections(boxes, scores, 0.5, 0.5)
    # The inverted box is the same box as the second one: it wins and suppresses it.
    np.testing.assert_array_equal(d.boxes, [[0, 0, 10, 10], [3, 3, 3, 3]])
    assert d.scores.tolist() == pytest.approx([0.9, 0.7])


def test_non_finite_scores_are_never_detections() -> None:
    boxes = np.tile(np.array([[0, 0, 10, 10]], np.float32), (4, 1)) + np.arange(4)[:, None] * 20
    scores = np.array([[np.nan], [np.inf], [-np.inf], [0.9]], np.float32)
    d = postprocess_detections(boxes, scores, 0.25, 0.5)
    assert d.scores.tolist() == pytest.approx([0.9]) and d.boxes.tolist() == [[60, 60, 70, 70]]


@FAST
@given(
    logits=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=st.one_of(sane, wild)
    )
)
def test_softmax_is_a_distribution_for_any_logits(logits) -> None:
    p = softmax(logits)
    assert p.shape == logits.shape and np.isfinite(p).all()
    assert (p >= 0).all() and (p <= 1).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5)
