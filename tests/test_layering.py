"""DESIGN.md's dependency direction, checked on the source of every module:

    runtime  <-  bench  <-  calibration  <-  export  ->  edge_mtl (training)  ->  runtime

``runtime`` imports nothing of ours and never torch or onnx; ``bench`` and ``calibration`` never
import torch (``calibration`` never ``export`` either: quantization runs without torch). The one
composition root, ``edge_mtl/cli.py``, registers every package's subcommands and is exempt.
The modules that build the ``edge-mtl`` parser import no heavy library at module level, so
``edge-mtl --help`` stays instant and a command loads only the libraries it uses."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("runtime", "bench", "calibration", "export", "training")
# folder in the repository -> (layer name, layers of ours it may import, third-party it must not)
LAYERS = {
    "runtime": ("runtime", set(), {"torch", "torchvision", "onnx", "onnxscript"}),
    "bench": ("bench", {"runtime"}, {"torch", "torchvision"}),
    "calibration": ("calibration", {"runtime", "bench"}, {"torch", "torchvision"}),
    "export": ("export", {"runtime", "bench", "calibration", "training"}, set()),
    # training reuses bench's torch-free metrics (COCO mAP, accuracy/F1); bench never imports
    # training, so this adds no cycle
    "edge_mtl": ("training", {"runtime", "bench"}, set()),
}
EXEMPT = {ROOT / "edge_mtl" / "cli.py"}
# imported while the parser is built: heavy libraries load inside their handlers only
PARSER_MODULES = (
    "edge_mtl/cli.py",
    "edge_mtl/commands.py",
    "edge_mtl/eval_cli.py",
    "edge_mtl/compare_cli.py",
    "runtime/cli.py",
    "runtime/web/cli.py",
    "bench/cli.py",
    "bench/env.py",
    "calibration/cli.py",
    "export/cli.py",
)
HEAVY = {"onnxruntime", "onnx", "torch", "torchvision", "cv2"}


def _layer_of(module: str) -> str | None:
    """The layer of an absolute module name, or None for third-party modules."""
    parts = module.split(".")
    if parts[0] != "edge_mtl":
        return None
    if len(parts) > 1 and parts[1] in ("runtime", "bench", "calibration", "export"):
        return parts[1]
    return "training"


def _names(nodes) -> set[str]:
    """Absolute module names the import statements among ``nodes`` import."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "edge_mtl":  # `from edge_mtl import runtime`
                names |= {f"edge_mtl.{a.name}" for a in node.names}
    return names


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    return _names(ast.walk(ast.parse(path.read_text())))


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements that run on import: not function bodies, not ``if TYPE_CHECKING:``."""
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out += _module_level(node.orelse)
            continue
        out.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            out += _module_level(getattr(node, field, []))
    return out


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_package_imports_point_one_way(folder):
    layer, allowed, banned = LAYERS[folder]
    bad = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path in EXEMPT:
            continue
        hits = set()
        for name in _imports(path):
            other = _layer_of(name)
            if (other is None and name.split(".")[0] in banned) or (
                other not in (None, layer) and other not in allowed
            ):
                hits.add(name)
        if hits:
            bad[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bad


def test_old_top_level_names_are_gone():
    """The repository folders are installed under ``edge_mtl``: no module imports them bare."""
    bare = {}
    for folder in LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            hits = {n for n in _imports(path) if n.split(".")[0] in OURS[:4]}
            if hits:
                bare[str(path.relative_to(ROOT))] = sorted(hits)
    assert not bare


@pytest.mark.parametrize("module", PARSER_MODULES)
def test_parser_modules_import_no_heavy_library_at_module_level(module):
    path = ROOT / module
    eager = _names(_module_level(ast.parse(path.read_text()).body))
    assert not {n for n in eager if n.split(".")[0] in HEAVY}


def test_module_level_finds_imports_that_run_on_import():
    """The walk the rule above relies on: function bodies and TYPE_CHECKING blocks are lazy."""
    tree = ast.parse(
        "import a\nif TYPE_CHECKING:\n    import b\nelse:\n    import c\n"
        "try:\n    import d\nexcept ImportError:\n    import e\n"
        "def f():\n    import g\nclass K:\n    import h\n"
    )
    assert _names(_module_level(tree.body)) == {"a", "c", "d", "e", "h"}
