"""PASCAL VOC layout → Darknet labels and lists, as Darknet's `scripts/voc_label.py` does it.

Accepts a `VOCdevkit` folder (or its parent) with `VOC<year>/{Annotations,JPEGImages,ImageSets/Main}`, or one plain
VOC-layout folder without a year (e.g. BCCD).  Per image: `labels/<id>.txt` with `class x y w h` where
`x = ((xmin + xmax) / 2 - 1) / W`, `w = (xmax - xmin) / W` (VOC pixels are 1-based), numbers written as Python's
`str(float)`, one file per image even without objects.  Lists (absolute image paths): `<year>_<set>.txt` and
`train.txt` = 2007 train+val + 2012 train+val, `train.all.txt` = those + 2007 test (year layout), or `<set>.txt`
(plain layout; `all.txt` when there are no image sets).  Also a names file and a `.data` file.

Differences from `voc_label.py`: any class list (a names file, or the 20 VOC classes for year layouts, or the sorted
names found in the XML); a missing `<difficult>` counts as 0; `--keep-difficult`; images are looked up by id with
their real extension; the image size comes from the header when the XML has none; with `--out` the original folder
stays untouched (its `JPEGImages` is linked into the output so that Darknet's label rule finds the new labels).

Boxes (`yolo_lrm.data.labels.box_issue` on the label's edges `(xmin - 1) / W`, `(xmax - 1) / W`, y likewise):
- empty (`xmax <= xmin` or `ymax <= ymin`, e.g. BCCD's BloodImage_00338 and _00343 with xmin == xmax, or no overlap
  with the image): `voc_label.py` writes a label with w or h 0 (or negative); we drop it and report it
  (`VocResult.empty`, one summary line per box with the XML file).  Darknet's loader would drop such a truth anyway
  (`w < .001 or h < .001`, Darknet's `load_data_detection`).
- partly outside the image (`xmin < 1`, `ymin < 1`, `xmax > W + 1` or `ymax > H + 1`, i.e. a label edge outside
  [0, 1]): written unclipped, exactly as `voc_label.py` writes it (its `convert` does not clip), and reported
  (`VocResult.outside`).  Darknet clamps the edges to the image when it loads the label (after its jitter, §5.3
  step 7); our dataset scan clips them when training starts and reports them as `box_clipped`.
Only boxes that would be written are checked (not skipped difficult or unknown-class objects).
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape

from .labels import IMAGE_EXTENSIONS, box_issue, box_issue_lines, image_size
from .layout import (ConvertError, check_label_paths, label_line, link_dir, parallel_map, write_data_file,
                     write_list, write_text)
from ..textfile import read_lines

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow', 'diningtable',
               'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
SETS = ('train', 'val', 'trainval', 'test')
_YEAR_DIR = re.compile(r'^VOC(\d{4})$')


@dataclass
class VocObject:
    """One `<object>`: name, difficult flag and the 1-based pixel box."""
    name: str
    difficult: bool
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass
class VocResult:
    """What a conversion wrote and skipped."""
    classes: list[str]
    images: int = 0
    boxes: int = 0
    difficult_dropped: int = 0
    unknown: Counter = field(default_factory=Counter)   # class name not in the list -> objects skipped
    errors: list[str] = field(default_factory=list)     # files skipped, with the reason
    empty: list[str] = field(default_factory=list)      # zero-size (or no-overlap) boxes dropped: XML file and box
    outside: list[str] = field(default_factory=list)    # boxes partly outside the image, written unclipped
    lists: dict[str, int] = field(default_factory=dict)
    data_file: str = ''

    def summary(self) -> str:
        """A few printable lines."""
        lines = [f'{self.images} images, {self.boxes} boxes, classes: {", ".join(self.classes)}',
                 f'difficult objects dropped: {self.difficult_dropped}',
                 'lists: ' + ', '.join(f'{k} ({v})' for k, v in self.lists.items()),
                 f'data file: {self.data_file}']
        if self.unknown:
            lines.append('objects of other classes skipped: ' + ', '.join(f'{k} {v}' for k, v in self.unknown.items()))
        lines += box_issue_lines(self.empty, self.outside, self.errors, ' as voc_label.py does')
        return '\n'.join(lines)


def voc_box(w: int, h: int, xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[float, float, float, float]:
    """`voc_label.py`'s `convert`: 1-based VOC corners → normalised x, y, w, h (same float operations)."""
    dw, dh = 1. / w, 1. / h
    return ((xmin + xmax) / 2.0 - 1) * dw, ((ymin + ymax) / 2.0 - 1) * dh, (xmax - xmin) * dw, (ymax - ymin) * dh


def write_voc_xml(path: str | os.PathLike, folder: str, filename: str, w: int, h: int,
                  objects: Iterable[tuple[str, int, int, int, int, int]]) -> None:
    """Write a VOC annotation; `objects` are (name, truncated, xmin, ymin, xmax, ymax), corners 1-based integers."""
    parts = [f'<annotation>\n  <folder>{escape(folder)}</folder>\n  <filename>{escape(filename)}</filename>\n'
             f'  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n']
    for name, truncated, xmin, ymin, xmax, ymax in objects:
        parts.append(f'  <object><name>{escape(name)}</name><pose>Unspecified</pose>'
                     f'<truncated>{truncated}</truncated><difficult>0</difficult>'
                     f'<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>'
                     '</object>\n')
    write_text(path, ''.join(parts) + '</annotation>\n')


def _text(node: ET.Element | None, tag: str, path: str) -> str:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise ConvertError(f'{path}: missing <{tag}>')
    return child.text.strip()


def parse_voc_xml(path: str, image: str | None = None) -> tuple[int, int, list[VocObject]]:
    """(width, height, objects) of one annotation; the size is read from `image` when the XML has none."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ConvertError(f'{path}: cannot parse XML ({exc})') from None
    size = root.find('size')
    try:
        w, h = int(float(_text(size, 'width', path))), int(float(_text(size, 'height', path)))
    except (ConvertError, ValueError):
        w = h = 0
    if (w <= 0 or h <= 0) and image:
        w, h = image_size(image)
    if w <= 0 or h <= 0:
        raise ConvertError(f'{path}: no image size in the XML and no image to read it from')
    objects = []
    for obj in root.iter('object'):
        diff = obj.find('difficult')
        box = obj.find('bndbox')
        try:
            coords = [float(_text(box, t, path)) for t in ('xmin', 'ymin', 'xmax', 'ymax')]
            difficult = diff is not None and diff.text is not None and int(diff.text.strip()) == 1
        except ValueError as exc:
            raise ConvertError(f'{path}: bad number in <object> ({exc})') from None
        objects.append(VocObject(_text(obj, 'name', path), difficult, *coords))
    return w, h, objects


def _parse_job(job: tuple[str, str]) -> tuple[int, int, list[VocObject]] | str:
    try:
        return parse_voc_xml(*job)
    except (ConvertError, OSError, ValueError) as exc:
        return str(exc)


def find_voc_datasets(root: Path) -> list[tuple[str | None, Path]]:
    """(year or None, folder) of every VOC dataset under `root` (VOCdevkit, its parent, or one plain folder)."""
    if (root / 'Annotations').is_dir():
        return [(None, root)]
    for devkit in (root, root / 'VOCdevkit'):
        found = sorted((m.group(1), d) for d in devkit.glob('VOC*') if (m := _YEAR_DIR.match(d.name))
                       and (d / 'Annotations').is_dir())
        if found:
            return found
    raise ConvertError(f'{root}: no Annotations folder, no VOC<year>/Annotations and no VOCdevkit/VOC<year> found')


def _image_index(folder: Path) -> dict[str, str]:
    """id -> file name in JPEGImages (a `.jpg` wins over other extensions of the same id)."""
    if not folder.is_dir():
        raise ConvertError(f'{folder}: no JPEGImages folder')
    index: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS and (stem not in index or ext == '.jpg'):
            index[stem] = name
    return index


def _image_sets(ds: Path) -> dict[str, list[str]]:
    sets = {}
    for name in SETS:
        path = ds / 'ImageSets' / 'Main' / f'{name}.txt'
        if path.is_file():
            sets[name] = [ln.split()[0] for ln in read_lines(path, 'image set file', ConvertError)]
    if not sets:
        sets['all'] = sorted(p.stem for p in (ds / 'Annotations').glob('*.xml'))
    return sets


def _pick_classes(names: list[str] | None, found: Counter, years: bool) -> list[str]:
    if names:
        return names
    if years and set(found) <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    if not found:
        raise ConvertError('no objects in the annotations and no --names given: cannot tell the classes')
    return sorted(found)


def convert_voc(root: str | os.PathLike, out: str | os.PathLike | None = None, names: list[str] | None = None,
                keep_difficult: bool = False, workers: int | None = None) -> VocResult:
    """Convert a VOC dataset (see the module docstring); returns what was written."""
    root = Path(root).resolve()
    datasets = find_voc_datasets(root)
    years = datasets[0][0] is not None
    out_root = Path(out).resolve() if out else root
    jobs, plan = [], []   # plan: (year, set name, [(id, image path, label path, job index)])
    job_of: dict[str, int] = {}
    for year, ds in datasets:
        index = _image_index(ds / 'JPEGImages')
        home = out_root / ds.name if out else ds
        if out:
            link_dir(home / 'JPEGImages', ds / 'JPEGImages')
        for set_name, ids in _image_sets(ds).items():
            entries = []
            for image_id in ids:
                xml = str(ds / 'Annotations' / f'{image_id}.xml')
                if image_id not in index:
                    entries.append((image_id, None, None, xml))
                    continue
                if xml not in job_of:
                    job_of[xml] = len(jobs)
                    jobs.append((xml, str(ds / 'JPEGImages' / index[image_id])))
                entries.append((image_id, str(home / 'JPEGImages' / index[image_id]),
                                str(home / 'labels' / f'{image_id}.txt'), xml))
            plan.append((year, set_name, entries))
    records = parallel_map(_parse_job, jobs, workers)
    found = Counter(o.name for r in records if not isinstance(r, str) for o in r[2])
    result = VocResult(_pick_classes(names, found, years))
    _write_labels(jobs, records, plan, result, keep_difficult)
    _write_lists(plan, records, job_of, out_root, years, result)
    _write_meta(root, datasets, out_root, years, result)
    return result


def _write_labels(jobs, records, plan, result: VocResult, keep_difficult: bool) -> None:
    class_id = {name: i for i, name in enumerate(result.classes)}
    label_of = {xml: label for _, _, entries in plan for _, _, label, xml in entries if label}
    for (xml, _), rec in zip(jobs, records):
        if isinstance(rec, str):
            result.errors.append(rec)
            continue
        w, h, objects = rec
        lines = []
        for o in objects:
            if o.name not in class_id:
                result.unknown[o.name] += 1
            elif o.difficult and not keep_difficult:
                result.difficult_dropped += 1
            else:
                issue = box_issue(o.xmin - 1, o.ymin - 1, o.xmax - 1, o.ymax - 1, w, h)
                if issue:
                    where = f'{xml}: {o.name} xmin {o.xmin:g} ymin {o.ymin:g} xmax {o.xmax:g} ymax {o.ymax:g} ' \
                            f'in a {w}x{h} image'
                    (result.empty if issue == 'empty' else result.outside).append(where)
                    if issue == 'empty':
                        continue
                lines.append(label_line(class_id[o.name], *voc_box(w, h, o.xmin, o.ymin, o.xmax, o.ymax)))
        write_text(label_of[xml], ''.join(lines))
        result.images += 1
        result.boxes += len(lines)


def _write_lists(plan, records, job_of, out_root: Path, years: bool, result: VocResult) -> None:
    written: dict[str, list[str]] = {}
    for year, set_name, entries in plan:
        images, labels = [], []
        for image_id, image, label, xml in entries:
            if image is None:
                result.errors.append(f'{xml}: no image {image_id}.* in JPEGImages')
            elif not isinstance(records[job_of[xml]], str):
                images.append(image)
                labels.append(label)
        check_label_paths(images, labels)
        name = f'{year}_{set_name}' if years else set_name
        written[name] = images
    if years:
        parts = [p for p in ('2007_train', '2007_val', '2012_train', '2012_val') if p in written]
        if parts:
            written['train'] = [p for part in parts for p in written[part]]
            if '2007_test' in written:
                written['train.all'] = written['train'] + written['2007_test']
    for name, images in written.items():
        result.lists[f'{name}.txt'] = write_list(out_root / f'{name}.txt', images)


def _write_meta(root: Path, datasets, out_root: Path, years: bool, result: VocResult) -> None:
    stem = 'voc' if years else root.name.lower()
    names_file = out_root / f'{stem}.names'
    write_text(names_file, ''.join(f'{n}\n' for n in result.classes))
    lists = result.lists
    order = ('train.txt', 'train.all.txt') if years else ('trainval.txt', 'train.txt', 'all.txt')
    train = next((n for n in order if n in lists), '')
    valid = next((n for n in ('2007_test.txt', 'test.txt', 'val.txt', '2012_val.txt') if n in lists), '')
    test_ds = next((ds for year, ds in datasets if year in (None, '2007')), datasets[-1][1])
    options = {'classes': len(result.classes), 'train': out_root / train if train else '',
               'valid': out_root / valid if valid else '', 'names': names_file, 'backup': 'backup',
               'eval': 'voc', 'annotations': test_ds / 'Annotations'}
    result.data_file = str(out_root / f'{stem}.data')
    write_data_file(result.data_file, {k: v for k, v in options.items() if v != ''},
                    'written by python -m yolo_lrm.data.convert voc')
