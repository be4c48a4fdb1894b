"""Writing Darknet dataset layouts: label lines, lists, names and `.data` files, links, parallel maps, summaries."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from .labels import label_path

T = TypeVar('T')
R = TypeVar('R')
_POOL_MIN_ITEMS = 1500  # below this a process pool costs more than it saves


class ConvertError(ValueError):
    """A dataset that cannot be converted (the message names the file)."""


def label_line(cls: int, x: float, y: float, w: float, h: float) -> str:
    """One Darknet label line, numbers as `voc_label.py` writes them (Python's `str(float)`)."""
    return f'{cls} {float(x)!r} {float(y)!r} {float(w)!r} {float(h)!r}\n'


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file, creating its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def write_list(path: str | os.PathLike, images: Iterable[str]) -> int:
    """A Darknet list file, one image path per line; returns the number of lines."""
    lines = list(images)
    write_text(path, ''.join(f'{p}\n' for p in lines))
    return len(lines)


def write_data_file(path: str | os.PathLike, options: dict[str, object], comment: str = '') -> None:
    """A `.data` file with `key=value` lines in the given order (`#` comment lines first)."""
    head = ''.join(f'# {line}\n' for line in comment.splitlines())
    write_text(path, head + ''.join(f'{k}={v}\n' for k, v in options.items()))


def link_dir(link: Path, target: Path) -> None:
    """Make `link` a symlink to the folder `target` (kept if it already points there)."""
    _link(link, target, True)


def link_file(link: Path, target: Path) -> None:
    """Make `link` a symlink to the file `target` (kept if it already points there)."""
    _link(link, target, False)


def _link(link: Path, target: Path, folder: bool) -> None:
    target = target.resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return
        raise ConvertError(f'{link} exists and is not a link to {target}; remove it or choose another --out')
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=folder)


def check_label_paths(images: Sequence[str], labels: Sequence[str]) -> None:
    """Every image must map to its label file under Darknet's rule, or Darknet (and we) would not find it."""
    for image, label in zip(images, labels):
        derived = label_path(image)
        if os.path.normpath(derived) != os.path.normpath(label):
            raise ConvertError(f"Darknet's label rule maps {image} to {derived}, not to the written {label}: a folder "
                               "name on the way contains 'images', 'JPEGImages' or 'raw'; choose another --out")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """`[fn(x) for x in items]`, in a process pool when the list is long and more than one worker is allowed."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(items) < _POOL_MIN_ITEMS:
        return [fn(x) for x in items]
    chunk = max(64, len(items) // (workers * 8))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, items, chunksize=chunk))


def class_table(names: Sequence[str], splits: dict[str, tuple[int, np.ndarray]]) -> list[str]:
    """Summary lines: boxes per class (rows) and split (columns, then the total), then boxes and images per split;
    `splits` maps a split's name to (images, boxes per class)."""
    width = max(12, *(len(n) for n in names)) + 2
    cols = [*splits, 'total']
    counts = [np.asarray(c, np.int64) for _, c in splits.values()]
    total = np.sum(counts, 0) if counts else np.zeros(len(names), np.int64)

    def row(label: str, values: Sequence[int]) -> str:
        return f'{label:<{width}}' + ''.join(f'{int(v):>10d}' for v in values)

    lines = [f'{"class":<{width}}' + ''.join(f'{c[:9]:>10s}' for c in cols)]
    lines += [row(name, [c[k] for c in counts] + [total[k]]) for k, name in enumerate(names)]
    lines.append(row('boxes', [c.sum() for c in counts] + [total.sum()]))
    images = [n for n, _ in splits.values()]
    lines.append(row('images', images + [sum(images)]))
    return lines


def skip_lines(skips: dict[str, list[str]], log_file: str | os.PathLike, shown: int = 5) -> list[str]:
    """Summary lines for counted skips (what was skipped -> one message per item): each count with its first `shown`
    messages; every message is written to `log_file` (the summary says so)."""
    found = {what: items for what, items in skips.items() if items}
    if not found:
        return []
    write_text(log_file, ''.join(f'{what}\t{item}\n' for what, items in found.items() for item in items))
    lines = []
    for what, items in found.items():
        lines.append(f'{what}: {len(items)}')
        lines += [f'  {item}' for item in items[:shown]]
        if len(items) > shown:
            lines.append(f'  ... {len(items) - shown} more')
    return lines + [f'every one listed in {log_file}']
