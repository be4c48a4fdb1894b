"""Loss Rank Mining (paper Sec. III): keep, per image, the K predictions with the highest loss, optionally skipping
predictions that overlap an already-kept one of the same class (NMS on the loss ranking).

The rule, per image: rank the N predictions by loss descending (ties: lower index first); walk the ranking and keep
a prediction unless an already-kept prediction of the same predicted class overlaps it with IoU >= nms_thresh (>=, as
the paper says); stop once K are kept.  Without NMS this is plain top-K.  Two generalisations serve the mining
options of `mining.py`: K may differ per image (a (B,) tensor), and a `candidate` mask may restrict the walk to some
predictions (OHEM ranks the background only): non-candidates are never kept and suppress nobody.

Why looking only at the top-C of the ranking is exact: whether the prediction at rank r is kept depends only on the
decisions for ranks < r, so the greedy walk over a prefix of the ranking makes the same decisions as the walk over
the whole ranking.  If the prefix already holds K kept predictions, the answer is complete; otherwise the prefix is
doubled, up to all N.  Images are processed a few at a time when their pair matrices would be large.  The same
prefix property makes the first K' kept predictions of a walk with budget K >= K' exactly the walk with budget K'.

The `[lrm]` keys (all training-only; `hard_examples=0` switches every mining option off) are listed, with their
defaults and meaning, in the docstring of `mining.py`.
"""
from __future__ import annotations

import torch

from ..box import greedy_keep, pairwise_iou_cxcywh

PAIR_BUDGET = 1 << 24  # prediction pairs per IoU matrix (64 MiB of float32), for batch 64 at 608 and beyond


def rank_order(score: torch.Tensor) -> torch.Tensor:
    """Indices (B, N) of each image's predictions by score descending; ties keep the lower index first."""
    return torch.sort(score.detach(), dim=1, descending=True, stable=True).indices


def select_hard_examples(loss: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, k: int | torch.Tensor,
                         nms_thresh: float | None = None, candidate: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask (B, N) of the hard examples: loss (B, N), boxes (B, N, 4) cx,cy,w,h, classes (B, N) integer."""
    if loss.dim() != 2 or boxes.shape != (*loss.shape, 4) or classes.shape != loss.shape:
        raise ValueError(f'select_hard_examples: expected loss (B, N), boxes (B, N, 4), classes (B, N); got '
                         f'{tuple(loss.shape)}, {tuple(boxes.shape)}, {tuple(classes.shape)}')
    return select_ranked(rank_order(loss), boxes, classes, k, nms_thresh, candidate)


def select_ranked(order: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, k: int | torch.Tensor,
                  nms_thresh: float | None = None, candidate: torch.Tensor | None = None) -> torch.Tensor:
    """The LRM walk over a given ranking `order` (B, N) (see `rank_order`): keep mask (B, N)."""
    b, n = order.shape
    keep = torch.zeros(b, n, dtype=torch.bool, device=order.device)
    if b == 0 or n == 0 or (isinstance(k, int) and k <= 0):
        return keep
    budget = k if isinstance(k, int) else k.view(b, 1)
    cand = None if candidate is None else candidate.gather(1, order)
    if nms_thresh is None:
        if cand is None and isinstance(k, int):
            return keep.scatter_(1, order[:, :min(k, n)], True)
        cand = torch.ones_like(keep) if cand is None else cand
        return keep.scatter_(1, order, cand & (cand.cumsum(1) <= budget))
    k_max = k if isinstance(k, int) else int(k.max())  # the prefix length needs a host value (NMS syncs anyway)
    if k_max <= 0:
        return keep
    # bound the (images, C, C) pair matrices: a few images at a time when N is large
    step = max(1, PAIR_BUDGET // (n * n))
    parts = [_select_nms(order[i:i + step], boxes[i:i + step].detach(), classes[i:i + step],
                         budget if isinstance(k, int) else budget[i:i + step], k_max, nms_thresh,
                         None if cand is None else cand[i:i + step])
             for i in range(0, b, step)]
    return torch.cat(parts)


def _select_nms(order: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, k: int | torch.Tensor, k_max: int,
                nms_thresh: float, cand: torch.Tensor | None) -> torch.Tensor:
    """The NMS walk for a group of images, on the shortest prefix of the ranking that settles it."""
    b, n = order.shape
    c = min(n, 2 * k_max)
    need = k if isinstance(k, int) else k.view(-1)
    while True:
        idx = order[:, :c]
        kept = _greedy_prefix(boxes.gather(1, idx.unsqueeze(-1).expand(b, c, 4)), classes.gather(1, idx), k,
                              nms_thresh, None if cand is None else cand[:, :c])
        # one host sync per round: does any image need a longer prefix?
        if c == n or bool((kept.sum(1) >= need).all()):
            return torch.zeros(b, n, dtype=torch.bool, device=order.device).scatter_(1, idx, kept)
        c = min(n, 2 * c)


def _greedy_prefix(boxes: torch.Tensor, classes: torch.Tensor, k: int | torch.Tensor, nms_thresh: float,
                   cand: torch.Tensor | None) -> torch.Tensor:
    """The greedy walk over predictions already in rank order (B, C, ...): keep mask, at most k per image."""
    suppresses = classes.unsqueeze(2) == classes.unsqueeze(1)
    kept = greedy_keep(suppresses.logical_and_(pairwise_iou_cxcywh(boxes, boxes) >= nms_thresh), cand)
    return kept & (kept.cumsum(1) <= k)
