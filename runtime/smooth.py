"""Temporal smoothing of a stream's classification and regression answers.

Each value follows an exponential moving average with a time constant ``tau_s`` in seconds:
``s += alpha * (x - s)`` with ``alpha = 1 - exp(-dt / tau_s)`` from the time ``dt`` between the
frames, so a step in the input reaches 63 % after ``tau_s`` seconds at any frame rate (at 10 FPS
and 30 FPS alike). Labels add hysteresis: the smoothed label moves to the class with the highest
smoothed probability only once that probability beats the current label's by ``margin``, so two
classes near a tie do not make the label flicker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_mtl.runtime.decoders import Classification

DEFAULT_SMOOTH_S = 0.5
DEFAULT_MARGIN = 0.1


def ema_alpha(dt: float, tau_s: float) -> float:
    """Weight of the newest value after ``dt`` seconds with time constant ``tau_s`` (1 when
    ``tau_s`` is 0: no smoothing; 1 for the first value, ``dt`` = inf)."""
    if tau_s <= 0 or not math.isfinite(dt):
        return 1.0
    return 1.0 - math.exp(-max(dt, 0.0) / tau_s)


@dataclass
class _Label:
    probs: np.ndarray  # smoothed probabilities (K,) float64
    index: int  # the current (hysteresis) label


class Smoother:
    """Smoothed answers of one stream; :meth:`update` once per frame, in time order.

    ``tau_s``: time constant in seconds (0: answers pass through unchanged, labels too);
    ``margin``: how much the smoothed probability of a new label must exceed the current one's
    before the label switches; ``classes``: task name -> class names (to name a label by
    index; without it the decoder's own label is kept when the index matches)."""

    def __init__(
        self,
        tau_s: float = DEFAULT_SMOOTH_S,
        margin: float = DEFAULT_MARGIN,
        classes: dict[str, Sequence[str]] | None = None,
    ) -> None:
        self.tau_s, self.margin = tau_s, margin
        self.classes = dict(classes or {})
        self._t: float | None = None
        self._labels: dict[str, _Label] = {}
        self._values: dict[str, float] = {}

    def update(
        self,
        classifications: dict[str, Classification],
        regressions: dict[str, float],
        t: float,
    ) -> tuple[dict[str, Classification], dict[str, float]]:
        """Take one frame's answers at time ``t`` seconds; returns the smoothed ones (same
        keys). A non-finite regression value leaves its average unchanged."""
        dt = math.inf if self._t is None else t - self._t
        self._t = t
        alpha = ema_alpha(dt, self.tau_s)
        out_c = {name: self._classify(name, c, alpha) for name, c in classifications.items()}
        out_r = {}
        for name, x in regressions.items():
            old = self._values.get(name)
            if old is None or not math.isfinite(old):
                new = float(x)
            elif math.isfinite(x):
                new = old + alpha * (float(x) - old)
            else:
                new = old
            self._values[name] = out_r[name] = new
        return out_c, out_r

    def _classify(self, name: str, c: Classification, alpha: float) -> Classification:
        x = np.asarray(c.probs, np.float64).reshape(-1)
        state = self._labels.get(name)
        if state is None or state.probs.shape != x.shape:
            state = self._labels[name] = _Label(x.copy(), int(np.argmax(x)))
        else:
            state.probs += alpha * (x - state.probs)
        best = int(np.argmax(state.probs))
        if self.tau_s <= 0 or state.probs[best] > state.probs[state.index] + self.margin:
            state.index = best
        i = state.index
        names = self.classes.get(name, ())
        label = names[i] if i < len(names) else (c.label if i == c.index else str(i))
        return Classification(label, i, float(state.probs[i]), state.probs.astype(np.float32))
