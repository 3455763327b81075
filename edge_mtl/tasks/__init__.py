"""The task registry: every task kind the model, losses, evaluation and export know.

``KINDS`` maps a kind name to its :class:`~edge_mtl.tasks.base.Kind`, in the order heads are
built and outputs listed. Adding a kind: one module with a ``Kind`` subclass, one entry here (or
:func:`register_kind` from outside the package), and its decoder in
``edge_mtl.runtime.decoders``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edge_mtl.config import ConfigError, ModelConfig
from edge_mtl.tasks.base import Features, Kind, LossContext, Sample, Task, TaskMetric
from edge_mtl.tasks.classify import CLASSIFY
from edge_mtl.tasks.detect import DETECT
from edge_mtl.tasks.regress import REGRESS
from edge_mtl.tasks.segment import SEGMENT

__all__ = [
    "KINDS",
    "Features",
    "Kind",
    "LossContext",
    "Sample",
    "Task",
    "TaskMetric",
    "declared",
    "kind_registered",
    "register_kind",
    "task_names",
    "unregister_kind",
]

KINDS: dict[str, Kind] = {
    "detect": DETECT,
    "classify": CLASSIFY,
    "regress": REGRESS,
    "segment": SEGMENT,
}
BUILT_IN = tuple(KINDS)


def register_kind(kind: Kind) -> None:
    """Add a task kind (after the built-in ones); a name already registered is an error."""
    if kind.name in KINDS:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind


def unregister_kind(name: str) -> None:
    """Remove a kind added with :func:`register_kind` (the built-in kinds stay)."""
    if name in BUILT_IN:
        raise ValueError(f"task kind {name!r} is built in and cannot be removed")
    del KINDS[name]


@contextmanager
def kind_registered(kind: Kind) -> Iterator[Kind]:
    """:func:`register_kind` for the duration of a ``with`` block (tests, plugins)."""
    register_kind(kind)
    try:
        yield kind
    finally:
        unregister_kind(kind.name)


def declared(cfg: ModelConfig) -> dict[str, tuple[Task, ...]]:
    """Kind name -> the tasks of that kind ``cfg`` declares, in registry order, kinds without
    tasks left out."""
    unknown = sorted(set(cfg.tasks) - set(KINDS).difference(BUILT_IN))
    if unknown:
        registered = ", ".join(sorted(set(KINDS).difference(BUILT_IN))) or "none"
        raise ConfigError(
            f"model.tasks.{unknown[0]}: not a registered task kind (registered: {registered}; "
            f"the built-in kinds have their own keys: {', '.join(BUILT_IN)})"
        )
    out = {name: kind.declared(cfg) for name, kind in KINDS.items()}
    return {name: tasks for name, tasks in out.items() if tasks}


def task_names(cfg: ModelConfig) -> list[str]:
    """Loss task names in a fixed order (``det``, classification, regression, segmentation,
    then any registered kind's), as the weighting strategies index them."""
    return [t.name for tasks in declared(cfg).values() for t in tasks]
