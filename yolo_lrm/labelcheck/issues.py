"""The four kinds of label issue, found by comparing an image's labels with a trained model's detections.

Words: a detection *hits* a label at IoU >= .5 (VOC's rule); it is *taken* when it hits a label of its own class
(that label explains it); a label's *support* is the best score of any detection overlapping it at IoU >= .3.
`conf` is the one confidence knob (default .25, Darknet's `detector test` threshold): a detection at or above it is
one the model means.  Per image, vectorised over labels x detections:

* `wrong_class`: the best detection of another class that hits the label and is not taken scores at least `conf`
  and more than the best hit of the label's own class.  Score = that margin; suggestion = that detection.
* `bad_box` (not wrong_class): the best detection of the label's class that overlaps it at .1 <= IoU < .5, is not
  taken, and overlaps no other label more, scores at least `conf` and more than the label's own-class hit.
  Score = that margin; suggestion = that detection's box.
* `spurious` (neither): the label's support is below `conf`.  Score = 1 - support.
* `missing`: a detection scoring at least `conf` that is not taken, overlaps every label at IoU < .3 and is no
  bad_box suggestion; the same object found as two classes counts once (its best).  Score = its score.

Each kind is ranked by its score, highest first; scores of different kinds are not comparable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..box import nms, pairwise_iou_cxcywh

KINDS = ('missing', 'wrong_class', 'bad_box', 'spurious')
MATCH_IOU = 0.5      # a detection finds a label (VOC's rule)
NEAR_IOU = 0.1       # from here up to MATCH_IOU a detection finds a label badly placed
SUPPORT_IOU = 0.3    # a detection this close to a label is that label's business: support, not a missing object


@dataclass
class Issue:
    """One finding: the image (its index in the split), the label row (-1 for `missing`), the score and what the
    model suggests instead (class -1 and no box for `spurious`); boxes cx, cy, w, h normalised to the image."""
    kind: str
    image: int
    label: int
    score: float
    suggested_class: int
    suggested_box: np.ndarray | None
    iou: float           # IoU of the label with the suggested box (NaN where either is absent)


def find_issues(image: int, labels: np.ndarray, dets: np.ndarray, conf: float) -> list[Issue]:
    """Issues of one image: `labels` (n, 5) class, cx, cy, w, h; `dets` (m, 6) cx, cy, w, h, score, class."""
    lab = torch.as_tensor(labels, dtype=torch.float64).reshape(-1, 5)
    # a zero-score, zero-size detection keeps every maximum defined; it never reaches conf > 0 or any IoU
    det = torch.cat((torch.as_tensor(dets, dtype=torch.float64).reshape(-1, 6), torch.zeros(1, 6, dtype=torch.float64)))
    n = len(lab)
    iou = pairwise_iou_cxcywh(lab[:, 1:5], det[:, :4])                      # (n, m)
    score = det[:, 4].expand(n, -1)
    same = det[:, 5].long()[None] == lab[:, 0].long()[:, None]
    hit = iou >= MATCH_IOU
    taken = (hit & same).any(0)                                             # (m,)
    zero = torch.zeros_like(score)
    own_hit = torch.where(hit & same, score, zero).max(1).values
    other, other_k = torch.where(hit & ~same & ~taken, score, zero).max(1)
    # the label each detection overlaps most (argmax needs a label to exist)
    closest = iou.argmax(0) == torch.arange(n)[:, None] if n else torch.zeros_like(hit)
    near = same & ~taken & closest & (iou >= NEAR_IOU) & ~hit
    near_score, near_k = torch.where(near, score, zero).max(1)
    support = torch.where(iou >= SUPPORT_IOU, score, zero).max(1).values

    wrong = (other >= conf) & (other > own_hit)
    bad = ~wrong & (near_score >= conf) & (near_score > own_hit)
    spurious = ~wrong & ~bad & (support < conf)
    issues = [_label_issue('wrong_class', image, j, other - own_hit, other_k, det, iou) for j in _where(wrong)]
    issues += [_label_issue('bad_box', image, j, near_score - own_hit, near_k, det, iou) for j in _where(bad)]
    issues += [Issue('spurious', image, j, float(1 - support[j]), -1, None, float('nan')) for j in _where(spurious)]

    suggested = torch.zeros(len(det), dtype=torch.bool)
    suggested[near_k[bad]] = True
    max_iou = iou.max(0).values if n else torch.zeros(len(det), dtype=torch.float64)
    free = (det[:, 4] >= conf) & ~taken & ~suggested & (max_iou < SUPPORT_IOU)
    k = torch.nonzero(free).flatten()
    if len(k):  # one object found as several classes: its best detection
        k = k[nms(det[k, :4], det[k, 4], torch.zeros(len(k), dtype=torch.long), MATCH_IOU)]
    issues += [Issue('missing', image, -1, float(det[i, 4]), int(det[i, 5]), det[i, :4].numpy().astype(np.float32),
                     float('nan')) for i in k.tolist()]
    return issues


def _where(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _label_issue(kind: str, image: int, j: int, margin: torch.Tensor, k: torch.Tensor, det: torch.Tensor,
                 iou: torch.Tensor) -> Issue:
    """The issue of label j whose suggestion is detection k[j]."""
    i = int(k[j])
    return Issue(kind, image, j, float(margin[j]), int(det[i, 5]), det[i, :4].numpy().astype(np.float32),
                 float(iou[j, i]))


def rank(issues: list[Issue]) -> list[Issue]:
    """Issues grouped by kind (in KINDS order), each kind by score descending; ties keep image order."""
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(issues, key=lambda x: (order[x.kind], -x.score, x.image, x.label))
