"""Which images an epoch visits when several sources of different sizes train together.

Source ``s`` with ``n_s`` images and config weight ``w_s`` is drawn with probability

    p_s  ∝  w_s * n_s ** (1 / T)

``T = 1`` samples in proportion to size (every image about once per epoch when weights are
equal); a larger temperature flattens the mix towards uniform over sources, so a small labelled
set is not drowned by a large one; ``w_s`` tilts it further by hand. Within a source, images
come from a shuffled cycle, so an over-sampled small source repeats whole passes rather than
a few lucky images. An epoch has as many images as all sources together.

Everything is drawn from ``torch.Generator(seed, epoch)``: the same config gives the same batches
on every machine and after every resume, and ranks of a distributed run agree on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def source_probabilities(
    sizes: Sequence[int], weights: Sequence[float], temperature: float = 1.0
) -> np.ndarray:
    """Per-source sampling probabilities (sum 1). Empty sources get 0."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = np.asarray(sizes, np.float64)
    w = np.asarray(weights, np.float64)
    raw = np.where(n > 0, w * n ** (1.0 / temperature), 0.0)
    if raw.sum() <= 0:
        raise ValueError("no source has images and a positive weight")
    return raw / raw.sum()


def epoch_indices(
    sizes: Sequence[int],
    weights: Sequence[float],
    temperature: float,
    seed: int,
    epoch: int,
) -> list[int]:
    """Global image indices (sources concatenated in order) for one epoch of ``sum(sizes)``.

    One source, or several with plain proportional sampling (equal weights, ``T = 1``), gives a
    permutation: every image exactly once."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    total = int(sum(sizes))
    p = source_probabilities(sizes, weights, temperature)
    proportional = np.allclose(p, np.asarray(sizes, np.float64) / max(total, 1))
    if len(sizes) == 1 or proportional:
        return torch.randperm(total, generator=g).tolist()
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
    picks = torch.multinomial(torch.from_numpy(p), total, replacement=True, generator=g).tolist()
    need = np.bincount(picks, minlength=len(sizes))
    pools: list[list[int]] = []
    for s, n in enumerate(sizes):
        pool: list[int] = []
        while len(pool) < need[s]:  # whole shuffled passes over the source
            pool += (torch.randperm(n, generator=g) + int(offsets[s])).tolist()
        pools.append(pool)
    cursor = [0] * len(sizes)
    out = []
    for s in picks:
        out.append(pools[s][cursor[s]])
        cursor[s] += 1
    return out


def epoch_batches(
    sizes: Sequence[int],
    weights: Sequence[float],
    temperature: float,
    batch_size: int,
    seed: int,
    epoch: int,
) -> list[list[int]]:
    """:func:`epoch_indices` cut into full batches (a ragged tail is dropped)."""
    idx = epoch_indices(sizes, weights, temperature, seed, epoch)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def mix_summary(
    source_names: Sequence[str],
    counts: Sequence[dict[str, int]],
    sizes: Sequence[int],
    probabilities: Sequence[float],
) -> str:
    """A small table for the training log: per source its images, sampling share and how many
    images carry a label of each task (``-`` = none: that task's loss is masked for them)."""
    tasks = list(dict.fromkeys(t for c in counts for t in c))
    head = ["source", "images", "share", *tasks]
    rows = [
        [name, str(n), f"{p:.0%}", *(str(c.get(t, 0) or "-") for t in tasks)]
        for name, n, p, c in zip(source_names, sizes, probabilities, counts)
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  "
        + "  ".join(
            cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))
        )
        for r in [head, *rows]
    )
