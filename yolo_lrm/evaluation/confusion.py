"""Detection confusion matrix: at one IoU and one score threshold, which classes are taken for which, which objects
are missed and which detections match nothing.

Rows are the true class, columns the predicted class; the last row and column are background.  `m[t, p]` counts
objects of class t found as class p, `m[t, C]` objects of class t that no detection found, `m[C, p]` detections of
class p that match no object.  Only detections scoring above `conf` count (Darknet's `detector test` threshold .25
by default: the boxes a user sees).  Matching is one-to-one, in two passes, each greedy by IoU: first every
detection with an object of its own class (so the diagonal are the true positives), then the detections left over
with the objects left over of other classes.  Objects marked difficult neither count nor leave a miss; a detection
matched to one is not counted either (the VOC rule).  Objects of classes outside the list (`cls == -1`) are
ignored.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .voc import Detections, GroundTruth, group_pairs, voc_iou

DEFAULT_CONF = 0.25


def greedy_match(det: np.ndarray, gt: np.ndarray, iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of candidate pairs `(det[i], gt[i])` with overlap `iou[i]`, taking the highest IoU first
    (ties: lower detection, then lower object index); returns the matched (det, gt) indices.  Vectorised: a pair that
    is the best of both its detection and its object is exactly one greedy would take, so each round takes all
    such pairs and drops the pairs they block."""
    taken_d, taken_g = [], []
    while len(det):
        order = np.lexsort((gt, det, -iou))
        det, gt, iou = det[order], gt[order], iou[order]
        best_of_det = np.unique(det, return_index=True)[1]
        best_of_gt = np.unique(gt, return_index=True)[1]
        mutual = np.intersect1d(best_of_det, best_of_gt)
        taken_d.append(det[mutual])
        taken_g.append(gt[mutual])
        free = ~np.isin(det, det[mutual]) & ~np.isin(gt, gt[mutual])
        det, gt, iou = det[free], gt[free], iou[free]
    if not taken_d:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(taken_d), np.concatenate(taken_g)


def _flatten(detections: Sequence[Detections], conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image index, class and box of every detection above `conf`, all classes together."""
    image = [d.image[d.score > conf] for d in detections]
    boxes = [d.boxes[d.score > conf].reshape(-1, 4) for d in detections]
    cls = [np.full(len(i), c, np.int64) for c, i in enumerate(image)]
    return (np.concatenate(image).astype(np.int64), np.concatenate(cls),
            np.concatenate(boxes).astype(np.float64))


def confusion_matrix(gt: GroundTruth, detections: Sequence[Detections], iou: float = 0.5,
                     conf: float = DEFAULT_CONF, inclusive: bool = False) -> np.ndarray:
    """The (C+1, C+1) int64 count matrix described in the module docstring; `detections` has one entry per class
    (VOC 1-based pixel boxes, as scored), `inclusive` counts IoU == `iou` as a match."""
    n = len(detections)
    d_img, d_cls, d_box = _flatten(detections, conf)
    known = np.flatnonzero(gt.cls >= 0)
    known = known[np.argsort(gt.image[known], kind='stable')]  # group_pairs wants the objects sorted by image
    g_img, g_cls, g_box, g_diff = gt.image[known], gt.cls[known], gt.boxes[known], gt.difficult[known]
    pairs_d, pairs_g, overlap = [], [], []
    for q, j in group_pairs(d_img, g_img):
        ov = voc_iou(d_box[q], g_box[j])
        hit = ov >= iou if inclusive else ov > iou
        pairs_d.append(q[hit])
        pairs_g.append(j[hit])
        overlap.append(ov[hit])
    q = np.concatenate(pairs_d) if pairs_d else np.zeros(0, np.int64)
    j = np.concatenate(pairs_g) if pairs_g else np.zeros(0, np.int64)
    ov = np.concatenate(overlap) if overlap else np.zeros(0)
    same = d_cls[q] == g_cls[j]
    md, mg = greedy_match(q[same], j[same], ov[same])
    rest = ~np.isin(q, md) & ~np.isin(j, mg)
    md2, mg2 = greedy_match(q[rest], j[rest], ov[rest])
    md, mg = np.concatenate((md, md2)), np.concatenate((mg, mg2))
    m = np.zeros((n + 1, n + 1), np.int64)
    counted = ~g_diff[mg]
    np.add.at(m, (g_cls[mg[counted]], d_cls[md[counted]]), 1)
    missed = np.ones(len(g_img), bool)
    missed[mg] = False
    np.add.at(m, (g_cls[missed & ~g_diff], n), 1)
    unmatched = np.ones(len(d_img), bool)
    unmatched[md] = False
    np.add.at(m, (n, d_cls[unmatched]), 1)
    return m
