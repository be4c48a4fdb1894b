"""Loss Rank Mining (paper Sec. III): keep, per image, the K predictions with the highest loss, optionally skipping
predictions that overlap an already-kept one of the same class (NMS on the loss ranking).

The rule, per image: rank the N predictions by loss descending (ties: lower index first); walk the ranking and keep
a prediction unless an already-kept prediction of the same predicted class overlaps it with IoU >= nms_thresh (>=, as
the paper says); stop once K are kept.  Without NMS this is plain top-K.

Why looking only at the top-C of the ranking is exact: whether the prediction at rank r is kept depends only on the
decisions for ranks < r, so the greedy walk over a prefix of the ranking makes the same decisions as the walk over
the whole ranking.  If the prefix already holds K kept predictions, the answer is complete; otherwise the prefix is
doubled, up to all N.  Images are processed a few at a time when their pair matrices would be large.
"""
from __future__ import annotations

import torch

from .box import greedy_keep, pairwise_iou_cxcywh

PAIR_BUDGET = 1 << 24  # prediction pairs per IoU matrix (64 MiB of float32), for batch 64 at 608 and beyond


def select_hard_examples(loss: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, k: int,
                         nms_thresh: float | None = None) -> torch.Tensor:
    """Boolean mask (B, N) of the hard examples: loss (B, N), boxes (B, N, 4) cx,cy,w,h, classes (B, N) integer."""
    if loss.dim() != 2 or boxes.shape != (*loss.shape, 4) or classes.shape != loss.shape:
        raise ValueError(f'select_hard_examples: expected loss (B, N), boxes (B, N, 4), classes (B, N); got '
                         f'{tuple(loss.shape)}, {tuple(boxes.shape)}, {tuple(classes.shape)}')
    b, n = loss.shape
    keep = torch.zeros(b, n, dtype=torch.bool, device=loss.device)
    if b == 0 or n == 0 or k <= 0:
        return keep
    order = torch.sort(loss.detach(), dim=1, descending=True, stable=True).indices
    if nms_thresh is None:
        return keep.scatter_(1, order[:, :min(k, n)], True)
    # bound the (images, C, C) pair matrices: a few images at a time when N is large
    step = max(1, PAIR_BUDGET // (n * n))
    return torch.cat([_select_nms(order[i:i + step], boxes[i:i + step].detach(), classes[i:i + step], k, nms_thresh)
                      for i in range(0, b, step)])


def _select_nms(order: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor, k: int,
                nms_thresh: float) -> torch.Tensor:
    """The NMS walk for a group of images, on the shortest prefix of the ranking that settles it."""
    b, n = order.shape
    c = min(n, 2 * k)
    while True:
        cand = order[:, :c]
        kept = _greedy_prefix(boxes.gather(1, cand.unsqueeze(-1).expand(b, c, 4)), classes.gather(1, cand),
                              k, nms_thresh)
        # one host sync per round: does any image need a longer prefix?
        if c == n or bool((kept.sum(1) >= k).all()):
            return torch.zeros(b, n, dtype=torch.bool, device=order.device).scatter_(1, cand, kept)
        c = min(n, 2 * c)


def _greedy_prefix(boxes: torch.Tensor, classes: torch.Tensor, k: int, nms_thresh: float) -> torch.Tensor:
    """The greedy walk over predictions already in rank order (B, C, ...): keep mask, at most k per image."""
    suppresses = classes.unsqueeze(2) == classes.unsqueeze(1)
    kept = greedy_keep(suppresses.logical_and_(pairwise_iou_cxcywh(boxes, boxes) >= nms_thresh))
    return kept & (kept.cumsum(1) <= k)
