"""Calibration data for ONNX Runtime's static quantizer, preprocessed exactly as the engine does.

The quantizer sets each activation's int8 range from what it sees here, so the tensors must be
the very ones deployment feeds the model: ``edge_mtl.runtime.preprocess`` letterbox + normalisation,
with the input size, mean, std and pad value stored in the model's ``edge_mtl`` metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from edge_mtl.runtime.errors import InputError
from edge_mtl.runtime.metadata import ModelMeta
from edge_mtl.runtime.preprocess import preprocess


class CalibrationReader(CalibrationDataReader):
    """Yields ``{input_name: float32 (1, 3, H, W)}`` (normalised RGB NCHW), one image per call,
    decoding lazily so a few hundred images never sit in memory at once.

    ``paths``: image files (any size, decoded as uint8 BGR); ``input_hw`` (H, W) pixels;
    ``mean``/``std`` in 0-1 units; ``pad_value`` the letterbox grey. ``rewind()`` starts over,
    so one reader serves calibration and later sensitivity passes. An undecodable file raises
    :class:`InputError` naming it.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        input_name: str,
        input_hw: tuple[int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        pad_value: int,
    ) -> None:
        if not paths:
            raise InputError("calibration: no images given")
        self.paths = tuple(Path(p) for p in paths)
        self.input_name = input_name
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.mean, self.std, self.pad_value = tuple(mean), tuple(std), int(pad_value)
        self._start, self._end = 0, len(self.paths)
        self._next = 0

    @classmethod
    def from_meta(cls, paths: Sequence[str | Path], meta: ModelMeta) -> CalibrationReader:
        """A reader for the model described by ``meta`` (its input name, size and normalisation)."""
        return cls(paths, meta.input_name, meta.input_hw, meta.mean, meta.std, meta.pad_value)

    def tensor(self, path: Path) -> np.ndarray:
        """One image file -> float32 (1, 3, H, W), as ``Engine.preprocess`` makes it."""
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise InputError(f"{path}: cannot decode the calibration image")
        x, _ = preprocess([frame], self.input_hw, self.mean, self.std, self.pad_value)
        return x

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        path = self.paths[self._next]
        self._next += 1
        return {self.input_name: self.tensor(path)}

    def rewind(self) -> None:
        self._next = self._start

    def __len__(self) -> int:
        return self._end - self._start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to ``paths[start_index:end_index]`` (ORT's strided min-max calibration)."""
        self._start = max(0, start_index)
        self._end = min(len(self.paths), end_index)
        self._next = self._start
