"""The wheel `make wheel` builds holds every module and every data file the program reads."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files read at run time through importlib.resources, not imported.
DATA_FILES = {
    "edge_mtl/configs/synthetic.yaml",
    "edge_mtl/configs/tiny.yaml",
    "edge_mtl/runtime/jsonl.schema.json",
    "edge_mtl/runtime/web/static/index.html",
    "edge_mtl/runtime/web/static/app.js",
    "edge_mtl/runtime/web/static/style.css",
}


def _tracked_modules() -> set[str]:
    """Each tracked .py file of a package folder, named as it lies in the wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    wanted = set()
    for path in tracked:
        folder = str(Path(path).parent)
        for package, source in folders.items():
            if folder == source or folder.startswith(source + "/"):
                inner = folder[len(source) :].lstrip("/")
                parts = [package.replace(".", "/"), inner, Path(path).name]
                wanted.add("/".join(p for p in parts if p))
                break
    return wanted


def test_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", minversion="77")
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to list the tracked modules")
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "-w", str(tmp_path), str(ROOT)),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    # setuptools warns when a folder of data files is not declared as a package of its own.
    assert "BuildBackendWarning" not in build.stderr, build.stderr
    (wheel,) = tmp_path.glob("edge_mtl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = _tracked_modules()
    assert "edge_mtl/runtime/engine.py" in modules
    assert sorted(modules - names) == []
    assert sorted(DATA_FILES - names) == []
