"""The annotated frame: pixel tasks as translucent colour (drivable area, lane markings) under
boxes in a colour per class, labels on filled tags that never overlap each other or leave the
frame, and a panel with every task's answer and the FPS.

Everything scales with the frame (readable from 360p to 1080p) and costs little per frame:
OpenCV drawing calls, label placement in numpy, the panel blended over its own rectangle only,
the class maps coloured through one lookup table and blended once over the rows they cover.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge_mtl.runtime.engine import FrameResult
from edge_mtl.runtime.metadata import TaskMeta
from edge_mtl.runtime.segment import SegMap

FONT = cv2.FONT_HERSHEY_SIMPLEX
Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 pixels, end exclusive

# 20 well-separated colours (BGR) indexed by class id modulo 20; the first six (the demo's car,
# truck, bus, person, traffic light, traffic sign) are red, green, yellow, blue, cyan, magenta.
# Any two differ by at least 25 in CIE L*a*b* (tests/runtime/test_overlay.py checks it).
_HEX = [
    "e6194b", "3cb44b", "ffe119", "4363d8", "42d4f4", "f032e6", "f58231", "911eb4", "bfef45",
    "fabed4", "469990", "dcbeff", "9a6324", "ffffff", "800000", "aaffc3", "808000", "ffd8b1",
    "0000ff", "a9a9a9",
]  # fmt: skip
PALETTE = np.array([[int(h[i : i + 2], 16) for i in (4, 2, 0)] for h in _HEX], np.uint8)
PANEL_DARKEN = 0.35  # the panel keeps this share of the frame's brightness beneath it
SEG_ALPHA = 0.45  # pixel-task colour's share of a coloured pixel; the frame keeps the rest
# BGR colours of the pixel classes the built-in configs name; other classes take PALETTE colours
SEG_COLORS = {"direct": (75, 180, 60), "alternative": (216, 99, 67), "lane": (25, 225, 255)}


def class_color(class_id: int) -> tuple[int, int, int]:
    """BGR colour of a class id (the palette wraps past 20 classes)."""
    return tuple(int(c) for c in PALETTE[int(class_id) % len(PALETTE)])  # type: ignore[return-value]


def _luminance(bgr: Sequence[int]) -> float:
    """WCAG relative luminance of a BGR colour, 0 (black) to 1 (white)."""
    c = np.asarray(bgr, np.float64)[::-1] / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(lin @ (0.2126, 0.7152, 0.0722))


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG contrast ratio of two BGR colours, 1 (same) to 21 (black on white)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@functools.lru_cache(maxsize=256)
def text_color(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts more with ``fill`` (BGR)."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast_ratio(fill, black) >= contrast_ratio(fill, white) else white


@dataclass(frozen=True)
class Style:
    """Sizes for one frame size: box line and text thickness, font scale, tag padding (px)."""

    line: int
    text: int
    font: float
    pad: int

    @staticmethod
    def for_frame(h: int, w: int) -> Style:
        """Scaled by the shorter side: at 360 px a 2 px line and ~10 px text, at 1080 px a
        4 px line and ~26 px text."""
        s = min(h, w)
        font = float(np.clip(s / 900, 0.4, 2.0))
        return Style(
            max(1, round(s / 240)), max(1, round(font * 1.6)), font, max(2, round(s / 180))
        )

    def tag_size(self, text: str) -> tuple[int, int]:
        """(width, height) px of a filled tag holding ``text``."""
        (tw, th), base = cv2.getTextSize(text, FONT, self.font, self.text)
        return tw + 2 * self.pad, th + base + 2 * self.pad


def _free(cands: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """(M,) True where candidate rect (M, 4) overlaps none of ``placed`` (P, 4)."""
    if len(placed) == 0:
        return np.ones(len(cands), bool)
    c, p = cands[:, None, :], placed[None, :, :]
    hit = (c[..., 0] < p[..., 2]) & (p[..., 0] < c[..., 2])
    hit &= (c[..., 1] < p[..., 3]) & (p[..., 1] < c[..., 3])
    return ~hit.any(axis=1)


def _anchors(box: np.ndarray, lw: int, lh: int, fw: int, fh: int) -> np.ndarray:
    """Tag rects (M, 4) by preference: above the box, inside its top edge, below it (x moved
    into the frame; those leaving the frame at the top or bottom dropped)."""
    x1, y1, _, y2 = (round(float(v)) for v in box)
    x = min(max(x1, 0), max(fw - lw, 0))
    tl = np.array([(x, y1 - lh), (x, y1), (x, y2)], np.int64)
    tl = tl[(tl[:, 1] >= 0) & (tl[:, 1] + lh <= fh)]
    return np.concatenate([tl, tl + np.array((lw, lh))], 1)


def _grid(box: np.ndarray, lw: int, lh: int, fw: int, fh: int) -> np.ndarray:
    """Every tag rect (M, 4) on a grid over the frame (steps of a quarter tag width and half
    its height), nearest the spot above the box first (vertical moves count double)."""
    x = min(max(round(float(box[0])), 0), max(fw - lw, 0))
    y = round(float(box[1])) - lh
    xs = np.arange(0, max(fw - lw, 0) + 1, max(lw // 4, 1))
    ys = np.arange(0, max(fh - lh, 0) + 1, max(lh // 2, 1))
    gx, gy = (g.ravel() for g in np.meshgrid(xs, ys))
    order = np.argsort(np.abs(gx - x) + 2 * np.abs(gy - y), kind="stable")
    tl = np.stack([gx[order], gy[order]], 1).astype(np.int64)
    return np.concatenate([tl, tl + np.array((lw, lh))], 1)


def place_labels(
    boxes: np.ndarray,
    sizes: Sequence[tuple[int, int]],
    frame_hw: tuple[int, int],
    occupied: Sequence[Rect] = (),
) -> list[Rect]:
    """Greedy tag placement: tag ``k`` of size ``sizes[k]`` (w, h) px for box ``boxes[k]`` (xyxy
    frame pixels) goes above its box, else inside its top edge, else below it, else to the
    nearest free spot of a grid over the frame: the first that overlaps no tag placed before it
    nor ``occupied`` (the task panel) and lies inside the frame. Earlier boxes get the better
    spots, so pass them by descending score. When no spot is free the tag stays above its box,
    inside the frame (a tag larger than the frame is cut to it). Returns one rect per box."""
    fh, fw = frame_hw
    placed = np.array(list(occupied), np.int64).reshape(-1, 4)
    out: list[Rect] = []
    for box, (lw, lh) in zip(np.asarray(boxes, np.float64).reshape(-1, 4), sizes):
        lw, lh = min(int(lw), fw), min(int(lh), fh)
        rect = None
        for where in (_anchors, _grid):  # the grid only when no anchor is free
            cands = where(box, lw, lh, fw, fh)
            ok = np.flatnonzero(_free(cands, placed))
            if len(ok):
                rect = tuple(int(v) for v in cands[ok[0]])
                break
        if rect is None:
            x = min(max(round(float(box[0])), 0), fw - lw)
            y = min(max(round(float(box[1])) - lh, 0), fh - lh)
            rect = (x, y, x + lw, y + lh)
        out.append(rect)  # type: ignore[arg-type]
        placed = np.vstack([placed, np.array(rect, np.int64)[None]])
    return out


def _draw_tag(out: np.ndarray, rect: Rect, text: str, fill: tuple[int, int, int], st: Style):
    x1, y1, x2, y2 = rect
    cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), fill, -1)
    base = cv2.getTextSize(text, FONT, st.font, st.text)[1]
    org = (x1 + st.pad, y2 - st.pad - base)
    cv2.putText(out, text, org, FONT, st.font, text_color(fill), st.text, cv2.LINE_AA)


def _leader(out: np.ndarray, rect: Rect, box: np.ndarray, color, st: Style) -> None:
    """A thin line from a tag placed away from its box to the box's nearest point."""
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    rx1, ry1, rx2, ry2 = rect
    cx, cy = (rx1 + rx2) // 2, (ry1 + ry2) // 2
    px, py = min(max(cx, x1), x2), min(max(cy, y1), y2)
    tx, ty = min(max(px, rx1), rx2 - 1), min(max(py, ry1), ry2 - 1)
    if abs(px - tx) + abs(py - ty) > st.line:
        cv2.line(out, (tx, ty), (px, py), color, max(1, st.line // 2), cv2.LINE_AA)


def _trail(out: np.ndarray, pts: np.ndarray, color, st: Style) -> None:
    """A track's recent box centres (T, 2) frame pixels as a line, oldest end thinnest."""
    p = np.round(pts).astype(np.int32)
    for i in range(1, len(p)):
        w = max(1, round(st.line * i / len(p)))
        cv2.line(out, tuple(p[i - 1].tolist()), tuple(p[i].tolist()), color, w, cv2.LINE_AA)


def panel_rows(
    result: FrameResult, fps: float | None = None, tasks: Sequence[TaskMeta] = ()
) -> list[tuple[str, str, np.ndarray | None, str]]:
    """The panel's rows, one per task then FPS: (task name, answer, top-3 probabilities or
    None, runner-up). A classification reads "rainy 0.82" with its top-3 probabilities for the
    bar and, when ``tasks`` names its classes, "overcast 0.12" as runner-up; a regression reads
    its value with the unit from ``tasks`` ("0.0123 1/m"); a pixel task the share of the frame
    its classes but the background cover ("41.2%"), per class when it has several."""
    meta = {t.name: t for t in tasks}
    rows: list[tuple[str, str, np.ndarray | None, str]] = []
    # --smooth: the panel shows the steady answers
    shown = {**result.classifications, **result.smoothed_classifications}
    for name, c in shown.items():
        probs = np.asarray(c.probs, np.float32).reshape(-1)
        top = np.argsort(-probs, kind="stable")[:3]
        classes = meta[name].classes if name in meta else ()
        second = ""
        if len(top) > 1 and int(top[1]) < len(classes):
            second = f"{classes[int(top[1])]} {float(probs[top[1]]):.2f}"
        rows.append((name, f"{c.label} {c.prob:.2f}", probs[top], second))
    for name, v in {**result.regressions, **result.smoothed_regressions}.items():
        unit = meta[name].unit if name in meta else ""
        rows.append((name, f"{v:+.4g}" + (f" {unit}" if unit else ""), None, ""))
    for name, m in result.segmentations.items():  # share of the frame, per class if several
        parts = list(m.fractions().items())[1:]
        each = "  ".join(f"{n} {f:.0%}" for n, f in parts) if len(parts) > 1 else ""
        rows.append((name, f"{m.foreground()[0]:.1%}", None, each))
    if fps is not None:
        rows.append(("FPS", f"{fps:.1f}", None, ""))
    return rows


def _bar(out: np.ndarray, x: int, y: int, w: int, h: int, probs: np.ndarray) -> None:
    """Stacked bar of the top-3 probabilities (bright to dim) over a dark track, w x h px."""
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (70, 70, 70), -1)
    shades = ((255, 255, 255), (170, 170, 170), (110, 110, 110))
    for p, shade in zip(probs, shades):
        dx = round(float(p) * w)
        if dx > 0:
            cv2.rectangle(out, (x, y), (x + dx - 1, y + h - 1), shade, -1)
        x += dx
        w -= dx


def panel_rect(rows: list, st: Style, frame_hw: tuple[int, int]) -> tuple[Rect, list[int]]:
    """The panel's rect (top-left, inside the frame) and the x of each column in it."""
    if not rows:
        return (0, 0, 0, 0), []
    m = st.pad * 2
    text_w = [[cv2.getTextSize(s, FONT, st.font, st.text)[0][0] for s in (a, b, d)]
              for a, b, _, d in rows]  # fmt: skip
    cols = [max(ws[i] for ws in text_w) for i in range(3)]
    bar_w = 5 * st.tag_size("0")[1] if any(r[2] is not None for r in rows) else 0
    xs = [m + st.pad]
    for w in (cols[0], cols[1], bar_w):
        xs.append(xs[-1] + w + (2 * st.pad if w else 0))
    line_h = st.tag_size("Ag")[1]
    fh, fw = frame_hw
    x2 = min(xs[3] + cols[2] + st.pad, fw)
    y2 = min(m + len(rows) * line_h + st.pad, fh)
    return (min(m, fw), min(m, fh), x2, y2), xs


def draw_panel(out: np.ndarray, rows: list, st: Style) -> Rect:
    """Draw the task panel in place (see :func:`panel_rows`); returns its rect."""
    rect, xs = panel_rect(rows, st, out.shape[:2])
    x1, y1, x2, y2 = rect
    if x2 <= x1 or y2 <= y1:
        return rect
    roi = out[y1:y2, x1:x2]
    roi[:] = cv2.convertScaleAbs(roi, alpha=PANEL_DARKEN)
    line_h = st.tag_size("Ag")[1]
    th = cv2.getTextSize("Ag", FONT, st.font, st.text)[0][1]
    for i, (name, answer, probs, second) in enumerate(rows):
        top = y1 + st.pad // 2 + i * line_h
        base_y = top + st.pad + th
        for x, text, color in ((xs[0], name, (200, 200, 200)), (xs[1], answer, (255, 255, 255)),
                               (xs[3], second, (170, 170, 170))):  # fmt: skip
            if text:
                cv2.putText(out, text, (x, base_y), FONT, st.font, color, st.text, cv2.LINE_AA)
        if probs is not None:
            _bar(out, xs[2], top + st.pad, xs[3] - xs[2] - 2 * st.pad, th, probs)
    return rect


def seg_lut(segmentations: dict[str, SegMap]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The colours of the pixel tasks' classes: a (256, 1, 3) uint8 BGR table (entry 0 = no
    colour) and, per task, a (256,) uint8 table from its class index to its entry. Background
    (class 0) maps to 0; tasks later in the dict get higher entries, so they win where maps
    overlap (lanes over the drivable area)."""
    table = np.zeros((256, 1, 3), np.uint8)
    per_task, n = [], 1
    for m in segmentations.values():
        k = max(len(m.labels), 2)
        if n + k - 1 > 256:
            break
        to_entry = np.zeros(256, np.uint8)
        for c in range(1, k):
            name = m.labels[c] if c < len(m.labels) else ""
            table[n, 0] = SEG_COLORS.get(name, class_color(n + 5))
            to_entry[c], n = n, n + 1
        per_task.append(to_entry)
    return table, per_task


def draw_segmentations(out: np.ndarray, segmentations: dict[str, SegMap]) -> None:
    """Colour the pixel tasks' classes into ``out`` (uint8 BGR HWC, in place): the class maps are
    mapped to colour-table entries and merged (later tasks on top), then resized to ``out``
    once (nearest neighbour, only when the sizes differ), coloured through a lookup table per
    channel and blended at :data:`SEG_ALPHA` over the band of rows that has colour; background
    pixels stay as they were. About 0.4 ms for two tasks on a 360x640 frame (2-vCPU EPYC Zen 4)."""
    if not segmentations:
        return
    h, w = out.shape[:2]
    table, per_task = seg_lut(segmentations)
    maps = [m.classes for m in segmentations.values()][: len(per_task)]
    if not maps:
        return
    shared = all(c.shape == maps[0].shape for c in maps)  # merged first, resized once
    entries = None
    for c, to_entry in zip(maps, per_task):
        if not shared and c.shape != (h, w):
            c = cv2.resize(np.ascontiguousarray(c), (w, h), interpolation=cv2.INTER_NEAREST)
        e = cv2.LUT(c, to_entry)  # uint8 colour-table entry per pixel, 0 = none
        entries = e if entries is None else np.maximum(entries, e)
    assert entries is not None
    if entries.shape != (h, w):
        entries = cv2.resize(entries, (w, h), interpolation=cv2.INTER_NEAREST)
    rows = np.flatnonzero(entries.any(1))
    if len(rows) == 0:
        return
    band = slice(int(rows[0]), int(rows[-1]) + 1)  # a sky without colour costs nothing
    e = entries[band]
    # three 1-channel LUTs and a merge: 4x faster than one 3-channel LUT
    colour = cv2.merge([cv2.LUT(e, table[:, 0, i].copy()) for i in range(3)])
    blended = cv2.addWeighted(out[band], 1.0 - SEG_ALPHA, colour, SEG_ALPHA, 0.0)
    cv2.copyTo(blended, e, out[band])


def draw_overlay(
    image: np.ndarray,
    result: FrameResult,
    fps: float | None = None,
    *,
    tasks: Sequence[TaskMeta] = (),
) -> np.ndarray:
    """A copy of ``image`` (uint8 BGR HWC) with boxes, class-coloured label tags ("car 0.91";
    "#12 car 0.91" with a track ID, whose last second of box centres is drawn as a trail), the
    task panel (top-left, the smoothed answers where there are) and FPS drawn on; ``image`` is
    left unchanged. ``tasks`` (the
    engine's ``meta.tasks``) is optional: it adds the runner-up class names of classifications
    and the units of regressions to the panel."""
    out = image.copy()
    draw_segmentations(out, result.segmentations)  # under everything else
    h, w = out.shape[:2]
    st = Style.for_frame(h, w)
    d = result.detections
    boxes = np.asarray(d.boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(d.scores, np.float64), kind="stable")
    colors = [class_color(int(c)) for c in d.classes]
    corners = np.round(boxes).astype(np.int64)
    for k in order[::-1]:  # highest score drawn last, on top
        x1, y1, x2, y2 = (int(v) for v in corners[k])
        cv2.rectangle(out, (x1, y1), (x2, y2), colors[k], st.line)
    tracks = result.tracks
    if tracks is not None:
        for k in order[::-1]:
            _trail(out, tracks.trail(int(k)), colors[k], st)
    panel = draw_panel(out, panel_rows(result, fps, tasks), st)
    ids = tracks.ids.tolist() if tracks is not None else [-1] * len(d)
    texts = [
        ("" if ids[k] < 0 else f"#{ids[k]} ") + f"{result.det_labels[k]} {float(d.scores[k]):.2f}"
        for k in order
    ]
    occupied = [panel] if panel[2] > panel[0] else []
    rects = place_labels(boxes[order], [st.tag_size(t) for t in texts], (h, w), occupied)
    for k, rect in zip(order, rects):  # leaders under every tag
        _leader(out, rect, boxes[k], colors[k], st)
    for k, rect, text in zip(order, rects, texts):
        _draw_tag(out, rect, text, colors[k], st)
    return out


__all__ = [
    "PALETTE",
    "Style",
    "class_color",
    "contrast_ratio",
    "draw_overlay",
    "draw_segmentations",
    "panel_rows",
    "place_labels",
    "text_color",
]
