"""Model files are validated before use and never executed as code.

The runtime has no ``onnx`` package, so onnxruntime's own loader is its checker: a file it
rejects becomes ``"<file>: not a valid ONNX model (<reason>)"``. Cheap checks before that
(missing, empty, a folder, a checkpoint or pickle by mistake) never parse or unpickle anything.
The metadata is versioned, and the runtime's sources hold no pickle/eval/exec at all.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path

import onnxruntime as ort
import pytest
from onnx import helper

from edge_mtl.calibration.quantize import load_fp32
from edge_mtl.runtime.errors import InputError, MetadataError
from edge_mtl.runtime.files import check_model_file, invalid_model_error
from edge_mtl.runtime.metadata import FORMAT_VERSION, ModelMeta
from tests.reliability.conftest import onnx

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", r"not a valid ONNX model \(the file is empty\)"),
        (b"\x80\x04\x95 pickle", "a Python pickle"),
        (b'{"weights": []}', "a JSON text file"),
        (None, "is a folder"),
        ("zip", "PyTorch checkpoint"),
    ],
)
def test_check_model_file_refuses_what_is_not_onnx(tmp_path, content, problem) -> None:
    path = tmp_path / "model.onnx"
    if content is None:
        path.mkdir()
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"\x80\x02.")
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(str(path)) + ": .*" + problem):
        check_model_file(path)


def test_check_model_file_passes_a_real_model(art) -> None:
    assert check_model_file(art["model"]) == Path(art["model"])
    with pytest.raises(InputError, match="model file not found"):
        check_model_file(Path(art["dir"]) / "missing.onnx")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("trunc_onnx", "Protobuf parsing failed"), ("garbage_onnx", "Protobuf parsing failed")],
)
def test_onnxruntime_rejection_reads_as_not_a_valid_model(art, name, reason) -> None:
    with pytest.raises(Exception) as info:  # onnxruntime's own error types
        ort.InferenceSession(art[name], providers=["CPUExecutionProvider"])
    message = str(invalid_model_error(art[name], info.value))
    assert message.startswith(f"{art[name]}: not a valid ONNX model ({reason}")
    assert "[ONNXRuntimeError]" not in message and "\n" not in message


def test_future_ir_version_reads_as_not_a_valid_model(art, tmp_path) -> None:
    model = onnx.load(art["model"])
    model.ir_version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Exception) as info:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    message = str(invalid_model_error(path, info.value))
    assert message.startswith(f"{path}: not a valid ONNX model (") and "IR version" in message


def test_provider_failure_is_not_blamed_on_the_model() -> None:
    message = str(invalid_model_error("m.onnx", RuntimeError("CUDA out of memory")))
    assert message == "m.onnx: cannot load the model (CUDA out of memory)"


def test_quantize_runs_the_onnx_checker(art, tmp_path) -> None:
    """A file that parses but whose graph is broken is refused before any work."""
    model = onnx.load(art["model"])
    model.graph.node.append(helper.make_node("Relu", ["no_such_tensor"], ["y"]))
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    with pytest.raises(InputError, match=re.escape(str(path)) + ": not a valid ONNX model"):
        load_fp32(path)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": FORMAT_VERSION + 1}, "version 2 is not supported .*upgrade edge-mtl"),
        ({"version": None}, "version None is not supported"),
        ({"tasks": []}, "lists no tasks"),
        ({"tasks": [{"name": "det"}]}, "malformed \\(missing key 'kind'\\)"),
        ({"input_hw": [0, 32]}, "input_hw must be positive"),
        ({"std": [0.2, 0.0, 0.2]}, "std > 0"),
    ],
)
def test_metadata_is_validated(art, change, problem) -> None:
    props = onnx.load(art["model"]).metadata_props
    good = json.loads(props[0].value)
    ModelMeta.from_json(json.dumps(good), "m.onnx")  # the unchanged metadata reads
    with pytest.raises(MetadataError, match="m.onnx: .*" + problem):
        ModelMeta.from_json(json.dumps({**good, **change}), "m.onnx")


# Modules that unpickle or unmarshal, and calls that run text as code.
LOADERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
BUILTINS = {"eval", "exec", "compile", "__import__"}


def code_execution(path: Path) -> set[str]:
    """What in ``path``'s code (not its comments or docstrings) could run a file as code:
    imports of pickle-like loaders, ``torch.load``, ``np.load(allow_pickle=True)`` and the
    builtins ``eval``/``exec``/``compile``/``__import__``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in LOADERS}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LOADERS:
            found.add(node.module)
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in BUILTINS:
                found.add(f"{f.id}(")
            if isinstance(f, ast.Attribute) and ast.unparse(f) == "torch.load":
                found.add("torch.load")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                found.add("allow_pickle")
    return found


def test_runtime_never_executes_model_files() -> None:
    sources = sorted(RUNTIME.rglob("*.py"))
    assert len(sources) > 5
    hits = {str(p.relative_to(RUNTIME.parent)): code_execution(p) for p in sources}
    assert {k: v for k, v in hits.items() if v} == {}


def test_the_scan_would_see_it(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""pickle and eval() in a docstring are fine"""\n'
        "import pickle\nimport re\nx = eval('1')\ny = re.compile('z')\n"
        "w = torch.load(f)\nv = np.load(f, allow_pickle=True)\n"
    )
    assert code_execution(bad) == {"pickle", "eval(", "torch.load", "allow_pickle"}
