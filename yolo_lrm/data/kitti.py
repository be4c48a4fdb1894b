"""KITTI object detection (`training/{image_2,label_2}`) → Darknet labels, lists, VOC-style test ground truth.

Classes (LRM paper, §IV-A): car, van, truck, tram, pedestrian, cyclist.  Documented choices: DontCare and Misc are
dropped (DontCare regions are then simply unlabelled); Person_sitting is dropped by default or, with
`person_sitting='pedestrian'`, labelled as a pedestrian.  Boxes: KITTI's 0-based float pixel edges become
`cx = (x1 + x2) / 2 / W`, `w = (x2 - x1) / W` (same for y); W, H come from each PNG's header (frames vary).
A kept box with zero or negative size (`x2 <= x1` or `y2 <= y1`) or no overlap with the image is dropped from the
labels and from the test XML and reported with its label file (`KittiResult.empty`); a box partly outside the image
is written unclipped and reported (`KittiResult.outside`; training clips it), as the VOC converter does
(`yolo_lrm.data.labels.box_issue`).  `label_2_test/` keeps the original files, such boxes included.

Split: a random 9:1 train/test split of the frames with a fixed seed.  For the test frames we also write
`Annotations/<id>.xml` (VOC style, 1-based integers `int(round(v)) + 1`) and copy the original `label_2` files to
`label_2_test/` for the official KITTI protocol.  Output:
`images` (a link to image_2), `labels/`, `train.txt`, `test.txt` (absolute paths), `kitti.names`, `kitti.data`.
"""
from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .labels import ImageError, box_issue, box_issue_lines, image_size
from .layout import (ConvertError, check_label_paths, label_line, link_dir, parallel_map, write_data_file,
                     write_list, write_text)
from .voc import write_voc_xml
from ..textfile import read_text

KITTI_CLASSES = ('car', 'van', 'truck', 'tram', 'pedestrian', 'cyclist')
KITTI_TYPES = ('car', 'van', 'truck', 'pedestrian', 'person_sitting', 'cyclist', 'tram', 'misc', 'dontcare')


@dataclass
class KittiObject:
    """One label_2 line: type (lower case), truncation, occlusion, the 0-based float box and its 1-based line."""
    type: str
    truncated: float
    occluded: int
    x1: float
    y1: float
    x2: float
    y2: float
    line: int = 0


@dataclass
class KittiResult:
    """What a conversion wrote and skipped."""
    train: int = 0
    test: int = 0
    boxes: Counter = field(default_factory=Counter)     # class name -> boxes written
    dropped: Counter = field(default_factory=Counter)   # KITTI type -> objects not written
    errors: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)      # zero-size (or no-overlap) boxes dropped: label file:line, box
    outside: list[str] = field(default_factory=list)    # boxes partly outside the image, written unclipped
    data_file: str = ''

    def summary(self) -> str:
        """A few printable lines."""
        lines = [f'{self.train} train + {self.test} test frames; boxes: '
                 + ', '.join(f'{k} {self.boxes[k]}' for k in KITTI_CLASSES),
                 'dropped: ' + (', '.join(f'{k} {v}' for k, v in sorted(self.dropped.items())) or 'none'),
                 f'data file: {self.data_file}']
        lines += box_issue_lines(self.empty, self.outside, self.errors, '')
        return '\n'.join(lines)


def parse_kitti_label(path: str) -> list[KittiObject]:
    """Read a label_2 file (15 fields per line, 16 with a score); raises ConvertError naming file:line."""
    objects = []
    for lineno, line in enumerate(read_text(path, 'KITTI label file', ConvertError).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f'{path}:{lineno}'
        if len(fields) not in (15, 16):
            raise ConvertError(f'{where}: a KITTI label line has 15 fields, got {len(fields)}')
        kind = fields[0].lower()
        if kind not in KITTI_TYPES:
            raise ConvertError(f'{where}: unknown KITTI type {fields[0]!r}')
        try:
            trunc, occ = float(fields[1]), int(float(fields[2]))
            x1, y1, x2, y2 = (float(v) for v in fields[4:8])
        except ValueError:
            raise ConvertError(f'{where}: fields 2-8 must be numbers: {" ".join(fields[1:8])}') from None
        objects.append(KittiObject(kind, trunc, occ, x1, y1, x2, y2, lineno))
    return objects


def kitti_class_map(person_sitting: str = 'drop') -> dict[str, int]:
    """KITTI type -> class id of the 6-class setup (types not in the map are dropped)."""
    if person_sitting not in ('drop', 'pedestrian'):
        raise ValueError(f"person_sitting must be 'drop' or 'pedestrian', got {person_sitting!r}")
    mapping = {name: i for i, name in enumerate(KITTI_CLASSES)}
    if person_sitting == 'pedestrian':
        mapping['person_sitting'] = mapping['pedestrian']
    return mapping


def _convert_frame(job: tuple[str, str, str, bool], out: str, mapping: dict[str, int]
                   ) -> tuple[Counter, Counter, list[str], list[str]] | str:
    frame, image, label, is_test = job
    try:
        w, h = image_size(image)
        objects = parse_kitti_label(label)
    except (ConvertError, ImageError, OSError) as exc:
        return str(exc)
    written, dropped, lines, kept, empty, outside = Counter(), Counter(), [], [], [], []
    for o in objects:
        if o.type not in mapping:
            dropped[o.type] += 1
            continue
        issue = box_issue(o.x1, o.y1, o.x2, o.y2, w, h)
        if issue:
            (empty if issue == 'empty' else outside).append(
                f'{label}:{o.line}: {o.type} {o.x1:g} {o.y1:g} {o.x2:g} {o.y2:g} in a {w}x{h} image')
            if issue == 'empty':
                continue
        cls = mapping[o.type]
        lines.append(label_line(cls, (o.x1 + o.x2) / 2 / w, (o.y1 + o.y2) / 2 / h, (o.x2 - o.x1) / w,
                                (o.y2 - o.y1) / h))
        corners = (int(round(v)) + 1 for v in (o.x1, o.y1, o.x2, o.y2))   # VOC's 1-based integer pixels
        kept.append((KITTI_CLASSES[cls], int(o.truncated > 0), *corners))
        written[KITTI_CLASSES[cls]] += 1
    write_text(os.path.join(out, 'labels', f'{frame}.txt'), ''.join(lines))
    if is_test:
        write_voc_xml(os.path.join(out, 'Annotations', f'{frame}.xml'), 'KITTI', os.path.basename(image), w, h, kept)
        shutil.copyfile(label, os.path.join(out, 'label_2_test', f'{frame}.txt'))
    return written, dropped, empty, outside


def find_kitti(root: Path) -> tuple[Path, Path]:
    """(image_2, label_2) folders under a KITTI root or its `training` folder."""
    for base in (root / 'training', root):
        if (base / 'image_2').is_dir() and (base / 'label_2').is_dir():
            return base / 'image_2', base / 'label_2'
    raise ConvertError(f'{root}: no training/image_2 and training/label_2 folders')


def split_frames(frames: list[str], test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Random train/test split of sorted frame ids with a fixed seed: (train, test), both sorted."""
    if not 0 < test_fraction < 1:
        raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
    frames = sorted(frames)
    order = np.random.default_rng(seed).permutation(len(frames))
    n_test = int(round(len(frames) * test_fraction))
    test = {frames[i] for i in order[:n_test]}
    return [f for f in frames if f not in test], [f for f in frames if f in test]


def convert_kitti(root: str | os.PathLike, out: str | os.PathLike, seed: int = 0, test_fraction: float = 0.1,
                  person_sitting: str = 'drop', workers: int | None = None) -> KittiResult:
    """Convert KITTI into `out` (see the module docstring); returns what was written."""
    image_dir, label_dir = find_kitti(Path(root).resolve())
    out = Path(out).resolve()
    mapping = kitti_class_map(person_sitting)
    images = {Path(n).stem: n for n in os.listdir(image_dir) if n.lower().endswith('.png')}
    labels = {Path(n).stem for n in os.listdir(label_dir) if n.endswith('.txt')}
    result = KittiResult()
    result.errors += [f'{label_dir / (f + ".txt")}: no image {f}.png' for f in sorted(labels - set(images))]
    result.errors += [f'{image_dir / images[f]}: no label file' for f in sorted(set(images) - labels)]
    frames = sorted(labels & set(images))
    if not frames:
        raise ConvertError(f'{image_dir}: no frame has both an image and a label file')
    train, test = split_frames(frames, test_fraction, seed)
    link_dir(out / 'images', image_dir)
    (out / 'label_2_test').mkdir(parents=True, exist_ok=True)
    test_set = set(test)
    jobs = [(f, str(image_dir / images[f]), str(label_dir / f'{f}.txt'), f in test_set) for f in frames]
    outcomes = parallel_map(partial(_convert_frame, out=str(out), mapping=mapping), jobs, workers)
    ok = set()
    for (frame, *_), outcome in zip(jobs, outcomes):
        if isinstance(outcome, str):
            result.errors.append(outcome)
            continue
        ok.add(frame)
        result.boxes.update(outcome[0])
        result.dropped.update(outcome[1])
        result.empty += outcome[2]
        result.outside += outcome[3]
    _write_outputs(out, images, [f for f in train if f in ok], [f for f in test if f in ok], result)
    return result


def _write_outputs(out: Path, images: dict[str, str], train: list[str], test: list[str], result: KittiResult) -> None:
    for name, frames in (('train', train), ('test', test)):
        paths = [str(out / 'images' / images[f]) for f in frames]
        check_label_paths(paths, [str(out / 'labels' / f'{f}.txt') for f in frames])
        write_list(out / f'{name}.txt', paths)
    write_text(out / 'test_ids.txt', ''.join(f'{f}\n' for f in test))
    result.train, result.test = len(train), len(test)
    write_text(out / 'kitti.names', ''.join(f'{n}\n' for n in KITTI_CLASSES))
    result.data_file = str(out / 'kitti.data')
    write_data_file(result.data_file, {
        'classes': len(KITTI_CLASSES), 'train': out / 'train.txt', 'valid': out / 'test.txt',
        'names': out / 'kitti.names', 'backup': 'backup', 'eval': 'voc', 'annotations': out / 'Annotations',
        'kitti_labels': out / 'label_2_test'},
        'written by python -m yolo_lrm.data.convert kitti\n'
        'eval=voc: VOC-style mAP on the 6 classes (LRM paper); eval=kitti: official protocol on label_2_test')
