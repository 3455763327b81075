"""Broken artifacts for the reliability tests, made once per session, and the matrix count.

Every artifact is real and tiny: the runtime tests' contract model (``tests/runtime/conftest``)
and damaged copies of it, an ONNX model from "another project", frames, images and videos in
good and damaged states, YAML configs, and a training checkpoint (when torch is installed).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from edge_mtl.runtime.metadata import METADATA_KEY  # noqa: E402
from tests.runtime.conftest import build_model, make_frames, write_video  # noqa: E402

MATRIX = "matrix"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MATRIX}: one case of the reliability bad-input matrix")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print how many matrix cases ran and how they ended (one line)."""
    outcomes: dict[str, str] = {}
    for outcome in ("passed", "xfailed", "skipped", "xpassed", "failed", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            if MATRIX not in getattr(rep, "keywords", {}):
                continue
            if outcome == "passed" and rep.when != "call":
                continue
            outcomes[rep.nodeid] = outcome  # later (worse) outcomes win
    if outcomes:
        found = list(outcomes.values())
        detail = ", ".join(f"{found.count(o)} {o}" for o in dict.fromkeys(found))
        terminalreporter.write_line(f"reliability matrix: {len(outcomes)} cases ({detail})")


def foreign_model(path: Path) -> Path:
    """An ONNX model from another project: input ``x``, output ``logits``, no edge_mtl metadata."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "someone_elses_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def with_metadata(src: Path, dst: Path, text: str) -> Path:
    """A copy of ``src`` whose edge_mtl metadata is replaced by ``text``."""
    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = text
    onnx.save(model, str(dst))
    return dst


def _mjpg_avi(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _damage(data: bytes, start: int, length: int) -> bytes:
    b = bytearray(data)
    b[start : start + length] = bytes(length)
    return bytes(b)


@pytest.fixture(scope="session")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths (as strings, for argv templates) of every artifact the matrix uses."""
    d = tmp_path_factory.mktemp("reliability")
    a: dict[str, Path] = {"dir": d}
    # Models.
    a["model"] = build_model(d / "tiny.onnx")
    a["nometa"] = build_model(d / "nometa.onnx", with_meta=False)
    a["nms_model"] = build_model(d / "tiny.nms.onnx", nms=True)  # baked: score 0.3, IoU 0.5
    a["foreign"] = foreign_model(d / "foreign.onnx")
    good = a["model"].read_bytes()
    for name, data in {
        "empty_onnx": b"",
        "trunc_onnx": good[:200],
        "garbage_onnx": np.random.default_rng(0).integers(0, 256, 600, np.uint8).tobytes(),
    }.items():
        a[name] = d / f"{name}.onnx"
        a[name].write_bytes(data)
    a["zip_onnx"] = d / "checkpoint.onnx"  # a torch checkpoint (zip) with an .onnx name
    with zipfile.ZipFile(a["zip_onnx"], "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    props = onnx.load(str(a["model"])).metadata_props
    meta = json.loads(next(p.value for p in props if p.key == METADATA_KEY))
    a["v99"] = with_metadata(a["model"], d / "v99.onnx", json.dumps({**meta, "version": 99}))
    a["badmeta"] = with_metadata(a["model"], d / "badmeta.onnx", "{not json")
    hw64 = json.dumps({**meta, "input_hw": [64, 64]})  # the graph takes 32x32
    a["hw64"] = with_metadata(a["model"], d / "hw64.onnx", hw64)
    # Images, folders, videos.
    frames = make_frames(30)
    a["png"] = d / "frame.png"
    cv2.imwrite(str(a["png"]), frames[0])
    jpg = cv2.imencode(".jpg", frames[1])[1].tobytes()
    a["trunc_jpg"] = d / "truncated.jpg"
    a["trunc_jpg"].write_bytes(jpg[: len(jpg) // 3])
    a["empty_png"] = d / "empty.png"
    a["empty_png"].write_bytes(b"")
    a["bad_images"] = d / "bad_images"
    a["bad_images"].mkdir()
    (a["bad_images"] / "a.jpg").write_bytes(jpg[:100])
    (a["bad_images"] / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    a["mixed_images"] = d / "mixed_images"
    a["mixed_images"].mkdir()
    for i, f in enumerate(frames[:3]):
        cv2.imwrite(str(a["mixed_images"] / f"{i}.png"), f)
    (a["mixed_images"] / "1b.jpg").write_bytes(jpg[:100])  # sorts between two good ones
    a["empty_dir"] = d / "empty_dir"
    a["empty_dir"].mkdir()
    a["mp4"] = write_video(d / "clip.mp4", frames[:5])
    a["trunc_mp4"] = d / "truncated.mp4"
    a["trunc_mp4"].write_bytes(a["mp4"].read_bytes()[:300])  # mp4v puts its index at the end
    a["empty_mp4"] = d / "empty.mp4"
    a["empty_mp4"].write_bytes(b"")
    avi = _mjpg_avi(d / "clip.avi", frames).read_bytes()
    a["trunc_avi"] = d / "truncated.avi"  # opens, then ends early
    a["trunc_avi"].write_bytes(avi[: len(avi) // 2])
    a["damaged_avi"] = d / "damaged.avi"  # one frame in the middle is undecodable
    a["damaged_avi"].write_bytes(_damage(avi, len(avi) // 3, 2000))
    # Configs and other files.
    a["bad_yaml"] = d / "bad.yaml"
    a["bad_yaml"].write_text("model: [unclosed\n  backbone: : :\n")
    a["empty_yaml"] = d / "empty.yaml"
    a["empty_yaml"].write_text("")
    a["list_yaml"] = d / "list.yaml"
    a["list_yaml"].write_text("- model\n- train\n")
    a["type_yaml"] = d / "type.yaml"
    a["type_yaml"].write_text("train:\n  lr: fast\n")
    a["json"] = d / "other.json"
    a["json"].write_text('{"results": []}')
    a["file"] = d / "a_file"  # a regular file where a folder is expected
    a["file"].write_text("I am a file")
    # Unreadable things (root reads them anyway: the cases that need them check os.access).
    a["locked_dir"] = d / "locked_dir"
    a["locked_dir"].mkdir()
    cv2.imwrite(str(a["locked_dir"] / "0.png"), frames[0])
    a["locked_dir"].chmod(0)
    a["locked_yaml"] = d / "locked.yaml"
    a["locked_yaml"].write_text("model: {}\n")
    a["locked_yaml"].chmod(0)
    yield {k: str(v) for k, v in a.items()}
    a["locked_dir"].chmod(0o755)  # let pytest clean up


def locked_readable(path: str) -> bool:
    """True when a chmod-000 path is readable anyway (root): such cases cannot be tested."""
    return os.access(path, os.R_OK)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny real training checkpoint and damaged copies (skips without torch)."""
    pytest.importorskip("torch")
    from tests.export.conftest import write_checkpoint

    d = tmp_path_factory.mktemp("checkpoints")
    good = write_checkpoint(d / "best.pt")
    out = {"ckpt": good}
    data = good.read_bytes()
    for name, blob in {
        "empty_pt": b"",
        "trunc_pt": data[: len(data) // 2],
        "garbage_pt": b"definitely not a checkpoint" * 10,
    }.items():
        out[name] = d / f"{name}.pt"
        out[name].write_bytes(blob)
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(autouse=True)
def _cwd_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edge-mtl run`` saves into ./runs/run/expN by default: each test runs in its own folder
    (a test that needs the repository as its working directory changes to it itself)."""
    monkeypatch.chdir(tmp_path)
