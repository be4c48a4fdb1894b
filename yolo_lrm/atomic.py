"""Files written whole or not at all: a crash, a kill or a full disk leaves either the old file or the new one, never
a torn one (checkpoints, Darknet weights, scan caches, pictures, experiment records)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, fsync it, then rename it over `path`:
    a crash at any moment leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp creates 0600; give the file what open() would have
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files of `atomic_write` in `folder` that a killed process left; returns their names.
    Call only where no other process is writing (a run's own weights folder at its start)."""
    stale = sorted(Path(folder).glob('.*.tmp'))
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]


def _default_mode() -> int:
    """0666 minus the process umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, from /proc on Linux: os.umask reads it only by setting it, which is not thread-safe (a file
    that another thread creates meanwhile would get the temporary umask)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask
