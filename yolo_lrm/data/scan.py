"""Dataset scan: reads an image list once, checks every image and label file, and reports what it found.

Nothing bad crashes the scan and nothing disappears silently: every skipped image, skipped line, clipped, dropped or
duplicate box, and every JPEG with an EXIF orientation other than 1 (used as stored, as Darknet does), is an `Issue`
(kind, file, line, detail), counted in the report and written to the log file.  The one error is a class id outside
`0..classes-1`: it means the data file's class count does not fit the labels, so `ScanReport.raise_errors` stops with
the first locations; `require_boxes` is the training set's (no usable box at all), and `warnings` what the console
says beyond the counts (most label lines malformed, EXIF-rotated images).

The images come as an `ImageList` (a Darknet list file, or a data.yaml split; `imagelist.py` says where each label
file is).  Parsed labels and image sizes are cached in a `.npz` file keyed by each file's size and mtime, so a second
start reads only what changed.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .imagelist import DatasetError, ImageList, image_list
from .labels import ImageError, image_header, malformed_reason, parse_label_text, raw_rule_hint

log = logging.getLogger('yolo_lrm.data')

# kind -> what happened to the file / line / box
ISSUE_KINDS = {
    'image_missing': 'image skipped', 'image_unreadable': 'image skipped', 'image_corrupt': 'image skipped',
    'label_missing': 'image skipped', 'label_unreadable': 'image skipped', 'image_duplicate': 'kept',
    'line_malformed': 'line skipped', 'box_clipped': 'box clipped to the image', 'box_dropped': 'box dropped',
    'box_duplicate': 'box dropped', 'class_out_of_range': 'ERROR', 'image_rotated': 'kept, used as stored',
}
IMAGE_SKIPS = tuple(k for k, v in ISSUE_KINDS.items() if v == 'image skipped')
CACHE_VERSION = 2
_MOSTLY_MALFORMED = 0.5  # above this share of malformed label lines the console says so, not only the log
_EDGE_TOL = 1e-6  # label edges within this of [0, 1] are clipped without an issue (float rounding)


@dataclass
class Issue:
    """One finding of the scan."""
    kind: str
    path: str
    line: int
    detail: str

    def __str__(self) -> str:
        where = f'{self.path}:{self.line}' if self.line else self.path
        return f'{self.kind}\t{where}\t{self.detail} ({ISSUE_KINDS[self.kind]})'


@dataclass
class ScanReport:
    """What a scan found: the usable images with their boxes, counts per issue kind, per-class instances."""
    list_path: str
    num_classes: int
    entries: int
    images: list[str]
    sizes: np.ndarray           # (N, 2) int32 width, height of each usable image
    boxes: np.ndarray           # (M, 5) float32 class, cx, cy, w, h of all usable images, concatenated
    offsets: np.ndarray         # (N + 1,) int64: image i owns boxes[offsets[i]:offsets[i + 1]]
    labels_empty: int
    per_class: np.ndarray       # (classes,) int64 instances
    issues: list[Issue] = field(default_factory=list)
    lines: int = 0              # non-blank label lines read (malformed ones included)
    from_cache: int = 0
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        """Number of issues of one kind."""
        return sum(1 for i in self.issues if i.kind == kind)

    def labels(self, i: int) -> np.ndarray:
        """Boxes (n, 5) of usable image i."""
        return self.boxes[self.offsets[i]:self.offsets[i + 1]]

    def errors(self) -> list[Issue]:
        """Issues that make the dataset unusable as configured (class ids out of range)."""
        return [i for i in self.issues if i.kind == 'class_out_of_range']

    def raise_errors(self) -> None:
        """Raise DatasetError naming the first bad class ids, if any."""
        errors = self.errors()
        if errors:
            where = '\n  '.join(f'{e.path}:{e.line}: {e.detail}' for e in errors[:5])
            raise DatasetError(f'{self.list_path}: {len(errors)} boxes have a class id outside 0..'
                               f'{self.num_classes - 1}; is classes={self.num_classes} of the data file right?'
                               f'\n  {where}' + ('\n  ...' if len(errors) > 5 else ''))

    def skipped_images(self) -> list[str]:
        """The entries the scan left out, as "path: reason"."""
        return [f'{i.path}: {i.detail}' for i in self.issues if i.kind in IMAGE_SKIPS]

    def require_boxes(self) -> None:
        """Raise DatasetError when no usable image has a usable box (training would learn background only)."""
        if len(self.boxes):
            return
        first = next((i for i in self.issues if i.kind in ('line_malformed', 'box_dropped')), None)
        why = f'; the first skipped: {first.path}:{first.line}: {first.detail}' if first else ''
        raise DatasetError(f'{self.list_path}: no usable box in its {len(self.images)} usable images '
                           f'({self.count("line_malformed")} malformed label lines, {self.count("box_dropped")} '
                           f'boxes dropped){why}')

    def warnings(self) -> list[str]:
        """What the console must say beyond the counts: most label lines malformed, EXIF-rotated images."""
        out = []
        malformed = [i for i in self.issues if i.kind == 'line_malformed']
        if malformed and len(malformed) > _MOSTLY_MALFORMED * self.lines:
            m = malformed[0]
            out.append(f'{len(malformed)} of {self.lines} label lines are malformed and skipped (the first: '
                       f'{m.path}:{m.line}: {m.detail})')
        rotated = [i for i in self.issues if i.kind == 'image_rotated']
        if rotated:
            out.append(f'{len(rotated)} images carry an EXIF orientation other than 1 (the first: {rotated[0].path}); '
                       f'they are used as stored, as Darknet does: their labels must follow the stored pixels, not '
                       f'the rotated view of EXIF-aware tools')
        return out

    def table(self, names: list[str] | None = None) -> str:
        """A short printable summary."""
        c = self.count
        lines = [
            f'dataset {self.list_path}: {self.entries} entries, {len(self.images)} usable images, '
            f'{len(self.boxes)} boxes ({self.seconds:.2f} s, {self.from_cache} label files from cache)',
            f'  images  missing {c("image_missing")}  corrupt {c("image_corrupt")}  unreadable '
            f'{c("image_unreadable")}  duplicate entries {c("image_duplicate")}  EXIF-rotated {c("image_rotated")}',
            f'  labels  missing {c("label_missing")}  unreadable {c("label_unreadable")}  empty (background) '
            f'{self.labels_empty}  malformed lines {c("line_malformed")}',
            f'  boxes   clipped {c("box_clipped")}  dropped {c("box_dropped")}  duplicates {c("box_duplicate")}'
            f'  class id out of range {c("class_out_of_range")}',
            '  class' + ' ' * 17 + 'instances',
        ]
        for k, n in enumerate(self.per_class):
            name = names[k] if names and k < len(names) else f'class{k}'
            lines.append(f'  {k:3d} {name[:18]:<18s} {int(n):9d}')
        return '\n'.join(lines)

    def write_log(self, path: str | os.PathLike, append: bool = False) -> None:
        """Write every issue, one per line (`kind<TAB>file[:line]<TAB>detail (what happened)`), after a header."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'a' if append else 'w') as f:
            f.write(f'# scan of {self.list_path}: {len(self.issues)} issues\n')
            f.writelines(f'{issue}\n' for issue in self.issues)


# ------------------------------------------------------------------------------------------------------ cache
class _Cache:
    """Image sizes and parsed label files keyed by (path, file size, mtime_ns)."""

    def __init__(self, path: str | None):
        self.path = path
        self.images: dict[str, tuple[int, ...]] = {}  # path -> size, mtime, w, h (w = -1: corrupt), orientation
        self.labels: dict[str, tuple[int, int, np.ndarray, np.ndarray, list]] = {}
        self.used: set[str] = set()        # entries this scan looked up: only these are saved again
        self.dirty = False
        if path and os.path.isfile(path):
            try:
                self._load(path)
            except (OSError, ValueError, KeyError) as exc:
                log.warning('%s: ignoring unreadable cache (%s)', path, exc)
                self.images, self.labels = {}, {}

    def _load(self, path: str) -> None:
        with np.load(path, allow_pickle=False) as z:
            if int(z['version']) != CACHE_VERSION:
                return
            for p, meta in zip(z['img_paths'].tolist(), z['img_meta'].tolist()):
                self.images[p] = tuple(meta)
            off, rows, lines = z['lab_off'], z['rows'], z['lines']
            bad = json.loads(str(z['malformed']))
            for i, (p, meta) in enumerate(zip(z['lab_paths'].tolist(), z['lab_meta'].tolist())):
                a, b = off[i], off[i + 1]
                self.labels[p] = (meta[0], meta[1], rows[a:b], lines[a:b], [tuple(x) for x in bad[i]])

    def image(self, path: str, st: os.stat_result) -> tuple[int, int, int] | None:
        self.used.add(path)
        hit = self.images.get(path)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2], hit[3], hit[4]
        return None

    def label(self, path: str, st: os.stat_result):
        self.used.add(path)
        hit = self.labels.get(path)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2:]
        return None

    def save(self) -> None:
        stale = (set(self.images) | set(self.labels)) - self.used
        if not self.path or not (self.dirty or stale):
            return
        images = {p: v for p, v in self.images.items() if p in self.used}
        labs = [(p, v) for p, v in self.labels.items() if p in self.used]
        counts = [len(v[2]) for _, v in labs]
        arrays = dict(
            version=np.array(CACHE_VERSION),
            img_paths=np.array(list(images), dtype=str),
            img_meta=np.array(list(images.values()), dtype=np.int64).reshape(-1, 5),
            lab_paths=np.array([p for p, _ in labs], dtype=str),
            lab_meta=np.array([v[:2] for _, v in labs], dtype=np.int64).reshape(-1, 2),
            lab_off=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
            rows=np.concatenate([v[2] for _, v in labs] or [np.zeros((0, 5), np.float32)]),
            lines=np.concatenate([v[3] for _, v in labs] or [np.zeros(0, np.int32)]),
            malformed=np.array(json.dumps([v[4] for _, v in labs])),
        )
        try:
            atomic_write(self.path, lambda f: np.savez(f, **arrays))
        except OSError as exc:
            log.warning('%s: cannot write the label cache (%s); the next start scans again', self.path, exc)


# ------------------------------------------------------------------------------------------------------- scan
def _check_image(path: str, cache: _Cache, issues: list[Issue]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        issues.append(Issue('image_missing', path, 0, 'no such file'))
        return None
    except OSError as exc:
        issues.append(Issue('image_unreadable', path, 0, exc.strerror or str(exc)))
        return None
    size = cache.image(path, st)
    if size is None:
        try:
            size = image_header(path)
        except ImageError:
            size = (-1, -1, 1)
        except OSError as exc:
            issues.append(Issue('image_unreadable', path, 0, exc.strerror or str(exc)))
            return None
        cache.images[path] = (st.st_size, st.st_mtime_ns, *size)
        cache.dirty = True
    if size[0] < 0:
        issues.append(Issue('image_corrupt', path, 0, 'not a readable image (bad or truncated header)'))
        return None
    if size[2] != 1:
        issues.append(Issue('image_rotated', path, 0, f'EXIF orientation {size[2]}'))
    return size[:2]


def _read_label(path: str, hint: str, cache: _Cache, issues: list[Issue]):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        issues.append(Issue('label_missing', path, 0, 'no label file' + hint))
        return None, False
    except OSError as exc:
        issues.append(Issue('label_unreadable', path, 0, exc.strerror or str(exc)))
        return None, False
    hit = cache.label(path, st)
    if hit is not None:
        return hit, True
    try:
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8-sig', errors='replace')  # a bad byte spoils its line only: logged, not fatal
    except OSError as exc:
        issues.append(Issue('label_unreadable', path, 0, exc.strerror or str(exc)))
        return None, False
    parsed = parse_label_text(text)
    cache.labels[path] = (st.st_size, st.st_mtime_ns, *parsed)
    cache.dirty = True
    return parsed, False


def scan_dataset(split: ImageList | str | os.PathLike, num_classes: int, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True) -> ScanReport:
    """Scan an image list (an ImageList, or a Darknet list file): check images (header) and labels, clip/drop/dedupe
    boxes, count everything."""
    start = time.perf_counter()
    listed = image_list(split)
    cache = _Cache(listed.cache_file(cache_dir) if use_cache else None)
    issues: list[Issue] = []
    entries = listed.entries
    seen: set[str] = set()
    images, sizes, label_files, parsed, empty, from_cache, lines_read = [], [], [], [], 0, 0, 0
    for entry, image, lpath in zip(entries, listed.paths(), listed.label_paths()):
        if image in seen:
            issues.append(Issue('image_duplicate', image, 0, 'listed more than once'))
        seen.add(image)
        size = _check_image(image, cache, issues)
        if size is None:
            continue
        hint = raw_rule_hint(entry) if listed.rule == 'darknet' else ''
        result, cached = _read_label(lpath, hint, cache, issues)
        if result is None:
            continue
        from_cache += cached
        rows, lines, bad = result
        issues.extend(Issue('line_malformed', lpath, ln, f'{malformed_reason(text)}: {text!r}') for ln, text in bad)
        lines_read += len(rows) + len(bad)
        empty += len(rows) == 0 and not bad
        images.append(image)
        sizes.append(size)
        label_files.append(lpath)
        parsed.append((rows, lines))
    cache.save()
    boxes, offsets, box_issues = _clean_boxes(parsed, label_files, num_classes)
    issues.extend(box_issues)
    per_class = np.bincount(boxes[:, 0].astype(np.int64), minlength=num_classes)[:num_classes] if len(boxes) \
        else np.zeros(num_classes, np.int64)
    return ScanReport(listed.source, num_classes, len(entries), images, np.array(sizes, np.int32).reshape(-1, 2),
                      boxes, offsets, empty, per_class, issues, lines_read, from_cache, time.perf_counter() - start)


def _clean_boxes(parsed: list[tuple[np.ndarray, np.ndarray]], files: list[str],
                 num_classes: int) -> tuple[np.ndarray, np.ndarray, list[Issue]]:
    """Vectorised over all boxes: class range, duplicates, clipping to [0, 1], degenerate boxes."""
    rows = np.concatenate([r for r, _ in parsed] or [np.zeros((0, 5), np.float32)])
    lines = np.concatenate([ln for _, ln in parsed] or [np.zeros(0, np.int32)])
    owner = np.repeat(np.arange(len(parsed)), [len(r) for r, _ in parsed])
    issues: list[Issue] = []
    keep = np.ones(len(rows), dtype=bool)

    cls = rows[:, 0]
    for i in np.flatnonzero((cls < 0) | (cls >= num_classes)):
        issues.append(Issue('class_out_of_range', files[owner[i]], int(lines[i]), f'class {int(cls[i])}'))
    keep &= (cls >= 0) & (cls < num_classes)

    # duplicates: identical (file, row); the first occurrence stays
    if len(rows):
        key = np.concatenate((owner[:, None].astype(np.float64), rows.astype(np.float64)), 1)
        _, first = np.unique(key, axis=0, return_index=True)
        dup = np.ones(len(rows), dtype=bool)
        dup[first] = False
        for i in np.flatnonzero(dup & keep):
            issues.append(Issue('box_duplicate', files[owner[i]], int(lines[i]), 'same line as an earlier one'))
        keep &= ~dup

    cx, cy, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    x1, x2, y1, y2 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
    outside = (x1 < -_EDGE_TOL) | (y1 < -_EDGE_TOL) | (x2 > 1 + _EDGE_TOL) | (y2 > 1 + _EDGE_TOL)
    x1, x2 = np.clip(x1, 0, 1), np.clip(x2, 0, 1)
    y1, y2 = np.clip(y1, 0, 1), np.clip(y2, 0, 1)
    degenerate = (w <= 0) | (h <= 0) | (x2 <= x1) | (y2 <= y1)
    for i in np.flatnonzero(degenerate & keep):
        issues.append(Issue('box_dropped', files[owner[i]], int(lines[i]),
                            f'empty or outside the image: cx,cy,w,h = {_fmt(rows[i, 1:])}'))
    keep &= ~degenerate
    for i in np.flatnonzero(outside & keep):
        issues.append(Issue('box_clipped', files[owner[i]], int(lines[i]),
                            f'extends outside [0, 1]: cx,cy,w,h = {_fmt(rows[i, 1:])}'))
    clean = np.stack((cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), 1).astype(np.float32)[keep]
    counts = np.bincount(owner[keep], minlength=len(parsed))
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    issues.sort(key=lambda i: (i.path, i.line))
    return clean, offsets, issues


def _fmt(values: np.ndarray) -> str:
    return ', '.join(f'{v:.4g}' for v in values)
