"""The bench plot: p50 latency bars with their p90-p99 whiskers attached and the speed-up against
the first row, end-to-end FPS beside them when measured, and accuracy vs latency when the rows
carry ``bench --accuracy`` metrics. Reads the JSON document of :mod:`edge_mtl.bench.schema`
(plain dicts, so merged documents plot the same way); matplotlib is loaded only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Doc = dict[str, Any]
RowDict = dict[str, Any]

PRECISION_COLORS = {"fp32": "#4C72B0", "fp16": "#55A868", "int8": "#C44E52"}
TORCH_COLOR = "#999999"  # torch eager baselines
OTHER_COLOR = "#8172B2"  # any other precision (bf16, unknown)
PREFERRED_METRIC = "det mAP@0.5:0.95"


def measured(doc: Doc) -> list[RowDict]:
    """The rows that were measured (``status == "ok"``), in document order."""
    return [r for r in doc["results"] if r["status"] == "ok"]


def panels(rows: list[RowDict]) -> list[str]:
    """The panels to draw, left to right: ``latency`` always, ``e2e`` when a row has e2e FPS,
    ``accuracy`` when a row has accuracy metrics."""
    out = ["latency"]
    if any(r.get("e2e") for r in rows):
        out.append("e2e")
    if accuracy_metric(rows) is not None:
        out.append("accuracy")
    return out


def speedups(rows: list[RowDict]) -> list[float]:
    """p50 latency of the first row over each row's: 1.0 for the first, 2.0 for twice as fast."""
    ref = rows[0]["latency_ms"]["p50"]
    return [ref / r["latency_ms"]["p50"] for r in rows]


def whiskers(rows: list[RowDict]) -> list[tuple[float, float, float, float]]:
    """Per row (bar end, whisker start, p90 tick, whisker end) in ms: the bar ends at p50, where
    its whisker starts, and the whisker runs to p99 with a tick at p90."""
    return [
        (lat["p50"], lat["p50"], lat["p90"], lat["p99"]) for lat in (r["latency_ms"] for r in rows)
    ]


def accuracy_metric(rows: list[RowDict]) -> str | None:
    """The metric of the accuracy panel: ``det mAP@0.5:0.95`` when a row has it, else the
    first metric of the first row with any; None when no row has accuracy."""
    names = [k for r in rows for k in (r.get("accuracy") or {})]
    if not names:
        return None
    return PREFERRED_METRIC if PREFERRED_METRIC in names else names[0]


def row_color(r: RowDict) -> str:
    """Bar colour: grey for torch rows, else by precision."""
    if r["runtime"] == "torch":
        return TORCH_COLOR
    return PRECISION_COLORS.get(r["precision"] or "", OTHER_COLOR)


def row_label(r: RowDict, with_device: bool = False) -> str:
    """``model precision provider bN`` (the device on a second line when rows differ in it)."""
    got, asked = r["provider"], r["provider_requested"]
    provider = asked if got is None or got == asked else f"{got} ({asked})"
    label = f"{r['model']} {r['precision']} {provider} b{r['batch']}"
    return f"{label}\n{r['device']}" if with_device else label


def short_labels(rows: list[RowDict]) -> list[str]:
    """The shortest distinct names for the rows: precision, else precision and provider, else
    model and precision, else the full :func:`row_label`."""
    for make in (
        lambda r: str(r["precision"]) + (" torch" if r["runtime"] == "torch" else ""),
        lambda r: f"{r['precision']} {r['provider'] or r['provider_requested']}",
        lambda r: f"{r['model']} {r['precision']}",
    ):
        names = [make(r) for r in rows]
        if len(set(names)) == len(names):
            return names
    return [row_label(r, True).replace("\n", " ") for r in rows]


def title(doc: Doc) -> str:
    """ "edge-mtl bench on <CPU> + <GPU>" for one machine; the machine count for several."""
    machines = {
        (s["machine"]["cpu_model"], tuple(g["name"] for g in s["machine"]["gpus"]))
        for s in doc["sessions"]
    }
    if len(machines) != 1:
        return f"edge-mtl bench on {len(machines)} machines"
    ((cpu, gpus),) = machines
    return "edge-mtl bench on " + " + ".join([cpu, *dict.fromkeys(gpus)])


def _latency(ax: Any, rows: list[RowDict], ys: list[int], colors: list[str]) -> bool:
    """p50 bars, attached p90-p99 whiskers, "p50 ms  speed-up" labels; True on a log axis."""
    geo = whiskers(rows)
    p50 = [g[0] for g in geo]
    p99 = [g[3] for g in geo]
    ax.barh(ys, p50, color=colors, height=0.7)
    ax.errorbar(p50, ys, xerr=[[0.0] * len(rows), [g[3] - g[1] for g in geo]], fmt="none",
                ecolor="black", elinewidth=1.2, capsize=4)  # fmt: skip
    ax.plot([g[2] for g in geo], ys, "k|", markersize=9, markeredgewidth=1.5)
    log_scale = max(p99) / max(min(p50), 1e-9) > 50
    if log_scale:
        ax.set_xscale("log")
    for y, v, end, s in zip(ys, p50, p99, speedups(rows)):
        text = f"{v:.3g} ms  {s:.2f}x"
        ax.text(end * (1.08 if log_scale else 1) + (0 if log_scale else 0.02 * max(p99)), y,
                text, va="center", ha="left", fontsize=8)  # fmt: skip
    ax.set_xlim(left=min(p50) / 2 if log_scale else 0, right=max(p99) * (6 if log_scale else 1.4))
    ax.set_xlabel(
        "latency per call, ms (bar p50, tick p90, whisker to p99)\n"
        "labels: p50 and speed-up against the first row"
    )
    ax.grid(axis="x", alpha=0.3)
    return log_scale


def _e2e(ax: Any, rows: list[RowDict], ys: list[int], colors: list[str]) -> None:
    """End-to-end FPS bars (rows without e2e marked as such)."""
    fps = [r["e2e"]["fps"] if r.get("e2e") else 0.0 for r in rows]
    ax.barh(ys, fps, color=colors, height=0.7)
    top = max(fps) or 1.0
    for y, r, v in zip(ys, rows, fps):
        text = f"{v:.1f} FPS" if r.get("e2e") else "no e2e"
        ax.text(v + 0.02 * top, y, text, va="center", ha="left", fontsize=8)
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel("end-to-end FPS (batch 1, real pipeline)")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", left=False, labelleft=False)


def _accuracy(ax: Any, rows: list[RowDict], colors: list[str], metric: str, log: bool) -> None:
    """One point per row with the metric: x p50 ms, y the metric, labelled."""
    for r, c, name in zip(rows, colors, short_labels(rows)):
        v = (r.get("accuracy") or {}).get(metric)
        if v is None:
            continue
        x = r["latency_ms"]["p50"]
        ax.scatter([x], [v], color=c, s=45, zorder=3, edgecolors="black", linewidths=0.5)
        ax.annotate(name, (x, v), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)  # fmt: skip
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    ax.set_xlabel("p50 latency per call, ms")
    points = "mAP" in metric or metric.endswith(" acc")
    ax.set_ylabel(metric + (" (points)" if points else ""))
    ax.set_title("accuracy vs latency", fontsize=9)
    ax.grid(alpha=0.3)


def save_plot(doc: Doc, path: str | os.PathLike[str]) -> str | None:
    """Write the plot of ``doc`` to ``path`` (PNG; parent folders made): the panels of
    :func:`panels`, coloured by precision (torch grey), titled with the machine. Returns None
    when written, else a one-line reason (nothing measured, matplotlib missing)."""
    rows = measured(doc)
    if not rows:
        return "no plot: no row was measured"
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    kinds = panels(rows)
    widths = {"latency": 8.0, "e2e": 3.6, "accuracy": 4.6}
    with_device = len({r["device"] for r in rows}) > 1
    height = max(3.2, 1.6 + 0.42 * len(rows) * (2 if with_device else 1))
    fig = Figure(figsize=(sum(widths[k] for k in kinds), height))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, len(kinds), width_ratios=[widths[k] for k in kinds])
    ys = list(range(len(rows)))
    colors = [row_color(r) for r in rows]
    lat = fig.add_subplot(grid[0, 0])
    log = _latency(lat, rows, ys, colors)
    lat.set_yticks(ys, [row_label(r, with_device) for r in rows], fontsize=8)
    lat.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
    if "e2e" in kinds:
        _e2e(fig.add_subplot(grid[0, 1], sharey=lat), rows, ys, colors)
    metric = accuracy_metric(rows)
    if metric is not None:
        _accuracy(fig.add_subplot(grid[0, len(kinds) - 1]), rows, colors, metric, log)
    present = dict.fromkeys(colors)
    names = {v: k for k, v in PRECISION_COLORS.items()} | {
        TORCH_COLOR: "torch",
        OTHER_COLOR: "other",
    }
    fig.legend([Patch(color=c) for c in present], [names[c] for c in present], loc="upper right",
               ncol=len(present), frameon=False, fontsize=8)  # fmt: skip
    skipped = len(doc["results"]) - len(rows)
    fig.suptitle(title(doc), x=0.01, ha="left", fontsize=10)
    if skipped:
        fig.text(0.01, 0.01, f"{skipped} skipped row(s) not shown (see the table)", fontsize=7)
    fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 0.93))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    return None
