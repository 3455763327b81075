"""scripts/provider_parity.py: identical providers give zero gaps; a provider that cannot run is
reported for its model without stopping the others."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

from tests.runtime.conftest import make_frames

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "provider_parity.py"


def _load():
    spec = importlib.util.spec_from_file_location("provider_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_output_gap_floats_and_class_maps():
    parity = _load()
    a = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    gap = parity.output_gap(a, a + np.float32(0.25) * (a > 1))
    assert gap["max_abs"] == 0.25 and gap["max_value"] == 4.0
    assert abs(gap["mean_abs"] - 0.0625) < 1e-12
    maps = np.array([[0, 1, 2, 2]], np.uint8)
    assert parity.output_gap(maps, np.array([[0, 1, 1, 2]], np.uint8))["equal_pct"] == 75.0


def test_cpu_against_cpu_is_exact_and_a_missing_provider_is_reported(
    models, seg_models, tmp_path, capsys
):
    parity = _load()
    for i, frame in enumerate(make_frames(3)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), frame)
    out = tmp_path / "parity.json"
    rc = parity.main(
        [str(models["dense"]), str(seg_models["maps"]), "--provider", "cpu",
         "--images", str(tmp_path / "*.png"), "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    for row in report.values():
        assert row["provider"] == "cpu"
        for gap in row["outputs"].values():
            assert gap.get("max_abs", 0.0) == 0.0 and gap.get("equal_pct", 100.0) == 100.0
    seg = report[str(seg_models["maps"])]["outputs"]
    assert any(g["dtype"] == "uint8" for g in seg.values())
    capsys.readouterr()
    rc = parity.main(
        [str(models["dense"]), "--provider", "tensorrt", "--images", str(tmp_path / "*.png")]
    )
    assert rc == 0 and "tensorrt" in capsys.readouterr().out
    assert parity.main([str(models["dense"]), "--provider", "cpu", "--images", "/no/*.png"]) == 2
