"""``edge-mtl run --jsonl``: the header and frame records validate against the shipped JSON
Schema, carry video time, file names, every class probability (or the top k) and regression
units, and ``--jsonl -`` writes JSON lines to standard output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import pytest

onnx = pytest.importorskip("onnx")

from edge_mtl.cli import main  # noqa: E402
from edge_mtl.runtime.engine import Engine  # noqa: E402
from edge_mtl.runtime.errors import InputError  # noqa: E402
from edge_mtl.runtime.metadata import METADATA_KEY, ModelMeta, TaskMeta  # noqa: E402
from edge_mtl.runtime.pipeline import Pipeline  # noqa: E402
from edge_mtl.runtime.records import (  # noqa: E402
    JSONL_SCHEMA_VERSION,
    SCHEMA_PATH,
    run_header,
)
from edge_mtl.runtime.sinks import JsonlSink  # noqa: E402
from edge_mtl.runtime.sources import LiveSource, VideoFileSource, open_source  # noqa: E402

UNIT = "1/(50 m)"
FPS = 10.0


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The JSON Schema file the package ships (the one docs/jsonl.md describes)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def unit_model(models, tmp_path_factory) -> Path:
    """The tiny dense model with ``curvature`` declared in ``UNIT``."""
    model = onnx.load(str(models["dense"]))
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    meta = ModelMeta.from_json(prop.value)
    tasks = tuple(
        TaskMeta(**{**t.__dict__, "unit": UNIT}) if t.name == "curvature" else t for t in meta.tasks
    )
    prop.value = meta.replace(tasks=tasks).to_json()
    path = tmp_path_factory.mktemp("unit") / "unit.onnx"
    onnx.save(model, str(path))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(model: Path, source: Path, *extra: str) -> None:
    argv = ["run", "--model", str(model), "--source", str(source), "--provider", "cpu"]
    assert main([*argv, "--threads", "1", *extra]) == 0


def _check_classification(task: dict, classes: tuple[str, ...]) -> None:
    probs = task["probs"]
    assert list(probs) == list(classes)  # every class, in class order
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert task["label"] == max(probs, key=probs.get) == classes[task["index"]]
    assert task["prob"] == probs[task["label"]]


def test_a_video_run_validates_with_video_time_file_and_units(
    tmp_path, unit_model, kit, validator, capsys
) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(6), fps=FPS)
    jsonl = tmp_path / "out.jsonl"
    start = time.time()
    _run(unit_model, clip, "--jsonl", str(jsonl))
    header, *frames = _lines(jsonl)
    for record in (header, *frames):
        validator.validate(record)
    assert {k: header[k] for k in ("type", "schema", "version")} == {
        "type": "header", "schema": "edge-mtl.jsonl", "version": JSONL_SCHEMA_VERSION,
    }  # fmt: skip
    assert header["model"] == str(unit_model)
    assert (header["provider"], header["precision"]) == ("cpu", "fp32")
    assert header["tasks"] == [
        {"name": "det", "kind": "detect", "classes": list(kit.DET_CLASSES)},
        {"name": "weather", "kind": "classify", "classes": list(kit.WEATHER)},
        {"name": "curvature", "kind": "regress", "classes": [], "unit": UNIT},
    ]
    assert header["det_classes"] == list(kit.DET_CLASSES)
    assert (header["source"], header["source_kind"], header["stream"]) == (
        str(clip),
        "video",
        "clip",
    )
    assert header["fps"] == FPS and header["frame_size"] == [48, 64]

    assert [r["frame"] for r in frames] == [r["source_frame"] for r in frames] == list(range(6))
    assert [r["source_time"] for r in frames] == pytest.approx([i / FPS for i in range(6)])
    assert all(r["file"] == str(clip) for r in frames)
    assert all(start <= r["wall_time"] <= time.time() for r in frames)
    assert all(r["age_ms"] == r["latency_ms"]["total"] for r in frames)
    for r in frames:
        _check_classification(r["tasks"]["weather"], kit.WEATHER)
        curvature = r["tasks"]["curvature"]
        assert set(curvature) == {"kind", "value", "unit"}
        assert curvature["kind"] == "regress" and curvature["unit"] == UNIT
        assert isinstance(curvature["value"], float)


def test_an_image_folder_names_files_and_has_no_source_time(
    tmp_path, models, kit, validator
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = [(40, 60), (90, 30), (32, 32)]
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"img_{i}.png"), kit.make_frames(1, h, w, seed=i)[0])
    jsonl = tmp_path / "out.jsonl"
    _run(models["dense"], folder, "--jsonl", str(jsonl))
    header, *frames = _lines(jsonl)
    for record in (header, *frames):
        validator.validate(record)
    assert (header["source_kind"], header["fps"], header["frame_size"]) == (
        "images",
        None,
        [40, 60],
    )
    assert header["tasks"][2]["unit"] == ""  # a model that declares no unit
    assert [r["file"] for r in frames] == ["img_0.png", "img_1.png", "img_2.png"]
    assert [r["source_time"] for r in frames] == [None, None, None]
    assert all(r["tasks"]["curvature"]["unit"] == "" for r in frames)


def test_topk_keeps_the_k_most_probable_classes(tmp_path, models, kit, validator) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(4), fps=FPS)
    engine = Engine(models["dense"], "cpu")
    paths = {k: tmp_path / f"top{k}.jsonl" for k in (None, 2)}
    for k, path in paths.items():
        source = open_source(str(clip))
        sink = JsonlSink(path, header=run_header(engine, source, "clip"), topk=k)
        Pipeline(engine, source, [sink]).run()
    every, top2 = _lines(paths[None]), _lines(paths[2])
    assert len(top2) == len(every) == 5
    for full, cut in zip(every[1:], top2[1:]):
        validator.validate(cut)
        probs, kept = full["tasks"]["weather"]["probs"], cut["tasks"]["weather"]["probs"]
        assert len(probs) == len(kit.WEATHER) and len(kept) == 2
        assert list(kept) == sorted(probs, key=probs.get, reverse=True)[:2]  # descending
        assert kept == {c: probs[c] for c in kept}
        assert next(iter(kept)) == cut["tasks"]["weather"]["label"]
    with pytest.raises(InputError, match="at least 1"):
        JsonlSink(tmp_path / "bad.jsonl", topk=0)


def test_a_run_without_frames_still_writes_its_header(tmp_path, models, kit, validator) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(2), fps=FPS)
    engine, source = Engine(models["dense"], "cpu"), open_source(str(clip))
    path = tmp_path / "empty.jsonl"
    sink = JsonlSink(path, header=run_header(engine, source, "0"))
    source.close()
    sink.close()
    sink.close()  # the pipeline closes once; a second close is harmless
    (header,) = _lines(path)
    validator.validate(header)
    assert header["source_kind"] == "video" and "frame_size" not in header


def test_dash_writes_json_lines_to_stdout_and_no_file(
    tmp_path, models, kit, validator, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(3), fps=FPS)
    _run(models["dense"], clip, "--jsonl", "-")
    out = capsys.readouterr().out.splitlines()
    records = [json.loads(ln) for ln in out if ln.startswith("{")]
    assert [r["type"] for r in records] == ["header", "frame", "frame", "frame"]
    for record in records:
        validator.validate(record)
    assert not (tmp_path / "-").exists()
    print("stdout still open")  # the sink never closes sys.stdout
    assert capsys.readouterr().out == "stdout still open\n"


def test_dash_piped_into_a_reader_that_stops_ends_the_run_quietly(tmp_path, models, kit) -> None:
    """``run --jsonl - | head -n 2``: the run stops when the pipe closes, exit 0, no traceback."""
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(300, 24, 32), fps=FPS)
    code = "import sys; from edge_mtl.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["run", "--model", str(models["dense"]), "--source", str(clip), "--provider", "cpu"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv, "--jsonl", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = [proc.stdout.readline() for _ in range(2)]
        proc.stdout.close()  # as `head -n 2` does
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [json.loads(ln)["type"] for ln in first] == ["header", "frame"]
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_dash_puts_nothing_but_json_on_stdout(tmp_path, models, kit, capsys) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(3), fps=FPS)
    _run(models["dense"], clip, "--jsonl", "-")
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(ln)["type"] for ln in out] == ["header", "frame", "frame", "frame"]


def test_old_format_lines_fail_validation(validator) -> None:
    old = {  # what `run --jsonl` wrote before schema version 1
        "capture_time": 1732352000.1, "age_ms": 9.1, "frame": 7, "source_frame": 7, "file": "",
        "detections": [{"box": [1, 2, 3, 4], "score": 0.9, "class_id": 0, "label": "car"}],
        "tasks": {"weather": {"label": "rain", "prob": 0.8}, "curvature": 0.012},
        "latency_ms": {"preprocess": 1.2, "inference": 5.0, "postprocess": 0.3, "total": 9.1},
    }  # fmt: skip
    assert not validator.is_valid(old)
    new = {
        **{k: v for k, v in old.items() if k != "capture_time"},
        "type": "frame", "source_time": 0.7, "wall_time": 1732352000.1,
        "tasks": {"curvature": {"kind": "regress", "value": 0.012, "unit": ""}},
    }  # fmt: skip
    validator.validate(new)
    assert not validator.is_valid({**new, "tasks": {"curvature": 0.012}})  # a bare number
    classify = {"kind": "classify", "label": "rain", "index": 1, "prob": 0.8}
    assert not validator.is_valid({**new, "tasks": {"weather": classify}})  # no probs
    header = {"type": "header", "schema": "edge-mtl.jsonl", "version": JSONL_SCHEMA_VERSION}
    validator.validate(header)
    assert not validator.is_valid({**header, "version": JSONL_SCHEMA_VERSION + 1})


class _NoPosition:
    """A capture whose decoder reports no position (CAP_PROP_POS_MSEC stays 0)."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap

    def get(self, prop: int) -> float:
        return 0.0 if prop == cv2.CAP_PROP_POS_MSEC else self._cap.get(prop)

    def read(self):
        return self._cap.read()

    def release(self) -> None:
        self._cap.release()


def test_video_time_falls_back_to_index_over_fps(tmp_path, kit) -> None:
    clip = kit.write_video(tmp_path / "clip.mp4", kit.make_frames(5), fps=4.0)
    decoded = VideoFileSource(str(clip))
    assert [f.source_time for f in iter(decoded.read, None)] == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1.0]
    )
    source = VideoFileSource(str(clip))
    source._cap = _NoPosition(source._cap)
    frames = list(iter(source.read, None))
    assert [f.source_time for f in frames] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [f.name for f in frames] == [str(clip)] * 5


def test_live_frames_carry_their_capture_time(kit) -> None:
    camera = kit.FakeCapture()
    source = LiveSource(lambda: camera, "fake camera")
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame is not None and frame.source_time == frame.timestamp and frame.name == ""


def test_the_documented_example_validates(validator) -> None:
    """docs/jsonl.md's example header and frame follow the schema they document."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "jsonl.md").read_text(encoding="utf-8")
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    decoder, records, i = json.JSONDecoder(), [], 0
    while block[i:].strip():
        record, i = decoder.raw_decode(block, len(block) - len(block[i:].lstrip()))
        records.append(record)
    header, frame = records
    validator.validate(header)
    validator.validate(frame)
    tasks = {t["name"]: t for t in header["tasks"]}
    for name, answer in frame["tasks"].items():
        assert answer["kind"] == tasks[name]["kind"]
        if answer["kind"] == "classify":
            assert list(answer["probs"]) == tasks[name]["classes"]
            assert sum(answer["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        else:
            assert answer["unit"] == tasks[name]["unit"]
    assert all(d["label"] == header["det_classes"][d["class_id"]] for d in frame["detections"])


def test_the_schema_ships_with_the_package() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"edge_mtl.runtime" = ["jsonl.schema.json"]' in pyproject
    assert SCHEMA_PATH.parent.name == "runtime" and SCHEMA_PATH.is_file()
