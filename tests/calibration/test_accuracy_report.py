"""The FP32 vs INT8 accuracy report flags every metric a model loses more than ``--tolerance``
points on (hand-built reports: the rule, the marked rows, the one warning line, the JSON)."""

from __future__ import annotations

import math

import pytest

from edge_mtl.calibration.accuracy import AccuracyReport
from edge_mtl.runtime.providers import Provider


def _report(tolerance: float | None = 1.0) -> AccuracyReport:
    table = {
        "det mAP@0.5": {"fp32": 50.0, "int8": 49.5},  # -0.5: within
        "det mAP@0.5:0.95": {"fp32": 30.0, "int8": 28.5},  # -1.5: past
        "weather acc": {"fp32": 97.0, "int8": 93.7},  # -3.3: past
        "scene acc": {"fp32": 80.0, "int8": 81.0},  # better: never flagged
        "timeofday acc": {"fp32": math.nan, "int8": math.nan},  # no labels
        "curvature MAE": {"fp32": 0.100, "int8": 0.104},  # +0.004 = 2% of std 0.2: past
        "speed MAE": {"fp32": 1.0, "int8": 1.05},  # +0.05 = 0.5% of std 10: within
        "weather top-1 agreement": {"int8": 10.0},  # agreement: never flagged
    }
    std = {"curvature": 0.2, "speed": 10.0}
    return AccuracyReport(table, ("fp32", "int8"), "fp32", 40, Provider.CPU, tolerance, std)


def pos(x: float):
    return pytest.approx(x, abs=1e-9)


def test_losses_are_points_and_mae_is_read_against_the_label_std():
    r = _report()
    assert r.loss("weather acc", "int8") == pos(3.3)
    assert r.loss("scene acc", "int8") == pos(-1.0)
    assert r.loss("curvature MAE", "int8") == pos(2.0)
    assert r.loss("timeofday acc", "int8") is None
    assert r.loss("weather top-1 agreement", "int8") is None


def test_metrics_past_tolerance_are_flagged_in_the_table_and_one_warning_line():
    r = _report()
    assert r.flagged() == {"int8": ["det mAP@0.5:0.95", "weather acc", "curvature MAE"]}
    lines = r.markdown().splitlines()
    assert lines[0] == "| metric | fp32 | int8 | int8 - fp32 | flag |"
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in lines[2:]}
    assert rows["weather acc"] == "| weather acc | 97.00 | 93.70 | -3.30 | ⚠ past tolerance 1 |"
    assert rows["det mAP@0.5"].endswith("| -0.50 |  |")
    assert rows["scene acc"].endswith("|  |") and rows["speed MAE"].endswith("|  |")
    assert rows["curvature MAE"].endswith("| ⚠ past tolerance 1 |")
    assert r.warning() == (
        "warning: past --tolerance 1 pts against fp32: int8: det mAP@0.5:0.95 -1.50, "
        "weather acc -3.30, curvature MAE +0.004 (+2.0% of the label std)"
    )
    d = r.to_dict()
    assert d["tolerance"] == 1.0 and d["flagged"] == r.flagged()
    assert d["label_std"] == {"curvature": 0.2, "speed": 10.0}


def test_no_flags_within_tolerance_or_without_one():
    for r in (_report(None), _report(5.0)):
        assert r.flagged() == {} and r.warning() is None
        assert r.markdown().splitlines()[0] == "| metric | fp32 | int8 | int8 - fp32 |"


def test_several_models_name_who_is_past_tolerance():
    r = _report()
    for vals in r.table.values():
        if "fp32" in vals:
            vals["fp16"] = vals["fp32"]
    r.labels = ("fp32", "fp16", "int8")
    rows = {ln.split(" | ")[0].removeprefix("| "): ln for ln in r.markdown().splitlines()[2:]}
    assert rows["weather acc"].endswith("| ⚠ past tolerance 1 (int8) |")
    assert "fp16" not in r.flagged()


def test_max_drop_weighs_every_row_flagged_weighs():
    """``--exclude auto`` searches until max_drop is within tolerance: a metric the report flags
    must count there too, MAE and mAP@0.5:0.95 included."""
    r = _report()
    assert r.max_drop("int8") == pos(3.3)
    r.table["weather acc"]["int8"] = 97.0
    assert r.flagged() == {"int8": ["det mAP@0.5:0.95", "curvature MAE"]}
    assert r.max_drop("int8") == pos(2.0)
