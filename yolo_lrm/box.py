"""Box geometry in torch: conversions, Darknet's IoU, and a vectorised greedy suppression shared by NMS and LRM."""
from __future__ import annotations

import torch


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre/size boxes to corner boxes."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) corner boxes to centre/size boxes."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Darknet's `box_iou` on broadcastable (..., 4) centre/size boxes (no +1 pixel convention)."""
    ax1, ay1, ax2, ay2, a_area = _edges_area(a)
    bx1, by1, bx2, by2, b_area = _edges_area(b)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * \
        (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    union = a_area + b_area - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def pairwise_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in a (..., N, 4) with every box in b (..., M, 4): (..., N, M).

    The same arithmetic as `iou_cxcywh` (bit-identical results), with each box's edges and area computed once and
    the (N, M) intermediates updated in place: the pair matrices of LRM's NMS are the large ones."""
    ax1, ay1, ax2, ay2, a_area = (t.unsqueeze(-1) for t in _edges_area(a))
    bx1, by1, bx2, by2, b_area = (t.unsqueeze(-2) for t in _edges_area(b))
    inter = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).clamp_(min=0)
    inter.mul_(torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).clamp_(min=0))
    union = (a_area + b_area).sub_(inter)
    empty = union <= 0
    return inter.div_(union.clamp_(min=1e-12)).masked_fill_(empty, 0.0)


def _edges_area(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x1, y1, x2, y2 and area of (..., 4) centre/size boxes: the edges both IoU functions compare."""
    cx, cy, w, h = b.unbind(-1)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, w * h


def greedy_keep(suppresses: torch.Tensor, candidate: torch.Tensor | None = None) -> torch.Tensor:
    """Greedy suppression without a Python loop over boxes.

    `suppresses[..., i, j]` (bool, N x N) says that box i, if kept, removes box j; boxes are in priority order and
    only `i < j` entries are used.  Returns the (..., N) keep mask of the sequential greedy rule
    `keep[j] = candidate[j] and not any(keep[i] and suppresses[i, j] for i < j)`, found as the fixed point of that
    equation (each round settles at least one more box; rounds needed = the longest suppression chain, a few in
    practice).
    """
    n = suppresses.shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=suppresses.device).triu(1)
    s = (suppresses & upper).to(torch.float32)
    cand = torch.ones(suppresses.shape[:-1], dtype=torch.bool, device=s.device) if candidate is None else candidate
    s = s * cand.unsqueeze(-1).to(s.dtype)  # non-candidates suppress nobody
    keep = cand.clone()
    for _ in range(n + 1):
        hit = (keep.to(s.dtype).unsqueeze(-2) @ s).squeeze(-2) > 0
        new = cand & ~hit
        if torch.equal(new, keep):
            break
        keep = new
    return keep


def nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Class-wise NMS as Darknet's `do_nms_sort`: per class, by score descending, a box is removed by a kept box of
    the same class with IoU > iou_thresh (strict).  boxes (N, 4) cx,cy,w,h; returns kept indices, best first.
    Ties keep the lower index first (stable sort).  Classes are processed together as a padded batch, so the work is
    (classes x per-class count^2), never (all pairs)^2."""
    if len(scores) == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    # group by class, best first inside each class (two stable sorts keep index order on ties)
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(classes[order], stable=True).indices]
    cls_sorted = classes[order]
    uniq, counts = torch.unique_consecutive(cls_sorted, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(len(uniq), device=scores.device), counts)
    slot = torch.arange(len(order), device=scores.device) - starts[group]
    m = int(counts.max())
    padded = boxes.new_zeros(len(uniq), m, 4)
    valid = torch.zeros(len(uniq), m, dtype=torch.bool, device=scores.device)
    padded[group, slot] = boxes[order]
    valid[group, slot] = True
    keep = greedy_keep(pairwise_iou_cxcywh(padded, padded) > iou_thresh, valid)
    kept = order[keep[group, slot]].sort().values  # index order, so ties below stay lower-index first
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
