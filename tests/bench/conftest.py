"""Bench measures the engine, so its tests use the runtime's tiny models and helpers."""

from tests.runtime.conftest import kit, models  # noqa: F401  (pytest fixtures)
