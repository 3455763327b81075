"""INT8 quantization of a model with segment tasks: it quantizes, the FP32 vs INT8 report has
the segment rows (mIoU, IoU, pixel agreement), the search's drop counts them, and ``--exclude
auto`` tries the segmentation heads float first."""

import dataclasses
from collections import Counter

import onnx
import pytest

from edge_mtl.calibration.quantize import QuantizeConfig, quantize
from edge_mtl.calibration.search import segment_head_nodes
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
    return fp32, qc, read_labels, quantize(qc, read_labels, read_task_mask)


def test_report_has_fp32_and_int8_segment_rows(seg_quantized):
    res = seg_quantized[-1]
    assert res.meta.precision is Precision.INT8
    assert [t.name for t in res.meta.tasks if t.kind is TaskKind.SEGMENT] == ["drivable", "lanes"]
    table = res.accuracy.table
    for row in ("drivable mIoU", "lanes mIoU", "lanes IoU"):
        assert set(table[row]) == {"fp32", "int8"}, row
        assert 50 < table[row]["fp32"] <= 100 and 0 <= table[row]["int8"] <= 100
    for row in ("drivable pixel agreement", "lanes pixel agreement"):
        assert set(table[row]) == {"int8"} and 50 < table[row]["int8"] <= 100
    drops = [res.accuracy.loss(r, "int8") for r in ("drivable mIoU", "lanes mIoU", "lanes IoU")]
    assert res.drop == pytest.approx(max([*drops, 0.0]))  # no other labelled task here
    md = res.accuracy.markdown()
    assert "| drivable mIoU |" in md and "| lanes pixel agreement |" in md
    print({r: {k: round(v, 2) for k, v in table[r].items()} for r in table if "n/a" not in r})


def test_segment_heads_are_the_convs_feeding_only_class_maps(seg_quantized):
    proto = onnx.load(str(seg_quantized[0]))
    heads = segment_head_nodes(proto)
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    assert len(heads) == 6 and set(heads) <= set(convs)  # conv-BN-ReLU x2 + 1x1, two tasks
    assert heads == [c for c in convs if c in heads] and heads[0] != convs[0]


def test_exclude_auto_tries_the_segment_heads_float_first(seg_quantized, tmp_path):
    fp32, qc, read_labels, plain = seg_quantized
    auto = dataclasses.replace(qc, exclude=("auto",), out=str(tmp_path / "auto.onnx"))
    res = quantize(auto, read_labels, read_task_mask)
    assert res.search[0] == (0, pytest.approx(plain.drop))
    assert res.search[1][0] == 6  # the six head convolutions, before any ranked node
    heads = set(segment_head_nodes(onnx.load(str(fp32))))
    if res.search[1][1] < res.search[0][1]:  # they helped: every later step keeps them
        assert heads <= set(res.kept_float)
    print("auto search (nodes kept, drop in points):", res.search)
