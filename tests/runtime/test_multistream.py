"""Several streams through one engine: every frame of every file stream in order, real batches,
stalled and dead streams removed without stopping the others, ``edge-mtl run`` with several
sources, ``edge-mtl bench --streams``.

Nothing asserts a timing: runs are checked for completion (within a generous timeout) and
frame counts, never for rates.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import cv2
import pytest

from edge_mtl.bench import e2e as bench
from edge_mtl.cli import main
from edge_mtl.runtime.cli import default_name, stream_outputs, stream_specs
from edge_mtl.runtime.engine import Engine, EngineConfig
from edge_mtl.runtime.errors import InputError, RuntimeFailure
from edge_mtl.runtime.multistream import MultiStream, MultiStreamConfig, StreamState
from edge_mtl.runtime.sinks import JsonlSink
from edge_mtl.runtime.sources import Frame, LiveSource, iter_frames, open_source

TIMEOUT_S = 60.0  # generous: the machine is shared; a healthy run takes well under a second


def _records(path: Path) -> list[dict]:
    """The frame records of a JSON-lines file, after its header line."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "header"
    return lines[1:]


def _clips(tmp_path: Path, kit, lengths: list[int]) -> list[Path]:
    """Videos of different content (seed) and length, 48x64."""
    return [
        kit.write_video(tmp_path / f"clip{i}.mp4", kit.make_frames(n, seed=10 + i))
        for i, n in enumerate(lengths)
    ]


def _run(ms: MultiStream):
    """``ms.run()`` on a helper thread; fails the test if it does not finish in TIMEOUT_S."""
    out: dict = {}

    def target() -> None:
        try:
            out["summary"] = ms.run()
        except BaseException as e:  # handed to the test thread
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(TIMEOUT_S)
    assert not t.is_alive(), f"the run did not finish in {TIMEOUT_S} s"
    if "error" in out:
        raise out["error"]
    return out["summary"]


class CountingSession:
    """Wraps an onnxruntime session and records the batch size of every ``run``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def run(self, names, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.inner.run(names, feeds)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class BlockingSource:
    """A file-like source whose ``read()`` blocks until ``release`` is set, then ends."""

    live = False
    fps = None

    def __init__(self) -> None:
        self.name = "blocked"
        self.drops = self.reconnects = self.stalls = self.corrupt = 0
        self.release = threading.Event()
        self.entered = threading.Event()

    def read(self) -> Frame | None:
        self.entered.set()
        self.release.wait()
        return None

    def close(self) -> None:
        self.release.set()


class DyingSource:
    """Hands out ``n`` frames of a real source, then raises as a lost stream does."""

    live = False
    fps = None

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n
        self.name = "dying"
        self.drops = self.reconnects = self.stalls = self.corrupt = 0
        self.given = 0

    def read(self) -> Frame | None:
        if self.given >= self.n:
            raise RuntimeFailure("source dying: stream lost, gave up after 0 s")
        self.given += 1
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()


# ---- the CLI: four file streams, every frame in order -------------------------------------


def test_four_file_streams_each_jsonl_has_every_frame_in_order(
    tmp_path, models, kit, capsys
) -> None:
    clips = _clips(tmp_path, kit, [5, 7, 6])
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(kit.make_frames(4, 40, 56, seed=3)):
        cv2.imwrite(str(folder / f"img_{i}.png"), img)
    listing = tmp_path / "cams.txt"
    listing.write_text(
        "# three cameras and a folder\n"
        f"front={clips[0].name}\n"
        f"\n{clips[1]}   # an absolute path, named after the file\n"
        f"rear={clips[2].name}\n"
        "imgs\n"
    )
    out = tmp_path / "out"
    argv = ["run", "--model", str(models["dense"]), "--provider", "cpu", "--threads", "1"]
    argv += ["--sources", str(listing), "--jsonl", str(out / "{stream}-{name}.jsonl")]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()  # image lines, saved to, summary
    assert printed[-6] == "edge-mtl run: results saved to runs/run/exp"
    printed = printed[-5:]
    for i, (line, name) in enumerate(zip(printed, ["front", "clip1", "rear", "imgs"])):
        assert line.startswith(f"edge-mtl run: stream {i} {name}: ") and line.endswith("ended")
    assert printed[-1].startswith("edge-mtl run: all 4 streams: 22 frames in ")
    assert printed[-1].endswith("provider cpu, precision fp32")

    engine = Engine(models["dense"], "cpu")
    specs = [str(clips[0]), str(clips[1]), str(clips[2]), str(folder)]
    for i, (name, spec) in enumerate(zip(["front", "clip1", "rear", "imgs"], specs)):
        records = _records(out / f"{i}-{name}.jsonl")
        frames = list(iter_frames(open_source(spec)))
        assert [r["frame"] for r in records] == list(range(len(frames)))
        assert [r["source_frame"] for r in records] == [f.index for f in frames]
        assert [r["file"] for r in records] == [f.name for f in frames]
        for rec, frame in zip(records, frames):  # each result belongs to its own frame
            want = engine(frame.image)
            assert rec["tasks"]["weather"]["label"] == want.classifications["weather"].label
            curvature = want.regressions["curvature"]
            assert rec["tasks"]["curvature"]["value"] == pytest.approx(curvature, abs=1e-5)
            assert len(rec["detections"]) == len(want.detections)


def test_one_source_keeps_the_single_stream_pipeline(tmp_path, models, kit, capsys) -> None:
    (clip,) = _clips(tmp_path, kit, [4])
    argv = ["run", "--model", str(models["dense"]), "--provider", "cpu", "--source", str(clip)]
    assert main([*argv, "--jsonl", str(tmp_path / "{name}.jsonl"), "--no-save"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("edge-mtl run: 4 frames in ")  # the Pipeline's summary line
    assert len(_records(tmp_path / "clip0.jsonl")) == 4


# ---- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dense", "batch1"])
def test_frames_of_several_streams_share_session_runs(tmp_path, models, kit, model) -> None:
    clips = _clips(tmp_path, kit, [6, 6, 6, 6])
    engine = Engine(models[model], "cpu", EngineConfig(intra_op_threads=1, warmup_runs=0))
    session = engine.session = CountingSession(engine.session)
    seen: list[list[int]] = [[] for _ in clips]
    config = MultiStreamConfig(max_wait_ms=200.0)  # generous: this test is about batching
    ms = MultiStream(
        engine,
        [open_source(str(c)) for c in clips],
        config=config,
        on_result=lambda i, frame, result, times: seen[i].append(frame.index),
    )
    summary = _run(ms)
    assert seen == [list(range(6))] * 4
    assert summary.frames == 24 and summary.batched_frames == 24
    if model == "dense":  # dynamic batch: several streams in one session.run
        assert sum(session.batches) == 24 and len(session.batches) == summary.batches
        assert max(session.batches) > 1 and summary.mean_batch > 1
    else:  # fixed batch 1: the engine splits each batch into single-frame runs
        assert session.batches == [1] * 24 and summary.mean_batch > 1


def test_max_batch_caps_a_batch_and_takes_streams_in_turn(tmp_path, models, kit) -> None:
    clips = _clips(tmp_path, kit, [4, 4, 4])
    engine = Engine(models["dense"], "cpu", EngineConfig(warmup_runs=0))
    session = engine.session = CountingSession(engine.session)
    seen: list[list[int]] = [[] for _ in clips]
    config = MultiStreamConfig(max_batch=2, max_wait_ms=200.0)
    ms = MultiStream(
        engine,
        [open_source(str(c)) for c in clips],
        config=config,
        on_result=lambda i, frame, result, times: seen[i].append(frame.index),
    )
    _run(ms)
    assert seen == [list(range(4))] * 3 and max(session.batches) == 2


# ---- live streams, slow, stalled and dead streams ------------------------------------------


class SlowSession(CountingSession):
    """Each session run takes at least 20 ms: the cameras produce far faster than that."""

    def run(self, names, feeds):
        time.sleep(0.02)
        return super().run(names, feeds)


def test_live_streams_keep_only_the_newest_frame_beside_a_file(tmp_path, models, kit) -> None:
    (clip,) = _clips(tmp_path, kit, [10])
    cams = [kit.FakeCapture(), kit.FakeCapture()]
    live = [LiveSource(lambda c=c: c, f"fake camera {i}") for i, c in enumerate(cams)]
    engine = Engine(models["dense"], "cpu")
    engine.session = SlowSession(engine.session)
    seen: list[list[int]] = [[], [], []]
    ms = MultiStream(
        engine,
        [open_source(str(clip)), *live],
        config=MultiStreamConfig(max_frames=10),
        on_result=lambda i, frame, result, times: seen[i].append(frame.index),
    )
    summary = _run(ms)
    assert seen[0] == list(range(10))  # the file: every frame, in order
    for i in (1, 2):  # cameras: fresh frames only, every skipped one counted as a drop
        assert len(seen[i]) == 10 and seen[i] == sorted(set(seen[i]))
        assert seen[i][-1] - seen[i][0] >= 2 * len(seen[i])
        assert summary.streams[i].drops >= (seen[i][-1] - seen[i][0] + 1) - len(seen[i])
    assert summary.streams[0].drops == 0


def test_a_stalled_stream_does_not_hold_back_the_others(tmp_path, models, kit) -> None:
    clips = _clips(tmp_path, kit, [8, 8, 8])
    blocked = BlockingSource()
    jsonl = [tmp_path / f"{i}.jsonl" for i in range(3)]
    sinks = [[JsonlSink(p)] for p in jsonl] + [[]]
    done = [0, 0, 0, 0]
    engine = Engine(models["dense"], "cpu", EngineConfig(intra_op_threads=1))
    config = MultiStreamConfig(stall_timeout_s=None)  # the stalled stream is never removed

    def on_result(i, frame, result, times) -> None:
        done[i] += 1
        if done[:3] == [8, 8, 8]:
            assert blocked.entered.is_set() and not blocked.release.is_set()
            ms.stop()  # the three are complete while the fourth still blocks in read()

    sources = [open_source(str(c)) for c in clips] + [blocked]
    ms = MultiStream(engine, sources, sinks, config=config, on_result=on_result)
    try:
        summary = _run(ms)
    finally:
        blocked.release.set()
    assert done == [8, 8, 8, 0]
    for p in jsonl:
        assert [r["frame"] for r in _records(p)] == list(range(8))
    stalled = summary.streams[3]
    assert stalled.frames == 0 and stalled.state is StreamState.STOPPED
    assert [s.frames for s in summary.streams[:3]] == [8, 8, 8]


def test_a_stalled_stream_is_removed_after_the_stall_timeout(tmp_path, models, kit) -> None:
    (clip,) = _clips(tmp_path, kit, [5])
    blocked = BlockingSource()
    engine = Engine(models["dense"], "cpu")
    config = MultiStreamConfig(stall_timeout_s=0.5)
    try:
        summary = _run(MultiStream(engine, [open_source(str(clip)), blocked], config=config))
    finally:
        blocked.release.set()
    clip_stream, stalled = summary.streams
    assert (clip_stream.state, clip_stream.frames) == (StreamState.ENDED, 5)
    assert (stalled.state, stalled.frames) == (StreamState.STALLED, 0)
    assert stalled.line().endswith("stalled: no frame for 0.5 s")
    assert "1 failed or stalled" in summary.line()
    assert ", read to result p50 " in clip_stream.line()  # a file's age includes its queue


def test_a_dead_stream_is_reported_and_the_others_continue(tmp_path, models, kit) -> None:
    clips = _clips(tmp_path, kit, [6, 6, 6])
    dying = DyingSource(open_source(str(clips[2])), n=2)
    engine = Engine(models["dense"], "cpu")
    sources = [open_source(str(clips[0])), open_source(str(clips[1])), dying]
    summary = _run(MultiStream(engine, sources, names=["a", "b", "c"]))
    a, b, c = summary.streams
    assert (a.state, a.frames, b.state, b.frames) == (StreamState.ENDED, 6, StreamState.ENDED, 6)
    assert (c.state, c.frames) == (StreamState.FAILED, 2)
    assert c.error == "source dying: stream lost, gave up after 0 s"
    assert c.line().startswith("stream 2 c: 2 frames, ") and "failed: source dying" in c.line()
    assert summary.frames == 14 and not summary.interrupted


def test_cli_reports_a_dead_stream_with_exit_code_1(tmp_path, models, kit, capsys) -> None:
    (clip,) = _clips(tmp_path, kit, [6])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not an image")  # a folder none of whose images decode
    (bad / "b.png").write_bytes(b"nor this")
    out = tmp_path / "out"
    argv = ["run", "--model", str(models["dense"]), "--provider", "cpu", "--source", str(clip)]
    argv += ["--source", str(bad), "--jsonl", f"{out}/", "--no-save"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].endswith("ended") and "failed: source" in lines[1]
    err = captured.err.strip().splitlines()[-1]
    assert err.startswith("edge-mtl run: error: stream 1 bad failed: source ")
    assert len(_records(out / "0.jsonl")) == 6
    assert not (out / "1.jsonl").exists()  # a stream that delivered no frame leaves no file


def test_ctrl_c_stops_every_stream_and_leaves_complete_files(tmp_path, models, kit) -> None:
    clips = _clips(tmp_path, kit, [30, 30])
    jsonl = [tmp_path / "0.jsonl", tmp_path / "1.jsonl"]
    done: list[int] = []

    def interrupt(i, frame, result, times) -> None:
        done.append(i)
        if len(done) == 5:
            raise KeyboardInterrupt

    engine = Engine(models["dense"], "cpu")
    sources = [open_source(str(c)) for c in clips]
    summary = MultiStream(
        engine, sources, [[JsonlSink(p)] for p in jsonl], on_result=interrupt
    ).run()
    assert summary.interrupted and "(interrupted)" in summary.line()
    assert [len(_records(p)) for p in jsonl] == [done.count(0), done.count(1)]
    assert all(s.state is StreamState.STOPPED for s in summary.streams)


# ---- CLI details ---------------------------------------------------------------------------


def test_stream_specs_names_and_sources_file(tmp_path) -> None:
    listing = tmp_path / "list" / "cams.txt"
    listing.parent.mkdir()
    listing.write_text("# comment\n0\nrtsp://10.0.0.5/live?x=1  # trailing comment\n\nv/a.mp4\n")
    got = stream_specs(["side=rtsp://cam/2", "frames/*.jpg"], str(listing))
    assert got == [
        ("side", "rtsp://cam/2"),
        ("frames", "frames/*.jpg"),
        ("camera0", "0"),
        ("10.0.0.5_live_x_1", "rtsp://10.0.0.5/live?x=1"),
        ("a", str(listing.parent / "v" / "a.mp4")),  # relative to the sources file
    ]
    assert default_name("https://host:8080/") == "host_8080"
    with pytest.raises(InputError, match="no source: give --source"):
        stream_specs([], None)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match=r"empty\.txt: no sources in it"):
        stream_specs([], str(empty))


def test_stream_output_templates_and_folders(tmp_path) -> None:
    names = ["front", "rear"]
    assert stream_outputs(None, "--jsonl", ".jsonl", names) == [None, None]
    tpl = str(tmp_path / "t" / "{name}-{stream}.jsonl")
    assert stream_outputs(tpl, "--jsonl", ".jsonl", names) == [
        str(tmp_path / "t" / "front-0.jsonl"),
        str(tmp_path / "t" / "rear-1.jsonl"),
    ]
    assert (tmp_path / "t").is_dir()
    folder = f"{tmp_path / 'videos'}/"
    assert stream_outputs(folder, "--save", ".mp4", names) == [
        str(tmp_path / "videos" / "0.mp4"),
        str(tmp_path / "videos" / "1.mp4"),
    ]
    assert stream_outputs("one.jsonl", "--jsonl", ".jsonl", ["x"]) == ["one.jsonl"]
    bad = [
        ("one.jsonl", names, "2 streams cannot share one file; give a template such as"),
        ("{name}.jsonl", ["cam", "cam"], "streams 0 and 1 would both write cam.jsonl"),
        ("{camera}.jsonl", names, "only {stream} and {name} may appear in braces"),
    ]
    for value, ns, message in bad:
        with pytest.raises(InputError, match=re.escape(message)):
            stream_outputs(value, "--jsonl", ".jsonl", ns)


def test_cli_refuses_one_file_for_several_streams(tmp_path, models, kit, capsys) -> None:
    clips = _clips(tmp_path, kit, [2, 2])
    argv = ["run", "--model", str(models["dense"]), "--provider", "cpu"]
    argv += ["--source", str(clips[0]), "--source", str(clips[1]), "--jsonl", "out.jsonl"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge-mtl run: error: --jsonl out.jsonl: 2 streams cannot share")


# ---- bench --streams -----------------------------------------------------------------------


def test_bench_streams_rows_side_by_side(tmp_path, models, kit, capsys) -> None:
    (clip,) = _clips(tmp_path, kit, [6])
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    argv = ["bench", "--model", str(models["dense"]), "--provider", "cpu", "--runs", "3"]
    argv += ["--warmup", "1", "--threads", "1", "--quiet", "--e2e", str(clip)]
    assert main([*argv, "--streams", "4", "2", "--json", str(out), "--md", str(md)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["sessions"][0]["settings"]["e2e_streams"] == [2, 4]
    (row,) = doc["results"]
    rows = row["e2e"]["streams"]
    assert [r["streams"] for r in rows] == [1, 2, 4]  # 1 stream: the baseline, always measured
    for r in rows:
        n = r["streams"]
        assert set(r) == {
            "streams", "frames", "seconds", "fps", "stream_fps", "mean_batch", "inference_ms",
            "speedup", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
        }  # fmt: skip
        assert r["frames"] == bench.STREAM_ROUNDS * 6 * n and len(r["stream_fps"]) == n
        assert r["fps"] > 0 and all(f > 0 for f in r["stream_fps"])
        assert 1 <= r["mean_batch"] <= n and r["inference_ms"] > 0
        assert r["speedup"] == pytest.approx(r["fps"] / rows[0]["fps"])
    assert rows[0]["speedup"] == 1.0
    assert "several streams" in printed and f"{rows[2]['fps']:.1f}" in printed
    assert "## Several streams" in md.read_text()
    assert main(["bench", "--model", str(models["dense"]), "--streams", "2", "--quiet"]) == 2
    assert "--streams needs --e2e" in capsys.readouterr().err


def test_summary_counts_every_stream_and_batch(tmp_path, models, kit) -> None:
    clips = _clips(tmp_path, kit, [3, 5])
    engine = Engine(models["dense"], "cpu")
    t0 = time.perf_counter()
    summary = _run(MultiStream(engine, [open_source(str(c)) for c in clips]))
    assert summary.seconds <= time.perf_counter() - t0
    assert [s.frames for s in summary.streams] == [3, 5]
    assert summary.batched_frames == 8 and summary.batches >= 5
    assert [s.name for s in summary.streams] == [str(clips[0]), str(clips[1])]
    assert all(s.latency_p50_ms <= s.latency_p99_ms for s in summary.streams)
    assert summary.lines()[-1] == summary.line() and len(summary.lines()) == 3
