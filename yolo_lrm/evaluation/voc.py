"""PASCAL VOC detection AP with the semantics of py-faster-rcnn's `voc_eval.py` (the scorer Darknet's scripts use).

Rules (py-faster-rcnn's `voc_eval.py` and the VOC devkit's `VOCevaldet.m`):
- Ground truth: VOC XML, 1-based inclusive pixel boxes.  `difficult` objects are neither TP nor FP and are not
  counted in `npos`.  Coordinates are read as `int(float(text))` (float-tolerant; py-faster-rcnn's `int(text)`
  crashes on `"12.0"`, and a fractional value is truncated as `int()` would).  A missing `<difficult>` reads as 0.
- Detections of a class are taken in descending score order with a **stable** sort, so tied scores keep file order
  (the reference's `np.argsort(-conf)` leaves ties implementation-defined; MATLAB's `sort` is stable too).
- Each detection looks at every GT of its image and class (difficult and already-matched ones included) and takes
  the best IoU, computed with the +1 pixel convention.  IoU `> thr` (strict; `inclusive=True` gives the official
  MATLAB devkit's `>=`) on a non-difficult, unmatched GT is a TP; on a matched one a FP (no fallback to the next
  GT); on a difficult one it is ignored; below the threshold it is a FP.
- AP: `voc07` = 11-point with thresholds exactly `np.arange(0, 1.1, 0.1)` (so recall 0.3 does not reach the
  0.30000000000000004 step); `area` = VOC2010+ area under the monotone precision envelope.
- An empty or missing result file gives AP 0 for a class with GT (the reference crashes on an empty file); a missing
  one is logged as a warning then.  A class without non-difficult GT has AP NaN and is left out of the mean (the
  reference divides by zero there).  Objects of classes not in the class list are ignored, with a warning per class.

Speed: the best GT of a detection does not depend on earlier matches, so matching is a pure function: a
detection is a TP iff its best GT is non-difficult, the IoU passes, and no higher-ranked detection has the same best
GT.  Everything is array operations; there is no loop over detections or images.
"""
from __future__ import annotations

import logging
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from ..textfile import read_text

VOC07_THRESHOLDS = np.arange(0., 1.1, 0.1)  # the reference's steps, float error included
log = logging.getLogger('yolo_lrm.eval')


@dataclass
class GroundTruth:
    """All GT objects of an image set, flattened: `image` indexes `ids`, `cls` indexes the class list (-1: other)."""
    ids: list[str]
    image: np.ndarray      # (n,) int64
    cls: np.ndarray        # (n,) int64
    boxes: np.ndarray      # (n, 4) float64 x1, y1, x2, y2, 1-based inclusive pixels
    difficult: np.ndarray  # (n,) bool


@dataclass
class Detections:
    """Detections of one class: image index into the image set, score, (n, 4) 1-based pixel box; file order."""
    image: np.ndarray
    score: np.ndarray
    boxes: np.ndarray

    @staticmethod
    def empty() -> 'Detections':
        """No detections."""
        return Detections(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4)))


@dataclass
class ClassPR:
    """The cumulative precision/recall of one class, in ranked order, and its non-difficult GT count."""
    recall: np.ndarray
    precision: np.ndarray
    npos: int


# ------------------------------------------------------------------------------------------------- input files
def read_image_set(path: str | os.PathLike) -> list[str]:
    """Image ids from a VOC `ImageSets` file (first field of each non-blank line); duplicates are an error."""
    ids: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path, 'image set file').splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in seen:
            raise ValueError(f'{path}:{lineno}: image id {fields[0]!r} repeats line {seen[fields[0]]}')
        seen[fields[0]] = lineno
        ids.append(fields[0])
    if not ids:
        raise ValueError(f'{path}: the image set is empty')
    return ids


def _xml_int(text: str | None, path: str, obj: int, field: str) -> int:
    try:
        return int(float(text))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f'{path}: object {obj}: <{field}> is {text!r}, expected a number') from None


def parse_voc_xml(path: str) -> list[tuple[str, bool, list[int]]]:
    """Objects of one VOC XML file as (name, difficult, [xmin, ymin, xmax, ymax])."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f'{path}:{exc.position[0]}: malformed XML ({exc})') from None
    except OSError as exc:
        raise ValueError(f'{path}: cannot read annotation ({exc.strerror})') from None
    objects = []
    for k, obj in enumerate(root.findall('object'), 1):
        name = (obj.findtext('name') or '').strip()
        if not name:
            raise ValueError(f'{path}: object {k} has no <name>')
        box = obj.find('bndbox')
        if box is None:
            raise ValueError(f'{path}: object {k} ({name}) has no <bndbox>')
        coords = [_xml_int(box.findtext(f), path, k, f) for f in ('xmin', 'ymin', 'xmax', 'ymax')]
        difficult = _xml_int(obj.findtext('difficult', '0'), path, k, 'difficult') != 0
        objects.append((name, difficult, coords))
    return objects


def load_voc_annotations(ann_dir: str | os.PathLike, ids: Sequence[str], names: Sequence[str]) -> GroundTruth:
    """Ground truth of the image set from `<ann_dir>/<id>.xml`.  Objects of other classes are kept with cls -1,
    so they score for no class, and logged: a count per class name and the first file (often a wrong names file)."""
    index = {n: i for i, n in enumerate(names)}
    image, cls, boxes, difficult = [], [], [], []
    unknown: Counter[str] = Counter()
    first: dict[str, str] = {}
    for i, image_id in enumerate(ids):
        path = os.path.join(ann_dir, image_id + '.xml')
        for name, diff, coords in parse_voc_xml(path):
            if name not in index:
                unknown[name] += 1
                first.setdefault(name, path)
            image.append(i)
            cls.append(index.get(name, -1))
            boxes.append(coords)
            difficult.append(diff)
    for name, n in unknown.most_common():
        log.warning("%d object%s of class %r (the first in %s) not scored: the %d class names lack it; is the "
                    "names file the dataset's?", n, '' if n == 1 else 's', name, first[name], len(names))
    return GroundTruth(list(ids), np.array(image, np.int64), np.array(cls, np.int64),
                       np.array(boxes, np.float64).reshape(-1, 4), np.array(difficult, bool))


def read_detections(path: str | os.PathLike, id_index: dict[str, int]) -> Detections:
    """One `comp4_det_test_<class>.txt` file (`image_id score x1 y1 x2 y2` per line; a percent-encoded id is
    decoded, see `resultfiles.result_id`); a missing file = none."""
    if not os.path.exists(path):
        return Detections.empty()
    text = read_text(path, 'result file')
    tokens = text.split()
    n = len(tokens) // 6
    lines = text.splitlines()
    if len(tokens) != 6 * (len(lines) - lines.count('')):  # cheap; whitespace-only lines take the exact path
        _raise_bad_line(path, lines, lambda f: False, '')
    try:
        image = np.array([id_index[_decoded(t)] for t in tokens[0::6]], np.int64)
    except KeyError:
        _raise_bad_line(path, lines, lambda f: _decoded(f[0]) not in id_index, 'image id is not in the image set')
    fields = np.empty(6 * n, dtype=object)
    fields[:] = tokens
    try:
        values = fields.reshape(n, 6)[:, 1:].astype(np.float64)  # float() per cell, in C
        ok = np.isfinite(values).all()
    except ValueError:
        ok = False
    if not ok:
        _raise_bad_line(path, lines, lambda f: not finite_numbers(f[1:]), 'score and box must be finite numbers')
    return Detections(image, values[:, 0].copy(), values[:, 1:].copy())


def _decoded(token: str) -> str:
    """A result line's image id: percent-decoded when it holds a `%` (`resultfiles.result_id`)."""
    return urllib.parse.unquote(token) if '%' in token else token


def finite_numbers(fields: Sequence[str]) -> bool:
    """Whether every string parses as a finite float (the slow path of the result-file readers)."""
    try:
        return bool(np.isfinite([float(f) for f in fields]).all())
    except ValueError:
        return False


def _raise_bad_line(path, lines: list[str], bad, why: str) -> None:
    """The slow path of `read_detections`: raise a ValueError naming the first line without exactly 6 fields, else
    the first whose fields satisfy `bad`.  Without `why` it returns when all is well (the fast check only counted
    fields, and whitespace-only lines fool it)."""
    for check, reason in ((lambda f: len(f) != 6, 'expected 6 fields: image_id score x1 y1 x2 y2'), (bad, why)):
        for lineno, line in enumerate(lines, 1):
            fields = line.split()
            if fields and check(fields):
                raise ValueError(f'{path}:{lineno}: {reason}: {line.strip()[:100]!r}')
    if why:
        raise ValueError(f'{path}: {why}')


# ------------------------------------------------------------------------------------------ shared array helpers
def group_pairs(query_group: np.ndarray, target_group: np.ndarray,
                chunk: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All (i, j) with `query_group[i] == target_group[j]` (`target_group` sorted), i ascending then j ascending,
    yielded in chunks of about `chunk` pairs that never split the pairs of one query (bounded memory)."""
    start = np.searchsorted(target_group, query_group, 'left')
    count = np.searchsorted(target_group, query_group, 'right') - start
    ends = np.cumsum(count)
    lo = 0
    while lo < len(query_group):
        base = ends[lo - 1] if lo else 0
        hi = max(int(np.searchsorted(ends, base + chunk, 'right')), lo + 1)
        q = np.repeat(np.arange(lo, hi), count[lo:hi])
        offset = np.arange(len(q)) - np.repeat(ends[lo:hi] - count[lo:hi] - base, count[lo:hi])
        yield q, start[q] + offset
        lo = hi


def first_max_per_group(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Positions of the first maximum of `key` in every run of equal values of `group` (runs must be contiguous)."""
    if not len(group):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    best = np.maximum.reduceat(key, starts)
    hits = np.flatnonzero(key == np.repeat(best, np.diff(np.r_[starts, len(key)])))
    return hits[np.r_[True, group[hits][1:] != group[hits][:-1]]]


# ----------------------------------------------------------------------------------------------------- scoring
def voc_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (n, 4) boxes with the +1 pixel convention, in the reference's operation order."""
    iw = np.maximum(np.minimum(gt[:, 2], det[:, 2]) - np.maximum(gt[:, 0], det[:, 0]) + 1., 0.)
    ih = np.maximum(np.minimum(gt[:, 3], det[:, 3]) - np.maximum(gt[:, 1], det[:, 1]) + 1., 0.)
    inters = iw * ih
    uni = ((det[:, 2] - det[:, 0] + 1.) * (det[:, 3] - det[:, 1] + 1.)
           + (gt[:, 2] - gt[:, 0] + 1.) * (gt[:, 3] - gt[:, 1] + 1.) - inters)
    with np.errstate(divide='ignore', invalid='ignore'):  # inverted boxes give NaN/inf, as in the reference
        return inters / uni


def class_pr(gt: GroundTruth, cls: int, dets: Detections, iou: float = 0.5, inclusive: bool = False) -> ClassPR:
    """Cumulative recall/precision of one class (see the module docstring for the matching rules)."""
    mine = np.flatnonzero(gt.cls == cls)
    mine = mine[np.argsort(gt.image[mine], kind='stable')]  # by image, XML order within an image
    g_img, g_box, g_diff = gt.image[mine], gt.boxes[mine], gt.difficult[mine]
    npos = int((~g_diff).sum())
    order = np.argsort(-dets.score, kind='stable')
    d_img, d_box = dets.image[order], dets.boxes[order]
    nd = len(order)
    best_iou = np.full(nd, -np.inf)
    best_gt = np.zeros(nd, np.int64)
    for q, j in group_pairs(d_img, g_img):
        ov = voc_iou(d_box[q], g_box[j])
        first = first_max_per_group(q, ov)
        best_iou[q[first]], best_gt[q[first]] = ov[first], j[first]
    hit = best_iou >= iou if inclusive else best_iou > iou
    counted = hit & ~g_diff[best_gt] if len(g_diff) else hit
    tp = np.zeros(nd)
    cand = np.flatnonzero(counted)
    tp[cand[np.unique(best_gt[cand], return_index=True)[1]]] = 1.
    fp = (~hit | counted).astype(np.float64) - tp  # ignored (difficult) detections are neither
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    with np.errstate(divide='ignore', invalid='ignore'):
        rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return ClassPR(rec, prec, npos)


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """The reference `voc_ap`: 11-point (VOC2007) or area under the monotone envelope (VOC2010+)."""
    if use_07_metric:
        envelope = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        first = np.searchsorted(rec, VOC07_THRESHOLDS, 'left')  # rec is non-decreasing
        ap = 0.
        for k in first:  # 11 steps, summed in the reference's order
            ap = ap + (envelope[k] if k < len(rec) else 0.) / 11.
        return float(ap)
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.maximum.accumulate(np.concatenate(([0.], prec, [0.]))[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def class_ap(pr: ClassPR, metric: str) -> float:
    """AP of one class for `metric` 'voc07' or 'area'; NaN when the class has no non-difficult GT."""
    if metric not in ('voc07', 'area'):
        raise ValueError(f"VOC metric must be 'voc07' or 'area', got {metric!r}")
    if pr.npos == 0:
        return float('nan')
    return voc_ap(pr.recall, pr.precision, metric == 'voc07')


def read_all_detections(template: str, names: Sequence[str], ids: Sequence[str],
                        gt: GroundTruth | None = None) -> list[Detections]:
    """Result files of every class: `template.format(name)`; missing files are empty, but not all of them.  With
    `gt`, a missing file of a class that has (non-difficult) ground truth is logged: its AP counts as 0."""
    paths = [template.format(n) for n in names]
    if template.format('') == template:
        raise ValueError(f'results template {template!r} needs a {{}} for the class name')
    if not any(os.path.exists(p) for p in paths):
        raise ValueError(f'no result file found for any class (looked for {paths[0]}, ...)')
    if gt is not None:
        _warn_missing(paths, names, gt)
    index = {image_id: i for i, image_id in enumerate(ids)}
    return [read_detections(p, index) for p in paths]


def _warn_missing(paths: Sequence[str], names: Sequence[str], gt: GroundTruth) -> None:
    counted = np.bincount(gt.cls[(gt.cls >= 0) & ~gt.difficult], minlength=len(names))
    for c, (path, name) in enumerate(zip(paths, names)):
        if counted[c] and not os.path.exists(path):
            n = int(counted[c])
            log.warning('%s: no result file for class %r, which has %d ground-truth object%s: its AP counts as 0',
                        path, name, n, '' if n == 1 else 's')
