"""What the label audit writes: `label_issues.csv`, `boxes.csv`, `images.csv`, `hard_images.txt`, `issues.jpg`,
`summary.json` (columns and rules in `yolo_lrm/labelcheck/__init__.py`).  Every file is written whole (atomic)."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..atomic import atomic_write
from ..data import read_image
from ..data.labels import ImageError
from ..reports.mosaic import jpeg, prediction_pair, tile, title_bar, write_jpeg
from .audit import ImageAudit, Split
from .issues import KINDS, Issue

ISSUE_FIELDS = ('kind', 'rank', 'score', 'image', 'label_file', 'class', 'class_name', 'cx', 'cy', 'w', 'h',
                'suggested_class', 'suggested_name', 's_cx', 's_cy', 's_w', 's_h', 'iou', 'coord', 'obj', 'cls',
                'fold')
BOX_FIELDS = ('image', 'label_file', 'class', 'class_name', 'cx', 'cy', 'w', 'h', 'coord', 'obj', 'cls', 'loss',
              'fold')
IMAGE_FIELDS = ('rank', 'image', 'loss', 'hardness', 'boxes', 'issues', 'fold')
CROP_SIDE = 200          # pixels of the longer side of a mosaic crop (small objects are enlarged to it)


def _num(v: float, digits: int = 6) -> str:
    return '' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}g}'


def _box(prefix: str, box: np.ndarray | None) -> dict[str, str]:
    """CSV cells `<prefix>cx, cy, w, h` of a normalised box (empty without one)."""
    keys = ('cx', 'cy', 'w', 'h')
    if box is None:
        return {f'{prefix}{k}': '' for k in keys}
    return {f'{prefix}{k}': f'{v:.6f}' for k, v in zip(keys, box)}


def _write_csv(path: Path, fields: Sequence[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def issue_rows(issues: list[Issue], audits: dict[int, ImageAudit], split: Split, names: Sequence[str],
               folds: dict[int, int]) -> list[dict[str, Any]]:
    """One CSV row per issue (ranked, see `issues.rank`): the label as its file says it, the model's suggestion, the
    label's loss terms; `rank` counts from 1 within each kind."""
    rows, seen = [], dict.fromkeys(KINDS, 0)
    for x in issues:
        seen[x.kind] += 1
        a = audits[x.image]
        label = a.labels[x.label] if x.label >= 0 else None
        terms = a.terms[x.label] if x.label >= 0 else (None, None, None)
        cls = None if label is None else int(label[0])
        row = {'kind': x.kind, 'rank': seen[x.kind], 'score': _num(x.score), 'image': split.paths[x.image],
               'label_file': split.label_files[x.image], 'class': '' if cls is None else cls,
               'class_name': '' if cls is None else names[cls], **_box('', None if label is None else label[1:5]),
               'suggested_class': '' if x.suggested_class < 0 else x.suggested_class,
               'suggested_name': '' if x.suggested_class < 0 else names[x.suggested_class],
               **_box('s_', x.suggested_box), 'iou': _num(x.iou, 4),
               'coord': _num(terms[0]), 'obj': _num(terms[1]), 'cls': _num(terms[2]), 'fold': folds.get(x.image, '')}
        rows.append(row)
    return rows


def box_rows(audits: list[ImageAudit], split: Split, names: Sequence[str], folds: dict[int, int]) -> list[dict]:
    """Every label box with its loss terms, in split order."""
    rows = []
    for a in audits:
        for label, t in zip(a.labels, a.terms):
            rows.append({'image': split.paths[a.index], 'label_file': split.label_files[a.index],
                         'class': int(label[0]), 'class_name': names[int(label[0])], **_box('', label[1:5]),
                         'coord': _num(t[0]), 'obj': _num(t[1]), 'cls': _num(t[2]), 'loss': _num(float(t.sum())),
                         'fold': folds.get(a.index, '')})
    return rows


def hard_order(audits: list[ImageAudit], hardness: np.ndarray | None) -> list[int]:
    """Positions in `audits`, hardest first: by the track's hardness when given (NaN last, then by loss), else by
    the image's loss under the model."""
    loss = np.array([a.loss for a in audits])
    if hardness is None:
        return np.lexsort((np.arange(len(loss)), -loss)).tolist()
    known = ~np.isnan(hardness)
    return np.lexsort((-loss, -np.where(known, hardness, 0), ~known)).tolist()


def write_outputs(out: Path, split: Split, names: Sequence[str], audits: list[ImageAudit], issues: list[Issue],
                  hardness: np.ndarray | None, hard_share: float, folds: dict[int, int],
                  summary: dict[str, Any], top: int, conf: float) -> dict[str, Any]:
    """Write every output file into `out`; returns the summary as written to summary.json."""
    by_index = {a.index: a for a in audits}
    _write_csv(out / 'label_issues.csv', ISSUE_FIELDS, issue_rows(issues, by_index, split, names, folds))
    _write_csv(out / 'boxes.csv', BOX_FIELDS, box_rows(audits, split, names, folds))
    order = hard_order(audits, hardness)
    per_image = np.bincount([x.image for x in issues], minlength=len(split.paths))
    _write_csv(out / 'images.csv', IMAGE_FIELDS, [
        {'rank': r + 1, 'image': split.paths[audits[p].index], 'loss': _num(audits[p].loss),
         'hardness': '' if hardness is None else _num(float(hardness[p])), 'boxes': len(audits[p].labels),
         'issues': int(per_image[audits[p].index]), 'fold': folds.get(audits[p].index, '')}
        for r, p in enumerate(order)])
    n_hard = max(1, math.ceil(hard_share * len(audits)))
    hard_text = ''.join(f'{split.paths[audits[p].index]}\n' for p in order[:n_hard])
    atomic_write(out / 'hard_images.txt', lambda f: f.write(hard_text.encode()))
    counts = {k: sum(x.kind == k for x in issues) for k in KINDS}
    picture = issue_mosaic(issues, by_index, split, names, top, conf)
    if picture is not None:
        write_jpeg(out / 'issues.jpg', jpeg(picture))
    else:  # not a picture of an earlier audit
        (out / 'issues.jpg').unlink(missing_ok=True)
    summary = {**summary, 'images': len(audits), 'boxes': int(sum(len(a.labels) for a in audits)),
               'issues': counts, 'hard_images': n_hard}
    text = json.dumps(summary, indent=2) + '\n'
    atomic_write(out / 'summary.json', lambda f: f.write(text.encode()))
    return summary


# ---------------------------------------------------------------------------------------------------- picture
def top_issues(issues: list[Issue], top: int) -> list[Issue]:
    """Up to `top` ranked issues, the kinds taking turns (the best of each kind first)."""
    queues = [[x for x in issues if x.kind == k] for k in KINDS]
    picked = []
    for depth in range(top):
        picked += [q[depth] for q in queues if depth < len(q)]
    return picked[:top]


def issue_mosaic(issues: list[Issue], audits: dict[int, ImageAudit], split: Split, names: Sequence[str], top: int,
                 conf: float) -> np.ndarray | None:
    """The top issues as tiles: a crop around the label and the suggestion, the labels on the left, the model's
    detections above `conf` on the right (`mosaic.prediction_pair`), the kind, score and change above; None when
    there is nothing to show."""
    tiles = []
    for x in top_issues(issues, top):
        try:
            image = read_image(split.paths[x.image])
        except ImageError:
            continue
        tiles.append(_issue_tile(x, audits[x.image], image[:, :, ::-1], names, conf))
    if not tiles:
        return None
    # the list's name, not its path: the picture is often shared
    return title_bar(tile(tiles, min(4, len(tiles))),
                     f'top label issues of {split.split}= ({Path(split.source).name})')


def _issue_tile(x: Issue, a: ImageAudit, bgr: np.ndarray, names: Sequence[str], conf: float) -> np.ndarray:
    h, w = bgr.shape[:2]
    boxes = [b for b in (a.labels[x.label, 1:5] if x.label >= 0 else None, x.suggested_box) if b is not None]
    x1, y1, x2, y2 = _union_pixels(np.stack(boxes), w, h)
    crop = np.ascontiguousarray(bgr[y1:y2, x1:x2])
    k = CROP_SIDE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * k)), max(1, round(crop.shape[0] * k))),
                      interpolation=cv2.INTER_LINEAR if k > 1 else cv2.INTER_AREA)
    shape = crop.shape[:2]
    truth = _pixel_rows(a.labels[:, 1:5], a.labels[:, 0], (x1, y1), k, w, h, shape)
    dets = _pixel_rows(a.dets[:, :4], a.dets[:, 5], (x1, y1), k, w, h, shape, a.dets[:, 4])
    return title_bar(prediction_pair(crop, truth, dets, names, conf, side=CROP_SIDE), issue_text(x, a, names))


def issue_text(x: Issue, a: ImageAudit, names: Sequence[str]) -> str:
    """`wrong_class 0.93: RBC -> WBC`, `bad_box 0.71: RBC, IoU 0.40`, `missing 0.88: WBC`, `spurious 0.99: RBC`."""
    label = names[int(a.labels[x.label, 0])] if x.label >= 0 else names[x.suggested_class]
    if x.kind == 'wrong_class':
        label += f' -> {names[x.suggested_class]}'
    elif x.kind == 'bad_box':
        label += f', IoU {x.iou:.2f}'
    return f'{x.kind} {x.score:.2f}: {label}'


def _union_pixels(boxes: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    """A square-ish crop around normalised boxes (n, 4): their union with a margin of half its size, in the image."""
    x1 = (boxes[:, 0] - boxes[:, 2] / 2).min() * w
    x2 = (boxes[:, 0] + boxes[:, 2] / 2).max() * w
    y1 = (boxes[:, 1] - boxes[:, 3] / 2).min() * h
    y2 = (boxes[:, 1] + boxes[:, 3] / 2).max() * h
    side = max(x2 - x1, y2 - y1, 32) * 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(np.clip(cx - side / 2, 0, w - 1)), int(np.clip(cy - side / 2, 0, h - 1))
    return left, top, int(np.clip(cx + side / 2, left + 1, w)), int(np.clip(cy + side / 2, top + 1, h))


def _pixel_rows(boxes: np.ndarray, cls: np.ndarray, origin: tuple[int, int], k: float, w: int, h: int,
                shape: tuple[int, int], score: np.ndarray | None = None) -> np.ndarray:
    """Normalised cx, cy, w, h boxes as pixel rows of the enlarged crop of `shape` (h, w), those that reach into
    it: `x1, y1, x2, y2, class` (labels, for prediction_pair's truth) or `x1, y1, x2, y2, score, class`."""
    b = boxes.astype(np.float64).reshape(-1, 4)
    xyxy = np.stack(((b[:, 0] - b[:, 2] / 2) * w - origin[0], (b[:, 1] - b[:, 3] / 2) * h - origin[1],
                     (b[:, 0] + b[:, 2] / 2) * w - origin[0], (b[:, 1] + b[:, 3] / 2) * h - origin[1]), 1) * k
    cols = [xyxy] + ([score.reshape(-1, 1)] if score is not None else []) + [cls.reshape(-1, 1)]
    inside = (xyxy[:, 2] > 0) & (xyxy[:, 3] > 0) & (xyxy[:, 0] < shape[1]) & (xyxy[:, 1] < shape[0])
    return np.concatenate(cols, 1)[inside]
