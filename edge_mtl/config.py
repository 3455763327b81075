"""Run configuration: frozen dataclasses per stage, loaded from YAML with checked keys and types.

A config file has up to three sections, ``model``, ``data`` and ``train``. Unknown keys and wrong
types are reported with the file and the dotted key, e.g.
``configs/x.yaml: train.lr: expected a number, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD


class Backbone(enum.StrEnum):
    """``model.backbone``: the torchvision ResNet trunk."""

    RESNET18 = "resnet18"
    RESNET34 = "resnet34"
    RESNET50 = "resnet50"


class Amp(enum.StrEnum):
    """``train.amp``: autocast dtype; ``auto`` picks bf16/fp16 where the hardware is fast."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


class SourceKind(enum.StrEnum):
    """``data.*[i].kind``: the format of one data source (see SourceConfig)."""

    SYNTHETIC = "synthetic"
    BDD100K = "bdd100k"
    KITTI = "kitti"
    COCO = "coco"
    FOLDER = "folder"


class WeightingName(enum.StrEnum):
    """``train.weighting``: the task-weighting strategy (edge_mtl/weighting.py)."""

    FIXED = "fixed"
    UNCERTAINTY = "uncertainty"
    GRADNORM = "gradnorm"
    DWA = "dwa"


class ConfigError(InputError):
    """A config file or value is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and tasks. Task names become ONNX output names (``cls_<name>``, ...)."""

    backbone: Backbone = Backbone.RESNET18
    pretrained: str | None = None  # path to a local torchvision ResNet state dict
    input_hw: tuple[int, int] = (256, 448)
    neck_channels: int = 96
    head_convs: int = 2
    detect: tuple[str, ...] = ()  # detection class names; empty = no detection head
    classify: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task -> class names
    regress: tuple[str, ...] = ()  # scalar regression task names
    # regress task -> unit of its value, exported for the runtime (others ignored: single-task
    # variants of a config keep the mapping)
    regress_units: dict[str, str] = field(default_factory=dict)
    # pixel tasks (drivable, lanes: the labels loaders read) -> class names, background first
    segment: dict[str, tuple[str, ...]] = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    strides: tuple[int, ...] = (8, 16, 32)  # detection levels: P3-P5, or (4, 8, 16, 32) for P2-P5
    # Tasks of kinds registered beyond the built-in ones (edge_mtl.tasks.register_kind):
    # kind name -> {task name: options that kind reads}.
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def task_names(self) -> list[str]:
        """Loss task names in a fixed order: ``det``, classification, regression, then the tasks
        of registered kinds."""
        registered = [name for entry in self.tasks.values() for name in entry]
        return (
            (["det"] if self.detect else [])
            + list(self.classify)
            + list(self.regress)
            + list(self.segment)
            + registered
        )


# The detection pyramid: P3-P5, or P2-P5 for a stride-4 level that sees objects a few pixels wide.
STRIDE_CHOICES = ((8, 16, 32), (4, 8, 16, 32))
IGNORE = "ignore"  # category mapping target: drop these annotations on purpose


@dataclass(frozen=True)
class SourceConfig:
    """One data source (``kind`` a SourceKind):

    - ``synthetic``: ``n`` scenes rendered from ``seed`` at ``frame_hw`` (cached under ``path``);
    - ``bdd100k``: ``path``/labels.json with images in ``path``/images/, or BDD100K's own label
      file or per-image label folder with images in ``images`` (default: where the dataset
      ships them, e.g. images/100k/val for labels/det_20/det_val.json);
    - ``kitti``: ``path``/label_2/*.txt, images in ``path``/image_2/;
    - ``coco``: ``path`` is the COCO JSON file; images in ``images`` (default: images/ beside it);
    - ``folder``: ``path``/<class name>/<image>, labels for the one classification ``task``.

    ``categories`` maps dataset category (or folder) names to model class names, or to
    ``ignore`` to drop them on purpose; it overrides the per-format defaults. Names neither
    mapped nor equal to a model class (case-insensitive) are counted and reported as unknown.
    ``name`` labels the source in logs (default ``<kind>[<index>]``). ``skip_bad`` skips
    malformed entries (a bad box, frame or label line, a missing image file) and counts them in
    the source's report line instead of stopping at the first; an image with a bad object is
    dropped whole, so the object is not learnt as background. A file that cannot be parsed at
    all (bad JSON, a missing label directory) is an error either way.

    A ``bdd100k`` source finds its drivable-area and lane mask PNGs and lane polylines where the
    dataset ships them (:mod:`edge_mtl.data.bdd_masks`); ``drivable`` / ``lanes`` name the PNG
    folders instead, and ``poly2d`` lanes are drawn ``lane_width`` px wide.
    """

    kind: SourceKind = SourceKind.SYNTHETIC
    path: str | None = None
    n: int = 0
    seed: int = 0
    weight: float = 1.0
    frame_hw: tuple[int, int] = (360, 640)
    name: str | None = None
    categories: dict[str, str] = field(default_factory=dict)
    task: str | None = None  # folder: the classification task its class folders label
    images: str | None = None  # coco, bdd100k: the images directory
    skip_bad: bool = False  # skip and count malformed entries instead of raising
    drivable: str | None = None  # bdd100k: folder of drivable-area mask PNGs (<stem>.png)
    lanes: str | None = None  # bdd100k: folder of lane mask PNGs (<stem>.png)
    lane_width: float = 8.0  # bdd100k: px poly2d lanes are drawn at (= data.masks.LANE_WIDTH)

    def display_name(self, index: int) -> str:
        return self.name or f"{self.kind}[{index}]"


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation, applied in model-input pixels after the letterbox."""

    hflip: float = 0.5  # probability of a horizontal flip (boxes and curvature follow)
    hsv: float = 0.0  # strength of photometric jitter in [0, 1], 0 = off
    scale: float = 0.0  # random zoom by a factor in [1 - scale, 1 + scale], 0 = off


@dataclass(frozen=True)
class DataConfig:
    train: tuple[SourceConfig, ...] = ()
    val: tuple[SourceConfig, ...] = ()
    augment: AugmentConfig = AugmentConfig()
    workers: int = 1
    # Mixing several sources: source s is drawn with probability ~ weight_s * n_s ** (1 / T);
    # 1 = in proportion to size, larger = flatter (see edge_mtl/data/sampling.py).
    temperature: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 10.0
    amp: Amp = Amp.AUTO
    loss_weights: dict[str, float] = field(default_factory=dict)  # task -> weight (default 1)
    weighting: WeightingName = WeightingName.FIXED
    gradnorm_alpha: float = 1.5  # GradNorm restoring strength (0 = equal gradient norms)
    gradnorm_lr: float = 0.025  # learning rate of GradNorm's own Adam on the task weights
    dwa_temperature: float = 2.0  # DWA softmax temperature (higher = closer to equal)
    max_nonfinite_steps: int = 10  # stop after this many non-finite steps in a row
    seed: int = 0
    eval_every: int = 1  # epochs
    time_limit_min: float = 0.0  # stop training after this many minutes (0 = no limit)
    # Progressive resizing (edge_mtl/progressive.py): the first ``low_res_until`` of the run
    # (0..1, by steps or by the time limit, whichever is further) trains at ``low_res_scale`` x
    # model.input_hw, the rest at full size. 1.0 / 0.0 = off. Lists give several stages:
    # low_res_scale [0.5, 0.75] with low_res_until [0.5, 0.75] trains 0.5x for the first half,
    # 0.75x to three quarters, then full size.
    low_res_scale: float | tuple[float, ...] = 1.0
    low_res_until: float | tuple[float, ...] = 0.0
    # batch_size is the global batch of one optimizer step: split over the processes of a
    # distributed run and over ``accumulate`` forward/backward passes in each.
    accumulate: int = 1
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA/NCCL only)


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
    """Plain YAML/JSON data: enums as their strings, tuples as lists (checkpoints load it with
    ``weights_only=True``, which admits no enum classes)."""
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against type ``tp`` and convert lists to tuples; raise ConfigError."""
    if tp is Any:  # read by a registered task kind, which checks it
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, where)
        for alt in inner:  # e.g. float | tuple[float, ...]: a number or a list of them
            try:
                return _convert(alt, value, where)
            except ConfigError:
                continue
        wanted = " or ".join(_type_name(a) for a in inner)
        raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, str) and value in tp._value2member_map_:
            return tp(value)
        choices = ", ".join(str(m.value) for m in tp)
        raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
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
    if cls is SourceConfig:
        _check_kind(data, where)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _check_kind(data: dict[str, Any], where: str) -> None:
    """An unknown source kind, named by the source's label (``data.train[0] (lidar[0])``)."""
    kind = data.get("kind", SourceKind.SYNTHETIC)
    if isinstance(kind, str) and kind in SourceKind._value2member_map_:
        return
    index = where.rpartition("[")[2].rstrip("]")
    label = data.get("name") or f"{kind}[{index}]"
    kinds = ", ".join(SourceKind)
    raise ConfigError(f"{where} ({label}): unknown kind {kind!r} (expected one of {kinds})")


def _validate_stages(src: str, tc: TrainConfig) -> None:
    """``low_res_scale`` / ``low_res_until``: numbers, or lists of one length with every scale
    in (0, 1] and the run fractions in [0, 1] and increasing."""
    scales, untils = as_tuple(tc.low_res_scale), as_tuple(tc.low_res_until)
    if len(scales) != len(untils) or not scales:
        raise ConfigError(
            f"{src}: train.low_res_scale / low_res_until: one scale per stage, got "
            f"{len(scales)} scale(s) and {len(untils)} run fraction(s)"
        )
    if not all(0 < x <= 1 for x in scales):
        raise ConfigError(f"{src}: train.low_res_scale: must be in (0, 1], got {tc.low_res_scale}")
    if not all(0 <= x <= 1 for x in untils):
        raise ConfigError(f"{src}: train.low_res_until: must be in [0, 1], got {tc.low_res_until}")
    if any(a >= b for a, b in itertools.pairwise(untils)):
        raise ConfigError(
            f"{src}: train.low_res_until: stages must end in increasing order, got {list(untils)}"
        )


def as_tuple(x: float | tuple[float, ...]) -> tuple[float, ...]:
    """A number-or-list config value as a tuple."""
    return tuple(x) if isinstance(x, (list, tuple)) else (x,)


def validate(cfg: Config) -> Config:
    """Cross-field checks that types alone cannot express."""
    src, m = cfg.source, cfg.model
    if tuple(m.strides) not in STRIDE_CHOICES:
        choices = " or ".join(str(list(c)) for c in STRIDE_CHOICES)
        raise ConfigError(f"{src}: model.strides: expected {choices}, got {list(m.strides)}")
    largest = max(m.strides)
    if any(v % largest for v in m.input_hw) or min(m.input_hw) <= 0:
        raise ConfigError(
            f"{src}: model.input_hw: {list(m.input_hw)} must be positive multiples of {largest}"
        )
    if not (m.detect or m.classify or m.regress or m.segment):
        raise ConfigError(f"{src}: model: no tasks (set detect, classify, regress or segment)")
    _validate_segment(src, m)
    tasks = set(m.task_names())
    for name in cfg.train.loss_weights:
        if name not in tasks:
            raise ConfigError(f"{src}: train.loss_weights.{name}: no such task ({sorted(tasks)})")
    _validate_weighting(src, cfg.train)
    if cfg.train.accumulate < 1:
        raise ConfigError(f"{src}: train.accumulate: must be at least 1")
    _validate_stages(src, cfg.train)
    if cfg.train.batch_size % cfg.train.accumulate:
        raise ConfigError(
            f"{src}: train.batch_size {cfg.train.batch_size} must be a multiple of "
            f"train.accumulate {cfg.train.accumulate}"
        )
    if cfg.data.temperature <= 0:
        raise ConfigError(f"{src}: data.temperature: must be > 0, got {cfg.data.temperature}")
    from edge_mtl.config_checks import validate_source  # it imports this module

    for split, sources in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, s in enumerate(sources):
            validate_source(f"{src}: data.{split}[{i}] ({s.display_name(i)})", s, m)
        names = [s.display_name(i) for i, s in enumerate(sources)]
        if len(set(names)) != len(names):  # logs and sampling tell sources apart by name
            raise ConfigError(f"{src}: data.{split}: source names must differ, got {names}")
    a = cfg.data.augment
    if not (0 <= a.hflip <= 1 and 0 <= a.hsv <= 1 and 0 <= a.scale < 1):
        raise ConfigError(
            f"{src}: data.augment: hflip and hsv must be in [0, 1] and scale in [0, 1), "
            f"got hflip={a.hflip}, hsv={a.hsv}, scale={a.scale}"
        )
    return cfg


def _validate_segment(src: str, m: ModelConfig) -> None:
    from edge_mtl.data.masks import segment_problem  # data imports this module

    for task, classes in m.segment.items():
        if problem := segment_problem(task, classes):
            raise ConfigError(f"{src}: model.segment.{task}: {problem}")


def _validate_weighting(src: str, tc: TrainConfig) -> None:
    if tc.gradnorm_alpha < 0 or tc.gradnorm_lr <= 0 or tc.dwa_temperature <= 0:
        raise ConfigError(
            f"{src}: train: need gradnorm_alpha >= 0, gradnorm_lr > 0 and dwa_temperature > 0, "
            f"got {tc.gradnorm_alpha}, {tc.gradnorm_lr}, {tc.dwa_temperature}"
        )
    if tc.max_nonfinite_steps < 1:
        raise ConfigError(
            f"{src}: train.max_nonfinite_steps: must be >= 1, got {tc.max_nonfinite_steps}"
        )


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with model/data/train sections")
    try:
        cfg = _build(Config, data, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return validate(dataclasses.replace(cfg, source=source))


def builtin_configs() -> list[str]:
    """Names of the configs shipped in the package ``edge_mtl.configs`` (e.g. ``synthetic``)."""
    folder = resources.files("edge_mtl.configs")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(name_or_path: str | Path) -> Config:
    """Read a YAML config: a file path, or the bare name of a built-in config (``synthetic``
    reads ``edge_mtl/configs/synthetic.yaml``). A file of that name in the working folder wins
    over a built-in one. Every problem is a ConfigError naming the file."""
    import yaml

    p = Path(name_or_path)
    if not p.is_file() and _is_bare_name(str(name_or_path)):
        names = builtin_configs()
        if str(name_or_path) not in names:
            raise ConfigError(
                f"{name_or_path}: no such config file or built-in config "
                f"(built-in: {', '.join(names)})"
            )
        resource = resources.files("edge_mtl.configs") / f"{name_or_path}.yaml"
        source, read = str(resource), resource.read_text
    elif not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    else:
        source, read = str(p), p.read_text
    try:
        data = yaml.safe_load(read()) or {}
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the config ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None
    return config_from_dict(data, source)


def _is_bare_name(text: str) -> bool:
    """``synthetic`` is a name; ``configs/x.yaml``, ``x.yaml`` and ``./x`` are paths."""
    return bool(text) and "/" not in text and "\\" not in text and Path(text).suffix == ""


def with_overrides(
    cfg: Config,
    epochs: int | None = None,
    time_limit_min: float | None = None,
    pretrained: str | None = None,
) -> Config:
    """``cfg`` with the command line's overrides (None = keep the config's value), validated."""
    train: dict[str, Any] = {}
    if epochs is not None:
        train["epochs"] = epochs
    if time_limit_min is not None:
        train["time_limit_min"] = time_limit_min
    if train:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    if pretrained:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=pretrained))
    return validate(cfg)
