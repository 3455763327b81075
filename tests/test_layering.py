"""DESIGN.md's dependency direction, checked on the source: runtime <- calibration <- export ->
edge_mtl -> runtime, and runtime/calibration never import torch. The one composition root,
``edge_mtl/cli.py``, registers every package's subcommands and is exempt."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "runtime": {"torch", "torchvision", "onnx", "edge_mtl", "export", "calibration"},
    "calibration": {"torch", "torchvision", "edge_mtl", "export"},
    "edge_mtl": {"export", "calibration"},
    "export": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package):
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path == ROOT / "edge_mtl" / "cli.py":
            continue
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad[str(path.relative_to(ROOT))] = sorted(hit)
    assert not bad
