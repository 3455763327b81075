"""The task registry is open: a kind registered from outside the package trains, exports and runs.

The toy kind ``count`` regresses how many labelled objects an image holds (declared in the config
as ``model.tasks: {count: {objects: {}}}``; its labels come with the boxes): its own head on
pooled C5, loss, metric, ONNX output ``count_objects`` and a runtime decoder that puts a whole
count into ``FrameResult.others``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edge_mtl.config import ConfigError, ModelConfig, SourceConfig, load_config  # noqa: E402
from edge_mtl.export.onnx_export import ExportConfig, export  # noqa: E402
from edge_mtl.runtime.decoders import (  # noqa: E402
    DECODERS,
    DecodeOptions,
    decoder_registered,
    register_decoder,
)
from edge_mtl.runtime.engine import Engine  # noqa: E402
from edge_mtl.runtime.metadata import TaskMeta  # noqa: E402
from edge_mtl.runtime.preprocess import Letterbox  # noqa: E402
from edge_mtl.runtime.records import task_entries  # noqa: E402
from edge_mtl.tasks import (  # noqa: E402
    KINDS,
    Kind,
    LossContext,
    Sample,
    Task,
    kind_registered,
    register_kind,
    unregister_kind,
)
from edge_mtl.train import train  # noqa: E402

TINY = Path(__file__).parents[1] / "configs" / "tiny.yaml"


class CountDecoder:
    """Runtime side: the raw value (1,) -> a whole, non-negative count."""

    kind = "count"

    def outputs(self, task: str, nms: bool = False) -> tuple[str, ...]:
        return (f"count_{task}",)  # (N, 1) float32

    def decode(
        self, t: TaskMeta, raw: dict[str, np.ndarray], lb: Letterbox, opts: DecodeOptions
    ) -> dict[str, Any]:
        value = float(raw[t.outputs[0]].reshape(-1)[0])
        return {"others": {t.name: max(0, round(value))}}

    def check(self, t: TaskMeta) -> str | None:
        return None if len(t.outputs) == 1 else f"task {t.name!r} needs one output"

    def guess(self, outs: dict[str, list]) -> list[TaskMeta]:
        return []


class CountHead(nn.Module):
    def __init__(self, decoder: CountDecoder, tasks: tuple[str, ...], in_channels: int) -> None:
        super().__init__()
        self.names = {t: decoder.outputs(t)[0] for t in tasks}
        self.out = nn.ModuleDict({t: nn.Linear(in_channels, 1) for t in tasks})

    def forward(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.names[t]: m(pooled) for t, m in self.out.items()}  # each (B, 1)


class CountMetric:
    def __init__(self, task: Task, key: str) -> None:
        self.task, self.key, self.err, self.true = task, key, [], []

    def add(self, out: dict[str, np.ndarray], targets: list[dict], records: list) -> None:
        for p, t in zip(out[self.key][:, 0], targets):
            if math.isfinite(t[self.key]):
                self.err.append(abs(float(p) - t[self.key]))
                self.true.append(t[self.key])

    def result(self) -> dict[str, float]:
        n = self.task.name
        return {f"{n}/mae": float(np.mean(self.err)), f"{n}/std": float(np.std(self.true))}


class CountKind(Kind):
    """How many labelled objects an image holds."""

    name = "count"

    def __init__(self, decoder: CountDecoder) -> None:
        self.decoder = decoder

    def key(self, task: Task) -> str:
        return self.output_names(task)[0]

    def build_head(
        self, cfg: ModelConfig, tasks: tuple[Task, ...], trunk_channels: dict[int, int]
    ) -> nn.Module:
        return CountHead(self.decoder, tuple(t.name for t in tasks), trunk_channels[32])

    def output_shapes(
        self, task: Task, cfg: ModelConfig, hw: tuple[int, int]
    ) -> dict[str, tuple[int, ...]]:
        return {self.key(task): (1,)}

    def targets(self, task: Task, sample: Sample) -> dict[str, Any]:
        n = float(len(sample.boxes)) if sample.record.has_boxes else math.nan
        return {self.key(task): n}

    def labelled(self, task: Task, targets: list[dict]) -> bool:
        return any(math.isfinite(x[self.key(task)]) for x in targets)

    def loss(
        self, task: Task, out: dict[str, torch.Tensor], targets: list[dict], ctx: LossContext
    ) -> torch.Tensor:
        pred = out[self.key(task)].float()[:, 0]
        y = torch.tensor([x[self.key(task)] for x in targets], device=pred.device)
        ok = torch.isfinite(y)
        return F.smooth_l1_loss(pred[ok], y[ok]) if ok.any() else pred.sum() * 0.0

    def metric(self, task: Task, cfg: ModelConfig) -> CountMetric:
        return CountMetric(task, self.key(task))

    def export_meta(self, task: Task, cfg: ModelConfig, nms: bool = False) -> TaskMeta:
        return TaskMeta(task.name, self.name, self.output_names(task))


@pytest.fixture
def count_kind():
    with decoder_registered(CountDecoder()) as decoder, kind_registered(CountKind(decoder)) as k:
        yield k
    assert "count" not in KINDS and "count" not in DECODERS  # nothing leaks into other tests


def _tiny_config():
    """configs/tiny.yaml with a handful of small synthetic scenes: two steps, one evaluation."""
    cfg = load_config(TINY)
    train_src = SourceConfig(kind="synthetic", n=16, seed=0, frame_hw=(90, 160))
    val_src = SourceConfig(kind="synthetic", n=8, seed=1000, frame_hw=(90, 160))
    data = dataclasses.replace(cfg.data, train=(train_src,), val=(val_src,))
    tc = dataclasses.replace(cfg.train, epochs=1, batch_size=8, amp="off", warmup_steps=1)
    model = dataclasses.replace(cfg.model, tasks={"count": {"objects": {}}})
    return dataclasses.replace(cfg, data=data, train=tc, model=model)


def test_a_kind_registered_outside_the_package_trains_exports_and_runs(tmp_path, count_kind):
    metrics = train(_tiny_config(), tmp_path / "run", "cpu", progress=False, data_root=tmp_path)
    assert math.isfinite(metrics["objects/mae"]) and metrics["objects/std"] > 0
    assert "det/map50" in metrics and "weather/acc" in metrics  # the built-in kinds still train

    res = export(
        ExportConfig(weights=str(tmp_path / "run" / "best.pt"), out=str(tmp_path / "m.onnx"))
    )
    count = next(t for t in res.meta.tasks if t.name == "objects")
    assert (count.kind, count.outputs) == ("count", ("count_objects",))
    assert "count_objects" in res.report.max_abs  # the parity check compared it against torch

    engine = Engine(res.path, providers="cpu")
    frame = np.full((90, 160, 3), 90, np.uint8)
    frame[40:70, 30:80] = (40, 40, 200)
    x, lbs = engine.preprocess([frame])
    raw = engine.run(x)["count_objects"]  # (1, 1)
    result = engine.postprocess(engine.run(x), lbs)[0]
    assert result.others == {"objects": max(0, round(float(raw[0, 0])))}
    entries = {t["name"]: t for t in task_entries(engine.meta.tasks)}  # the JSONL header's
    want = {"kind": "count", "value": result.others["objects"]}
    assert result.to_record(tasks=entries)["tasks"]["objects"] == want
    assert set(result.classifications) == {"weather", "scene", "timeofday"}
    assert "curvature" in result.regressions


def test_a_config_entry_for_an_unregistered_kind_is_an_error(tmp_path):
    cfg = _tiny_config()
    assert cfg.model.task_names()[-1] == "objects"  # the entry names the kind's tasks
    with pytest.raises(ConfigError, match=r"model\.tasks\.count: not a registered task kind"):
        train(cfg, tmp_path / "run", "cpu", progress=False, data_root=tmp_path)


def test_registering_a_kind_twice_or_removing_a_built_in_one_is_an_error():
    with pytest.raises(ValueError, match="task kind 'detect' is already registered"):
        register_kind(KINDS["detect"])
    with pytest.raises(ValueError, match="task kind 'detect' already has a decoder"):
        register_decoder(DECODERS["detect"])
    with pytest.raises(ValueError, match="built in"):
        unregister_kind("classify")
    assert list(KINDS) == ["detect", "classify", "regress", "segment"] == list(DECODERS)
