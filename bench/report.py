"""Render an ``edge-mtl bench`` document: an aligned text table for the terminal, a markdown
page, and a latency plot (matplotlib, loaded only here and only if installed).

Everything reads the JSON document of :mod:`edge_mtl.bench.schema` (plain dicts), so results merged
from several machines render the same way as a fresh run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Doc = dict[str, Any]
RowDict = dict[str, Any]


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _lat(key: str) -> Callable[[RowDict], str]:
    return lambda r: _f(r["latency_ms"][key]) if r["latency_ms"] else "-"


def _hw(r: RowDict) -> str:
    return "x".join(str(v) for v in r["input_hw"]) if r["input_hw"] else "-"


def _provider(r: RowDict) -> str:
    got, asked = r["provider"], r["provider_requested"]
    if got is None or got == asked:
        return asked
    return f"{got} ({asked})"


# (header, cell, right-aligned)
MAIN_COLUMNS: list[tuple[str, Callable[[RowDict], str], bool]] = [
    ("device", lambda r: r["device"], False),
    ("model", lambda r: r["model"], False),
    ("precision", lambda r: r["precision"] or "-", False),
    ("provider", _provider, False),
    ("batch", lambda r: str(r["batch"]), True),
    ("input", _hw, True),
    ("p50 ms", _lat("p50"), True),
    ("p90 ms", _lat("p90"), True),
    ("p99 ms", _lat("p99"), True),
    ("mean ms", _lat("mean"), True),
    ("std ms", _lat("std"), True),
    ("img/s", lambda r: _f(r["throughput_ips"], 1), True),
    ("peak RSS MB", lambda r: _f(r["peak_rss_mb"], 0), True),
    ("GPU MB", lambda r: _f(r["gpu_memory_mb"], 0), True),
    ("size MB", lambda r: _f(r["model_size_mb"], 2), True),
    ("status", lambda r: r["status"], False),
]

E2E_COLUMNS: list[tuple[str, Callable[[RowDict], str], bool]] = [
    ("device", lambda r: r["device"], False),
    ("model", lambda r: r["model"], False),
    ("provider", _provider, False),
    ("frames", lambda r: str(r["e2e"]["frames"]), True),
    ("decode ms", lambda r: _f(r["e2e"]["stage_ms"].get("decode")), True),
    ("preprocess ms", lambda r: _f(r["e2e"]["stage_ms"].get("preprocess")), True),
    ("inference ms", lambda r: _f(r["e2e"]["stage_ms"].get("inference")), True),
    ("postprocess ms", lambda r: _f(r["e2e"]["stage_ms"].get("postprocess")), True),
    ("segment ms", lambda r: _f(r["e2e"]["stage_ms"].get("segment")), True),
    ("e2e FPS", lambda r: _f(r["e2e"]["fps"], 1), True),
    ("bare FPS", lambda r: _f(r["e2e"]["bare_fps"], 1), True),
    ("e2e/bare", lambda r: f"{100 * r['e2e']['ratio']:.0f}%", True),
    ("age p50/p90/p99 ms", lambda r: _ages(r["e2e"]), True),
]


def _metric(name: str) -> Callable[[RowDict], str]:
    """The cell of one ``--accuracy`` metric: points with one decimal, MAE in 4 digits, ``n/a``
    without labels, ``-`` for a row not scored."""

    def cell(r: RowDict) -> str:
        acc = r.get("accuracy") or {}
        if name not in acc:
            return "-"
        v = acc[name]
        if v is None or math.isnan(v):  # no labels for the task
            return "n/a"
        return f"{v:.4g}" if name.endswith(" MAE") else f"{v:.1f}"

    return cell


def main_columns(rows: list[RowDict]) -> list[tuple[str, Callable[[RowDict], str], bool]]:
    """:data:`MAIN_COLUMNS` with a column per ``--accuracy`` metric of any row (named as in the
    JSON) before ``status``."""
    names = list(dict.fromkeys(k for r in rows for k in r.get("accuracy") or {}))
    return MAIN_COLUMNS[:-1] + [(n, _metric(n), True) for n in names] + MAIN_COLUMNS[-1:]


PROFILE_SHOWN = 5  # operator types per row in the printed tables (the JSON keeps 10)
PROFILE_TITLE = "operators by time (--profile: a separate pass after the timing; ms per call):"

# Rows of these columns are result rows with one ``profile`` entry under ``"_op"``.
PROFILE_COLUMNS: list[tuple[str, Callable[[RowDict], str], bool]] = [
    ("device", lambda r: r["device"], False),
    ("model", lambda r: r["model"], False),
    ("provider", _provider, False),
    ("batch", lambda r: str(r["batch"]), True),
    ("operator", lambda r: r["_op"]["op"], False),
    ("ms", lambda r: f"{r['_op']['ms']:.3f}", True),
    ("share", lambda r: f"{100 * r['_op']['share']:.0f}%", True),
]


def _profile_rows(rows: list[RowDict]) -> list[RowDict]:
    """One table row per result row and operator of its top :data:`PROFILE_SHOWN`."""
    return [{**r, "_op": op} for r in rows for op in (r.get("profile") or [])[:PROFILE_SHOWN]]


def _ages(d: dict[str, Any]) -> str:
    """Capture-to-result p50/p90/p99 ms of an e2e or streams entry ("-" in older files)."""
    if d.get("latency_p90_ms") is None:
        return "-"
    return "/".join(f"{d[f'latency_p{q}_ms']:.0f}" for q in (50, 90, 99))


def _per_stream(st: dict[str, Any]) -> str:
    lo, hi = min(st["stream_fps"]), max(st["stream_fps"])
    return f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}"


# Rows of these columns are result rows with one ``e2e.streams`` entry under ``"_streams"``.
STREAM_COLUMNS: list[tuple[str, Callable[[RowDict], str], bool]] = [
    ("device", lambda r: r["device"], False),
    ("model", lambda r: r["model"], False),
    ("provider", _provider, False),
    ("streams", lambda r: str(r["_streams"]["streams"]), True),
    ("frames", lambda r: str(r["_streams"]["frames"]), True),
    ("frames/call", lambda r: _f(r["_streams"]["mean_batch"], 2), True),
    ("ms/call", lambda r: _f(r["_streams"]["inference_ms"]), True),
    ("FPS per stream", lambda r: _per_stream(r["_streams"]), True),
    ("FPS all streams", lambda r: _f(r["_streams"]["fps"], 1), True),
    ("vs 1 stream", lambda r: f"{r['_streams']['speedup']:.2f}x", True),
    ("age p50/p90/p99 ms", lambda r: _ages(r["_streams"]), True),
]


def _stream_rows(rows: list[RowDict]) -> list[RowDict]:
    """One table row per result row and stream count of its ``e2e.streams``."""
    return [{**r, "_streams": st} for r in rows if r["e2e"] for st in r["e2e"].get("streams") or []]


def _grid(rows: list[RowDict], columns: list[tuple[str, Callable[[RowDict], str], bool]]):
    """Header + cells, dropping the device column when every row ran on the same device."""
    cols = columns
    if len({r["device"] for r in rows}) <= 1:
        cols = [c for c in columns if c[0] != "device"]
    if all(r.get("gpu_memory_mb") is None for r in rows):
        cols = [c for c in cols if c[0] != "GPU MB"]
    cells = [[cell(r) for _, cell, _ in cols] for r in rows]
    return [c[0] for c in cols], [c[2] for c in cols], cells


def text_table(rows: list[RowDict], e2e: bool = False) -> str:
    """Plain aligned columns for a terminal (numbers right-aligned)."""
    rows = [r for r in rows if r["e2e"]] if e2e else rows
    if not rows:
        return ""
    return _text(*_grid(rows, E2E_COLUMNS if e2e else main_columns(rows)))


def _text(head: list[str], right: list[bool], cells: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *cells)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, cells)])


def markdown_table(rows: list[RowDict], e2e: bool = False) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    rows = [r for r in rows if r["e2e"]] if e2e else rows
    if not rows:
        return ""
    return _markdown(*_grid(rows, E2E_COLUMNS if e2e else main_columns(rows)))


def _markdown(head: list[str], right: list[bool], cells: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in cells]
    align = ["---:" if r else "---" for r in right]
    return "\n".join("| " + " | ".join(v) + " |" for v in [head, align, *esc])


def machine_line(session: Doc) -> str:
    """One line describing the machine of a session."""
    m = session["machine"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "no NVIDIA GPU seen"
    return (
        f"{m['hostname']}: {m['cpu_model']}, {m['cpu_affinity']} of {m['cpu_count']} CPUs usable "
        f"(ISA: {m['isa']}); {gpus}; onnxruntime {m['onnxruntime']} "
        f"(providers: {', '.join(m['providers_available'])}); {m['os']}"
    )


def _footnotes(rows: list[RowDict]) -> list[str]:
    """One line per distinct note, naming every row it applies to: a provider that failed to
    start for three models is one line, not three."""
    who: dict[str, list[str]] = {}
    for r in rows:
        skipped = [f"skipped: {r['reason']}"] if r["status"] != "ok" else []
        brief = r.get("fallback")  # absent in files of older releases
        fell = [f"fell back: {x}" for x in ([brief] if brief else r["fallback_reasons"])]
        for n in [*skipped, *fell, *r["notes"]]:
            label = f"{r['model']} [{_provider(r)}]"
            if label not in who.setdefault(n, []):
                who[n].append(label)
    return [f"{', '.join(labels)}: {n}" for n, labels in who.items()]


def render_text(doc: Doc) -> str:
    """What ``edge-mtl bench`` prints: machines, the latency table, the e2e table, notes."""
    rows = doc["results"]
    parts = [f"machine: {machine_line(s)}" for s in doc["sessions"]]
    parts += ["", text_table(rows)]
    if any(r["e2e"] for r in rows):
        title = "end to end (real pipeline, batch 1, mean ms per frame):"
        parts += ["", title, text_table(rows, True)]
    streams = _stream_rows(rows)
    if streams:
        title = "several streams (N copies of the e2e source, batched into one call):"
        parts += ["", title, _text(*_grid(streams, STREAM_COLUMNS))]
    profiled = _profile_rows(rows)
    if profiled:
        parts += ["", PROFILE_TITLE, _text(*_grid(profiled, PROFILE_COLUMNS))]
    notes = _footnotes(rows)
    if notes:
        parts += ["", "notes:", *(f"  {n}" for n in notes)]
    return "\n".join(parts)


def render_markdown(doc: Doc) -> str:
    """A markdown page: machines, settings, both tables, notes."""
    rows = doc["results"]
    out = ["# edge-mtl bench", ""]
    for i, s in enumerate(doc["sessions"]):
        st = s["settings"]
        amount = f"{st['seconds']} s" if st["seconds"] is not None else f"{st['runs']} runs"
        out.append(
            f"- session {i} ({s['created']}): {machine_line(s)}; {amount} after "
            f"{st['warmup']} warm-up, threads {st['threads'] or 'onnxruntime default'}, "
            + ("rows timed in turns" if st.get("turns") else "each row timed alone")
        )
    out += ["", "Latency per call (one call = one batch), milliseconds."]
    scored = {s["settings"].get("accuracy_data") for s in doc["sessions"]} - {None}
    if scored:
        out += [
            f"Accuracy on {', '.join(sorted(scored))} (each ONNX row on its own provider, "
            "evaluation thresholds): mAP and accuracy in points (0-100), MAE in label units."
        ]
    out += ["", markdown_table(rows)]
    if any(r["e2e"] for r in rows):
        out += ["", "## End to end", "", "Real pipeline at batch 1; mean ms per frame per stage."]
        out += ["segment ms: the sinks' work on the class maps (RLE, overlay) of pixel tasks."]
        out += ["", markdown_table(rows, True)]
    streams = _stream_rows(rows)
    if streams:
        out += ["", "## Several streams", ""]
        out += ["N copies of the e2e source through one engine, the newest frame of each"]
        out += ["batched into one inference call; aggregate FPS against 1 stream, same run."]
        out += ["", _markdown(*_grid(streams, STREAM_COLUMNS))]
    profiled = _profile_rows(rows)
    if profiled:
        out += ["", "## Operators by time", ""]
        out += [f"The top {PROFILE_SHOWN} operator types of each row by onnxruntime's profiler, in"]
        out += ["a separate pass after the timing; ms per call, share of all operator time."]
        out += ["", _markdown(*_grid(profiled, PROFILE_COLUMNS))]
    notes = _footnotes(rows)
    if notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"
