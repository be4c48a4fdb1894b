"""The official KITTI 2D object protocol (devkit `evaluate_object.cpp`, image boxes), reproduced exactly.

Rules (the official KITTI object devkit, `cpp/evaluate_object.cpp`):
- Classes Car, Pedestrian, Cyclist; minimum overlap 0.7 / 0.5 / 0.5, strict `>`; plain IoU (no +1 pixel).
- Levels (cumulative): Easy / Moderate / Hard = min height 40/25/25 px, max occlusion 0/1/2, max truncation
  .15/.30/.50.  GT of the class failing its level (occlusion, truncation, or height `<=` min height) and GT of the
  neighbour class (Van for Car, Person_sitting for Pedestrian) are ignored: neither TP nor FN, but they absorb a
  detection.  Occlusion 3 is outside every level.  Any detection lower than the min height (height truncated to an
  integer, as the C++ does) is ignored whatever its class.  Unassigned detections whose intersection over their own
  area with a DontCare box exceeds the class overlap are not FP.
- Scores to evaluate: a first pass assigns to each GT the highest-scoring candidate; the TP scores give up to 41
  thresholds (`getThresholds`).  At each threshold, each GT takes the largest-overlap valid detection (an ignored
  one only if no valid one qualifies); precision is then made monotone from the right.  AP|R11 = mean of precision
  at indices 0, 4, ..., 40; AP|R40 = mean at indices 1..40.  AOS is not computed (2D boxes only).
- Every frame given (default: every label file) is evaluated; a missing result file means no detections.  Result
  lines must have exactly 16 fields, label lines 15 (or 16, the score being ignored): anything else is an error
  naming file:line, where the C++ `fscanf` loop silently drops or misreads such lines.  Type names match
  case-insensitively, as in the C++ (`strcasecmp`), DontCare included.
- A class is evaluated only if some detection of it has x1 >= 0 (the devkit then prints nothing for it); we report
  its AP as 0 and flag it in `KittiClass.evaluated`.  If TP + FP = 0 at a threshold (possible only with ignored
  detections absorbing every match) the precision is NaN exactly as in the C++, and so is the AP using it.

Speed: GTs of one frame are matched in file order, but frames are independent, so the greedy assignment runs in
'rounds' (the r-th relevant GT of every frame, and every score threshold, at once): the Python loop is over the
largest number of relevant GT in one frame, never over detections.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..textfile import read_text
from .voc import finite_numbers, first_max_per_group, group_pairs

CLASSES = ('Car', 'Pedestrian', 'Cyclist')
MIN_OVERLAP = {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}
NEIGHBOUR = {'Car': 'van', 'Pedestrian': 'person_sitting'}
LEVELS = ('easy', 'moderate', 'hard')
MIN_HEIGHT = (40, 25, 25)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41
NO_DETECTION = -10000000.0  # the C++ start value: a detection scoring below it can never be a candidate


@dataclass
class Objects:
    """GT objects or detections of many frames, flattened in frame order then file order; types in lower case."""
    frame: np.ndarray       # (n,) int64 index into the frame list
    type: np.ndarray        # (n,) str
    boxes: np.ndarray       # (n, 4) float64 x1, y1, x2, y2, 0-based pixels
    truncation: np.ndarray  # (n,) float64 (GT)
    occlusion: np.ndarray   # (n,) float64 (GT)
    score: np.ndarray       # (n,) float64 (detections)


@dataclass
class KittiClass:
    """41-point precision per level of one class, and whether the devkit would evaluate the class at all."""
    precision: dict[str, np.ndarray] = field(default_factory=dict)
    evaluated: bool = True

    def ap(self, level: str, points: int = 40) -> float:
        """AP|R40 (`points=40`, the KITTI server since 2019) or AP|R11 (`points=11`), in [0, 1]."""
        p = self.precision[level]
        if points == 40:
            return float(np.sum(p[1:]) / 40)
        if points == 11:
            return float(np.sum(p[0::4]) / 11)
        raise ValueError(f'KITTI AP uses 11 or 40 recall points, not {points}')


# ----------------------------------------------------------------------------------------------------- reading
def list_frames(label_dir: str | os.PathLike) -> list[str]:
    """Frame ids (file stems) of every `.txt` in a label folder, sorted."""
    if not os.path.isdir(label_dir):
        raise ValueError(f'{label_dir}: label folder not found')
    frames = sorted(p.stem for p in Path(label_dir).glob('*.txt'))
    if not frames:
        raise ValueError(f'{label_dir}: no .txt label files')
    return frames


def _parse_lines(path: str, text: str, widths: tuple[int, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(types, numbers (n, widths[0]-1), line numbers) of a KITTI file; a line of another width is an error."""
    types, rows, lines = [], [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in widths:
            want = ' or '.join(map(str, widths))
            raise ValueError(f'{path}:{lineno}: expected {want} fields, got {len(fields)}: {line.strip()[:100]!r}')
        types.append(fields[0].lower())
        rows.append(fields[1:widths[0]])
        lines.append(lineno)
    cells = np.empty((len(rows), widths[0] - 1), dtype=object)
    if rows:
        cells[:] = rows
    try:
        values = cells.astype(np.float64)  # float() per cell, in C
        bad = ~np.isfinite(values).all(1)
    except ValueError:
        values, bad = None, np.array([not finite_numbers(r) for r in rows])
    if bad.any():
        raise ValueError(f'{path}:{lines[int(np.argmax(bad))]}: fields after the type must be finite numbers')
    return types, values, np.array(lines, np.int64)


def _read(path: str, widths: tuple[int, ...]) -> tuple[list[str], np.ndarray, np.ndarray]:
    text = read_text(path, 'KITTI label file')
    return _parse_lines(path, text, widths)


def _objects(parts: list[tuple[int, list[str], np.ndarray]], with_score: bool) -> Objects:
    frame = np.concatenate([np.full(len(t), f, np.int64) for f, t, _ in parts] or [np.zeros(0, np.int64)])
    types = np.array([s for _, t, _ in parts for s in t], dtype=str)
    v = np.concatenate([v for *_, v in parts] or [np.zeros((0, 15 if with_score else 14))])
    zeros = np.zeros(len(frame))
    # columns after the type: truncation occlusion alpha x1 y1 x2 y2 h w l tx ty tz ry [score]
    if with_score:
        return Objects(frame, types, v[:, 3:7].copy(), zeros, zeros, v[:, 14].copy())
    return Objects(frame, types, v[:, 3:7].copy(), v[:, 0].copy(), v[:, 1].copy(), zeros)


def read_labels(label_dir: str | os.PathLike, frames: Sequence[str]) -> Objects:
    """GT of the frames from `<label_dir>/<frame>.txt` (15 columns; a 16th, a score, is ignored)."""
    parts = []
    for f, frame in enumerate(frames):
        path = os.path.join(label_dir, frame + '.txt')
        types, values, lines = _read(path, (15, 16))
        occ = values[:, 1]
        if (occ != np.floor(occ)).any():
            k = int(np.flatnonzero(occ != np.floor(occ))[0])
            raise ValueError(f'{path}:{lines[k]}: occlusion must be an integer, got {occ[k]}')
        parts.append((f, types, values))
    return _objects(parts, with_score=False)


def read_results(result_dir: str | os.PathLike, frames: Sequence[str], strict_extra: bool = True) -> Objects:
    """Detections of the frames from `<result_dir>/<frame>.txt` (16 columns, score last); a missing file = none.

    With `strict_extra`, a result file for a frame that is not evaluated is an error (a wrong folder, usually)."""
    if not os.path.isdir(result_dir):
        raise ValueError(f'{result_dir}: result folder not found')
    present = {p.stem for p in Path(result_dir).glob('*.txt')}
    wanted = set(frames)
    if strict_extra and present - wanted:
        extra = sorted(present - wanted)
        raise ValueError(f'{result_dir}: {len(extra)} result files have no label file, e.g. {extra[0]}.txt')
    if not present & wanted:
        raise ValueError(f'{result_dir}: no result file for any of the {len(frames)} evaluated frames')
    parts = []
    for f, frame in enumerate(frames):
        if frame in present:
            types, values, _ = _read(os.path.join(result_dir, frame + '.txt'), (16,))
            parts.append((f, types, values))
    return _objects(parts, with_score=True)


# ----------------------------------------------------------------------------------------------------- scoring
def box_overlap(a: np.ndarray, b: np.ndarray, over_a: bool = False) -> np.ndarray:
    """The devkit's `imageBoxOverlap` row-wise: IoU, or intersection over the area of `a` (for DontCare)."""
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = w * h
    a_area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    with np.errstate(divide='ignore', invalid='ignore'):
        o = inter / a_area if over_a else inter / (a_area + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter)
    return np.where((w <= 0) | (h <= 0), 0., o)


def get_thresholds(scores: np.ndarray, n_gt: int) -> np.ndarray:
    """The devkit's `getThresholds`: the TP scores closest to the 41 recall steps (its float accumulation kept)."""
    v = np.sort(scores)[::-1]
    n = len(v)
    left = (np.arange(n) + 1) / float(n_gt) if n else np.zeros(0)
    right = np.r_[left[1:], left[-1:]]
    out, current, i = [], 0.0, 0
    while i < n:  # one iteration per threshold kept (at most 41)
        skip = (right[i:] - current) < (current - left[i:])
        skip[-1] = False  # the last score is always kept
        i += int(np.argmax(~skip))
        out.append(v[i])
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
        i += 1
    return np.array(out, np.float64)


def _greedy(pair_g: np.ndarray, pair_d: np.ndarray, key: np.ndarray, rank: np.ndarray,
            n_g: int, n_d: int) -> np.ndarray:
    """Sequential assignment, GT by GT in file order, each GT taking the first highest-`key` free candidate.
    Pairs must be sorted by (group, detection); `rank` = position of the pair's GT among its frame's relevant GT.
    Returns the chosen detection per GT (-1: none)."""
    order = np.argsort(rank, kind='stable')
    pg, pd, pk, pr = pair_g[order], pair_d[order], key[order], rank[order]
    bounds = np.searchsorted(pr, np.arange(pr[-1] + 2)) if len(pr) else np.zeros(1, np.int64)
    taken = np.zeros(n_d, bool)
    chosen = np.full(n_g, -1, np.int64)
    for r in range(len(bounds) - 1):  # GT of the same rank are in different frames (or thresholds): independent
        g, d, k = pg[bounds[r]:bounds[r + 1]], pd[bounds[r]:bounds[r + 1]], pk[bounds[r]:bounds[r + 1]]
        free = ~taken[d]
        g, d, k = g[free], d[free], k[free]
        pick = first_max_per_group(g, k)
        chosen[g[pick]] = d[pick]
        taken[d[pick]] = True
    return chosen


def _nan_suffix_max(p: np.ndarray) -> np.ndarray:
    """`p[i] = *max_element(p + i, end)` done in place from the left, as the C++: a NaN entry stays NaN, later NaNs
    are skipped by its `<` comparisons."""
    nan = np.isnan(p)
    suffix = np.maximum.accumulate(np.where(nan, -np.inf, p)[::-1])[::-1]
    return np.where(nan, np.nan, suffix)


@dataclass
class _ClassData:
    """Per-class arrays shared by the three levels: relevant GT, candidate detections, overlap pairs."""
    gt_frame: np.ndarray
    gt_neighbour: np.ndarray
    gt_height: np.ndarray
    gt_occ: np.ndarray
    gt_trunc: np.ndarray
    gt_rank: np.ndarray
    det_mine: np.ndarray
    det_height: np.ndarray
    det_score: np.ndarray
    dc_hit: np.ndarray
    pair_g: np.ndarray
    pair_d: np.ndarray
    pair_ov: np.ndarray


def _class_data(gt: Objects, det: Objects, cls: str) -> _ClassData:
    name = cls.lower()
    g_sel = np.flatnonzero((gt.type == name) | (gt.type == NEIGHBOUR.get(cls, name)))
    height = np.trunc(np.abs(det.boxes[:, 1] - det.boxes[:, 3]))
    d_sel = np.flatnonzero(((det.type == name) | (height < max(MIN_HEIGHT))) & (det.score > NO_DETECTION))
    g_frame, d_frame = gt.frame[g_sel], det.frame[d_sel]
    g_box, d_box = gt.boxes[g_sel], det.boxes[d_sel]
    first_in_frame = np.searchsorted(g_frame, g_frame, 'left')
    qs, ts, ovs = [], [], []
    for q, t in group_pairs(g_frame, d_frame):
        ov = box_overlap(d_box[t], g_box[q])
        keep = ov > MIN_OVERLAP[cls]
        qs.append(q[keep]), ts.append(t[keep]), ovs.append(ov[keep])
    mine = det.type[d_sel] == name
    dc = np.flatnonzero(gt.type == 'dontcare')
    dc_hit = np.zeros(len(d_sel), bool)
    for q, t in group_pairs(d_frame, gt.frame[dc]):
        over = box_overlap(d_box[q], gt.boxes[dc[t]], over_a=True) > MIN_OVERLAP[cls]
        dc_hit[q[over]] = True
    return _ClassData(g_frame, gt.type[g_sel] != name, g_box[:, 3] - g_box[:, 1], gt.occlusion[g_sel],
                      gt.truncation[g_sel], np.arange(len(g_sel)) - first_in_frame, mine, height[d_sel],
                      det.score[d_sel], dc_hit & mine, np.concatenate(qs or [np.zeros(0, np.int64)]),
                      np.concatenate(ts or [np.zeros(0, np.int64)]), np.concatenate(ovs or [np.zeros(0)]))


def _level_precision(c: _ClassData, level: int) -> np.ndarray:
    """The 41 precision values of one class at one level (`eval_class`)."""
    ignored_gt = c.gt_neighbour | (c.gt_occ > MAX_OCCLUSION[level]) | (c.gt_trunc > MAX_TRUNCATION[level]) | \
        (c.gt_height <= MIN_HEIGHT[level])
    small = c.det_height < MIN_HEIGHT[level]
    relevant = small | c.det_mine                      # ignored_det != -1
    valid = c.det_mine & ~small                         # ignored_det == 0
    keep = relevant[c.pair_d]
    pg, pd, pov = c.pair_g[keep], c.pair_d[keep], c.pair_ov[keep]
    n_g, n_d = len(c.gt_frame), len(c.det_mine)
    n_gt = int((~ignored_gt).sum())
    # pass 1: highest-score candidate per GT -> TP scores -> thresholds
    chosen = _greedy(pg, pd, c.det_score[pd], c.gt_rank[pg], n_g, n_d)
    tp1 = ~ignored_gt & np.r_[valid, False][chosen]  # chosen -1 reads the False sentinel
    thresholds = get_thresholds(c.det_score[chosen[tp1]], n_gt)
    t_count = len(thresholds)
    precision = np.zeros(N_SAMPLE_PTS)
    if not t_count:
        return precision
    # pass 2, every threshold at once: copy k of a pair exists if its detection scores >= thresholds[k]
    first_k = np.searchsorted(-thresholds, -c.det_score[pd], 'left')
    reps = t_count - first_k
    src = np.repeat(np.arange(len(pg)), reps)
    k = np.arange(len(src)) - np.repeat(np.cumsum(reps) - reps, reps) + first_k[src]
    order = np.lexsort((src, k))  # (threshold, GT, detection) order: groups contiguous
    src, k = src[order], k[order]
    key = np.where(valid[pd[src]], pov[src], -1.0)  # a valid detection beats any ignored (small) one
    chosen = _greedy(k * n_g + pg[src], k * n_d + pd[src], key, c.gt_rank[pg[src]], t_count * n_g, t_count * n_d)
    chosen = chosen.reshape(t_count, n_g)
    det_of = chosen % n_d
    has = chosen >= 0
    tp_mask = has & ~ignored_gt & valid[det_of]
    tp = tp_mask.sum(1)
    counted = valid & ~c.dc_hit                         # detections that are FP unless assigned
    active = np.sort(c.det_score[counted])
    n_active = len(active) - np.searchsorted(active, thresholds, 'left')
    assigned_counted = (has & counted[det_of]).sum(1)
    fp = n_active - assigned_counted
    with np.errstate(divide='ignore', invalid='ignore'):
        precision[:t_count] = tp / (tp + fp).astype(np.float64)
    return _nan_suffix_max(precision)


def evaluate_kitti(gt: Objects, det: Objects) -> dict[str, KittiClass]:
    """Precision curves of Car, Pedestrian and Cyclist at the three levels."""
    out = {}
    for cls in CLASSES:
        mine = det.type == cls.lower()
        result = KittiClass(evaluated=bool((det.boxes[mine, 0] >= 0).any()))
        data = _class_data(gt, det, cls) if result.evaluated else None
        for level, name in enumerate(LEVELS):
            result.precision[name] = np.zeros(N_SAMPLE_PTS) if data is None else _level_precision(data, level)
        out[cls] = result
    return out


def evaluate_kitti_dirs(label_dir: str | os.PathLike, result_dir: str | os.PathLike,
                        frames: Sequence[str] | None = None) -> dict[str, KittiClass]:
    """Score a result folder against a label folder (all label frames, or the given frame ids)."""
    strict = frames is None
    frames = list_frames(label_dir) if frames is None else list(frames)
    return evaluate_kitti(read_labels(label_dir, frames), read_results(result_dir, frames, strict_extra=strict))
