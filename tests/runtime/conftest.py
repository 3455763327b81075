"""Tiny real ONNX models built with onnx.helper (no torch), and frames/videos to feed them.

The dense model follows the export contract: input ``images`` float32 [N, 3, 32, 32];
``det_boxes`` [N, 16, 4] xyxy input pixels (one anchor per 8x8 cell), ``det_scores`` [N, 16, 3]
after a sigmoid, ``cls_weather`` [N, 4] logits, ``reg_curvature`` [N, 1].

The segmentation model (:func:`build_seg_model`) has two pixel tasks on the same input:
``seg_drivable`` [N, 32, 32] uint8 = the argmax over the normalised R, G, B planes (red pixels
class 0, green 1, blue 2; the grey letterbox padding 2), or those planes as logits
[N, 3, 32, 32]; ``seg_lanes`` [N, 32, 32] uint8 = 1 where normalised red > 1 (red pixels).
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, TaskKind, TaskMeta  # noqa: E402
from edge_mtl.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

# Prepended to a `python -c` script: any import of torch/torchvision/onnx fails, as on an edge
# box with only the runtime installed.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "onnx"):
                raise ImportError(f"blocked import of {name}")
            return None
    sys.meta_path.insert(0, Block())
    """
)

HW = (32, 32)
DET_CLASSES = ("car", "person", "sign")
WEATHER = ("clear", "rain", "fog", "snow")
NMS_BOXES = np.array([[2, 2, 10, 10], [4, 4, 20, 12], [0, 0, 32, 32], [1, 1, 2, 2]], np.float32)
NMS_SCORES = np.array([0.9, 0.5, 0.2, 0.99], np.float32)  # last one is padding (det_num = 3)
NMS_CLASSES = np.array([0, 2, 1, 1], np.int64)


def tiny_meta(nms: bool = False, batch: int | None = None) -> ModelMeta:
    det_outputs = (
        ("det_num", "det_boxes", "det_scores", "det_classes")
        if nms
        else ("det_boxes", "det_scores")
    )
    return ModelMeta(
        input_name="images",
        input_hw=HW,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pad_value=114,
        tasks=(
            TaskMeta("det", TaskKind.DETECT, det_outputs, DET_CLASSES, (8,), 0.3, 0.5, nms),
            TaskMeta("weather", TaskKind.CLASSIFY, ("cls_weather",), WEATHER),
            TaskMeta("curvature", TaskKind.REGRESS, ("reg_curvature",)),
        ),
        batch=batch,
    )


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _anchors() -> np.ndarray:
    """(1, 16, 4) xyxy: a 12x12 box centred on each 8x8 cell, row-major like Reshape gives."""
    ys, xs = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    cx, cy = (xs.ravel() + 0.5) * 8, (ys.ravel() + 0.5) * 8
    return np.stack([cx - 6, cy - 6, cx + 6, cy + 6], -1)[None].astype(np.float32)


def _heads(rng: np.random.Generator) -> tuple[list, list]:
    """Nodes + initialisers for the classification and regression heads on pooled pixels."""
    inits = [
        _const("w_weather", rng.normal(0, 1.5, (3, 4)).astype(np.float32)),
        _const("b_weather", rng.normal(0, 0.5, 4).astype(np.float32)),
        _const("w_curv", rng.normal(0, 1.0, (3, 1)).astype(np.float32)),
        _const("b_curv", np.array([0.1], np.float32)),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled4"]),
        helper.make_node("Flatten", ["pooled4"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "w_weather", "b_weather"], ["cls_weather"]),
        helper.make_node("Gemm", ["pooled", "w_curv", "b_curv"], ["reg_curvature"]),
    ]
    return nodes, inits


def _dense_det(rng: np.random.Generator) -> tuple[list, list, list]:
    inits = [
        _const("w_box", rng.normal(0, 0.02, (4, 3, 8, 8)).astype(np.float32)),
        _const("b_box", np.zeros(4, np.float32)),
        _const("w_cls", rng.normal(0, 0.05, (3, 3, 8, 8)).astype(np.float32)),
        _const("b_cls", np.array([-1.0, -1.5, -0.8], np.float32)),
        _const("flat4", np.array([0, 4, -1], np.int64)),
        _const("flat3", np.array([0, 3, -1], np.int64)),
        _const("anchors", _anchors()),
        _const("four", np.array(4.0, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w_box", "b_box"], ["box_map"], strides=[8, 8]),
        helper.make_node("Reshape", ["box_map", "flat4"], ["box_flat"]),
        helper.make_node("Transpose", ["box_flat"], ["deltas"], perm=[0, 2, 1]),
        helper.make_node("Mul", ["deltas", "four"], ["deltas4"]),
        helper.make_node("Add", ["anchors", "deltas4"], ["det_boxes"]),
        helper.make_node("Conv", ["images", "w_cls", "b_cls"], ["cls_map"], strides=[8, 8]),
        helper.make_node("Reshape", ["cls_map", "flat3"], ["cls_flat"]),
        helper.make_node("Transpose", ["cls_flat"], ["logits"], perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["logits"], ["det_scores"]),
    ]
    n = "N"
    outs = [
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [n, 16, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [n, 16, 3]),
    ]
    return nodes, inits, outs


def _nms_det() -> tuple[list, list, list]:
    """Fixed padded detections broadcast over the batch (in-graph-NMS output layout)."""
    m = len(NMS_SCORES)
    inits = [
        _const("c_boxes", NMS_BOXES[None]),
        _const("c_scores", NMS_SCORES[None]),
        _const("c_classes", NMS_CLASSES[None]),
        _const("c_num", np.array([3], np.int64)),
        _const("s0", np.array([0], np.int64)),
        _const("s1", np.array([1], np.int64)),
        _const("m4", np.array([m, 4], np.int64)),
        _const("m", np.array([m], np.int64)),
    ]
    nodes = [
        helper.make_node("Shape", ["images"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "s0", "s1"], ["n"]),
        helper.make_node("Concat", ["n", "m4"], ["shape_boxes"], axis=0),
        helper.make_node("Concat", ["n", "m"], ["shape_m"], axis=0),
        helper.make_node("Expand", ["c_boxes", "shape_boxes"], ["det_boxes"]),
        helper.make_node("Expand", ["c_scores", "shape_m"], ["det_scores"]),
        helper.make_node("Expand", ["c_classes", "shape_m"], ["det_classes"]),
        helper.make_node("Expand", ["c_num", "n"], ["det_num"]),
    ]
    n = "N"
    outs = [
        helper.make_tensor_value_info("det_num", TensorProto.INT64, [n]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [n, m, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [n, m]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT64, [n, m]),
    ]
    return nodes, inits, outs


def build_model(
    path: Path, with_meta: bool = True, nms: bool = False, batch: int | None = None
) -> Path:
    """Write a tiny contract-following ONNX model to ``path`` (weights fixed by seed 0)."""
    rng = np.random.default_rng(0)
    head_nodes, head_inits = _heads(rng)
    det_nodes, det_inits, det_outs = _nms_det() if nms else _dense_det(rng)
    n: int | str = batch if batch is not None else "N"
    graph = helper.make_graph(
        det_nodes + head_nodes,
        "tiny_mtl",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, 3, *HW])],
        [
            *det_outs,
            helper.make_tensor_value_info("cls_weather", TensorProto.FLOAT, [n, 4]),
            helper.make_tensor_value_info("reg_curvature", TensorProto.FLOAT, [n, 1]),
        ],
        initializer=det_inits + head_inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what the pinned onnxruntime reads; newer onnx defaults higher
    if with_meta:
        helper.set_model_props(model, {METADATA_KEY: tiny_meta(nms, batch).to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


SEG_TASKS = {"drivable": ("background", "direct", "alternative"), "lanes": ("background", "lane")}


def seg_meta(logits: bool = False) -> ModelMeta:
    return ModelMeta(
        input_name="images",
        input_hw=HW,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        pad_value=114,
        tasks=tuple(
            TaskMeta(name, TaskKind.SEGMENT, (f"seg_{name}",), classes, logits=logits and k == 0)
            for k, (name, classes) in enumerate(SEG_TASKS.items())
        ),
    )


def build_seg_model(path: Path, logits: bool = False, with_meta: bool = True) -> Path:
    """Write the tiny segmentation model (module docstring) to ``path``."""
    n = "N"
    drivable = (
        [helper.make_node("Identity", ["images"], ["seg_drivable"])]
        if logits
        else [
            helper.make_node("ArgMax", ["images"], ["am"], axis=1, keepdims=0),
            helper.make_node("Cast", ["am"], ["seg_drivable"], to=TensorProto.UINT8),
        ]
    )
    lanes = [
        helper.make_node("Gather", ["images", "zero"], ["red"], axis=1),
        helper.make_node("Greater", ["red", "one"], ["is_lane"]),
        helper.make_node("Cast", ["is_lane"], ["seg_lanes"], to=TensorProto.UINT8),
    ]
    shape = [n, 3, *HW] if logits else [n, *HW]
    dtype = TensorProto.FLOAT if logits else TensorProto.UINT8
    graph = helper.make_graph(
        drivable + lanes,
        "tiny_seg",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, 3, *HW])],
        [
            helper.make_tensor_value_info("seg_drivable", dtype, shape),
            helper.make_tensor_value_info("seg_lanes", TensorProto.UINT8, [n, *HW]),
        ],
        initializer=[_const("zero", np.array(0, np.int64)), _const("one", np.float32(1.0))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if with_meta:
        helper.set_model_props(model, {METADATA_KEY: seg_meta(logits).to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def seg_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the tiny segmentation models: class maps, logits, no metadata."""
    d = tmp_path_factory.mktemp("seg_models")
    return {
        "maps": build_seg_model(d / "seg.onnx"),
        "logits": build_seg_model(d / "seg_logits.onnx", logits=True),
        "nometa": build_seg_model(d / "seg_nometa.onnx", with_meta=False),
    }


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the tiny models: dense, no metadata, in-graph NMS, fixed batch 1."""
    d = tmp_path_factory.mktemp("models")
    return {
        "dense": build_model(d / "tiny.onnx"),
        "nometa": build_model(d / "nometa.onnx", with_meta=False),
        "nms": build_model(d / "nms.onnx", nms=True),
        "batch1": build_model(d / "batch1.onnx", batch=1),
    }


def make_frames(n: int, h: int = 48, w: int = 64, seed: int = 1) -> list[np.ndarray]:
    """``n`` uint8 BGR (h, w, 3) frames: smooth gradients plus a moving bright block."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        base = rng.integers(0, 256, 3).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = (base + 2 * xx[..., None] + yy[..., None]) % 256
        x0 = (5 * i) % max(w - 12, 1)
        img[8:20, x0 : x0 + 12] = 255
        frames.append(img.astype(np.uint8))
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write ``frames`` as an mp4v video (the codec OpenCV ships everywhere)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def count_video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


class FakeCapture:
    """A camera producing numbered frames (pixel value = frame number % 256) as fast as it can,
    failing after ``fail_after`` frames. ``produced`` is observable from the test thread."""

    def __init__(self, fail_after: int | None = None, period_s: float = 0.001) -> None:
        self.produced = 0
        self.fail_after = fail_after
        self.period_s = period_s
        self.released = False
        self.cond = threading.Condition()

    def read(self) -> tuple[bool, np.ndarray | None]:
        time.sleep(self.period_s)  # don't spin a CPU core the trainer needs
        if self.fail_after is not None and self.produced >= self.fail_after:
            return False, None
        with self.cond:
            self.produced += 1
            self.cond.notify_all()
        return True, np.full((4, 6, 3), self.produced % 256, np.uint8)

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.produced >= n, timeout=30), "camera stalled"

    def release(self) -> None:
        self.released = True


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """Helpers and constants for the runtime tests (test modules never import conftest)."""
    return SimpleNamespace(
        FakeCapture=FakeCapture,
        make_frames=make_frames,
        write_video=write_video,
        count_video_frames=count_video_frames,
        build_model=build_model,
        HW=HW,
        SEG_TASKS=SEG_TASKS,
        DET_CLASSES=DET_CLASSES,
        WEATHER=WEATHER,
        NMS_BOXES=NMS_BOXES,
        NMS_SCORES=NMS_SCORES,
        NMS_CLASSES=NMS_CLASSES,
    )


@pytest.fixture(autouse=True)
def _cwd_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edge-mtl run`` saves into ./runs/run/expN by default: each test runs in its own folder
    (a test that needs the repository as its working directory changes to it itself)."""
    monkeypatch.chdir(tmp_path)
