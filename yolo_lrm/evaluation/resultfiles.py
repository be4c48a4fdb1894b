"""Darknet's detection result files: `comp4_det_test_<class>.txt` for VOC (`detector valid`) and one KITTI
label-format file per image, with Darknet's 1-based, clamped box printing.

A VOC result line is space-separated with the image id first, so an id holding whitespace (a file name such as
`a b.jpg` or `画像 1.jpg`) would split into several fields: there, and only there, each whitespace character and `%`
is percent-encoded (`a%20b`), and `voc_eval.read_detections` decodes it; ordinary ids are written as Darknet writes
them."""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Sequence

import numpy as np

RESULT_PREFIX = 'comp4_det_test_'


def image_id(path: str) -> str:
    """Darknet's image id (`basecfg`): the file name without folders, cut at its first `.`."""
    return os.path.basename(path).split('.')[0]


def result_id(image: str) -> str:
    """An image id as a VOC result line writes it: whitespace and `%` percent-encoded, anything else as is."""
    if not any(ch.isspace() or ch == '%' for ch in image):
        return image
    return ''.join(urllib.parse.quote(ch) if ch.isspace() or ch == '%' else ch for ch in image)


def printed(values: np.ndarray) -> np.ndarray:
    """Values as a result file prints them (`%f`) and a reader reads them back, as float64."""
    values = np.asarray(values, np.float64)
    return np.char.mod('%f', values).astype(np.float64) if values.size else values.copy()


def darknet_boxes(dets: np.ndarray, im_w: int, im_h: int) -> np.ndarray:
    """(n, 4) boxes as Darknet prints them: 1-based (`+1`), clamped to xmin, ymin >= 1, xmax <= W, ymax <= H,
    stored as float32 like Darknet's `float xmin`."""
    b = dets[:, :4].astype(np.float64) + 1.
    b[:, :2] = np.maximum(b[:, :2], 1.)
    b[:, 2] = np.minimum(b[:, 2], im_w)
    b[:, 3] = np.minimum(b[:, 3], im_h)
    return b.astype(np.float32)


def unique_ids(paths: Sequence[str]) -> list[str]:
    """`image_id` of each path; two images with one id are an error (their result lines would mix)."""
    ids = [image_id(p) for p in paths]
    if len(set(ids)) != len(ids):
        seen: dict[str, str] = {}
        for p, i in zip(paths, ids):
            if i in seen:
                raise ValueError(f'images {seen[i]} and {p} have the same id {i!r}: their result lines would mix')
            seen[i] = p
    return ids


def write_voc_results(out_dir: str | os.PathLike, paths: Sequence[str], dets: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]], names: Sequence[str], prefix: str = RESULT_PREFIX) -> str:
    """Darknet's VOC result files, one per class (empty ones included); returns the path template (`{}` = class)."""
    ids = unique_ids(paths)
    lines: list[list[str]] = [[] for _ in names]
    for image, d, (w, h) in zip(map(result_id, ids), dets, sizes):
        boxes = darknet_boxes(d, w, h).tolist()
        for (x1, y1, x2, y2), score, cls in zip(boxes, d[:, 4].tolist(), d[:, 5].astype(np.int64).tolist()):
            lines[cls].append('%s %f %f %f %f %f\n' % (image, score, x1, y1, x2, y2))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    template = os.path.join(str(out_dir), prefix + '{}.txt')
    for name, rows in zip(names, lines):
        Path(template.format(name)).write_text(''.join(rows))
    return template


def kitti_lines(dets: np.ndarray, im_w: int, im_h: int, names: Sequence[str]) -> str:
    """A KITTI result file's text: 16 columns, 2D box in 0-based pixels, 3D fields at the devkit's invalid values."""
    boxes = darknet_boxes(dets, im_w, im_h).astype(np.float64) - 1.
    return ''.join(f'{names[c]} -1 -1 -10 {x1:f} {y1:f} {x2:f} {y2:f} -1 -1 -1 -1000 -1000 -1000 -10 {s:f}\n'
                   for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), dets[:, 4].tolist(),
                                                     dets[:, 5].astype(np.int64).tolist()))


def write_kitti_results(out_dir: str | os.PathLike, paths: Sequence[str], dets: Sequence[np.ndarray],
                        sizes: Sequence[tuple[int, int]], names: Sequence[str]) -> None:
    """One KITTI result file per image (`<out_dir>/<image id>.txt`, empty when nothing was detected)."""
    bad = [n for n in names if len(n.split()) != 1]
    if bad:
        raise ValueError(f'class name {bad[0]!r} cannot be a KITTI type (one word without spaces)')
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for image, d, (w, h) in zip(unique_ids(paths), dets, sizes):
        Path(out_dir, image + '.txt').write_text(kitti_lines(d, w, h, names))
