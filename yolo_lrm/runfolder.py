"""Output folders of the commands that write runs (`runs/train/exp`, `runs/detect/exp2`, ...): named, checked, made.

Its own module so that inference and training share it without the detector reaching into the training code.
"""
from __future__ import annotations

import os
from pathlib import Path


def increment_dir(path: str | os.PathLike, exist_ok: bool = False) -> Path:
    """`runs/train/exp` (or `runs/detect/exp`), then `exp2`, `exp3`, ... (the first that does not exist), created."""
    path = Path(path)
    check_parent_dir(path.parent, f'the parent folder of {path.name}')
    if not exist_ok and path.exists():
        n = 2
        while (path.parent / f'{path.name}{n}').exists():
            n += 1
        path = path.parent / f'{path.name}{n}'
    if path.exists() and not path.is_dir():
        raise FileExistsError(f'{path}: exists and is not a folder')
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_parent_dir(path: str | os.PathLike, what: str) -> None:
    """Fail now, naming `what`, when folder `path` could not be created or written (a file in the way, no
    permission); creates nothing."""
    path = Path(os.path.abspath(path))
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f'{what} {path}: {existing} is a file, not a folder')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f'{what} {path}: {existing} is not writable')
