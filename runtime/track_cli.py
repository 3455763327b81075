"""The tracking and smoothing flags shared by ``edge-mtl run`` and ``edge-mtl eval-video``.

Standard library only at module level (the parsers are built for ``--help``); the config is
made inside :func:`stabilize_config`.
"""

from __future__ import annotations

import argparse
from typing import Any

SMOOTH_DEFAULT_S = 0.5  # --smooth without a value; mirrors runtime.smooth.DEFAULT_SMOOTH_S


def add_track_arguments(p: argparse.ArgumentParser, switch: bool = True) -> None:
    """``--track`` (unless ``switch`` is False: a command that always tracks), ``--smooth [S]``
    and the tracker's tuning flags."""
    if switch:
        _add_switch(p)
    p.add_argument(
        "--smooth", type=float, nargs="?", const=SMOOTH_DEFAULT_S, default=0.0, metavar="S",
        help="smooth classification probabilities and regression values over time with a time "
        f"constant of S seconds (--smooth alone: {SMOOTH_DEFAULT_S}; 0: off), labels with "
        "hysteresis; JSON lines keep the raw answers and add 'smoothed'",
    )  # fmt: skip
    _add_tuning(p)


def _add_switch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--track", action="store_true",
        help="give detections track IDs (Kalman filter + ByteTrack two-stage association, per "
        "class; one tracker per stream); JSON lines get track_id and track_age, the overlay "
        "draws the ID and a 1 s trail",
    )  # fmt: skip


def _add_tuning(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--track-high", type=float, default=0.5, metavar="P",
        help="--track: detections scoring at least P are matched first and may start tracks "
        "(at P + 0.1); fainter ones only continue tracks (default 0.5)",
    )  # fmt: skip
    p.add_argument(
        "--track-hits", type=int, default=2, metavar="N",
        help="--track: a track gets its ID at its N-th matched frame (default 2)",
    )  # fmt: skip
    p.add_argument(
        "--track-lost", type=float, default=1.0, metavar="S",
        help="--track: a track unseen for S seconds ends (2 S if it was seen hidden behind a "
        "nearer box); until then it keeps its ID when seen again (default 1.0)",
    )  # fmt: skip


def check_track_args(args: argparse.Namespace) -> None:
    """One-line errors for out-of-range values."""
    from edge_mtl.runtime.errors import InputError

    if args.smooth < 0:
        raise InputError(f"--smooth must be >= 0 seconds, got {args.smooth}")
    if not 0.0 <= args.track_high <= 1.0:
        raise InputError(f"--track-high must be in [0, 1], got {args.track_high}")
    if args.track_hits < 1:
        raise InputError(f"--track-hits must be >= 1, got {args.track_hits}")
    if args.track_lost < 0:
        raise InputError(f"--track-lost must be >= 0 seconds, got {args.track_lost}")


def stabilize_config(args: argparse.Namespace) -> Any:
    """The :class:`~edge_mtl.runtime.stabilize.StabilizeConfig` the flags ask for."""
    from edge_mtl.runtime.stabilize import StabilizeConfig
    from edge_mtl.runtime.track import TrackerConfig

    tracker = TrackerConfig(
        high_score=args.track_high,
        new_score=min(args.track_high + 0.1, 1.0),
        min_hits=args.track_hits,
        max_lost_s=args.track_lost,
    )
    track = getattr(args, "track", True)  # commands without the switch always track
    return StabilizeConfig(track=track, smooth_s=args.smooth, tracker=tracker)
