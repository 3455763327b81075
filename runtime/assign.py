"""Minimum-cost assignment for the tracker, in plain numpy (no scipy, no compiled extension).

:func:`linear_assignment` pairs rows (tracks) with columns (detections) so that the summed cost
is least among the pairings with the most pairs of cost <= ``max_cost``; pairs above it stay
unmatched. It solves the rectangular problem with the shortest-augmenting-path method of
Jonker-Volgenant as Crouse describes it (the algorithm behind
``scipy.optimize.linear_sum_assignment``), one row at a time with the column work in numpy.

Tracking matrices are gated (IoU below a floor is infeasible) and mostly block-diagonal: a
track overlaps one or two boxes. Pairs that are each other's only feasible partner are taken
at once, and only the rows and columns left in conflict go through the solver, so a frame of
100 well-separated boxes costs a few vector operations rather than 100 augmentations.
"""

from __future__ import annotations

import numpy as np

_BIG = 1e6  # cost of an infeasible pair: above any sum of feasible ones (costs are in [0, 1])


def solve_dense(cost: np.ndarray) -> np.ndarray:
    """Optimal assignment of a finite (n, m) cost matrix with n <= m: the column of each row,
    (n,) int64, minimising the summed cost (every row is assigned)."""
    n, m = cost.shape
    assert n <= m, "solve_dense wants at most as many rows as columns"
    u, v = np.zeros(n), np.zeros(m)
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(m, -1, np.int64)
    for cur in range(n):
        shortest = np.full(m, np.inf)
        path = np.full(m, -1, np.int64)
        seen_r, seen_c = np.zeros(n, bool), np.zeros(m, bool)
        min_val, i, sink = 0.0, cur, -1
        while sink < 0:
            seen_r[i] = True
            r = min_val + cost[i] - u[i] - v
            better = ~seen_c & (r < shortest)
            shortest[better] = r[better]
            path[better] = i
            cand = np.where(seen_c, np.inf, shortest)
            lowest = cand.min()
            ties = np.flatnonzero(cand == lowest)
            free = ties[row4col[ties] < 0]
            j = int(free[0] if len(free) else ties[0])  # a free column ends the path
            min_val = float(lowest)
            seen_c[j] = True
            if row4col[j] < 0:
                sink = j
            else:
                i = int(row4col[j])
        u[cur] += min_val
        others = seen_r.copy()
        others[cur] = False
        u[others] += min_val - shortest[col4row[others]]
        v[seen_c] -= min_val - shortest[seen_c]
        j = sink
        while True:  # flip the augmenting path
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, int(col4row[i])
            if i == cur:
                break
    return col4row


def linear_assignment(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray]:
    """Match rows to columns of ``cost`` (R, C), entries in [0, 1] or inf (never matched).

    Returns ``rows``, ``cols`` (P,) int64, sorted by row: the matched pairs, each with
    ``cost <= max_cost``; the most such pairs, and among those the least summed cost."""
    cost = np.asarray(cost, np.float64)
    ok = cost <= max_cost
    rows_ok, cols_ok = ok.sum(1), ok.sum(0)
    # Pairs that are each other's only feasible partner: matched without the solver.
    r1 = np.flatnonzero(rows_ok == 1)
    c1 = ok[r1].argmax(1)
    lone = cols_ok[c1] == 1
    rows, cols = [r1[lone]], [c1[lone]]
    open_r, open_c = rows_ok > 0, cols_ok > 0
    open_r[rows[0]], open_c[cols[0]] = False, False
    rest_r, rest_c = np.flatnonzero(open_r), np.flatnonzero(open_c)
    if len(rest_r) and len(rest_c):
        sub = np.where(ok[np.ix_(rest_r, rest_c)], cost[np.ix_(rest_r, rest_c)], _BIG)
        flip = len(rest_r) > len(rest_c)
        a = solve_dense(sub.T if flip else sub)
        rr, cc = (a, np.arange(len(a))) if flip else (np.arange(len(a)), a)
        keep = sub[rr, cc] <= max_cost
        rows.append(rest_r[rr[keep]])
        cols.append(rest_c[cc[keep]])
    r, c = np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)
    order = np.argsort(r, kind="stable")
    return r[order], c[order]
