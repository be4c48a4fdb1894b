"""Data files: Darknet's `.data` and Ultralytics' `data.yaml`, read into one `DataCfg` that every command takes.

`.data` (Darknet `key=value` lines, strict keys, `#`/`;` comments, the first occurrence of a key wins): path values
are taken from the `.data` file's folder (Darknet: the working directory); `train=`/`valid=`/`test=` are Darknet list
files (`imagelist.list_file`).

`data.yaml` (`.yaml`/`.yml`, see `datayaml.py`): `train`/`val`/`test` become the `train`/`valid`/`test` splits,
`names`/`nc` the classes; the rest takes the `.data` defaults except where they would write into the dataset's
folders: no `backup=` (Darknet's backups only with `--backup DIR`; the run folder keeps `last.weights`), and
`results=` is `results/` of the working directory.  Its warnings (entries found elsewhere) are logged once per process.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ..cfg import REQUIRED, CfgError, one_of
from ..textfile import read_lines, read_text
from .datayaml import SPLIT_KEYS, YAML_SUFFIXES, read_data_yaml
from .imagelist import ImageList, list_file

log = logging.getLogger('yolo_lrm.data')

DATA_KEYS: dict[str, tuple[Callable[[str], Any], Any]] = {
    'classes': (int, REQUIRED), 'train': (str, ''), 'valid': (str, ''), 'test': (str, ''),
    'names': (str, ''), 'backup': (str, 'backup'), 'results': (str, 'results'),
    'eval': (one_of('voc', 'kitti', 'coco'), 'voc'),
    'annotations': (str, ''),    # VOC XML folder for VOC-style scoring of `valid`
    'kitti_labels': (str, ''),   # KITTI label_2 folder for the official KITTI protocol
    'map': (str, ''),
    'generate': (str, ''),       # a built-in dataset to generate on first use (yolo_lrm.data.prepare_data)
}
_DATA_PATH_KEYS = ('train', 'valid', 'test', 'names', 'backup', 'results', 'annotations', 'kitti_labels', 'map')
_warned: set[str] = set()   # data.yaml warnings already logged by this process (each command parses more than once)


@dataclass
class DataCfg:
    """A parsed data file; path values are absolute (relative ones resolve from the `.data` file's folder).  A
    data.yaml's splits are in `splits` (read when parsed) and its class names in `class_names`; `options` then names
    each split's folders and lists for messages."""
    path: str
    classes: int
    options: dict[str, Any]
    splits: dict[str, ImageList] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def has(self, key: str) -> bool:
        """Whether the file gives split `train`, `valid` or `test` (a data.yaml's split or a `.data` list)."""
        return key in self.splits or bool(self[key])

    def images(self, key: str) -> ImageList:
        """The images of `train`, `valid` or `test`: a data.yaml's split, or the `.data`'s list file, read now."""
        if key in self.splits:
            return self.splits[key]
        if not self[key]:
            raise CfgError(f'{self.path}: no {key}= list')
        return list_file(self[key])

    @property
    def named(self) -> bool:
        """Whether the file names its classes (`names=`, or a data.yaml's `names`)."""
        return bool(self.options['names']) or self.class_names is not None

    def require(self, *keys: str) -> None:
        """The files these keys name (those that are set) must exist (a data.yaml's splits were found when it was
        read).  Else one CfgError naming every missing file and repeating the commands the `.data` file's comments
        give (a dataset's recipe is written there, e.g. the conversion that makes its folder)."""
        missing = [f'{key}={self[key]}' for key in keys
                   if self[key] and key not in self.splits and not os.path.exists(self[key])]
        if not missing:
            return
        comments = [ln.lstrip('#').strip() for ln in read_text(self.path, 'data file', CfgError).splitlines()
                    if ln.startswith('#')]
        recipe = [c for c in comments if c.startswith(('python ', 'python3 ', 'bash '))]
        raise CfgError(f'{self.path}: {", ".join(missing)} not found' + (
            '; the file says to make it with:\n' + '\n'.join(f'    {r}' for r in recipe) if recipe else
            ' (make the dataset first, e.g. python -m yolo_lrm.data.convert voc|kitti|yolo|coco ...)'))

    def names(self) -> list[str]:
        """Class names: a data.yaml's, or `names=` (one per line) checked against `classes=`, or `class<i>`."""
        if self.class_names is not None:
            return list(self.class_names)
        if not self.options['names']:
            return [f'class{i}' for i in range(self.classes)]
        path = self.options['names']
        names = read_lines(path, f'the names file of {self.path}', CfgError)
        if len(names) != self.classes:
            raise CfgError(f'{self.path}: classes={self.classes} but {path} lists {len(names)} names')
        return names

    def to_text(self) -> str:
        """The file as a run folder keeps it: `.data` lines of the set keys, or a data.yaml with absolute paths."""
        if not self.splits:
            return ''.join(f'{k}={v}\n' for k, v in self.options.items() if v not in ('', None))
        yaml_keys = {split: key for key, split in reversed(SPLIT_KEYS.items())}   # valid -> val
        doc: dict[str, Any] = {yaml_keys[split]: list(images.sources) if len(images.sources) > 1 else
                               images.sources[0] for split, images in self.splits.items()}
        doc.update(nc=self.classes, names=self.names())
        return f'# {self.path}, its folders and lists resolved\n' + yaml.safe_dump(doc, sort_keys=False,
                                                                                  allow_unicode=True)


def parse_data(path: str | os.PathLike) -> DataCfg:
    """Read a data file: a data.yaml (`.yaml`/`.yml`) or a Darknet `.data` (any other name)."""
    if Path(path).suffix.lower() in YAML_SUFFIXES:
        return _parse_yaml(path)
    return _parse_darknet(str(path))


def _parse_darknet(path: str) -> DataCfg:
    """A Darknet `.data` file (strict keys; relative paths are taken from the file's folder, not the cwd)."""
    text = read_text(path, 'data file', CfgError)
    base = Path(path).resolve().parent
    options: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in '#;':
            continue
        key, sep, value = (part.strip() for part in line.partition('='))
        if not sep:
            raise CfgError(f'{path}:{lineno}: expected key=value, got {line!r}')
        if key not in DATA_KEYS:
            raise CfgError(f'{path}:{lineno}: unknown key {key!r}; accepted keys: {", ".join(DATA_KEYS)}')
        if key in options:
            continue
        try:
            options[key] = DATA_KEYS[key][0](value)
        except ValueError as exc:
            raise CfgError(f'{path}:{lineno}: key {key!r}: cannot parse {value!r} ({exc})') from None
    for key, (parser, default) in DATA_KEYS.items():
        if key not in options:
            if default is REQUIRED:
                raise CfgError(f'{path}: missing required key {key!r}')
            options[key] = default
    for key in _DATA_PATH_KEYS:
        if options[key] and not os.path.isabs(options[key]):
            options[key] = str(base / options[key])
    if options['classes'] <= 0:
        raise CfgError(f'{path}: classes must be positive, got {options["classes"]}')
    return DataCfg(path, options['classes'], options)


def _parse_yaml(path: str | os.PathLike) -> DataCfg:
    """A data.yaml as a DataCfg (see the module docstring for the keys it implies)."""
    read = read_data_yaml(path)
    for message in read.warnings:
        if message not in _warned:
            _warned.add(message)
            log.warning(message)
    options = {key: default for key, (_, default) in DATA_KEYS.items() if default is not REQUIRED}
    options.update({split: images.source for split, images in read.splits.items()}, classes=read.classes,
                   backup='', results=os.path.abspath('results'))
    return DataCfg(str(path), read.classes, options, read.splits, read.names)
