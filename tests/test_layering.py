"""DESIGN.md's dependency direction, checked on the source of every module:

    runtime  <-  bench  <-  calibration  <-  export  ->  edge_mtl (training)  ->  runtime

``runtime`` imports nothing of ours and never torch or onnx; ``bench`` and ``calibration`` never
import torch. The one composition root, ``edge_mtl/cli.py``, registers every package's
subcommands and is exempt."""

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


def _layer_of(module: str) -> str | None:
    """The layer of an absolute module name, or None for third-party modules."""
    parts = module.split(".")
    if parts[0] != "edge_mtl":
        return None
    if len(parts) > 1 and parts[1] in ("runtime", "bench", "calibration", "export"):
        return parts[1]
    return "training"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "edge_mtl":  # `from edge_mtl import runtime`
                names |= {f"edge_mtl.{a.name}" for a in node.names}
    return names


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
