"""Ultralytics / Roboflow YOLO exports (a data.yaml beside `images/` and `labels/` folders) → Darknet lists, a names
file and `.data` files, without copying an image.

`python -m yolo_lrm.data.convert yolo DATA_YAML --out DIR` reads the data.yaml as `datayaml.py` says (the same file
trains directly: `python train.py CFG data.yaml`) and writes into DIR:
- `train.txt`, `valid.txt` and `test.txt` (when there is a test split): absolute paths of the images where they are;
- labels: read in place when Darknet's images→labels rule (`labels.label_path`) finds each image's label file where
  the export put it (Roboflow's and Ultralytics' layouts, unless a folder above them is named `images`, `JPEGImages`
  or `raw`); else the split is mirrored: `DIR/<split>/images/...` are links to its images and their label files are
  copied, as written, to where the rule looks (`DIR/<split>/labels/...`);
- `<name>.names`, `<name>.data` (train=, valid=) and `<name>-test.data` (valid= the test list: scoring on the test
  split, e.g. `--test-data` of the grids), name = the YAML's file name, or its folder's for a file named `data.yaml`.
Every split is scanned as training will scan it (`scan.scan_dataset`): the summary gives images and boxes per class
and split (boxes as labelled), and lists what training will skip, drop or clip (all of it in `DIR/convert.log`); a
class id outside the names is an error naming the label file and line.  An image without a label file is skipped by
training, as Darknet needs one (Ultralytics counts it as background: an empty `.txt` keeps it as a negative).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datayaml import read_data_yaml
from .imagelist import ImageList
from .labels import label_path, parse_label_text
from .layout import ConvertError, class_table, link_file, skip_lines, write_data_file, write_list, write_text
from .scan import ISSUE_KINDS, ScanReport, scan_dataset

LOG_NAME = 'convert.log'


@dataclass
class YoloSplit:
    """One converted split: its list file, how its labels are read, the scan of the list, the boxes per class as
    labelled (those training keeps are `report.per_class`)."""
    list_file: str
    mirrored: bool
    report: ScanReport
    labelled: np.ndarray


@dataclass
class YoloResult:
    """What a conversion wrote and found."""
    source: str
    names: list[str]
    splits: dict[str, YoloSplit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data_files: list[str] = field(default_factory=list)
    log_file: str = ''

    def summary(self) -> str:
        """Printable lines: notes, the per-class table, how labels are read, what training skips, the files."""
        lines = [f'{self.source}: {len(self.names)} classes', *self.notes]
        lines += class_table(self.names, {k: (len(s.report.images), s.labelled) for k, s in self.splits.items()})
        for name, split in self.splits.items():
            where = f'mirrored under {Path(split.list_file).parent / name}' if split.mirrored else 'read in place'
            lines.append(f'{name}: {split.report.entries} images listed in {split.list_file}, labels {where}')
        skips: dict[str, list[str]] = {}
        for name, split in self.splits.items():
            for issue in split.report.issues:
                skips.setdefault(f'{name}: {issue.kind} (at training: {ISSUE_KINDS[issue.kind]})', []).append(
                    f'{issue.path}{f":{issue.line}" if issue.line else ""}: {issue.detail}')
        lines += skip_lines(skips, self.log_file)
        lines += [f'data file: {f}' for f in self.data_files]
        return '\n'.join(lines)


def convert_yolo(data_yaml: str | os.PathLike, out: str | os.PathLike) -> YoloResult:
    """Convert an Ultralytics / Roboflow export (see the module docstring); returns what was written."""
    read = read_data_yaml(data_yaml)
    out = Path(out).resolve()
    names = read.names or [f'class{i}' for i in range(read.classes)]
    result = YoloResult(read.path, names, notes=[f'warning: {w}' for w in read.warnings] + read.notes,
                        log_file=str(out / LOG_NAME))
    Path(result.log_file).unlink(missing_ok=True)   # an earlier conversion's
    for split, images in read.splits.items():
        paths = _list_paths(images, out / split)
        list_file = out / f'{split}.txt'
        write_list(list_file, paths)
        report = scan_dataset(list_file, read.classes, use_cache=False)
        report.raise_errors()
        result.splits[split] = YoloSplit(str(list_file), paths != images.paths(), report,
                                         _labelled(report, read.classes))
    stem = Path(read.path).stem.lower()
    name = Path(read.path).parent.name.lower() if stem == 'data' else stem
    names_file = out / f'{name}.names'
    write_text(names_file, ''.join(f'{n}\n' for n in names))
    lists = {k: s.list_file for k, s in result.splits.items()}
    comment = f'written by python -m yolo_lrm.data.convert yolo {read.path}'
    for suffix, valid in (('', lists.get('valid')), ('-test', lists.get('test'))):
        if suffix and not valid:
            continue
        options = {'classes': read.classes, 'train': lists['train'], 'valid': valid, 'names': names_file,
                   'backup': 'backup', 'eval': 'voc'}
        path = out / f'{name}{suffix}.data'
        write_data_file(path, {k: v for k, v in options.items() if v}, comment)
        result.data_files.append(str(path))
    return result


def _list_paths(images: ImageList, mirror: Path) -> list[str]:
    """The list entries of a split: its images where they are when Darknet's rule finds their label files, else
    links under `mirror` with the label files copied to where the rule looks."""
    paths, labels = images.paths(), images.label_paths()
    _check_shared_labels(paths, labels)
    if all(os.path.normpath(label_path(p)) == os.path.normpath(lab) for p, lab in zip(paths, labels)):
        return paths
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    links = []
    for path, label in zip(paths, labels):
        link = mirror / 'images' / os.path.relpath(path, common)
        target = Path(label_path(str(link)))
        if not target.resolve().is_relative_to(mirror.resolve()) or target == link:
            raise ConvertError(f"Darknet's label rule maps {link} to {target}, outside {mirror}: a folder name on "
                               "the way contains 'images', 'JPEGImages' or 'raw'; choose another --out")
        link_file(link, Path(path))
        if os.path.isfile(label):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(label).read_bytes())
        else:
            target.unlink(missing_ok=True)   # no label file: training skips the image, as it would in place
        links.append(str(link))
    return links


def _check_shared_labels(paths: list[str], labels: list[str]) -> None:
    """Two images of a split must not share a label file (`a.jpg` and `a.png` in one folder)."""
    owner: dict[str, str] = {}
    for path, label in zip(paths, labels):
        other = owner.setdefault(os.path.normpath(label), path)
        if other != path:
            raise ConvertError(f'{other} and {path} share the label file {label}; rename one of them')


def _labelled(report: ScanReport, classes: int) -> np.ndarray:
    """Boxes per class in the label files of the scan's usable images (the list holds absolute paths), as labelled:
    before training drops or clips any; lines that do not parse are not boxes."""
    counts = np.zeros(classes, np.int64)
    for image in report.images:
        rows = parse_label_text(Path(label_path(image)).read_bytes().decode('utf-8-sig', errors='replace'))[0]
        counts += np.bincount(rows[:, 0].astype(np.int64), minlength=classes)[:classes]
    return counts
