"""The overlay (edge_mtl.runtime.overlay): label tags never overlap nor leave the frame, class
colours are far apart, the task panel shows every task, the input frame is left alone."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge_mtl.runtime.decoders import Classification
from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.metadata import TaskKind, TaskMeta
from edge_mtl.runtime.overlay import (
    PALETTE,
    PANEL_DARKEN,
    Style,
    class_color,
    contrast_ratio,
    draw_overlay,
    panel_rect,
    panel_rows,
    place_labels,
    text_color,
)
from edge_mtl.runtime.postprocess import Detections

DEMO = ("car", "truck", "bus", "person", "traffic light", "traffic sign")
WEATHER = ("clear", "overcast", "rainy", "foggy", "snowy")
TASKS = (
    TaskMeta("det", TaskKind.DETECT, ("det_boxes", "det_scores"), DEMO),
    TaskMeta("weather", TaskKind.CLASSIFY, ("cls_weather",), WEATHER),
    TaskMeta("scene", TaskKind.CLASSIFY, ("cls_scene",), ("highway", "city street")),
    TaskMeta("curvature", TaskKind.REGRESS, ("reg_curvature",), unit="1/m"),
)


def _crowd(w: int = 640, h: int = 360) -> np.ndarray:
    """12 boxes piled in the top-left corner plus boxes on every edge and one past the frame."""
    pile = [[8 + 3 * i, 6 + 2 * i, 70 + 4 * i, 60 + 3 * i] for i in range(12)]
    edges = [
        [0, 0, 40, 30], [w - 30, 0, w, 25], [0, h - 20, 50, h], [w - 60, h - 40, w, h],
        [w // 2, 0, w // 2 + 40, 12], [w // 2, h - 8, w // 2 + 30, h], [-20, 100, 30, 160],
        [w - 10, 150, w + 25, 200],
    ]  # fmt: skip
    return np.array(pile + edges, np.float32)


def _result(boxes: np.ndarray, with_tasks: bool = True) -> FrameResult:
    n = len(boxes)
    classes = np.arange(n, dtype=np.int64) % len(DEMO)
    dets = Detections(boxes, np.linspace(0.95, 0.3, n).astype(np.float32), classes)
    if not with_tasks:
        return FrameResult(dets, tuple(DEMO[c] for c in classes))
    weather = np.array([0.1, 0.15, 0.7, 0.04, 0.01], np.float32)
    scene = np.array([0.4, 0.6], np.float32)
    return FrameResult(
        dets,
        tuple(DEMO[c] for c in classes),
        {
            "weather": Classification("rainy", 2, 0.7, weather),
            "scene": Classification("city street", 1, 0.6, scene),
        },
        {"curvature": 0.0123},
    )


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(r, h: int, w: int) -> bool:
    return 0 <= r[0] < r[2] <= w and 0 <= r[1] < r[3] <= h


# ---- label placement ------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(360, 640), (1080, 1920)])
def test_crowded_labels_never_overlap_and_stay_inside(hw) -> None:
    h, w = hw
    boxes = _crowd(w, h) * np.float32(w / 640)
    st = Style.for_frame(h, w)
    sizes = [st.tag_size(f"{DEMO[k % 6]} 0.{90 - k}") for k in range(len(boxes))]
    panel = (10, 10, 200 * w // 640, 80 * h // 360)
    rects = place_labels(boxes, sizes, (h, w), occupied=[panel])
    assert len(rects) == len(boxes)
    for r, (lw, lh) in zip(rects, sizes):
        assert _inside(r, h, w), r
        assert (r[2] - r[0], r[3] - r[1]) == (lw, lh)  # tags keep their size
        assert not _overlaps(r, panel)
    for a, b in itertools.combinations(rects, 2):
        assert not _overlaps(a, b), (a, b)


def test_tag_prefers_above_then_inside_top_then_below() -> None:
    size = [(50, 20)]
    assert place_labels(np.array([[100, 100, 200, 200]]), size, (360, 640)) == [(100, 80, 150, 100)]
    # at the top edge: inside the box's top edge
    assert place_labels(np.array([[100, 0, 200, 200]]), size, (360, 640)) == [(100, 0, 150, 20)]
    # at the right edge: moved left into the frame
    assert place_labels(np.array([[620, 100, 640, 200]]), size, (360, 640)) == [(590, 80, 640, 100)]
    # above and inside taken by earlier tags: below the box
    taken = [(100, 80, 150, 100), (100, 100, 150, 120)]
    got = place_labels(np.array([[100, 100, 200, 200]]), size, (360, 640), occupied=taken)
    assert got == [(100, 200, 150, 220)]


def test_no_free_spot_keeps_the_tag_inside_the_frame() -> None:
    full = [(0, 0, 64, 48)]  # the whole frame is occupied
    (r,) = place_labels(np.array([[50, 5, 60, 20]]), [(30, 10)], (48, 64), occupied=full)
    assert _inside(r, 48, 64) and r == (34, 0, 64, 10)
    (big,) = place_labels(np.array([[0, 10, 10, 20]]), [(100, 10)], (48, 64))
    assert big == (0, 0, 64, 10)  # a tag wider than the frame is cut to it


# ---- colours --------------------------------------------------------------------------------


def test_palette_colours_are_far_apart_in_lab() -> None:
    assert len(PALETTE) == 20
    rgb = PALETTE[None, :, ::-1].astype(np.float32) / 255
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0]
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 25  # CIE76 delta E: clearly different at a glance
    light, sign, car, truck = (
        DEMO.index(n) for n in ("traffic light", "traffic sign", "car", "truck")
    )
    assert dist[light, sign] > 60 and dist[car, truck] > 60
    assert class_color(20) == class_color(0)  # wraps past 20 classes


def test_tag_text_contrasts_with_every_class_colour() -> None:
    for k in range(len(PALETTE)):
        fill = class_color(k)
        assert contrast_ratio(fill, text_color(fill)) >= 4.5  # WCAG AA for normal text
    assert text_color((255, 255, 255)) == (0, 0, 0) and text_color((0, 0, 0)) == (255, 255, 255)


def test_sizes_follow_the_frame() -> None:
    small, big = Style.for_frame(360, 640), Style.for_frame(1080, 1920)
    assert big.line > small.line >= 2 and big.font > 2 * small.font
    assert small.tag_size("car 0.91")[1] >= 14  # readable at 360p
    assert Style.for_frame(32, 32).line == 1


# ---- the drawn frame ------------------------------------------------------------------------


def test_overlay_returns_a_new_image_and_leaves_the_input_alone() -> None:
    image = np.full((360, 640, 3), 128, np.uint8)
    before = image.copy()
    out = draw_overlay(image, _result(_crowd()), fps=29.7, tasks=TASKS)
    assert out is not image and out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    assert (out != image).any(axis=2).mean() > 0.05


def test_panel_lists_every_task_with_probabilities_units_and_fps() -> None:
    result = _result(np.zeros((0, 4), np.float32))
    rows = panel_rows(result, 29.7, TASKS)
    assert [r[0] for r in rows] == ["weather", "scene", "curvature", "FPS"]
    weather = rows[0]
    assert weather[1] == "rainy 0.70" and weather[3] == "overcast 0.15"
    np.testing.assert_allclose(weather[2], [0.7, 0.15, 0.1])  # top-3 for the bar
    assert rows[1][3] == "highway 0.40"
    assert rows[2][1] == "+0.0123 1/m" and rows[2][2] is None
    assert rows[3][1] == "29.7"
    # without the model's task list: no runner-up names, no units
    bare = panel_rows(result, None)
    assert [r[0] for r in bare] == ["weather", "scene", "curvature"]
    assert bare[0][3] == "" and bare[2][1] == "+0.0123"


def test_panel_draws_each_row_over_its_rectangle_only() -> None:
    h, w = 360, 640
    image = np.full((h, w, 3), 128, np.uint8)
    result = _result(np.zeros((0, 4), np.float32))
    out = draw_overlay(image, result, fps=12.0, tasks=TASKS)
    st = Style.for_frame(h, w)
    rows = panel_rows(result, 12.0, TASKS)
    (x1, y1, x2, y2), xs = panel_rect(rows, st, (h, w))
    changed = (out != image).any(axis=2)
    assert changed[y1:y2, x1:x2].mean() > 0.98  # darkened under the panel (text may hit 128)
    assert (out[y1, x1] == round(128 * PANEL_DARKEN)).all() and (out[y2 - 1, x2 - 1] < 128).all()
    changed[y1:y2, x1:x2] = False
    assert not changed.any()  # and nowhere else (no detections)
    panel = out[y1:y2, x1:x2].max(axis=2)
    line_h = st.tag_size("Ag")[1]
    for i in range(len(rows)):  # every row's name column holds bright text
        band = panel[i * line_h : (i + 1) * line_h, xs[0] - x1 : xs[1] - x1]
        assert (band > 150).sum() > 10, rows[i][0]


def test_frame_without_detections_or_tasks_still_draws() -> None:
    image = np.full((48, 64, 3), 90, np.uint8)
    empty = FrameResult()
    np.testing.assert_array_equal(draw_overlay(image, empty), image)
    with_fps = draw_overlay(image, empty, fps=30.0)
    assert (with_fps != image).any()
    only_boxes = draw_overlay(image, _result(np.array([[5, 5, 40, 40]], np.float32), False))
    assert (only_boxes != image).any()
