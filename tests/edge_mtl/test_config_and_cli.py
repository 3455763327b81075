import cv2
import numpy as np
import pytest
import yaml

from edge_mtl.cli import main
from edge_mtl.config import (
    Amp,
    Backbone,
    ConfigError,
    SourceKind,
    WeightingName,
    builtin_configs,
    config_from_dict,
    load_config,
)
from edge_mtl.data.generate import write_synthetic
from tests.edge_mtl.conftest import tiny_cfg_dict


def _write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_configs_load():
    for name in ("configs/synthetic.yaml", "configs/tiny.yaml"):
        cfg = load_config(name)
        assert cfg.model.detect and cfg.model.classify and cfg.model.regress


def test_built_in_configs_load_by_name_and_equal_their_files():
    assert builtin_configs() == ["compare-synthetic", "synthetic", "tiny"]
    for name in builtin_configs():
        by_name, by_path = load_config(name), load_config(f"configs/{name}.yaml")
        assert by_name.to_dict() == by_path.to_dict()
        assert by_name.source.endswith(f"configs/{name}.yaml")


def test_a_file_in_the_working_folder_wins_over_a_built_in_name(tmp_path, monkeypatch):
    d = tiny_cfg_dict()
    d["train"]["epochs"] = 7
    _write(tmp_path, d, name="tiny")
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").train.epochs == 7


def test_an_unknown_name_is_one_line_listing_the_built_in_names(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^nope: no such config file or built-in config"):
        load_config("nope")
    code, err = _cli(capsys, "train", "--config", "nope", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("(built-in: compare-synthetic, synthetic, tiny)")


def test_closed_sets_of_names_are_enums_spelled_as_in_yaml():
    d = tiny_cfg_dict()
    d["train"].update(amp="bf16", weighting="dwa")
    cfg = config_from_dict(d)
    assert cfg.model.backbone is Backbone.RESNET18 and cfg.train.amp is Amp.BF16
    assert cfg.train.weighting is WeightingName.DWA
    assert cfg.data.train[0].kind is SourceKind.SYNTHETIC
    plain = cfg.to_dict()  # what a checkpoint embeds: plain strings, YAML spelling
    assert (plain["model"]["backbone"], plain["train"]["amp"]) == ("resnet18", "bf16")
    assert (
        type(plain["train"]["weighting"]) is str
        and plain["data"]["train"][0]["kind"] == "synthetic"
    )
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(plain))) == cfg
    for section, key, value in (("model", "backbone", "resnet99"), ("train", "amp", "fp8")):
        bad = tiny_cfg_dict()
        bad[section][key] = value
        with pytest.raises(
            ConfigError, match=rf"{section}\.{key}: expected one of .*got '{value}'"
        ):
            config_from_dict(bad, "c.yaml")


def test_channels_last_is_no_longer_a_key_but_old_checkpoints_still_load():
    from pathlib import Path

    from edge_mtl.checkpoint import CHECKPOINT_VERSION, check_resumable, config_of
    from edge_mtl.runtime.errors import InputError

    d = tiny_cfg_dict()
    d["train"]["channels_last"] = True
    with pytest.raises(ConfigError, match=r"train\.channels_last: unknown key"):
        config_from_dict(d, "c.yaml")
    now = config_from_dict(tiny_cfg_dict(), "x").to_dict()
    assert config_of({"config": d}, "old.pt").to_dict() == now
    old = {**now, "train": {**now["train"], "channels_last": True}}  # as an old last.pt has it
    check_resumable({"version": CHECKPOINT_VERSION, "config": old}, Path("last.pt"), now)
    faster = tiny_cfg_dict()
    faster["train"]["lr"] = 0.5
    faster = config_from_dict(faster).to_dict()
    with pytest.raises(InputError, match=r"last\.pt: was trained with a different config"):
        check_resumable({"version": CHECKPOINT_VERSION, "config": old}, Path("last.pt"), faster)


def test_validating_a_config_imports_no_torch():
    """``edge_mtl.config`` and the weighting names it checks need no torch (no import cycle
    through ``edge_mtl.weighting``)."""
    import subprocess
    import sys

    from tests.runtime.conftest import BLOCK_TORCH

    code = BLOCK_TORCH + (
        "from edge_mtl.config import load_config\n"
        "cfg = load_config('synthetic')\n"
        "import sys\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch']\n"
        "print(cfg.train.weighting, cfg.model.backbone, len(cfg.data.train))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["fixed", "resnet18", "1"]


def test_unknown_key_names_file_and_key(tmp_path):
    d = tiny_cfg_dict()
    d["train"]["learning_rate"] = 0.1
    p = _write(tmp_path, d)
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.learning_rate: unknown key"):
        load_config(p)


def test_wrong_type_names_file_key_and_value(tmp_path):
    d = tiny_cfg_dict()
    d["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"c\.yaml: train\.lr: expected a number, got 'fast'"):
        load_config(_write(tmp_path, d))
    d = tiny_cfg_dict()
    d["model"]["input_hw"] = [100, 96]
    with pytest.raises(ConfigError, match="multiples of 32"):
        load_config(_write(tmp_path, d))


def _cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_wrong_config_key_is_one_line_exit_2(tmp_path, capsys):
    d = tiny_cfg_dict()
    d["modle"] = {}
    code, err = _cli(
        capsys, "train", "--config", str(_write(tmp_path, d)), "--out", str(tmp_path / "r")
    )
    assert code == 2 and len(err.splitlines()) == 1 and "modle: unknown key" in err
    assert "Traceback" not in err


def test_cli_missing_data_directory(tmp_path, capsys):
    d = tiny_cfg_dict()
    d["data"]["train"] = [{"kind": "bdd100k", "path": str(tmp_path / "nope")}]
    code, err = _cli(
        capsys,
        "train",
        "--config",
        str(_write(tmp_path, d)),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 2 and err.endswith("nope: data directory not found")


def test_cli_corrupt_image_names_the_file(tmp_path, capsys):
    data = tmp_path / "set"
    write_synthetic(data, 8, hw=(90, 160), progress=False)
    (data / "images" / "00000003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    d = tiny_cfg_dict()
    d["data"]["train"] = [{"kind": "bdd100k", "path": str(data)}]
    d["data"]["val"] = []
    code, err = _cli(
        capsys,
        "train",
        "--config",
        str(_write(tmp_path, d)),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
    )
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("00000003.jpg: corrupt or unreadable image")


def test_cli_missing_config_and_missing_weights(tmp_path, capsys):
    code, err = _cli(capsys, "train", "--config", str(tmp_path / "x.yaml"), "--out", "r")
    assert code == 2 and "x.yaml: config file not found" in err
    code, err = _cli(capsys, "eval", "--weights", str(tmp_path / "w.pt"))
    assert code == 2 and "w.pt: checkpoint not found" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    code, err = _cli(capsys, "eval", "--weights", str(bad))
    assert code == 2 and "bad.pt: not a readable checkpoint" in err and len(err.splitlines()) == 1


def test_cli_synth_writes_images_labels_and_video(tmp_path, capsys):
    code, _ = _cli(
        capsys,
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--n",
        "3",
        "--size",
        "90",
        "160",
        "--video",
        str(tmp_path / "clip.mp4"),
        "--frames",
        "5",
    )
    assert code == 0
    assert len(list((tmp_path / "s" / "images").glob("*.jpg"))) == 3
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5


def test_cli_train_then_eval_json(tmp_path, capsys):
    d = tiny_cfg_dict()
    d["train"]["epochs"] = 1
    cfg = _write(tmp_path, d)
    code, _ = _cli(
        capsys,
        "train",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "r"),
        "--quiet",
        "--data-root",
        str(tmp_path / "data"),
    )
    assert code == 0
    code = main(
        [
            "eval",
            "--weights",
            str(tmp_path / "r" / "best.pt"),
            "--json",
            "--data-root",
            str(tmp_path / "data"),
        ]
    )
    out = capsys.readouterr().out  # the JSON alone: source lines go to stderr
    import json

    m = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert code == 0 and m["images"] == 8
    assert {"det/map50", "det/map", "weather/acc", "scene/f1", "curvature/mae"} <= set(m)
    assert 0.0 <= m["det/map50"] <= 1.0 and np.isfinite(m["curvature/mae"])
    per_class = {k for k in m if k.startswith("det/ap50/")}
    assert per_class == {f"det/ap50/{c}" for c in d["model"]["detect"]}
    assert {"det/map_small", "det/map_medium", "det/map_large"} <= set(m)


def test_training_command_without_the_train_extras_says_what_to_install(tmp_path):
    """On a runtime-only install torch is missing: one line naming the extra, exit 2."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'tqdm', 'yaml'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge_mtl.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "train", "--config", "configs/tiny.yaml", "--out",
         str(tmp_path / "r")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-mtl train: error: needs the training")
    assert lines[0].endswith("pip install 'edge-mtl[train]'")


def test_train_log_lines_reach_a_pipe_while_the_run_goes_on(tmp_path):
    """``edge-mtl train ... > run.log``: each line is written when it is printed, not when an
    8 KB buffer fills or the process ends, so a long run can be followed."""
    import os
    import select
    import subprocess
    import sys

    from edge_mtl.data.synthetic import synthetic_cache_name

    d = tiny_cfg_dict(hw=(256, 448))  # steps slow enough that 8 KB of log takes minutes
    d["train"].update(epochs=1000, time_limit_min=5, batch_size=2)
    # Render the data here: starting the renderer's worker processes would flush stdout and
    # hide a block-buffered stream.
    for s in d["data"]["train"] + d["data"]["val"]:
        root = tmp_path / "data" / synthetic_cache_name(s["seed"], s["n"], tuple(s["frame_hw"]))
        write_synthetic(root, s["n"], s["seed"], tuple(s["frame_hw"]), workers=1)
    cfg = _write(tmp_path, d)
    argv = [sys.executable, "-m", "edge_mtl", "train", "--config", str(cfg)]
    argv += ["--out", str(tmp_path / "r"), "--quiet", "--data-root", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready, "no log line within 90 s of a 5-minute run"
        assert proc.stdout.readline().startswith("device cpu")
        assert proc.poll() is None  # the line came while training was still running
    finally:
        proc.kill()
        proc.wait()
