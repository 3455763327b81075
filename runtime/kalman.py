"""Constant-velocity Kalman filter on boxes, for many tracks at once.

State per track (8,): box centre ``cx, cy``, width ``w``, height ``h`` in frame pixels and their
velocities in pixels per processed frame; a measurement (4,) is ``cx, cy, w, h``. The noise
follows ByteTrack/BoT-SORT (xywh variant): standard deviations proportional to the box size, so
near and far objects get the same relative uncertainty; the velocity noise is 4x theirs, since
on a road near objects speed up and grow in the image (a pedestrian or a sign passing the
camera), and a velocity that lags lets the track of a near box take the box it passes. Every
function takes and returns stacked arrays: means (N, 8) float64, covariances (N, 8, 8),
measurements (N, 4).
"""

from __future__ import annotations

import numpy as np

STD_POSITION = 1.0 / 20  # position noise, share of the box's width/height
STD_VELOCITY = 1.0 / 40  # velocity noise, share of the box's width/height per frame

_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # x' = x + v (one step = one processed frame)


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) cx, cy, w, h (same pixels)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate([b[:, :2] + wh / 2, wh], 1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) cx, cy, w, h -> (N, 4) xyxy."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    half = b[:, 2:] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], 1)


def _wh4(wh: np.ndarray) -> np.ndarray:
    """(N, 2) w, h -> (N, 4) w, h, w, h: the scale of each state coordinate pair."""
    return np.concatenate([wh, wh], 1)


def initiate(meas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements (N, 4): zero velocity, wide velocity uncertainty."""
    meas = np.asarray(meas, np.float64).reshape(-1, 4)
    mean = np.concatenate([meas, np.zeros_like(meas)], 1)
    s = _wh4(np.maximum(meas[:, 2:], 1.0))
    std = np.concatenate([2 * STD_POSITION * s, 10 * STD_VELOCITY * s], 1)
    return mean, _diag(std**2)


def _diag(var: np.ndarray) -> np.ndarray:
    """(N, D) variances -> (N, D, D) diagonal covariances."""
    n, d = var.shape
    out = np.zeros((n, d, d))
    out[:, np.arange(d), np.arange(d)] = var
    return out


def predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: (N, 8), (N, 8, 8) -> the predicted means and covariances."""
    s = _wh4(np.maximum(mean[:, 2:4], 1.0))
    q = _diag(np.concatenate([STD_POSITION * s, STD_VELOCITY * s], 1) ** 2)
    return mean @ _F.T, _F @ cov @ _F.T + q


def update(mean: np.ndarray, cov: np.ndarray, meas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct (N, 8), (N, 8, 8) with measurements (N, 4) cx, cy, w, h."""
    if len(mean) == 0:
        return mean, cov
    s = _wh4(np.maximum(mean[:, 2:4], 1.0))
    r = _diag((STD_POSITION * s) ** 2)
    proj_cov = cov[:, :4, :4] + r  # H P H^T + R: H takes the first four state entries
    pht = cov[:, :, :4]  # P H^T (N, 8, 4)
    gain = np.linalg.solve(proj_cov, pht.transpose(0, 2, 1)).transpose(0, 2, 1)  # (N, 8, 4)
    innov = np.asarray(meas, np.float64) - mean[:, :4]
    new_mean = mean + np.einsum("nij,nj->ni", gain, innov)
    new_cov = cov - gain @ proj_cov @ gain.transpose(0, 2, 1)
    return new_mean, new_cov
