"""``edge-mtl eval-video`` and its parts: MOTChallenge files round-trip; py-motmetrics scores a
perfect tracker 1.0 and less when IDs are swapped; label flicker counts changes; the command
runs end to end on a generated clip with its ground truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_mtl.bench.mot import MotBoxes, mot_rows, read_mot, write_mot
from edge_mtl.bench.video_eval import changes_per_100
from edge_mtl.runtime.errors import InputError


def _truth() -> MotBoxes:
    """Two cars over 20 frames, one moving right, one left (MOT class 1), and a person."""
    rows = []
    for f in range(1, 21):
        xyxy = np.array([[10 + 3 * f, 10, 40 + 3 * f, 30], [200 - 3 * f, 50, 230 - 3 * f, 70],
                         [100, 100, 110, 130]], float)  # fmt: skip
        rows.append(mot_rows(f, [1, 2, 3], xyxy, 1.0, np.array([1, 1, 4]), 0.75))
    return MotBoxes.concat(rows)


def test_mot_files_round_trip(tmp_path) -> None:
    gt = _truth()
    back = read_mot(write_mot(tmp_path / "gt.txt", gt))
    for name in ("frame", "ids", "boxes", "conf", "classes", "visibility"):
        np.testing.assert_allclose(getattr(back, name), getattr(gt, name))
    first = (tmp_path / "gt.txt").read_text().splitlines()[0]
    assert first == "1,1,13.00,10.00,30.00,20.00,1,1,0.75"


def test_a_broken_mot_file_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(InputError, match="line 1 has fewer than 7"):
        read_mot(tmp_path / "bad.txt")


def test_a_perfect_tracker_scores_one_and_swapped_ids_score_less() -> None:
    pytest.importorskip("motmetrics")
    from edge_mtl.bench.video_eval import tracking_scores

    gt = _truth()
    classes = ["car", "truck", "bus", "person"]
    perfect = tracking_scores(gt, gt, 20, classes)
    assert set(perfect) == {"all", "car", "person"}
    for s in perfect.values():
        assert (s["mota"], s["idf1"], s["id_switches"]) == (1.0, 1.0, 0)
    swapped_ids = gt.ids.copy()
    late = gt.frame > 10  # from frame 11 the tracker swaps the two cars' IDs
    swapped_ids[late & (gt.ids == 1)], swapped_ids[late & (gt.ids == 2)] = 2, 1
    hyp = MotBoxes(gt.frame, swapped_ids, gt.boxes, gt.conf, gt.classes, gt.visibility)
    worse = tracking_scores(gt, hyp, 20, classes)
    assert worse["car"]["id_switches"] == 2 and worse["car"]["idf1"] == pytest.approx(0.5)
    assert worse["car"]["mota"] == pytest.approx(1 - 2 / 40)
    assert worse["person"]["idf1"] == 1.0  # untouched
    wrong_class = MotBoxes(gt.frame, gt.ids, gt.boxes, gt.conf, gt.classes * 0 + 2, gt.visibility)
    assert tracking_scores(gt, wrong_class, 20, classes)["all"]["idf1"] == 0.0


def test_pooled_clips_sum_the_counts_behind_mota_and_idf1() -> None:
    pytest.importorskip("motmetrics")
    from edge_mtl.bench.video_eval import pool, tracking_scores

    gt, classes = _truth(), ["car", "truck", "bus", "person"]
    swapped_ids = gt.ids.copy()
    late = gt.frame > 10
    swapped_ids[late & (gt.ids == 1)], swapped_ids[late & (gt.ids == 2)] = 2, 1
    swapped = MotBoxes(gt.frame, swapped_ids, gt.boxes, gt.conf, gt.classes, gt.visibility)

    def report(hyp: MotBoxes, raw: float) -> dict:
        return {
            "frames": 20,
            "tracking": tracking_scores(gt, hyp, 20, classes),
            "detection": {"map50": 0.5, "map": 0.25},
            "flicker": {"weather": {"raw": raw}},
        }

    pooled = pool([report(gt, 1.0), report(swapped, 3.0)])
    car = pooled["tracking"]["car"]
    assert car["clips"] == 2 and car["gt_boxes"] == 80 and car["gt_tracks"] == 4
    assert car["mota"] == pytest.approx(1 - 2 / 80)  # the 2 switches of 80 boxes
    assert car["idf1"] == pytest.approx(2 * 60 / (2 * 60 + 20 + 20))  # 40 + 20 ID-true boxes
    assert car["id_switches_per_100"] == pytest.approx(50.0)
    assert car["hota"] == pytest.approx(
        np.mean([1.0, report(swapped, 0)["tracking"]["car"]["hota"]])
    )
    assert pooled["frames"] == 40 and pooled["flicker"]["weather"]["raw"] == 2.0
    assert pooled["detection"] == {"map50": 0.5, "map": 0.25}


def test_flicker_counts_changes_per_100_frames() -> None:
    assert changes_per_100(["a"] * 50 + ["b"] * 50) == 1.0
    assert changes_per_100(["a", "b"] * 10) == 95.0
    assert changes_per_100(["a"]) == 0.0


def test_synth_video_writes_ground_truth_consistent_with_the_clip(tmp_path, kit) -> None:
    from edge_mtl.cli import main

    clip = tmp_path / "clip.mp4"
    assert main(["synth", "--video", str(clip), "--frames", "40", "--size", "96", "128",
                 "--seed", "11", "--fps", "10"]) == 0  # fmt: skip
    assert kit.count_video_frames(clip) == 40
    gt = read_mot(tmp_path / "clip.gt.txt")
    info = json.loads((tmp_path / "clip.frames.json").read_text())
    assert len(info["frames"]) == 40 and info["classes"][0] == "car"
    assert {"weather", "scene", "timeofday", "curvature"} <= set(info["frames"][0])
    assert gt.frame.min() == 1 and gt.frame.max() <= 40
    assert np.all(gt.boxes[:, 2:] >= 3) and np.all((gt.visibility > 0) & (gt.visibility <= 1))
    for f in range(1, 40):  # an object in consecutive frames keeps its ID and moves a little
        a, b = gt.at(f), gt.at(f + 1)
        for i in set(a.ids.tolist()) & set(b.ids.tolist()):
            ba, bb = a.boxes[a.ids == i][0], b.boxes[b.ids == i][0]
            assert a.classes[a.ids == i][0] == b.classes[b.ids == i][0]
            assert np.abs(ba[:2] - bb[:2]).max() < 0.25 * 128
    counts = np.unique(gt.ids, return_counts=True)[1]
    assert counts.max() >= 10  # some object is followed for at least a second
    assert len(set(zip(gt.frame.tolist(), gt.ids.tolist()))) == len(gt)  # one box per ID a frame


def test_eval_video_runs_end_to_end_on_a_tiny_model(tmp_path, models, capsys) -> None:
    pytest.importorskip("motmetrics")
    from edge_mtl.cli import main

    clip = tmp_path / "clip.mp4"
    assert main(["synth", "--video", str(clip), "--frames", "12", "--size", "64", "64"]) == 0
    out = tmp_path / "r.json"
    argv = ["eval-video", "--model", str(models["dense"]), "--video", str(clip)]
    assert main([*argv, "--provider", "cpu", "--smooth", "0.5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 12 and report["smooth_s"] == 0.5
    assert {"map50", "map"} == set(report["detection"])
    assert set(report["flicker"]["weather"]) >= {"raw", "smoothed", "truth"}
    assert report["flicker"]["weather"]["truth"] == 0.0  # a clip keeps its weather
    printed = capsys.readouterr().out
    assert "MOTA" in printed and "weather label changes per 100 frames" in printed


def test_eval_video_pools_several_clips(tmp_path, models, capsys) -> None:
    pytest.importorskip("motmetrics")
    from edge_mtl.cli import main

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for seed, clip in enumerate(clips):
        argv = ["synth", "--video", str(clip), "--frames", "8", "--size", "64", "64"]
        assert main([*argv, "--seed", str(seed)]) == 0
    out = tmp_path / "r.json"
    argv = ["eval-video", "--model", str(models["dense"]), "--video", *map(str, clips)]
    assert main([*argv, "--provider", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [c["video"] for c in report["clips"]] == [str(c) for c in clips]
    assert report["pooled"]["clips"] == 2 and report["pooled"]["frames"] == 16
    printed = capsys.readouterr().out
    assert printed.count(" frames, mAP@0.5 ") == 2 and "pooled over 2 clips, 16 frames" in printed
    one = ["eval-video", "--model", str(models["dense"]), "--gt", str(tmp_path / "a.gt.txt")]
    assert main([*one, "--video", *map(str, clips)]) == 2
    assert "give them with one --video" in capsys.readouterr().err


def test_eval_video_without_ground_truth_is_a_one_line_error(tmp_path, models, capsys) -> None:
    from edge_mtl.cli import main

    argv = ["eval-video", "--model", str(models["dense"]), "--video", str(tmp_path / "x.mp4")]
    assert main(argv) == 2
    assert "no such file (edge-mtl synth --video writes it)" in capsys.readouterr().err


def test_hota_of_a_perfect_tracker_is_one_and_of_swapped_ids_is_the_root_of_a_third() -> None:
    pytest.importorskip("scipy")
    from edge_mtl.bench.hota import hota

    gt = _truth()
    assert hota(gt, gt, 20) == {"hota": 1.0, "deta": 1.0, "assa": 1.0, "loca": 1.0}
    swapped_ids = gt.ids.copy()
    late = gt.frame > 10
    swapped_ids[late & (gt.ids == 1)], swapped_ids[late & (gt.ids == 2)] = 2, 1
    hyp = MotBoxes(gt.frame, swapped_ids, gt.boxes, gt.conf, gt.classes, gt.visibility)
    cars = gt.classes == 1
    s = hota(gt.rows(cars), hyp.rows(cars), 20)
    # each car's 20 boxes are split 10/10 over two track IDs: every matched pair's identities
    # share 10 frames of 20 + 20 - 10, so AssA = 1/3 while DetA stays 1
    assert s["deta"] == pytest.approx(1.0) and s["assa"] == pytest.approx(1 / 3)
    assert s["hota"] == pytest.approx(math.sqrt(1 / 3))


def test_hota_counts_a_box_only_at_the_thresholds_its_iou_reaches() -> None:
    pytest.importorskip("scipy")
    from edge_mtl.bench.hota import ALPHAS, hota

    gt = MotBoxes.concat([mot_rows(f, [1], [[10, 10, 40, 30]], 1.0, 1) for f in range(1, 6)])
    dx = 30 * (1 - 0.62) / 1.62  # a 30-px-wide box shifted by dx overlaps it at IoU 0.62
    moved = MotBoxes(gt.frame, gt.ids, gt.boxes + np.array([dx, 0, 0, 0]), gt.conf, gt.classes,
                     gt.visibility)  # fmt: skip
    reached = int((ALPHAS <= 0.62).sum())  # 0.05 ... 0.60: 12 of the 19 thresholds
    s = hota(gt, moved, 5)
    assert reached == 12 and s["deta"] == pytest.approx(reached / len(ALPHAS))
    assert s["hota"] == pytest.approx(reached / len(ALPHAS))  # AssA is 1 where matched, else 0
    # another class never matches; an empty clip on both sides is perfect
    other = MotBoxes(gt.frame, gt.ids, gt.boxes, gt.conf, gt.classes + 1, gt.visibility)
    assert hota(gt, other, 5)["hota"] == 0.0
    assert hota(gt.rows(gt.frame < 0), other.rows(other.frame < 0), 5)["hota"] == 1.0
