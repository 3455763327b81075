"""Run configuration: frozen dataclasses per stage, loaded from YAML with checked keys and types.

A config file has up to three sections, ``model``, ``data`` and ``train``. Unknown keys and wrong
types are reported with the file and the dotted key, e.g.
``configs/x.yaml: train.lr: expected a number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import InputError
from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

BACKBONES = ("resnet18", "resnet34", "resnet50")


class ConfigError(InputError):
    """A config file or value is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and tasks. Task names become ONNX output names (``cls_<name>``, ...)."""

    backbone: str = "resnet18"
    pretrained: str | None = None  # path to a local torchvision ResNet state dict
    input_hw: tuple[int, int] = (256, 448)
    neck_channels: int = 96
    head_convs: int = 2
    detect: tuple[str, ...] = ()  # detection class names; empty = no detection head
    classify: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> class names
    regress: tuple[str, ...] = ()  # scalar regression task names
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    strides: tuple[int, ...] = (8, 16, 32)


@dataclass(frozen=True)
class SourceConfig:
    """One data source. ``synthetic`` generates ``n`` scenes from ``seed`` (cached under
    ``path``); ``bdd100k`` reads ``path``/labels.json and images beside it."""

    kind: str = "synthetic"
    path: str | None = None
    n: int = 0
    seed: int = 0
    weight: float = 1.0
    frame_hw: tuple[int, int] = (360, 640)


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    hsv: float = 0.0  # strength of photometric jitter, 0 = off
    scale: float = 0.0  # +- fraction of random zoom, 0 = off


@dataclass(frozen=True)
class DataConfig:
    train: tuple[SourceConfig, ...] = ()
    val: tuple[SourceConfig, ...] = ()
    augment: AugmentConfig = AugmentConfig()
    workers: int = 1
    cache_images: bool = True  # keep decoded letterboxed images in RAM


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 10.0
    amp: str = "auto"  # auto | bf16 | fp16 | off
    loss_weights: dict[str, float] = field(default_factory=dict)  # task -> weight (default 1)
    weighting: str = "fixed"
    seed: int = 0
    eval_every: int = 1  # epochs
    channels_last: bool = True
    time_limit_min: float = 0.0  # stop training after this many minutes (0 = no limit)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    source: str = "<defaults>"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return _plain(d)

    def hash(self) -> str:
        """Stable short hash of model + data + train settings (not of the file name)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` and convert lists to tuples; raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    unknown = sorted(set(data) - set(names))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key (expected one of: {', '.join(names)})")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express."""
    src, m = cfg.source, cfg.model
    if m.backbone not in BACKBONES:
        raise ConfigError(f"{src}: model.backbone: expected one of {BACKBONES}, got {m.backbone!r}")
    largest = max(m.strides)
    if any(v % largest for v in m.input_hw) or min(m.input_hw) <= 0:
        raise ConfigError(
            f"{src}: model.input_hw: {list(m.input_hw)} must be positive multiples of {largest}"
        )
    if not (m.detect or m.classify or m.regress):
        raise ConfigError(f"{src}: model: no tasks (set detect, classify or regress)")
    tasks = set(m.classify) | set(m.regress) | ({"det"} if m.detect else set())
    for name in cfg.train.loss_weights:
        if name not in tasks:
            raise ConfigError(f"{src}: train.loss_weights.{name}: no such task ({sorted(tasks)})")
    if cfg.train.amp not in ("auto", "bf16", "fp16", "off"):
        raise ConfigError(f"{src}: train.amp: expected auto, bf16, fp16 or off")
    if cfg.train.weighting != "fixed":
        raise ConfigError(f"{src}: train.weighting: only 'fixed' is implemented")
    for i, s in enumerate((*cfg.data.train, *cfg.data.val)):
        if s.kind not in ("synthetic", "bdd100k"):
            raise ConfigError(f"{src}: data source {i}: unknown kind {s.kind!r}")
        if s.kind != "synthetic" and not s.path:
            raise ConfigError(f"{src}: data source {i} ({s.kind}): needs a path")
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with model/data/train sections")
    try:
        cfg = _build(Config, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return validate(dataclasses.replace(cfg, source=source))


def load_config(path: str | Path) -> Config:
    """Read a YAML config file; every problem is a ConfigError naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return config_from_dict(data, str(p))
