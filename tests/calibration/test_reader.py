"""The calibration reader feeds the quantizer exactly what the engine feeds the model."""

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_mtl.calibration.reader import CalibrationReader
from edge_mtl.data.generate import write_synthetic
from edge_mtl.runtime.engine import Engine
from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, TaskKind, TaskMeta

HW = (64, 96)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch-free two-node ONNX classifier (global average pool -> 3 logits) with metadata
    whose mean/std/pad differ from the defaults, so the reader must read them from the model."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["cls_light"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, *HW])],
        [helper.make_tensor_value_info("cls_light", TensorProto.FLOAT, ["N", 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    meta = ModelMeta(
        input_name="images",
        input_hw=HW,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        pad_value=0,
        tasks=(TaskMeta("light", TaskKind.CLASSIFY, ("cls_light",), ("day", "dusk", "night")),),
    )
    proto.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    onnx.save(proto, path)
    return path


def test_reader_yields_engine_preprocessed_tensors(model, tmp_path):
    root = write_synthetic(tmp_path / "d", 3, hw=(90, 160), progress=False)
    paths = sorted((root / "images").iterdir())
    engine = Engine(model, providers="cpu")
    reader = CalibrationReader.from_meta(paths, engine.meta)
    assert len(reader) == 3
    got = list(reader)
    assert [list(d) for d in got] == [["images"]] * 3
    for d, p in zip(got, paths):
        want, _ = engine.preprocess([cv2.imread(str(p))])
        assert d["images"].dtype == np.float32 and d["images"].shape == (1, 3, *HW)
        np.testing.assert_array_equal(d["images"], want)
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["images"], got[0]["images"])
    reader.set_range(1, 3)
    assert len(reader) == 2
    np.testing.assert_array_equal(reader.get_next()["images"], got[1]["images"])


def test_undecodable_image_names_the_file(tmp_path, model):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    reader = CalibrationReader([bad], "images", HW, (0, 0, 0), (1, 1, 1), 114)
    with pytest.raises(InputError, match=r"bad\.jpg"):
        reader.get_next()
    with pytest.raises(InputError):
        CalibrationReader([], "images", HW, (0, 0, 0), (1, 1, 1), 114)
