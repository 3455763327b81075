"""Calibration quantizes the runtime's tiny models (built with onnx.helper, no torch)."""

from tests.runtime.conftest import models  # noqa: F401  (pytest fixture)
