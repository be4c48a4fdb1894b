"""Ultralytics / Roboflow `data.yaml` files, read with PyYAML the way Ultralytics reads them, into one `ImageList` per
split.

Keys: `path` (the root of relative entries; relative to the YAML's folder; default: the YAML's folder), `train`,
`val` (or `validation`) and `test`, each a folder (its images, sub-folders included), a list file (one image path per
line, relative ones from the list file's folder) or a list of these; `names` (a list, or an `{id: name}` dict with
the ids 0..C-1) and `nc` (checked against `names`; alone it gives the names class0, class1, ...).  Other keys
(`roboflow`, `download`, ...) are ignored.  Label files follow Ultralytics' rule (`imagelist.ultralytics_label_path`).

An entry that does not exist (absolute paths of the exporting machine, `D:/...` or `/content/...`, or Roboflow's
`../train/images` written beside its data.yaml) falls back to the longest tail of it that exists under the root, then
under the YAML's folder, with a warning naming both; if no tail exists, an error naming the entry.  A `path:` that
does not exist falls back to the YAML's folder, with a warning.

The test split: Roboflow writes no `test:` although its export holds `test/images` beside `train/` and `valid/`.
When `test:` is absent and train is such a `<dir>/train/images` folder, `<dir>/test/images` is the test split (a note
says so).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

import yaml

from ..cfg import CfgError
from ..textfile import read_text
from .imagelist import DatasetError, ImageList, folder_images, read_list, resolve_entry

SPLIT_KEYS = {'train': 'train', 'val': 'valid', 'validation': 'valid', 'test': 'test'}  # YAML key -> .data key
YAML_SUFFIXES = ('.yaml', '.yml')


@dataclass
class DataYaml:
    """A read data.yaml: its classes (`names` None when only `nc` is given), the splits under the `.data` keys
    (train, valid, test), and what was assumed on the way (`warnings`: entries found elsewhere; `notes`)."""
    path: str
    classes: int
    names: list[str] | None
    splits: dict[str, ImageList]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _Where:
    """`file:line` of a data.yaml's top-level keys, for messages."""

    def __init__(self, path: str, text: str):
        self.path = path
        node = yaml.compose(text)
        self.lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} \
            if isinstance(node, yaml.MappingNode) else {}

    def __call__(self, key: str | None = None) -> str:
        line = self.lines.get(key) if key else None
        return f'{self.path}:{line}' if line else self.path


def read_data_yaml(path: str | os.PathLike) -> DataYaml:
    """Read a data.yaml (see the module docstring); CfgError naming the file (and line) on bad input."""
    path = os.path.abspath(path)
    text = read_text(path, 'data file', CfgError)
    try:
        raw = yaml.safe_load(text)
        where = _Where(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        at = f':{mark.line + 1}' if mark else ''
        raise CfgError(f'{path}{at}: not valid YAML ({getattr(exc, "problem", None) or exc})') from None
    if not isinstance(raw, dict):
        raise CfgError(f'{path}: expected keys such as train:, val: and names:, got {type(raw).__name__}')
    home = os.path.dirname(path)
    warnings: list[str] = []
    root = _root(raw.get('path'), home, where, warnings)
    classes, names = _classes(raw, where)
    splits: dict[str, ImageList] = {}
    for key, split in SPLIT_KEYS.items():
        value = raw.get(key)
        if value not in (None, '', []) and split not in splits:
            splits[split] = _split(value, key, root, home, where, warnings)
    if 'train' not in splits:
        raise CfgError(f'{where("train")}: no train: entry (the folder, list file or list of them that holds the '
                       f'training images)')
    notes = []
    if 'test' not in splits:
        test = _roboflow_test(splits['train'])
        if test is not None:
            splits['test'] = test
            notes.append(f'{path}: no test: entry; the test split is {test.source}, the test/images folder of the '
                         f'Roboflow export beside train/images')
    return DataYaml(path, classes, names, splits, warnings, notes)


def _root(value: Any, home: str, where: _Where, warnings: list[str]) -> str:
    """The folder relative entries are taken from: `path:` (relative to the YAML's folder), else the YAML's folder."""
    if value in (None, ''):
        return home
    if not isinstance(value, str):
        raise CfgError(f'{where("path")}: path: expected a folder, got {value!r}')
    root = resolve_entry(home, value)
    if os.path.isdir(root):
        return root
    warnings.append(f'{where("path")}: path: {value} not found ({root}); relative entries are taken from the '
                    f"YAML's folder {home} instead")
    return home


def _classes(raw: dict, where: _Where) -> tuple[int, list[str] | None]:
    """The class count and names from `names` (a list or an {id: name} dict) and `nc`, checked against each other."""
    names, nc = raw.get('names'), raw.get('nc')
    if isinstance(names, dict):
        ids = list(names)
        if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
            raise CfgError(f'{where("names")}: names: the ids of an {{id: name}} mapping must be 0..{len(ids) - 1}, '
                           f'got {", ".join(map(str, ids))}')
        names = [names[i] for i in range(len(ids))]
    if names is not None:
        if not isinstance(names, list) or not names or any(isinstance(n, (dict, list)) or n is None for n in names):
            raise CfgError(f'{where("names")}: names: expected a list of class names or an {{id: name}} mapping, '
                           f'got {names!r}')
        names = [str(n) for n in names]
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc <= 0):
        raise CfgError(f'{where("nc")}: nc: expected a positive number of classes, got {nc!r}')
    if names is None and nc is None:
        raise CfgError(f'{where.path}: no names: and no nc: (the classes of the dataset)')
    if names is not None and nc is not None and nc != len(names):
        raise CfgError(f'{where("nc")}: nc: {nc} but names lists {len(names)} classes')
    return (len(names) if names is not None else nc), names


def _split(value: Any, key: str, root: str, home: str, where: _Where, warnings: list[str]) -> ImageList:
    """The images of one split entry: a folder, a list file, or a list of them (in order)."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) and item for item in items):
        raise CfgError(f'{where(key)}: {key}: expected a folder, a list file or a list of them, got {value!r}')
    sources, images = [], []
    for item in items:
        found = _locate(item, key, root, home, where, warnings)
        sources.append(found)
        if os.path.isdir(found):
            listed = folder_images(found)
        else:
            try:
                listed = [resolve_entry(os.path.dirname(found), e) for e in read_list(found)]
            except DatasetError as exc:
                raise CfgError(f'{where(key)}: {key}: {exc}') from None
        if not listed:
            raise CfgError(f'{where(key)}: {key}: {found} holds no images')
        images += listed
    return ImageList(tuple(sources), tuple(images), root, 'ultralytics', None)


def _locate(item: str, key: str, root: str, home: str, where: _Where, warnings: list[str]) -> str:
    """Where an entry is: as written (from the root), else the longest tail of it under the root or the YAML's
    folder (a warning says which), else an error naming the entry."""
    direct = resolve_entry(root, item)
    if os.path.exists(direct):
        return direct
    # parse as Windows paths too: an export made on Windows writes D:\... or D:/...
    parts = [p for p in PureWindowsPath(item).parts if p not in ('.', '..') and not PureWindowsPath(p).anchor]
    bases = list(dict.fromkeys((root, home)))
    for start in range(len(parts)):
        for base in bases:
            candidate = os.path.join(base, *parts[start:])
            if os.path.exists(candidate):
                warnings.append(f'{where(key)}: {key}: {item} not found ({direct}); using {candidate}')
                return candidate
    raise CfgError(f'{where(key)}: {key}: {item} not found ({direct}), and no part of it under '
                   + ' or '.join(bases))


def _roboflow_test(train: ImageList) -> ImageList | None:
    """Roboflow's test split: `<dir>/test/images` when train is the single folder `<dir>/train/images`."""
    if len(train.sources) != 1 or not os.path.isdir(train.sources[0]):
        return None
    folder = os.path.normpath(train.sources[0])
    split_dir, images = os.path.split(folder)
    if images != 'images' or os.path.basename(split_dir) != 'train':
        return None
    test = os.path.join(os.path.dirname(split_dir), 'test', 'images')
    listed = folder_images(test) if os.path.isdir(test) else []
    return ImageList((test,), tuple(listed), train.base, 'ultralytics', None) if listed else None
