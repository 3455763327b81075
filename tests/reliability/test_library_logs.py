"""OpenCV's own log lines ("[ WARN:0@0.01] global cap_v4l.cpp ... can't open camera by index")
stay off the console script's stderr unless ``--debug``: every line there is edge-mtl's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mtl.runtime.errors import DEBUG_ENV

REPO = Path(__file__).resolve().parents[2]
MISSING_CAMERA = "9"  # a camera index no test machine has


def _run(art: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (DEBUG_ENV, "OPENCV_LOG_LEVEL")}
    argv = ["run", "--provider", "cpu", "--model", art["model"], "--source", MISSING_CAMERA]
    return subprocess.run(
        [sys.executable, "-m", "edge_mtl", *flags, *argv, "--reconnect-timeout", "0.5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env=env,
    )


@pytest.mark.skipif(os.path.exists(f"/dev/video{MISSING_CAMERA}"), reason="that camera exists")
def test_opencv_warnings_only_with_debug(art) -> None:
    proc = _run(art)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert all(ln.startswith("edge-mtl run: ") for ln in lines), proc.stderr
    assert lines[-1] == f"edge-mtl run: error: source camera {MISSING_CAMERA}: cannot open " + (
        "(no such camera/stream, or it refused)"
    )
    debug = _run(art, "--debug")
    if "[ WARN" not in debug.stderr:
        pytest.skip("this OpenCV build logs nothing on a missing camera")
    assert debug.returncode == 2
