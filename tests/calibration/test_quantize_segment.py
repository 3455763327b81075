"""INT8 quantization of a model with segment tasks: it quantizes, the FP32 vs INT8 report has
the segment rows (mIoU, IoU, pixel agreement), the search's drop counts them, and ``--exclude
auto`` tries the segmentation heads float first."""

import dataclasses
from collections import Counter

import onnx
import pytest

from edge_mtl.calibration.quantize import QuantizeConfig, load_fp32, quantize
from edge_mtl.calibration.search import head_nodes, light_outputs_past
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
        calib_size=8, eval_data=str(tmp / "set"), threads=1,
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


def test_task_heads_are_the_nodes_feeding_only_their_outputs(seg_quantized):
    proto = onnx.load(str(seg_quantized[0]))
    op = {n.name: n.op_type for n in proto.graph.node}
    convs = [n for n in op if op[n] == "Conv"]
    heads = head_nodes(proto, {"seg_drivable", "seg_lanes"})
    seg_convs = [n for n in heads if op[n] == "Conv"]
    assert len(seg_convs) == 6  # conv-BN-ReLU x2 + 1x1, two tasks
    assert seg_convs == [c for c in convs if c in heads] and seg_convs[0] != convs[0]
    assert "ArgMax" in {op[n] for n in heads}  # the class map is the head's too
    lanes = head_nodes(proto, {"seg_lanes"})
    assert len([n for n in lanes if op[n] == "Conv"]) == 3 and set(lanes) < set(heads)
    reg = head_nodes(proto, {"reg_curvature"})
    assert convs[0] not in reg and not set(reg) & set(heads)
    # attention pooling: reduce conv, attention conv, softmax, weighted sum, two linear layers
    assert Counter(op[n] for n in reg if op[n] in {"Conv", "Softmax", "Einsum", "Gemm"}) == {
        "Conv": 2, "Softmax": 1, "Einsum": 1, "Gemm": 2
    }  # fmt: skip


def test_light_outputs_past_tolerance_are_those_of_the_tasks_int8_loses(seg_quantized):
    fp32, _, _, res = seg_quantized
    meta = load_fp32(fp32)[1]
    report = dataclasses.replace(res.accuracy, table={
        "det mAP@0.5": {"fp32": 50.0, "int8": 40.0},  # past, but the detection head is heavy
        "lanes IoU": {"fp32": 60.0, "int8": 55.0},  # past
        "drivable mIoU": {"fp32": 90.0, "int8": 89.5},  # within
    }, label_std={})  # fmt: skip
    assert light_outputs_past(meta, report, 1.0) == {"seg_lanes"}
    assert light_outputs_past(meta, report, 10.0) == set()


def test_exclude_auto_tries_the_heads_of_the_tasks_past_tolerance_float_first(
    seg_quantized, tmp_path
):
    fp32, qc, read_labels, plain = seg_quantized
    auto = dataclasses.replace(qc, exclude=("auto",), out=str(tmp_path / "auto.onnx"))
    res = quantize(auto, read_labels, read_task_mask)
    assert res.search[0] == (0, pytest.approx(plain.drop))
    past = light_outputs_past(load_fp32(fp32)[1], plain.accuracy, qc.tolerance)
    assert past and past <= {"seg_drivable", "seg_lanes"}  # the only labelled tasks here
    heads = set(head_nodes(onnx.load(str(fp32)), past)) - set(res.float_tail)
    assert res.search[1][0] == len(heads)  # those heads' nodes, before any ranked node
    if res.search[1][1] < res.search[0][1]:  # they helped: every later step keeps them
        assert heads <= set(res.kept_float)
    print("auto search (nodes kept, drop in points):", res.search)
