"""The bad-input matrix: every CLI command x the ways its input can be wrong (the cases are
data, one per line, in ``cli_cases.txt``).

Each case runs ``edge_mtl.cli.main`` in-process and checks the contract users rely on: exit
code 2 (usage or input error) or 1 (a runtime failure), exactly one line on stderr that starts
``edge-mtl COMMAND: error:``, names the thing (a path, URL or provider) and says the problem,
and no traceback (``--debug`` shows one). A few cases run the real console script in a
subprocess, where C libraries (FFmpeg, onnxruntime) could add lines of their own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
import pytest

from edge_mtl.cli import main
from edge_mtl.runtime.errors import DEBUG_ENV
from tests.reliability.conftest import MATRIX, locked_readable

REPO = Path(__file__).resolve().parents[2]
COMMANDS = (
    "synth", "train", "eval", "export", "quantize", "run", "serve", "bench", "eval-video",
)  # fmt: skip
CASES_FILE = Path(__file__).with_name("cli_cases.txt")
# Cases that fail until a change outside this suite lands. A strict xfail on a failed assertion
# only: the fix landing shows up (XPASS fails), and a traceback still fails the case.
FIXES: dict[str, str] = {}  # key -> the change awaited; every one so far has landed


@dataclass(frozen=True)
class Case:
    """One line of ``cli_cases.txt`` (its header explains the fields)."""

    id: str
    code: int
    argv: str
    names: str
    problem: str
    flags: tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return self.argv.split()[0]

    @property
    def fix(self) -> str:
        key = next((f.removeprefix("fix=") for f in self.flags if f.startswith("fix=")), "")
        return FIXES[key] if key else ""


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(" | ")]
        assert len(fields) in (5, 6), f"{path.name}:{n}: expected 5 or 6 fields: {line}"
        assert fields[4] and not fields[4].endswith("|"), f"{path.name}:{n}: empty problem"
        flags = tuple(fields[5].split()) if len(fields) == 6 else ()
        cases.append(Case(fields[0], int(fields[1]), *fields[2:5], flags))
    return cases


CASES = load_cases()


def _param(case: Case):
    marks = [getattr(pytest.mark, MATRIX)]
    if case.fix:
        marks.append(pytest.mark.xfail(raises=AssertionError, strict=True, reason=case.fix))
    return pytest.param(case, id=case.id, marks=marks)


def _paths(case: Case, request: pytest.FixtureRequest) -> dict[str, str]:
    paths = dict(request.getfixturevalue("art"))
    if "torch" in case.flags:
        pytest.importorskip("torch")
        if "pt}" in case.argv:
            paths.update(request.getfixturevalue("ckpt"))
    if "locked" in case.flags and locked_readable(paths["locked_dir"]):
        pytest.skip("running as root: a chmod-000 path is still readable")
    return paths


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``edge-mtl ARGV`` in-process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse ends usage errors this way
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def check_one_line_error(err: str, command: str) -> str:
    """The stderr contract: one line, ``edge-mtl COMMAND: error: ...``, no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"edge-mtl {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, request, capsys, monkeypatch) -> None:
    paths = _paths(case, request)
    monkeypatch.chdir(REPO)  # configs/tiny.yaml
    if "cpu-only" in case.flags:
        monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    argv = [a.format(**paths) for a in case.argv.split()]
    code, _, err = run_cli(argv, capsys)
    line = check_one_line_error(err, case.command)
    assert case.names.format(**paths) in line, line
    assert re.search(case.problem, line), line
    assert code == case.code, f"exit code {code}, expected {case.code}: {line}"


def test_matrix_covers_every_command() -> None:
    assert sorted({c.command for c in CASES}) == sorted(COMMANDS)
    assert len({c.id for c in CASES}) == len(CASES)


def test_debug_shows_the_traceback(art, capsys) -> None:
    code, _, err = run_cli(
        ["--debug", "run", "--model", art["v99"], "--source", art["png"]], capsys
    )
    assert code == 2
    assert "Traceback (most recent call last)" in err and "MetadataError" in err
    assert err.strip().splitlines()[-1].startswith("edge-mtl run: error: ")


# ---- bad input that is survived: the run goes on ---------------------------------------


def _run_on(art: dict[str, str], source: str) -> list[str]:
    return ["run", "--provider", "cpu", "--model", art["model"], "--source", art[source]]


def test_damaged_video_frame_is_skipped(art, capsys) -> None:
    code, out, err = run_cli(_run_on(art, "damaged_avi"), capsys)
    assert code == 0, err
    frames = int(re.search(r"run: (\d+) frames", out).group(1))
    assert 20 <= frames < 30  # the undecodable frame(s) skipped, the rest delivered


def test_corrupt_image_in_a_folder_is_skipped(art, capsys, caplog) -> None:
    code, out, err = run_cli(_run_on(art, "mixed_images"), capsys)
    assert code == 0, err
    assert "run: 3 frames" in out
    assert "skipped 1b.jpg (cannot decode image)" in caplog.text


def test_truncated_video_runs_what_it_has(art, capsys, caplog) -> None:
    code, out, err = run_cli(_run_on(art, "trunc_avi"), capsys)
    assert code == 0, err
    assert 0 < int(re.search(r"run: (\d+) frames", out).group(1)) < 30
    assert "truncated or corrupt" in caplog.text


# ---- the real console script -----------------------------------------------------------


def _script(*argv: str) -> subprocess.CompletedProcess[str]:
    # as a user starts it: an in-process ``main(["--debug", ...])`` above leaves EDGE_MTL_DEBUG set
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    return subprocess.run(
        [sys.executable, "-m", "edge_mtl", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
        env=env,
    )


@pytest.mark.matrix
def test_script_missing_model_is_one_line(art) -> None:
    proc = _script("run", "--model", f"{art['dir']}/nope.onnx", "--source", art["png"])
    assert proc.returncode == 2
    line = check_one_line_error(proc.stderr, "run")
    assert f"{art['dir']}/nope.onnx: model file not found" in line


@pytest.mark.matrix
def test_script_truncated_video_is_one_line(art) -> None:
    """FFmpeg's own complaints ("moov atom not found") stay off stderr: every line there is
    edge-mtl's (the engine's info line, then the one error line)."""
    proc = _script(*_run_on(art, "trunc_mp4"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert all(ln.startswith("edge-mtl run: ") for ln in lines), proc.stderr
    errors = [ln for ln in lines if ln.startswith("edge-mtl run: error: ")]
    assert errors == lines[-1:], proc.stderr
    assert art["trunc_mp4"] in errors[0] and "cannot open as a video" in errors[0]


@pytest.mark.matrix
def test_script_auto_and_a_corrupt_image_are_a_line_each(art) -> None:
    """``--provider auto`` on this machine, a folder with one undecodable image: stderr holds
    the engine's one line (the provider, and in brief why better ones were skipped: on a
    machine without a GPU, TensorRT and CUDA) and one line naming the image."""
    proc = _script("run", "--model", art["model"], "--source", art["mixed_images"], "--no-save")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith(f"edge-mtl run: {Path(art['model']).name}: provider "), lines[0]
    assert lines[1] == (
        f"edge-mtl run: source {art['mixed_images']}: skipped 1b.jpg (cannot decode image)"
    )


@pytest.mark.matrix
def test_script_truncated_jpeg_that_decodes_is_one_line(art, tmp_path) -> None:
    """A JPEG cut in half still decodes (its lower part grey) and is delivered; libjpeg's own
    "Premature end of JPEG file" lines stay off stderr, one line names the file instead."""
    import cv2
    import numpy as np

    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    jpg = cv2.imencode(".jpg", noise)[1].tobytes()
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    proc = _script("run", "--provider", "cpu", "--model", art["model"], "--source", str(folder),
                   "--no-save")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "run: 1 frames" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines[1:] == [
        f"edge-mtl run: source {folder}: cut.jpg is truncated, decoded what it has"
    ]


def test_script_debug_shows_the_traceback(art) -> None:
    proc = _script("--debug", "run", "--model", f"{art['dir']}/nope.onnx", "--source", art["png"])
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("edge-mtl run: error: ")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert re.fullmatch(r"edge-mtl \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
