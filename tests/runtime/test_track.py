"""The tracker (Kalman filter + two-stage association), its assignment solver and the temporal
smoother, on hand-made sequences whose right answers are known."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edge_mtl.runtime import kalman
from edge_mtl.runtime.assign import linear_assignment, solve_dense
from edge_mtl.runtime.decoders import Classification
from edge_mtl.runtime.smooth import Smoother, ema_alpha
from edge_mtl.runtime.track import Tracker, TrackerConfig


def _box(cx: float, cy: float, w: float = 20.0, h: float = 20.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _step(tr: Tracker, boxes, scores, classes, t: float) -> list[int]:
    info = tr.update(np.array(boxes, float).reshape(-1, 4), scores, classes, t)
    return info.ids.tolist()


# ---- assignment ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 3), (4, 2), (5, 5), (3, 6)])
def test_solver_matches_brute_force(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.uniform(0, 1, shape)
        cost[rng.uniform(0, 1, shape) < 0.3] = np.inf  # gated pairs
        rows, cols = linear_assignment(cost, 0.9)
        assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert np.all(cost[rows, cols] <= 0.9)
        best = _brute_force(cost, 0.9)
        assert (len(rows), cost[rows, cols].sum()) == (best[0], pytest.approx(best[1]))


def _brute_force(cost: np.ndarray, max_cost: float) -> tuple[int, float]:
    """(most pairs of cost <= max_cost, least summed cost among those) by trying every map."""
    n, m = cost.shape
    best = (0, 0.0)
    for k in range(min(n, m), 0, -1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                c = cost[list(rows), list(cols)]
                if np.all(c <= max_cost) and (k > best[0] or c.sum() < best[1]):
                    best = (k, float(c.sum()))
        if best[0]:
            return best
    return best


def test_solve_dense_finds_the_cheaper_crossed_pairing() -> None:
    cost = np.array([[0.1, 0.2], [0.15, 0.9]])  # greedy row by row would pick 0.1 + 0.9
    assert solve_dense(cost).tolist() == [1, 0]


# ---- Kalman filter ---------------------------------------------------------------------------


def test_kalman_learns_a_constant_velocity() -> None:
    mean, cov = kalman.initiate(np.array([[100.0, 50.0, 20.0, 10.0]]))
    for i in range(1, 15):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, np.array([[100.0 + 4 * i, 50.0 - 2 * i, 20, 10]]))
    mean, _ = kalman.predict(mean, cov)
    assert mean[0, 4:6] == pytest.approx([4.0, -2.0], abs=0.2)
    assert mean[0, :2] == pytest.approx([160.0, 20.0], abs=1.0)  # frame 15 predicted


# ---- tracker ---------------------------------------------------------------------------------


def test_two_objects_crossing_keep_their_ids() -> None:
    """Two cars cross: one moves right, one left, overlapping in the middle frames."""
    tr = Tracker()
    seen = []
    for f in range(21):
        a, b = _box(20 + 8 * f, 50), _box(180 - 8 * f, 56)
        seen.append(_step(tr, [a, b], [0.9, 0.9], [0, 0], f / 10))
    assert seen[0] == [1, 2]  # the first frame confirms at once
    assert all(ids == [1, 2] for ids in seen)


def test_an_occlusion_of_a_few_frames_keeps_the_id() -> None:
    tr = Tracker(TrackerConfig(max_lost_s=1.0))
    ids = []
    for f in range(20):
        hidden = 8 <= f < 12  # 0.4 s behind something
        boxes = [] if hidden else [_box(30 + 6 * f, 40)]
        ids.append(_step(tr, boxes, [0.8] * len(boxes), [0] * len(boxes), f / 10))
    assert all(i == [1] for i in ids[:8] + ids[12:])
    assert tr.track_count == 1


def test_a_long_absence_ends_the_track_and_a_new_id_follows() -> None:
    tr = Tracker(TrackerConfig(max_lost_s=0.3))
    for f in range(5):
        _step(tr, [_box(50, 50)], [0.9], [0], f / 10)
    for f in range(5, 10):
        _step(tr, [], [], [], f / 10)
    out = [_step(tr, [_box(50, 50)], [0.9], [0], f / 10) for f in (10, 11)]
    assert out == [[-1], [2]]  # tentative first, confirmed at its second hit
    assert tr.track_lengths() == [5, 2]


def test_a_low_score_frame_continues_the_track_but_never_starts_one() -> None:
    tr = Tracker()
    scores = [0.9, 0.9, 0.3, 0.3, 0.9]  # the box turns faint for two frames
    ids = [_step(tr, [_box(40 + 3 * f, 40)], [s], [1], f / 30) for f, s in enumerate(scores)]
    assert ids == [[1]] * 5
    fresh = Tracker()
    faint = [_step(fresh, [_box(40, 40)], [0.3], [1], f / 30) for f in range(3)]
    assert faint == [[-1]] * 3 and fresh.track_count == 0


def test_association_is_per_class_and_births_wait_for_min_hits() -> None:
    tr = Tracker(TrackerConfig(min_hits=3))
    _step(tr, [_box(50, 50)], [0.9], [0], 0.0)  # first frame: confirmed at once (#1)
    # a person where the car was, and a new car elsewhere: the person must not take #1
    out = [_step(tr, [_box(50, 50), _box(150, 50)], [0.9, 0.9], [3, 0], f / 10) for f in (1, 2, 3)]
    assert out[0] == [-1, -1] and out[1] == [-1, -1]
    assert out[2] == [2, 3]  # both confirmed at their third hit; #1 lost (no car there)


def test_ages_and_trails_follow_the_track() -> None:
    tr = Tracker(TrackerConfig(trail_s=0.25))
    for f in range(6):
        info = tr.update(np.array([_box(10 + 10 * f, 20)]), [0.9], [0], f / 10)
    assert info.ages.tolist() == [6]
    trail = info.trail(0)
    assert trail.tolist() == [[30.0, 20.0], [40.0, 20.0], [50.0, 20.0], [60.0, 20.0]][-3:]


def test_a_frame_without_detections_returns_empty_arrays() -> None:
    info = Tracker().update(np.zeros((0, 4)), [], [], 0.0)
    assert info.ids.shape == (0,) and info.ages.shape == (0,) and info.trails.shape[0] == 0


# ---- smoothing -------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [10.0, 30.0])
def test_a_step_reaches_63_percent_after_one_time_constant(fps: float) -> None:
    sm = Smoother(tau_s=0.5)
    sm.update({}, {"curv": 0.0}, 0.0)
    n = round(0.5 * fps)
    for i in range(1, n + 1):
        _, r = sm.update({}, {"curv": 1.0}, i / fps)
    assert r["curv"] == pytest.approx(1 - math.exp(-1), abs=1e-9)


def test_alpha_comes_from_the_time_step() -> None:
    assert ema_alpha(0.1, 0.5) == pytest.approx(1 - math.exp(-0.2))
    assert ema_alpha(math.inf, 0.5) == 1.0 and ema_alpha(0.1, 0.0) == 1.0


def _cls(probs: list[float]) -> Classification:
    p = np.array(probs, np.float32)
    return Classification(str(int(p.argmax())), int(p.argmax()), float(p.max()), p)


def test_hysteresis_suppresses_a_one_frame_flip_and_follows_a_lasting_change() -> None:
    sm = Smoother(tau_s=0.5, margin=0.1, classes={"weather": ("clear", "rainy")})
    labels = []
    seq = [[0.8, 0.2]] * 10 + [[0.1, 0.9]] + [[0.8, 0.2]] * 10 + [[0.1, 0.9]] * 20
    for i, probs in enumerate(seq):
        c, _ = sm.update({"weather": _cls(probs)}, {}, i / 10)
        labels.append(c["weather"].label)
    assert labels[:21] == ["clear"] * 21  # the single rainy frame (10) never shows
    assert labels[-1] == "rainy"
    switch = labels.index("rainy")
    assert 21 < switch < 41 and labels[switch:] == ["rainy"] * (len(labels) - switch)


def test_hysteresis_holds_the_label_through_a_near_tie() -> None:
    """Two classes near a tie, wobbling: without a margin the smoothed label flips back and
    forth; with one it stays."""
    seq = [[0.56, 0.44], [0.44, 0.56]] * 3 + [[0.47, 0.53], [0.53, 0.47]] * 15

    def changes(margin: float) -> int:
        sm = Smoother(tau_s=0.05, margin=margin)
        labels = [sm.update({"w": _cls(p)}, {}, i / 10)[0]["w"].index for i, p in enumerate(seq)]
        return sum(a != b for a, b in itertools.pairwise(labels))

    assert changes(0.0) >= 20
    assert changes(0.1) == 0


def test_the_tracker_matches_by_the_postprocess_iou() -> None:
    from edge_mtl.runtime import postprocess, track
    from edge_mtl.runtime.postprocess import box_iou_matrix

    assert track.box_iou_matrix is postprocess.box_iou_matrix  # one IoU, NMS's and the tracker's

    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 50, (7, 2)), rng.uniform(0, 50, (5, 2))
    a = np.concatenate([a, a + rng.uniform(0, 20, (7, 2))], 1)
    b = np.concatenate([b, b + rng.uniform(0, 20, (5, 2))], 1)
    b[0] = a[0]  # identical boxes: IoU 1
    b[1, 2:] = b[1, :2]  # a zero-area box: IoU 0
    assert box_iou_matrix(a, b)[0, 0] == 1.0 and not box_iou_matrix(a, b)[:, 1].any()


def _approaching_car(tr: Tracker) -> set[int]:
    """A car 5 m right of the camera's path, 30 m ahead and closing at 0.6 m per frame (30 FPS),
    seen through a 420 px focal length: in the image it speeds up and grows, as near objects do.
    It is hidden for a third of a second (frames 25-34); returns the IDs it was given."""
    ids = set()
    for f in range(40):
        z = 30.0 - 0.6 * f
        u, bottom, w, h = 320 + 420 * 5.0 / z, 150 + 420 * 1.5 / z, 420 * 1.8 / z, 420 * 1.5 / z
        boxes = [] if 25 <= f < 35 else [[u - w / 2, bottom - h, u + w / 2, bottom]]
        ids.update(_step(tr, boxes, [0.9] * len(boxes), [0] * len(boxes), f / 30))
    return ids - {-1}


def test_a_car_speeding_up_in_the_image_keeps_its_id_after_an_occlusion() -> None:
    assert _approaching_car(Tracker()) == {1}
    # the constant-velocity prediction falls behind: by plain IoU the car comes back as new
    assert _approaching_car(Tracker(TrackerConfig(lost_buffer=0.0))) == {1, 2}


def test_buffered_iou_without_padding_is_the_iou() -> None:
    from edge_mtl.runtime.postprocess import box_iou_matrix
    from edge_mtl.runtime.track import buffered_iou

    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 50, (4, 2)), rng.uniform(0, 50, (6, 2))
    a = np.concatenate([a, a + rng.uniform(1, 20, (4, 2))], 1)
    b = np.concatenate([b, b + rng.uniform(1, 20, (6, 2))], 1)
    np.testing.assert_allclose(buffered_iou(a, b, np.zeros(4)), box_iou_matrix(a, b))
    far = np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([[20.0, 0.0, 30.0, 10.0]])
    assert buffered_iou(*far, np.array([0.0]))[0, 0] == 0
    assert buffered_iou(*far, np.array([0.5]))[0, 0] == 0  # grown to 20 x 20: just touching
    assert buffered_iou(*far, np.array([1.0]))[0, 0] == pytest.approx(300 / 1500)  # 30 x 30


def test_a_lost_track_passing_over_a_seen_one_does_not_take_its_box() -> None:
    """Car A stands still, its box size wavering; car B drives left along the same row and is
    lost 0.3 s before its prediction crosses A. Grown by the buffer, B's box would outbid A's
    own track for A's box; seen tracks choose first, so A keeps its ID throughout."""
    tr = Tracker()
    a_ids = []
    for f in range(30):
        w = 20.0 if f % 2 else 24.0
        boxes, classes = [_box(100, 50, w, w)], [0]
        if f < 10:
            boxes.append(_box(200 - 5 * f, 50))
            classes.append(0)
        a_ids.append(_step(tr, boxes, [0.9] * len(boxes), classes, f / 30)[0])
    assert set(a_ids) == {1}


def _behind(truck_bottom: float | None, config: TrackerConfig | None = None) -> set[int]:
    """A car (20 px, bottom edge at y 110) drives right at 2 px a frame (30 FPS) and is out of
    sight for 1.5 s (frames 10-54). ``truck_bottom``: a truck's box spans x 80-200 with its
    bottom edge there (None: no truck). Returns the IDs the car was given."""
    tr, ids = Tracker(config), set()
    for f in range(70):
        car = [] if 10 <= f < 55 else [_box(60 + 2 * f, 100)]
        truck = [] if truck_bottom is None else [[80.0, truck_bottom - 90, 200.0, truck_bottom]]
        classes = [0] * len(car) + [1] * len(truck)
        out = _step(tr, car + truck, [0.9] * len(classes), classes, f / 30)
        ids.update(out[: len(car)])
    return ids - {-1}


def test_a_car_hidden_behind_a_nearer_truck_keeps_its_id_for_longer() -> None:
    assert _behind(140.0) == {1}  # the truck is nearer (lower bottom edge): twice the 1 s
    assert _behind(140.0, TrackerConfig(hidden_factor=1.0)) == {1, 3}  # truck is #2
    assert _behind(None) == {1, 2}  # gone in the open: 1 s budget
    assert _behind(100.0) == {1, 3}  # a farther truck hides nothing
