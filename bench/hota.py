"""HOTA (Higher Order Tracking Accuracy, Luiten et al., IJCV 2021) of tracks against MOT truth.

HOTA balances detection and association in one figure: at each localisation threshold alpha
(0.05, 0.10, ..., 0.95 of IoU), boxes are matched one-to-one per frame, preferring pairs whose
identities agree over the whole clip, and

- DetA = TP / (TP + FN + FP), the detection accuracy of those matches;
- AssA = the mean, over the matched pairs, of how much their two identities' tracks overlap in
  time: |TPA| / (|TPA| + |FNA| + |FPA|) for the pair's ground-truth and track identities;
- HOTA = sqrt(DetA * AssA); the reported figures are their means over the 19 thresholds.

The matching follows the paper (and TrackEval, its reference code): per frame, a Hungarian
assignment maximising IoU weighted by the pair's global alignment score (how often the two
identities overlap anywhere in the clip), then pairs below alpha are dropped. Boxes of different
classes never match. Needs scipy (``track-eval`` extra); nothing here needs torch.
"""

from __future__ import annotations

import numpy as np

from edge_mtl.bench.mot import MotBoxes
from edge_mtl.runtime.postprocess import box_iou_matrix

ALPHAS = np.arange(0.05, 0.99, 0.05)  # the 19 localisation thresholds
_EPS = np.finfo(float).eps


def _frames(gt: MotBoxes, hyp: MotBoxes, frames: int):
    """Per frame: (ground-truth identity indices, track identity indices, IoU (G, H) with zero
    across classes), identities renumbered 0..n-1; and the identity counts."""
    g_ids, g_idx = np.unique(gt.ids, return_inverse=True)
    h_ids, h_idx = np.unique(hyp.ids, return_inverse=True)
    out = []
    for f in range(1, frames + 1):
        gm, hm = gt.frame == f, hyp.frame == f
        g, h = gt.rows(gm), hyp.rows(hm)
        iou = box_iou_matrix(_xyxy(g.boxes), _xyxy(h.boxes))
        iou = np.where(g.classes[:, None] == h.classes[None, :], iou, 0.0)
        out.append((g_idx[gm], h_idx[hm], iou))
    return out, len(g_ids), len(h_ids)


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).reshape(-1, 4)


def _alignment(per_frame: list, n_gt: int, n_hyp: int) -> tuple[np.ndarray, ...]:
    """Global alignment score (n_gt, n_hyp) of every identity pair, and the identities' box
    counts (n_gt, 1) and (1, n_hyp)."""
    overlap = np.zeros((n_gt, n_hyp))
    gt_count, hyp_count = np.zeros((n_gt, 1)), np.zeros((1, n_hyp))
    for g, h, sim in per_frame:
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        share = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > _EPS)
        overlap[g[:, None], h[None, :]] += share
        gt_count[g] += 1
        hyp_count[0, h] += 1
    return overlap / (gt_count + hyp_count - overlap), gt_count, hyp_count


def hota(gt: MotBoxes, hyp: MotBoxes, frames: int) -> dict[str, float]:
    """``hota``, ``deta``, ``assa`` and ``loca`` (mean IoU of the matches), each averaged over
    :data:`ALPHAS`, of tracks ``hyp`` against ``gt`` over frames 1..``frames``; 1.0 for a clip
    where both are empty, 0.0 where only one is."""
    from scipy.optimize import linear_sum_assignment

    per_frame, n_gt, n_hyp = _frames(gt, hyp, frames)
    if n_gt == 0 or n_hyp == 0:
        v = 1.0 if n_gt == n_hyp else 0.0
        return {"hota": v, "deta": v, "assa": v, "loca": v}
    align, gt_count, hyp_count = _alignment(per_frame, n_gt, n_hyp)
    k = len(ALPHAS)
    tp, fn, fp, loc = np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    matches = np.zeros((k, n_gt, n_hyp))
    for g, h, sim in per_frame:
        rows, cols = linear_sum_assignment(-(align[g[:, None], h[None, :]] * sim))
        matched_sim = sim[rows, cols]
        for a, alpha in enumerate(ALPHAS):
            ok = matched_sim >= alpha - _EPS
            n = int(ok.sum())
            tp[a] += n
            fn[a] += len(g) - n
            fp[a] += len(h) - n
            loc[a] += matched_sim[ok].sum()
            matches[a, g[rows[ok]], h[cols[ok]]] += 1
    ass_iou = matches / np.maximum(1, gt_count + hyp_count - matches)
    assa = (matches * ass_iou).sum((1, 2)) / np.maximum(1, tp)
    deta = tp / np.maximum(1, tp + fn + fp)
    loca = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return {
        "hota": float(np.sqrt(deta * assa).mean()),
        "deta": float(deta.mean()),
        "assa": float(assa.mean()),
        "loca": float(loca.mean()),
    }
