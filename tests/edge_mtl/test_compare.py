"""edge-mtl compare: single-task variants, the report's delta signs, resume, and a real run."""

import json
import math

import pytest

from edge_mtl.cli import main
from edge_mtl.compare import MTL, build_report, variants
from edge_mtl.config import config_from_dict
from tests.edge_mtl.conftest import tiny_cfg_dict


def _two_task_cfg_dict():
    d = tiny_cfg_dict(n_train=8, n_val=4)
    d["model"]["classify"] = {"weather": d["model"]["classify"]["weather"]}
    d["train"].update(epochs=1, loss_weights={"det": 1.0, "weather": 0.5, "curvature": 2.0})
    return d


def test_every_task_gets_a_single_task_variant():
    cfg = config_from_dict(_two_task_cfg_dict(), "c")
    vs = {v.name: v for v in variants(cfg)}
    assert list(vs) == [MTL, "det", "weather", "curvature"]
    det, weather, curv = vs["det"].cfg, vs["weather"].cfg, vs["curvature"].cfg
    assert det.model.detect == cfg.model.detect and not det.model.classify
    assert not det.model.regress and det.train.loss_weights == {"det": 1.0}
    assert weather.model.classify == cfg.model.classify and not weather.model.detect
    assert curv.model.regress == ("curvature",) and curv.train.loss_weights == {"curvature": 2.0}
    assert weather.data == cfg.data and weather.train.epochs == cfg.train.epochs


def test_one_task_config_is_refused():
    d = _two_task_cfg_dict()
    d["model"].update(classify={}, regress=[])
    d["train"]["loss_weights"] = {}
    with pytest.raises(ValueError, match="at least two tasks"):
        variants(config_from_dict(d, "one.yaml"))


def test_delta_is_positive_when_the_multitask_model_is_better():
    cfg = config_from_dict(_two_task_cfg_dict(), "c")

    def res(m, p, g):
        return {"metrics": m, "params": p, "gflops": g}

    results = {
        MTL: res({"det/map50": 0.5, "weather/acc": 0.7, "curvature/mae": 0.2}, 12, 3.0),
        "det": res({"det/map50": 0.4}, 11, 2.5),
        "weather": res({"weather/acc": 0.8}, 10, 2.0),
        "curvature": res({"curvature/mae": 0.3}, 11, 2.4),
    }
    lat = {MTL: {"p50_ms": 10.0}, "det": {"p50_ms": 8.0}, "weather": {"p50_ms": 6.0}}
    lat["curvature"] = {"p50_ms": 6.0}
    r = build_report(cfg, results, lat)
    rows = {x["task"]: x for x in r["tasks"]}
    assert rows["det"]["delta"] == pytest.approx(0.1) and not rows["det"]["negative_transfer"]
    assert rows["weather"]["delta"] == pytest.approx(-0.1) and rows["weather"]["negative_transfer"]
    # MAE: lower is better, so 0.2 (MTL) against 0.3 (single) is a gain of 0.1
    assert rows["curvature"]["delta"] == pytest.approx(0.1)
    assert r["cost"]["singles_params"] == 32 and r["cost"]["latency_ratio"] == pytest.approx(0.5)
    assert r["cost"]["singles_gflops"] == pytest.approx(6.9)


def test_compare_runs_end_to_end_and_resumes(tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(_two_task_cfg_dict()))
    out = tmp_path / "cmp"
    argv = ["compare", "--config", str(cfg_path), "--out", str(out)]
    argv += ["--data-root", str(tmp_path / "data"), "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    assert [r["task"] for r in report["tasks"]] == ["det", "weather", "curvature"]
    for r in report["tasks"]:
        assert math.isfinite(r["mtl"]) and math.isfinite(r["single"])
    cost = report["cost"]
    assert cost["mtl_params"] < cost["singles_params"]
    assert cost["mtl_gflops"] < cost["singles_gflops"]
    assert 0 < cost["latency_ratio"] < 1
    assert (out / "compare.md").read_text().startswith("| task |")
    capsys.readouterr()
    # a second run reuses every finished variant instead of training again
    assert main([*argv, "--no-latency"]) == 0
    assert capsys.readouterr().out.count("already trained") == 4
