"""``edge-mtl compare``: one multi-task model against single-task models on the same data.

Every task in the config gets its own single-task model (same trunk, data, schedule and
budget, only that task's head); the multi-task model has them all. The report gives, per task,
the metric of each, the delta (positive = the shared model is better) and its standard error
(SE) from the validation set size: negative transfer is flagged only when the multi-task model
is worse by more than 2 SE, a smaller difference is "within noise", and a metric without an SE
(mAP) is "not tested". Then parameters, GFLOPs and CPU latency of the one MTL model against the
sum of the single-task models it replaces.

Each variant trains into ``OUT/<variant>/`` and records ``result.json`` when done, so an
interrupted comparison picks up where it stopped (``--resume`` semantics are the default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mtl.config import Config, validate
from edge_mtl.runtime.files import read_json, write_json_atomic, write_text_atomic

MTL = "mtl"
# Per task kind: the headline metric, and whether larger is better.
_HEADLINE = {
    "det": ("det/map50", True),
    "classify": ("acc", True),
    "regress": ("mae", False),
    "segment": ("miou", True),
}
LatencyFn = Callable[[dict[str, Path], Path], dict[str, dict[str, float]]]
NOISE_SE = 2.0  # a delta within this many standard errors of zero is read as noise


class Verdict(enum.StrEnum):
    """How a task's delta reads against its standard error (SE)."""

    NEGATIVE = "negative transfer"  # the multi-task model is worse by more than NOISE_SE SE
    NOISE = "within noise"
    BETTER = "multi-task better"  # better by more than NOISE_SE SE
    UNTESTED = "not tested"  # no SE for this metric


@dataclass(frozen=True)
class Variant:
    """One model to train: ``name`` is ``mtl`` or the task it is the single-task model of."""

    name: str
    cfg: Config
    tasks: tuple[str, ...]


def headline(cfg: Config, task: str) -> tuple[str, bool]:
    """(metric key in evaluate()'s dict, higher is better) for ``task``."""
    if task == "det":
        return _HEADLINE["det"]
    m = cfg.model
    kind = "classify" if task in m.classify else "segment" if task in m.segment else "regress"
    suffix, higher = _HEADLINE[kind]
    return f"{task}/{suffix}", higher


def delta_se(
    cfg: Config, task: str, mtl: dict[str, float], single: dict[str, float], n: int
) -> tuple[float | None, str]:
    """Standard error of the delta of ``task``'s headline metric between two models scored on
    the same ``n`` validation samples and how it was estimated, or (None, why there is none).

    Accuracy: binomial, sqrt(p (1 - p) / n) per model, combined as sqrt(se1^2 + se2^2). That
    treats the two models as independent; scored on the same images their errors are usually
    positively correlated, which makes the true SE smaller, so this errs towards "within noise".
    MAE: the SD of the per-image absolute errors (``<task>/mae_sd``, from evaluate()) / sqrt(n)
    per model, combined the same way; metrics without it (an older run) get none.
    mIoU (segmentation): the SD of the per-image mIoU (``<task>/miou_sd``) / sqrt(n) per model,
    combined the same way (the pooled mIoU is not the mean of per-image ones, but it moves with
    it; the spread over images is what makes two runs on ``n`` images differ).
    mAP: no closed form; a bootstrap over images would need the per-image detections, which are
    not kept.
    """
    key, _ = headline(cfg, task)
    if n <= 0:
        return None, "no labelled validation samples"
    if task == "det":
        return None, "mAP has no closed-form SE"
    if task in cfg.model.classify:
        p1, p2 = mtl.get(key, math.nan), single.get(key, math.nan)
        if not (math.isfinite(p1) and math.isfinite(p2)):
            return None, f"{key} missing"
        return math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n), "binomial"
    seg = task in cfg.model.segment
    sd = f"{task}/miou_sd" if seg else f"{task}/mae_sd"
    if sd in mtl and sd in single:
        basis = "per-image mIoU SD" if seg else "per-image error SD"
        return math.sqrt((mtl[sd] ** 2 + single[sd] ** 2) / n), basis
    return None, "no per-image error SD recorded"


def verdict(delta: float, se: float | None) -> Verdict:
    """NEGATIVE only when ``delta`` (positive = multi-task better) is below -NOISE_SE * ``se``."""
    if se is None or not (math.isfinite(delta) and math.isfinite(se)):
        return Verdict.UNTESTED
    if delta < -NOISE_SE * se:
        return Verdict.NEGATIVE
    if delta > NOISE_SE * se:
        return Verdict.BETTER
    return Verdict.NOISE


def variants(cfg: Config) -> list[Variant]:
    """The multi-task model first, then one single-task model per task."""
    tasks = cfg.model.task_names()
    if len(tasks) < 2:
        raise ValueError(f"{cfg.source}: compare needs at least two tasks, found {tasks}")
    out = [Variant(MTL, cfg, tuple(tasks))]
    m = cfg.model
    for t in tasks:
        model = dataclasses.replace(
            m,
            detect=m.detect if t == "det" else (),
            classify={t: m.classify[t]} if t in m.classify else {},
            regress=(t,) if t in m.regress else (),
            segment={t: m.segment[t]} if t in m.segment else {},
        )
        weights = {k: v for k, v in cfg.train.loss_weights.items() if k == t}
        train = dataclasses.replace(cfg.train, loss_weights=weights)
        out.append(Variant(t, validate(dataclasses.replace(cfg, model=model, train=train)), (t,)))
    return out


def gflops(model, input_hw: tuple[int, int]) -> float:
    """Forward GFLOPs at batch 1 (multiply-add = 2 FLOPs), counted by torch's FLOP counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *input_hw)
    model = model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _train_variant(
    v: Variant, out: Path, device: str, data_root: Path, progress: bool, log
) -> dict[str, Any]:
    """Train (or resume) one variant; returns its result record, cached in result.json."""
    from edge_mtl.checkpoint import load_model
    from edge_mtl.model import count_parameters
    from edge_mtl.train import train

    run = out / v.name
    result_path = run / "result.json"
    if result_path.is_file():
        done = read_json(result_path, "compare result")
        if done.get("config_hash") == v.cfg.hash():
            log(f"[{v.name}] already trained ({result_path}), reusing it")
            return done
    log(f"[{v.name}] training tasks {', '.join(v.tasks)} into {run}")
    train(v.cfg, run, device, resume=True, progress=progress, data_root=data_root, log=log)
    model, _, ckpt = load_model(run / "best.pt")
    result = {
        "name": v.name,
        "tasks": list(v.tasks),
        "config_hash": v.cfg.hash(),
        "weights": str(run / "best.pt"),
        "metrics": ckpt.get("metrics", {}),
        "params": count_parameters(model),
        "gflops": gflops(model, v.cfg.model.input_hw),
        "train_steps": ckpt["state"]["step"],
        "train_s": ckpt["state"]["elapsed"],
    }
    write_json_atomic(result_path, result)
    return result


def compare(
    cfg: Config,
    out_dir: str | Path,
    latency: LatencyFn | None,
    device: str = "auto",
    data_root: str | Path = "data",
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Train every variant, measure latency side by side, write compare.json + compare.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        v.name: _train_variant(v, out, device, Path(data_root), progress, log)
        for v in variants(cfg)
    }
    lat: dict[str, dict[str, float]] = {}
    if latency is not None:
        log("measuring CPU latency of every variant side by side")
        lat = latency({k: Path(r["weights"]) for k, r in results.items()}, out)
    report = build_report(cfg, results, lat, eval_sizes(cfg, Path(data_root)))
    write_json_atomic(out / "compare.json", report)
    write_text_atomic(out / "compare.md", to_markdown(report))
    return report


def eval_sizes(cfg: Config, data_root: Path) -> dict[str, int]:
    """Labelled validation samples per task: the n every variant's metrics were computed on
    (detection: images with box labels)."""
    from edge_mtl.data.dataset import records_for
    from edge_mtl.train import label_counts

    with contextlib.redirect_stdout(io.StringIO()):  # training has reported the sources already
        val = records_for(cfg.data.val, cfg, data_root, progress=False)
    return label_counts(val, cfg)


def build_report(
    cfg: Config,
    results: dict[str, dict[str, Any]],
    lat: dict[str, dict[str, float]],
    sizes: dict[str, int],
) -> dict[str, Any]:
    """Per-task rows (MTL vs single, delta, its SE over ``sizes[task]`` validation samples,
    verdict) and cost totals. ``se`` and ``negative_transfer`` are None where the delta has no
    SE, and ``se_basis`` says why; otherwise it says how the SE was estimated."""
    mtl = results[MTL]
    rows = []
    for task in cfg.model.task_names():
        key, higher = headline(cfg, task)
        single = results[task]["metrics"]
        m = mtl["metrics"].get(key, math.nan)
        s = single.get(key, math.nan)
        delta = (m - s) if higher else (s - m)  # positive = the multi-task model is better
        n = sizes.get(task, 0)
        se, basis = delta_se(cfg, task, mtl["metrics"], single, n)
        v = verdict(delta, se)
        rows.append(
            {
                "task": task,
                "metric": key,
                "higher_is_better": higher,
                "mtl": m,
                "single": s,
                "delta": delta,
                "n": n,
                "se": se,
                "se_basis": basis,
                "verdict": v.value,
                "negative_transfer": None if v is Verdict.UNTESTED else v is Verdict.NEGATIVE,
            }
        )
    singles = [results[t] for t in cfg.model.task_names()]
    cost = {
        "mtl_params": mtl["params"],
        "singles_params": sum(r["params"] for r in singles),
        "mtl_gflops": mtl["gflops"],
        "singles_gflops": sum(r["gflops"] for r in singles),
    }
    if lat:
        cost["mtl_latency_ms"] = lat[MTL]["p50_ms"]
        cost["singles_latency_ms"] = sum(lat[t]["p50_ms"] for t in cfg.model.task_names())
        cost["latency_ratio"] = cost["mtl_latency_ms"] / cost["singles_latency_ms"]
    return {
        "config": cfg.source,
        "config_hash": cfg.hash(),
        "budget": {
            "time_limit_min": cfg.train.time_limit_min,
            "epochs": cfg.train.epochs,
            "batch_size": cfg.train.batch_size,
        },
        "tasks": rows,
        "cost": cost,
        "latency": lat,
        "variants": results,
    }


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        "| task | metric | single-task | multi-task | delta | SE | n | |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["tasks"]:
        arrow = "higher" if r["higher_is_better"] else "lower"
        se = "n/a" if r["se"] is None else f"{r['se']:.3f}"
        lines.append(
            f"| {r['task']} | {r['metric']} ({arrow} is better) | {r['single']:.3f} | "
            f"{r['mtl']:.3f} | {r['delta']:+.3f} | {se} | {r['n']} | {r['verdict']} |"
        )
    note = [
        f"Negative transfer is flagged only when the delta is worse than -{NOISE_SE:g} SE (the "
        "standard error of the difference over n validation samples); closer to zero it is "
        "within noise."
    ]
    note += [
        f"SE n/a for {r['task']}: {r['se_basis']}." for r in report["tasks"] if r["se"] is None
    ]
    lines += ["", " ".join(note)]
    c = report["cost"]
    lines += [
        "",
        "| | one multi-task model | sum of single-task models | ratio |",
        "|---|---:|---:|---:|",
        f"| parameters (M) | {c['mtl_params'] / 1e6:.2f} | {c['singles_params'] / 1e6:.2f} | "
        f"{c['mtl_params'] / c['singles_params']:.2f} |",
        f"| GFLOPs | {c['mtl_gflops']:.2f} | {c['singles_gflops']:.2f} | "
        f"{c['mtl_gflops'] / c['singles_gflops']:.2f} |",
    ]
    if "latency_ratio" in c:
        lines.append(
            f"| CPU latency p50 (ms) | {c['mtl_latency_ms']:.1f} | "
            f"{c['singles_latency_ms']:.1f} | {c['latency_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"
