"""edge-mtl compare: single-task variants, the report's delta signs and standard errors,
resume, and a real run."""

import json
import math

import pytest

from edge_mtl.cli import main
from edge_mtl.compare import MTL, build_report, delta_se, to_markdown, variants
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
    r = build_report(cfg, results, lat, {"det": 300, "weather": 300, "curvature": 300})
    rows = {x["task"]: x for x in r["tasks"]}
    assert rows["det"]["delta"] == pytest.approx(0.1)
    assert rows["weather"]["delta"] == pytest.approx(-0.1)
    # MAE: lower is better, so 0.2 (MTL) against 0.3 (single) is a gain of 0.1
    assert rows["curvature"]["delta"] == pytest.approx(0.1)
    assert r["cost"]["singles_params"] == 32 and r["cost"]["latency_ratio"] == pytest.approx(0.5)
    assert r["cost"]["singles_gflops"] == pytest.approx(6.9)


def _res(metrics):
    return {"metrics": metrics, "params": 10, "gflops": 1.0}


def _cfg_weather_scene():
    d = _two_task_cfg_dict()
    d["model"].update(detect=[], regress=[])
    d["model"]["classify"]["scene"] = tiny_cfg_dict()["model"]["classify"]["scene"]
    d["train"]["loss_weights"] = {}
    return config_from_dict(d, "c")


def test_accuracy_se_is_binomial_per_model_combined():
    cfg = _cfg_weather_scene()
    # by hand: 0.7 * 0.3 = 0.21, 0.8 * 0.2 = 0.16; sqrt(0.37 / 300) = 0.0351188
    se, basis = delta_se(cfg, "weather", {"weather/acc": 0.7}, {"weather/acc": 0.8}, 300)
    assert se == pytest.approx(0.0351188, abs=1e-7) and basis == "binomial"
    # a model that is always right or always wrong adds nothing: sqrt(0.25 / 100) = 0.05
    se, _ = delta_se(cfg, "weather", {"weather/acc": 1.0}, {"weather/acc": 0.5}, 100)
    assert se == pytest.approx(0.05)
    assert delta_se(cfg, "weather", {"weather/acc": 0.7}, {"weather/acc": 0.8}, 0)[0] is None


def test_regression_and_detection_se():
    cfg = config_from_dict(_two_task_cfg_dict(), "c")
    # per-image absolute-error SDs 0.3 and 0.4: sqrt((0.09 + 0.16) / 100) = 0.05
    m = {"curvature/mae": 0.2, "curvature/mae_sd": 0.3}
    s = {"curvature/mae": 0.25, "curvature/mae_sd": 0.4}
    assert delta_se(cfg, "curvature", m, s, 100) == (pytest.approx(0.05), "per-image error SD")
    # evaluate() records MAE and label SD only: they do not bound the errors' spread
    m, s = {"curvature/mae": 0.2, "curvature/std": 1.0}, {"curvature/mae": 0.25}
    assert delta_se(cfg, "curvature", m, s, 100) == (None, "no per-image error SD recorded")
    m, s = {"det/map50": 0.5}, {"det/map50": 0.502}
    assert delta_se(cfg, "det", m, s, 300) == (None, "mAP has no closed-form SE")


def test_negative_transfer_only_beyond_two_standard_errors():
    cfg = _cfg_weather_scene()
    results = {
        # weather: 0.798 vs 0.800 on 300 images; scene: 0.663 vs 0.800
        MTL: _res({"weather/acc": 0.798, "scene/acc": 0.663}),
        "weather": _res({"weather/acc": 0.8}),
        "scene": _res({"scene/acc": 0.8}),
    }
    r = build_report(cfg, results, {}, {"weather": 300, "scene": 300})
    rows = {x["task"]: x for x in r["tasks"]}
    w, s = rows["weather"], rows["scene"]
    # sqrt((0.798 * 0.202 + 0.8 * 0.2) / 300) = sqrt(0.321196 / 300) = 0.0327209
    assert w["delta"] == pytest.approx(-0.002) and w["se"] == pytest.approx(0.0327209, abs=1e-7)
    assert w["verdict"] == "within noise" and w["negative_transfer"] is False and w["n"] == 300
    # sqrt((0.663 * 0.337 + 0.16) / 300) = sqrt(0.383431 / 300) = 0.0357505; 2 SE = 0.0715
    assert s["delta"] == pytest.approx(-0.137) and s["se"] == pytest.approx(0.0357505, abs=1e-7)
    assert s["verdict"] == "negative transfer" and s["negative_transfer"] is True
    # the same -0.002 on 400 000 images is beyond 2 SE (0.0018): no longer noise
    r = build_report(cfg, results, {}, {"weather": 400_000, "scene": 300})
    assert r["tasks"][0]["verdict"] == "negative transfer"
    md = to_markdown(build_report(cfg, results, {}, {"weather": 300, "scene": 300}))
    assert "| -0.002 | 0.033 | 300 | within noise |" in md
    assert "| -0.137 | 0.036 | 300 | negative transfer |" in md


def test_a_metric_without_se_is_not_tested():
    cfg = config_from_dict(_two_task_cfg_dict(), "c")
    results = {
        MTL: _res({"det/map50": 0.498, "weather/acc": 0.9, "curvature/mae": 0.2}),
        "det": _res({"det/map50": 0.5}),
        "weather": _res({"weather/acc": 0.7}),
        "curvature": _res({"curvature/mae": 0.3}),
    }
    r = build_report(cfg, results, {}, {"det": 300, "weather": 300, "curvature": 300})
    det, weather, curv = r["tasks"]
    assert det["delta"] == pytest.approx(-0.002) and det["se"] is None
    assert det["verdict"] == "not tested" and det["negative_transfer"] is None
    assert det["se_basis"] == "mAP has no closed-form SE"
    assert weather["verdict"] == "multi-task better" and weather["negative_transfer"] is False
    assert curv["verdict"] == "not tested" and curv["negative_transfer"] is None
    md = to_markdown(r)
    assert "| -0.002 | n/a | 300 | not tested |" in md
    assert "SE n/a for det: mAP has no closed-form SE." in md
    assert "SE n/a for curvature: no per-image error SD recorded." in md


@pytest.mark.slow  # trains four variants and exports them: about 20 s
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
        assert r["n"] == 4  # every synthetic validation image carries every label
    det, weather, curv = report["tasks"]
    assert det["se"] is None and det["negative_transfer"] is None
    p1, p2 = weather["mtl"], weather["single"]
    assert weather["se"] == pytest.approx(math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / 4))
    # evaluate() records the spread of the per-image curvature errors, so MAE gets an SE too
    assert curv["se_basis"] == "per-image error SD" and curv["se"] > 0
    assert curv["verdict"] != "not tested"
    cost = report["cost"]
    assert cost["mtl_params"] < cost["singles_params"]
    assert cost["mtl_gflops"] < cost["singles_gflops"]
    assert 0 < cost["latency_ratio"] < 1
    assert (out / "compare.md").read_text().startswith("| task |")
    capsys.readouterr()
    # a second run reuses every finished variant instead of training again
    assert main([*argv, "--no-latency"]) == 0
    assert capsys.readouterr().out.count("already trained") == 4
