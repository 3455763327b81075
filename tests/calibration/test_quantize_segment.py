"""INT8 quantization of a model with segment tasks: it quantizes, the FP32 vs INT8 report has
the segment rows (mIoU, IoU, pixel agreement) and the search's drop counts them."""

from collections import Counter
from pathlib import Path

import pytest

from edge_mtl.calibration.quantize import QuantizeConfig, quantize
from edge_mtl.eval_cli import read_task_mask
from edge_mtl.export.onnx_export import ExportConfig, export
from edge_mtl.runtime.metadata import Precision, TaskKind
from tests.bench.labelled import seg_labelled_by_model
from tests.export.conftest import write_checkpoint  # skips this module without torch


@pytest.fixture(scope="module")
def seg_quantized(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("qseg")
    checkpoint = write_checkpoint(tmp / "best.pt", segment=True)
    fp32 = tmp / "model.onnx"
    export(ExportConfig(weights=str(checkpoint), out=str(fp32), parity_images=1))
    records = seg_labelled_by_model(fp32, tmp / "set", n=8)

    def read_labels(root, *tasks):  # the labelled set above, whatever the path
        return records, Counter()

    qc = QuantizeConfig(
        onnx=str(fp32), calib=str(tmp / "set" / "images"), out=str(tmp / "int8.onnx"),
        per_channel=True, calib_size=8, eval_data=str(tmp / "set"), threads=1,
        latency_seconds=0.2,
    )  # fmt: skip
    return quantize(qc, read_labels, read_task_mask)


def test_report_has_fp32_and_int8_segment_rows(seg_quantized):
    res = seg_quantized
    assert res.meta.precision is Precision.INT8
    assert [t.name for t in res.meta.tasks if t.kind is TaskKind.SEGMENT] == ["drivable", "lanes"]
    table = res.accuracy.table
    for row in ("drivable mIoU", "lanes mIoU", "lanes IoU"):
        assert set(table[row]) == {"fp32", "int8"}, row
        assert 50 < table[row]["fp32"] <= 100 and 0 <= table[row]["int8"] <= 100
    for row in ("drivable pixel agreement", "lanes pixel agreement"):
        assert set(table[row]) == {"int8"} and 50 < table[row]["int8"] <= 100
    drops = [res.accuracy.loss(r, "int8") for r in ("drivable mIoU", "lanes mIoU", "lanes IoU")]
    assert res.drop == pytest.approx(max(drops + [0.0]))  # no other labelled task here
    md = res.accuracy.markdown()
    assert "| drivable mIoU |" in md and "| lanes pixel agreement |" in md
    print({r: {k: round(v, 2) for k, v in table[r].items()} for r in table if "n/a" not in r})
