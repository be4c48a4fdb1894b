"""COCO JSON (`images`, `annotations`, `categories`: COCO's instances files, and the COCO exports of Roboflow, CVAT
and Label Studio) → Darknet labels, lists, a names file and `.data` files, without copying an image.

`python -m yolo_lrm.data.convert coco A.json [B.json ...] [--images DIR ...] [--split NAME ...] --out DIR`:
- one split per file, named after it (`instances_val2017.json` → `instances_val2017`) unless `--split` names them;
  files that would share a name (Roboflow's `train/_annotations.coco.json`, `valid/...`) are named after their folders;
- images: `file_name` (sub-folders allowed) under `--images` (one folder for every file, or one per file; default:
  each file's own folder, where Roboflow puts the images).  `DIR/<split>/images` is a link to that folder and the label
  files go where Darknet's images→labels rule looks, `DIR/<split>/labels/...`;
- classes: the categories in id order are 0..C-1, with their names; every file must have the same.  A category that is
  another's supercategory and has no annotation (Roboflow's dataset-level category) is left out, with a note;
- boxes: `bbox` [x, y, w, h] in pixels → `class cx cy w h` normalised by the image's size.  `iscrowd` boxes are left
  out, a box partly outside the image is clipped to it, a box without area (after clipping) is dropped: each counted.
  An image without annotations is kept as a negative (an empty label file);
- bad input: a file that is not JSON (file:line:column), a duplicate image or category id, two images with one
  `file_name`, an image without `file_name`, or categories that differ between files are errors naming the file.  An
  annotation pointing at an unknown image or category or with a malformed `bbox` is skipped; an image that is missing,
  unreadable or of another size than the file says is skipped: all counted in the summary and listed in
  `DIR/convert.log`.
Writes `DIR/<split>.txt` (absolute image paths), `DIR/<name>.names`, `DIR/<name>.data` (train= the split named train*
or else the first, valid= the one named val*) and `DIR/<name>-test.data` (valid= the one named test*); name = DIR's
folder name.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..textfile import read_text
from .labels import ImageError, box_issue, image_size, label_path
from .layout import (ConvertError, class_table, label_line, link_dir, parallel_map, skip_lines, write_data_file,
                     write_list, write_text)

LOG_NAME = 'convert.log'


@dataclass
class CocoFile:
    """One annotation file read: its split, image folder, categories (id, name, supercategory), images by id
    (file_name, width, height: 0 when not given) and the raw annotations."""
    path: str
    split: str
    image_dir: Path
    categories: list[tuple[int, str, str]]
    images: dict[int, tuple[str, int, int]]
    annotations: list[Any]


@dataclass
class CocoResult:
    """What a conversion wrote and skipped."""
    names: list[str]
    counts: dict[str, tuple[int, np.ndarray]] = field(default_factory=dict)   # split -> images, boxes per class
    skips: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)
    lists: dict[str, str] = field(default_factory=dict)
    data_files: list[str] = field(default_factory=list)
    log_file: str = ''

    def summary(self) -> str:
        """Printable lines: notes, the per-class table, the skips, the files written."""
        lines = [*self.notes, *class_table(self.names, self.counts)]
        lines += [f'{split}: {path}' for split, path in self.lists.items()]
        lines += skip_lines(self.skips, self.log_file)
        return '\n'.join(lines + [f'data file: {f}' for f in self.data_files])


def convert_coco(files: Sequence[str | os.PathLike], out: str | os.PathLike, images: Sequence[str] | None = None,
                 splits: Sequence[str] | None = None, workers: int | None = None) -> CocoResult:
    """Convert COCO annotation files (see the module docstring); returns what was written."""
    paths = [str(Path(f).resolve()) for f in files]
    if images and len(images) not in (1, len(paths)):
        raise ConvertError(f'--images: give one folder for all files or one per file ({len(paths)}), '
                           f'got {len(images)}')
    dirs = [Path(images[0] if len(images) == 1 else images[i]).resolve() if images else Path(p).parent
            for i, p in enumerate(paths)]
    read = [_read_file(p, s, d) for p, s, d in zip(paths, _split_names(paths, splits), dirs)]
    out = Path(out).resolve()
    categories, notes = _classes(read)
    result = CocoResult([name for _, name in categories], notes=notes, log_file=str(out / LOG_NAME))
    Path(result.log_file).unlink(missing_ok=True)   # an earlier conversion's
    class_of = {cid: k for k, (cid, _) in enumerate(categories)}
    for coco in read:
        listed, per_class = _write_split(coco, class_of, out, result.skips, workers)
        result.lists[coco.split] = str(out / f'{coco.split}.txt')
        write_list(result.lists[coco.split], listed)
        result.counts[coco.split] = (len(listed), per_class)
    _write_meta(out, result)
    return result


def _read_file(path: str, split: str, image_dir: Path) -> CocoFile:
    """Parse and check one annotation file's structure (errors name the file)."""
    try:
        doc = json.loads(read_text(path, 'COCO annotation file', ConvertError))
    except json.JSONDecodeError as exc:
        raise ConvertError(f'{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})') from None
    if not isinstance(doc, dict) or not isinstance(doc.get('images'), list) \
            or not isinstance(doc.get('categories'), list):
        raise ConvertError(f'{path}: not a COCO annotation file (no "images" and "categories" lists)')
    annotations = doc.get('annotations', [])
    if not isinstance(annotations, list):
        raise ConvertError(f'{path}: "annotations" is not a list')
    categories: dict[int, tuple[int, str, str]] = {}
    for c in doc['categories']:
        cid = c.get('id') if isinstance(c, dict) else None
        if type(cid) is not int or not isinstance(c.get('name'), str):
            raise ConvertError(f'{path}: category {c!r}: needs an integer "id" and a "name"')
        if cid in categories:
            raise ConvertError(f'{path}: category id {cid} appears twice ({categories[cid][1]}, {c["name"]})')
        categories[cid] = (cid, c['name'], str(c.get('supercategory') or ''))
    images: dict[int, tuple[str, int, int]] = {}
    owner: dict[str, int] = {}
    for im in doc['images']:
        iid = im.get('id') if isinstance(im, dict) else None
        name = im.get('file_name') if isinstance(im, dict) else None
        if type(iid) is not int or not isinstance(name, str) or not name:
            raise ConvertError(f'{path}: image {im!r}: needs an integer "id" and a "file_name"')
        if iid in images:
            raise ConvertError(f'{path}: image id {iid} appears twice ({images[iid][0]}, {name})')
        name = name.replace('\\', '/')
        if os.path.isabs(name) or '..' in name.split('/'):
            raise ConvertError(f'{path}: image id {iid}: file_name {name} must be relative to the image folder')
        if name in owner:
            raise ConvertError(f'{path}: image ids {owner[name]} and {iid} both name {name}')
        owner[name] = iid
        w, h = im.get('width'), im.get('height')
        images[iid] = (name, w if type(w) is int else 0, h if type(h) is int else 0)
    return CocoFile(path, split, image_dir, sorted(categories.values()), images, annotations)


def _split_names(paths: list[str], given: Sequence[str] | None) -> list[str]:
    """Each file's split: `--split`, else the file name without `.json`, else (shared) its folder's name."""
    if given:
        if len(given) != len(paths):
            raise ConvertError(f'--split: {len(given)} names for {len(paths)} files')
        names = list(given)
    else:
        names = [Path(p).name.removesuffix('.json') for p in paths]
        if len(set(names)) < len(names):
            names = [Path(p).parent.name for p in paths]
    if len(set(names)) < len(names):
        raise ConvertError(f'the files would share split names ({", ".join(names)}): name them with --split')
    bad = [n for n in names if not n or n in ('.', '..') or '/' in n or '\\' in n]
    if bad:
        raise ConvertError(f'split name {bad[0]!r} cannot be a file name: name the splits with --split')
    return names


def _classes(read: list[CocoFile]) -> tuple[list[tuple[int, str]], list[str]]:
    """The categories in id order (without Roboflow's dataset-level category), the same in every file."""
    used = {a.get('category_id') for f in read for a in f.annotations if isinstance(a, dict)}
    notes, kept = [], None
    for f in read:
        parents = {sup for _, _, sup in f.categories}
        dropped = [(cid, name) for cid, name, _ in f.categories if name in parents and cid not in used]
        cats = [(cid, name) for cid, name, _ in f.categories if (cid, name) not in dropped]
        if dropped and not notes:
            notes.append('left out (a supercategory of the others, without annotations): '
                         + ', '.join(f'category {cid} {name!r}' for cid, name in dropped))
        if kept is None:
            kept, first = cats, f.path
        elif cats != kept:
            raise ConvertError(f'{f.path}: its categories differ from those of {first}; the splits of one dataset '
                               f'must share them')
    if not kept:
        raise ConvertError(f'{read[0].path}: no categories')
    return kept, notes


def _write_split(coco: CocoFile, class_of: dict[int, int], out: Path, skips: dict[str, list[str]],
                 workers: int | None) -> tuple[list[str], np.ndarray]:
    """Label files of one file's images under `out/<split>`; returns the list entries and boxes per class."""
    home = out / coco.split
    if not coco.image_dir.is_dir():
        raise ConvertError(f'{coco.image_dir}: no such folder (the images of {coco.path}; --images names it)')
    link_dir(home / 'images', coco.image_dir)
    boxes = _boxes(coco, class_of, skips)
    ids = list(coco.images)
    sizes = parallel_map(_size, [str(coco.image_dir / coco.images[i][0]) for i in ids], workers)
    listed, per_class = [], np.zeros(len(class_of), np.int64)
    for iid, size in zip(ids, sizes):
        name, w, h = coco.images[iid]
        if isinstance(size, str):
            skips['images skipped'].append(f'{coco.path}: image id {iid}: {size}')
            continue
        if (w or size[0], h or size[1]) != size:
            skips['images skipped'].append(f'{coco.path}: image id {iid}: {name} is {size[0]}x{size[1]}, the file '
                                           f'says {w}x{h}')
            continue
        entry = os.path.normpath(home / 'images' / name)
        target = Path(label_path(entry))
        if not target.resolve().is_relative_to(home.resolve()) or str(target) == entry:
            raise ConvertError(f"Darknet's label rule maps {entry} to {target}, outside {home}: a folder name on "
                               "the way contains 'images', 'JPEGImages' or 'raw'; choose another --out")
        rows = [_label(row, size, f'{coco.path}: annotation {aid} ({name})', skips) for aid, row in boxes.get(iid, [])]
        rows = [r for r in rows if r is not None]
        write_text(target, ''.join(line for _, line in rows))
        per_class += np.bincount(np.array([c for c, _ in rows], np.int64), minlength=len(class_of))
        listed.append(entry)
    return listed, per_class


def _boxes(coco: CocoFile, class_of: dict[int, int], skips: dict[str, list[str]]) -> dict[int, list]:
    """Per image id: (annotation id, (class, x, y, w, h)) of the usable annotations; the rest skipped and counted."""
    boxes: dict[int, list] = defaultdict(list)
    for index, a in enumerate(coco.annotations):
        aid = a.get('id', f'#{index}') if isinstance(a, dict) else f'#{index}'
        where = f'{coco.path}: annotation {aid}'
        bbox = a.get('bbox') if isinstance(a, dict) else None
        if not isinstance(a, dict) or a.get('image_id') not in coco.images:
            skips['annotations of unknown images'].append(
                f'{where}: image_id {a.get("image_id") if isinstance(a, dict) else None!r} is not an image of the file')
        elif a.get('category_id') not in class_of:
            skips['annotations of unknown categories'].append(f'{where}: category_id {a.get("category_id")!r}')
        elif not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox):
            skips['annotations with a malformed bbox'].append(f'{where}: bbox {bbox!r}')
        elif a.get('iscrowd'):
            skips['iscrowd boxes left out'].append(where)
        else:
            boxes[a['image_id']].append((aid, (class_of[a['category_id']], *map(float, bbox))))
    return boxes


def _label(row: tuple[int, float, float, float, float], size: tuple[int, int], where: str,
           skips: dict[str, list[str]]) -> tuple[int, str] | None:
    """(class, label line) of a COCO box, clipped to the image; None for a box without area (counted)."""
    cls, x, y, bw, bh = row
    w, h = size
    x1, y1, x2, y2 = x, y, x + bw, y + bh
    issue = box_issue(x1, y1, x2, y2, w, h)
    if issue == 'empty':
        skips['boxes without area dropped'].append(f'{where}: bbox [{x:g}, {y:g}, {bw:g}, {bh:g}] in {w}x{h}')
        return None
    if issue == 'outside':
        skips['boxes clipped to the image'].append(f'{where}: bbox [{x:g}, {y:g}, {bw:g}, {bh:g}] in {w}x{h}')
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
    dw, dh = 1. / w, 1. / h   # the float operations of voc_box, so that the same box gives the same label
    return cls, label_line(cls, (x1 + x2) / 2.0 * dw, (y1 + y2) / 2.0 * dh, (x2 - x1) * dw, (y2 - y1) * dh)


def _size(path: str) -> tuple[int, int] | str:
    """An image's (width, height) from its header, or why it cannot be read."""
    try:
        return image_size(path)
    except FileNotFoundError:
        return f'{path}: no such file'
    except (OSError, ImageError) as exc:
        return f'{path}: {getattr(exc, "strerror", None) or exc}'


def _role(splits: list[str], exact: tuple[str, ...], word: str, taken: set[str]) -> str | None:
    """The split that plays a role: named exactly so, else containing `word`."""
    free = [s for s in splits if s not in taken]
    return next((s for s in free if s.lower() in exact), None) or next((s for s in free if word in s.lower()), None)


def _write_meta(out: Path, result: CocoResult) -> None:
    """The names file and the `.data` files (train / valid, and -test when a split is named test*)."""
    name = out.name.lower() or 'coco'
    names_file = out / f'{name}.names'
    write_text(names_file, ''.join(f'{n}\n' for n in result.names))
    splits = list(result.lists)
    taken: set[str] = set()
    roles = {}
    for role, exact, word in (('test', ('test',), 'test'), ('valid', ('val', 'valid', 'validation'), 'val'),
                              ('train', ('train',), 'train')):
        roles[role] = _role(splits, exact, word, taken)
        if roles[role]:
            taken.add(roles[role])
    if roles['train'] is None:
        roles['train'] = next((s for s in splits if s not in taken), None)
        if roles['train']:
            result.notes.append(f'no split named train*: train= is {roles["train"]} (--split names the splits)')
    comment = 'written by python -m yolo_lrm.data.convert coco'
    for suffix, valid in (('', roles['valid']), ('-test', roles['test'])):
        if suffix and not valid:
            continue
        options = {'classes': len(result.names), 'train': result.lists.get(roles['train'] or ''),
                   'valid': result.lists.get(valid or ''), 'names': names_file, 'backup': 'backup', 'eval': 'voc'}
        path = out / f'{name}{suffix}.data'
        write_data_file(path, {k: v for k, v in options.items() if v}, comment)
        result.data_files.append(str(path))
