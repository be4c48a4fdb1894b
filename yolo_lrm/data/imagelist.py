"""The images of one split and where their label files are: `ImageList`, read from a Darknet list file or made from
a data.yaml's folders and lists (`yolo_lrm.data.datayaml`).

Two label rules, one per kind of data file:
- Darknet (`.data` list files): relative entries are taken from the list file's folder (Darknet: the working
  directory); an image's label file is Darknet's rule (`labels.label_path`) applied to the entry as written, then
  resolved the same way, so an 'images' or 'raw' in the list's own folder path is never rewritten.
- Ultralytics (data.yaml splits): the last `images` folder of the image's absolute path becomes `labels` and the
  extension `.txt` (`/d/train/images/a.jpg` -> `/d/train/labels/a.txt`; without an `images` folder the label file
  sits beside the image), as Ultralytics and the exports made for it (Roboflow, CVAT, Label Studio) place them.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..textfile import read_lines
from .labels import IMAGE_EXTENSIONS, label_path

RULES = ('darknet', 'ultralytics')


class DatasetError(ValueError):
    """A dataset that cannot be trained on as configured (the message names files and lines)."""


@dataclass(frozen=True)
class ImageList:
    """A split's images: `sources` are what it was read from (a list file, or a data.yaml's folders and lists),
    `entries` are as written (Darknet list entries, relative to `base`; absolute paths for a data.yaml split), `rule`
    says how each image's label file is found (see the module docstring), `cache` is where a scan caches it when no
    cache folder is given (beside a `.data`'s list file; None: not cached, e.g. inside a downloaded export)."""
    sources: tuple[str, ...]
    entries: tuple[str, ...]
    base: str
    rule: str = 'darknet'
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f'label rule must be one of {", ".join(RULES)}, got {self.rule!r}')

    @property
    def source(self) -> str:
        """What the list was read from, for messages."""
        return ', '.join(self.sources)

    def paths(self) -> list[str]:
        """The image paths, in list order (relative entries resolved from `base`)."""
        return [resolve_entry(self.base, e) for e in self.entries]

    def label_paths(self) -> list[str]:
        """Each image's label file, by the list's rule."""
        if self.rule == 'darknet':
            return [entry_label_path(self.base, e) for e in self.entries]
        return [ultralytics_label_path(p) for p in self.paths()]

    def cache_file(self, cache_dir: str | os.PathLike | None) -> str | None:
        """Where the scan cache of this list lives: in `cache_dir` under a name unique per source, else `cache`."""
        if cache_dir is None:
            return self.cache
        tag = hashlib.sha1(self.source.encode()).hexdigest()[:10]
        return os.path.join(str(cache_dir), f'{Path(self.sources[0]).name}.{tag}.cache.npz')


def read_list(list_path: str | os.PathLike) -> list[str]:
    """Non-blank lines of a Darknet list file, stripped (raises DatasetError naming the file)."""
    return read_lines(list_path, 'the image list', DatasetError)


def resolve_entry(base: str, entry: str) -> str:
    """A list entry as a path: absolute as written, relative from `base`."""
    return entry if os.path.isabs(entry) else os.path.normpath(os.path.join(base, entry))


def entry_label_path(base: str, entry: str) -> str:
    """The label file of a Darknet list entry: Darknet's rule (`label_path`) on the entry as written, then resolved
    from `base`, the list file's folder.  Applied to the resolved path, the rule would also rewrite an 'images' or
    'raw' in the list's own folder path."""
    return resolve_entry(base, label_path(entry))


def ultralytics_label_path(image: str) -> str:
    """Ultralytics' label file of an image path: its last `images` folder becomes `labels`, its extension `.txt`."""
    parts = image.replace('\\', '/').split('/')
    folders = [i for i, part in enumerate(parts[:-1]) if part == 'images']
    if folders:
        parts[folders[-1]] = 'labels'
    return os.path.splitext('/'.join(parts))[0] + '.txt'


def list_file(list_path: str | os.PathLike) -> ImageList:
    """A Darknet list file (Darknet's label rule; scan cache `<list>.cache.npz` beside it)."""
    path = os.path.abspath(list_path)
    return ImageList((path,), tuple(read_list(path)), os.path.dirname(path), 'darknet', path + '.cache.npz')


def image_list(spec: ImageList | str | os.PathLike) -> ImageList:
    """`spec` if it is an ImageList, else the Darknet list file it names."""
    return spec if isinstance(spec, ImageList) else list_file(spec)


def resolve_list(list_path: str | os.PathLike) -> list[str]:
    """The image paths of a Darknet list file, relative ones taken from the list file's folder."""
    return list_file(list_path).paths()


def folder_images(folder: str | os.PathLike) -> list[str]:
    """The image files under a folder, sub-folders included (not through links: a link cycle would never end),
    sorted by path; hidden files and folders skipped."""
    found = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(top, f) for f in files
                  if not f.startswith('.') and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(os.path.abspath(p) for p in found)
