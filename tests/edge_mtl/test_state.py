"""Nothing is overwritten or re-rendered by surprise: a second ``train`` into a run folder,
``synth`` into a used folder or onto a clip, the synthetic-data cache's place, and the words on
what ends a run (epochs or the time limit) and on resuming a finished one."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from edge_mtl.cli import main
from edge_mtl.config import config_from_dict
from edge_mtl.data.cache import default_data_root
from edge_mtl.data.synthetic import synthetic_cache_name
from edge_mtl.runtime.errors import InputError
from edge_mtl.train import RUN_FILES, train
from edge_mtl.train_parts import RunState, end_line, length_line, pace_line
from tests.edge_mtl.conftest import tiny_cfg_dict


def _tiny(epochs: int = 1) -> dict:
    d = tiny_cfg_dict(n_train=8, n_val=4)  # 2 steps of 4 images per epoch
    d["train"]["epochs"] = epochs
    return d


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(config file, a finished one-epoch run folder, its data root), made once."""
    base = tmp_path_factory.mktemp("run")
    cfg = base / "c.yaml"
    cfg.write_text(yaml.safe_dump(_tiny(), sort_keys=False))  # the tasks in the same order
    quiet = {"progress": False, "data_root": base / "data", "log": lambda *_: None}
    train(config_from_dict(_tiny(), str(cfg)), base / "r", "cpu", **quiet)
    return cfg, base / "r", base / "data"


def _copy_run(finished_run, tmp_path: Path) -> Path:
    shutil.copytree(finished_run[1], tmp_path / "r")
    return tmp_path / "r"


def _fingerprint(run: Path) -> dict[str, tuple[bytes, int]]:
    return {n: ((run / n).read_bytes(), (run / n).stat().st_mtime_ns) for n in RUN_FILES}


def _train_cli(capsys, cfg: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["train", "--config", str(cfg), "--out", str(run), "--quiet", "--device", "cpu"]
    code = main([*argv, *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# ---- train into a folder that holds a run ------------------------------------------------------


def test_a_second_train_into_the_same_out_is_refused_and_changes_nothing(
    finished_run, tmp_path, capsys
):
    cfg, _, data = finished_run
    run = _copy_run(finished_run, tmp_path)
    before = _fingerprint(run)
    code, out, err = _train_cli(capsys, cfg, run, "--data-root", str(data))
    assert code == 2 and out == ""
    assert err == (
        f"edge-mtl train: error: {run}: already holds a run (last.pt, best.pt, metrics.jsonl); "
        "continue it with --resume, overwrite it with --exist-ok, or choose another --out\n"
    )
    assert _fingerprint(run) == before
    # the library entry point refuses too, before any data is read
    with pytest.raises(InputError, match="already holds a run"):
        train(config_from_dict(_tiny()), run, "cpu", progress=False, data_root=tmp_path / "none")
    assert _fingerprint(run) == before and not (tmp_path / "none").exists()


def test_exist_ok_starts_afresh_in_a_used_out(finished_run, tmp_path, capsys):
    cfg, _, data = finished_run
    run = _copy_run(finished_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"from": "the earlier run"}\n')
    before = _fingerprint(run)
    code, out, _ = _train_cli(capsys, cfg, run, "--data-root", str(data), "--exist-ok")
    assert code == 0 and f"done: {run}/best.pt" in out
    after = _fingerprint(run)
    assert all(after[n][1] > before[n][1] for n in RUN_FILES)  # every file written anew
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 1 and json.loads(records[0])["epoch"] == 1  # not appended


def test_devices_checks_the_folder_once_before_starting_workers(
    finished_run, tmp_path, capsys, monkeypatch
):
    """``--devices 2`` refuses a used folder in the launching process (no worker is started),
    and hands --exist-ok on to the workers, whose rank 0 clears the folder."""
    from edge_mtl import distributed

    cfg, _, data = finished_run
    run = _copy_run(finished_run, tmp_path)
    launched: list[list[str]] = []
    monkeypatch.setattr(distributed, "launch", lambda n, argv: launched.append(list(argv)) or 0)
    code, _, err = _train_cli(capsys, cfg, run, "--data-root", str(data), "--devices", "2")
    assert code == 2 and "already holds a run" in err and launched == []
    code, _, _ = _train_cli(
        capsys, cfg, run, "--data-root", str(data), "--devices", "2", "--exist-ok"
    )
    assert code == 0 and len(launched) == 1 and "--exist-ok" in launched[0]
    assert all((run / n).exists() for n in RUN_FILES)  # the parent deletes nothing itself


# ---- resuming a finished run ------------------------------------------------------------------


def test_resume_of_a_finished_run_says_why_and_exits_0(finished_run, tmp_path, capsys):
    cfg, _, data = finished_run
    run = _copy_run(finished_run, tmp_path)
    before = _fingerprint(run)
    code, out, err = _train_cli(capsys, cfg, run, "--data-root", str(data), "--resume")
    assert (code, err) == (0, "")
    assert out == (
        f"{run} already finished (1/1 epochs); nothing to resume. Raise --epochs to train further\n"
    )
    assert _fingerprint(run) == before
    # a time limit reached says so and names --time-limit
    code, out, _ = _train_cli(
        capsys, cfg, run, "--data-root", str(data), "--resume", "--epochs", "5",
        "--time-limit", "0.0001",
    )  # fmt: skip
    assert code == 0
    assert re.fullmatch(
        rf"{re.escape(str(run))} already finished \(time limit reached: 0\.\d of 0\.0001 min\); "
        r"nothing to resume\. Raise --time-limit to train further\n",
        out,
    )


def test_resume_with_the_classify_tasks_reordered_is_refused(finished_run, tmp_path, capsys):
    """The order of the classify tasks orders the parameters and the optimizer's saved state:
    a config listing them in another order cannot continue the run (it crashed in AdamW)."""
    _, _, data = finished_run
    run = _copy_run(finished_run, tmp_path)
    cfg = tmp_path / "sorted.yaml"
    cfg.write_text(yaml.safe_dump(_tiny(epochs=2)))  # keys sorted: scene, timeofday, weather
    code, _, err = _train_cli(capsys, cfg, run, "--data-root", str(data), "--resume")
    assert code == 2
    assert err == (
        f"edge-mtl train: error: {run / 'last.pt'}: was trained with the classify tasks in the "
        "order weather, scene, timeofday; list them in that order, or use a new --out\n"
    )


def test_resume_with_more_epochs_trains_further_and_says_what_bounds_the_run(
    finished_run, tmp_path, capsys
):
    """Resumed with --epochs 3 and a time limit, the run trains 4 more steps into the default
    data cache ($EDGE_MTL_CACHE here, rendering there), and the log says at the start what can
    end the run and, once the steps are timed, which one will."""
    import torch

    cfg, _, _ = finished_run
    run = _copy_run(finished_run, tmp_path)
    code, out, _ = _train_cli(
        capsys, cfg, run, "--resume", "--epochs", "3", "--time-limit", "30"
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    cache = default_data_root()
    rendered = cache / synthetic_cache_name(0, 8, (90, 160))
    assert f"rendering 8 synthetic scenes into {rendered} (cached for later runs)" in lines or (
        f"reusing 8 synthetic scenes from {rendered}" in lines
    )
    assert (rendered / "labels.json").is_file()
    assert (
        "run length: 3 epochs of 2 steps (6 steps) or 30 min of training, whichever ends first "
        "(the learning rate anneals to fit that one); which one, the log says once steps are timed"
    ) in lines
    pace = [line for line in lines if line.startswith("at ")]
    assert len(pace) == 1
    assert re.fullmatch(
        r"at \d+\.\d\d s/step, 3 epochs would take ~\d+\.\d min, within the 30 min time limit: "
        r"the epochs end the run; raise --epochs to use the time",
        pace[0],
    )
    done = next(i for i, line in enumerate(lines) if line.startswith("done: "))
    assert re.fullmatch(
        r"run ended after 3 epochs, at \d+\.\d min of the 30 min time limit: raise --epochs to "
        r"use the rest",
        lines[done - 1],
    )
    last = torch.load(run / "last.pt", weights_only=True)
    assert (last["state"]["epoch"], last["state"]["step"]) == (3, 6)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_the_length_and_pace_lines_name_the_bound_that_ends_the_run():
    tc = config_from_dict(_tiny(epochs=30)).train
    assert length_line(tc, 8) == "run length: 30 epochs of 8 steps (240 steps), no time limit"
    limited = dataclasses.replace(tc, time_limit_min=20.0)
    st = RunState(epoch=0, step=20, elapsed=60.0)  # 3 s/step so far
    # 220 steps left at 3 s = 11 min + 1 min done: the epochs end first, at 12 of 20 min
    assert pace_line(st, limited, 8, 3.0) == (
        "at 3.00 s/step, 30 epochs would take ~12.0 min, within the 20 min time limit: the "
        "epochs end the run; raise --epochs to use the time"
    )
    # at 6 s/step: 19 min left = 190 more steps, the limit stops the run at step 210
    assert pace_line(st, limited, 8, 6.0) == (
        "at 6.00 s/step, 30 epochs would take ~23.0 min: the 20 min time limit ends the run at "
        "~epoch 26.2 (step ~210 of 240)"
    )
    assert end_line(RunState(epoch=26, step=210, elapsed=1200.0), limited) == (
        "run ended by the 20 min time limit after 26 of 30 epochs, at step 210"
    )


def test_train_help_says_what_bounds_a_run(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside the path
    monkeypatch.setenv("EDGE_MTL_CACHE", "/never/made/cache")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "whichever comes first, so raise --epochs to use all the time" in text
    assert "--exist-ok" in text and "(default /never/made/cache: $EDGE_MTL_CACHE, else" in text


# ---- synth into a used folder or onto an existing clip -----------------------------------------


def _synth(capsys, *argv: str) -> tuple[int, str]:
    code = main(["synth", "--size", "64", "64", *argv])
    return code, capsys.readouterr().err


def test_synth_refuses_a_non_empty_folder_and_exist_ok_leaves_no_stale_image(tmp_path, capsys):
    out = tmp_path / "s"
    assert _synth(capsys, "--out", str(out), "--n", "5") == (0, "")
    (out / "notes.txt").write_text("mine")
    before = sorted(p.name for p in (out / "images").iterdir())
    code, err = _synth(capsys, "--out", str(out), "--n", "3")
    assert code == 2
    assert err == (
        f"edge-mtl synth: error: {out}: the folder is not empty (images/, labels.json, labels/ and"
        " 2 more); add --exist-ok to replace its images/, masks (labels/), synthetic.json and"
        " labels.json, or choose another --out\n"
    )
    assert sorted(p.name for p in (out / "images").iterdir()) == before  # untouched
    assert _synth(capsys, "--out", str(out), "--n", "3", "--seed", "7", "--exist-ok") == (0, "")
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == ["00000007.jpg", "00000008.jpg", "00000009.jpg"]
    labels = json.loads((out / "labels.json").read_text())
    assert sorted(f["name"] for f in labels) == names
    assert sorted(p.name for p in out.iterdir()) == [
        "images", "labels", "labels.json", "notes.txt", "synthetic.json"
    ]  # fmt: skip
    masks = sorted(p.name for p in (out / "labels" / "drivable" / "masks").iterdir())
    assert masks == [n.replace(".jpg", ".png") for n in names]


def test_a_replacing_render_that_fails_keeps_the_earlier_set(tmp_path, monkeypatch):
    from edge_mtl.data import generate

    out = generate.write_synthetic(tmp_path / "s", 3, 0, (64, 64), workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    masks = {p: p.read_bytes() for p in (out / "labels").rglob("*.png")}
    labels = (out / "labels.json").read_bytes()
    real = generate._render_one

    def dies_at_the_second(job):
        if job[0] == 11:
            raise OSError(28, "No space left on device")
        return real(job)

    monkeypatch.setattr(generate, "_render_one", dies_at_the_second)
    with pytest.raises(OSError):
        generate.write_synthetic(out, 2, 10, (64, 64), workers=1, progress=False, replace=True)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    assert (out / "labels.json").read_bytes() == labels
    assert {p: p.read_bytes() for p in (out / "labels").rglob("*.png")} == masks and len(masks) == 6
    want = ["images", "labels", "labels.json", "synthetic.json"]
    assert sorted(p.name for p in out.iterdir()) == want  # no temp folder


def test_synth_refuses_an_existing_clip_unless_exist_ok(tmp_path, capsys):
    clip = tmp_path / "v.mp4"
    assert _synth(capsys, "--video", str(clip), "--frames", "2") == (0, "")
    old = clip.read_bytes()
    code, err = _synth(capsys, "--video", str(clip), "--frames", "4")
    assert code == 2 and clip.read_bytes() == old
    assert err == (
        f"edge-mtl synth: error: {clip}: already exists; add --exist-ok to replace it, or choose "
        "another --video\n"
    )
    assert _synth(capsys, "--video", str(clip), "--frames", "4", "--exist-ok") == (0, "")
    assert len(clip.read_bytes()) > len(old)


# ---- the synthetic-data cache ------------------------------------------------------------------


def test_the_data_cache_does_not_move_with_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("EDGE_MTL_CACHE", str(tmp_path / "mine"))
    monkeypatch.chdir(tmp_path / "a")
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.chdir(tmp_path / "b")
    assert default_data_root() == tmp_path / "mine"

    monkeypatch.delenv("EDGE_MTL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root() == tmp_path / "xdg" / "edge-mtl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # not absolute: ignored, as XDG says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    seen = default_data_root()
    monkeypatch.chdir(tmp_path / "a")
    assert seen == default_data_root() == tmp_path / "home" / ".cache" / "edge-mtl"
