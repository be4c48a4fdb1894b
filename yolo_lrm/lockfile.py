"""A run folder's owner: `train.lock` (pid, host, start time) is created with O_EXCL before a training run writes
anything into its folder and removed when the run ends, so a second `train.py --exist-ok` or `--resume` on a folder
whose run is still going is refused instead of mixing its files in.  A lock whose pid is no longer running on this
host is stale (the owner was killed): it is taken over with a warning.  A lock from another host is never taken
over (its pid cannot be checked from here): the message says to delete it if that run is gone."""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

LOCK_NAME = 'train.lock'
_UNWRITTEN_GRACE_S = 10.0  # an empty lock younger than this is an owner between its create and its write


class RunLocked(FileExistsError):
    """The run folder belongs to a training run that is still going (the message names the folder and the pid)."""


@dataclass
class RunLock:
    """A held lock; `release()` removes it (only while it still names this process)."""
    path: Path
    owner: dict

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if _read_owner(self.path) == self.owner:
            self.path.unlink(missing_ok=True)


def acquire(folder: str | os.PathLike, warn: Callable[[str], None]) -> RunLock:
    """Own `folder` for this process: create its lock with O_EXCL, taking over a stale one (said through `warn`).
    Raises RunLocked when a live run owns it, PermissionError naming the folder when it cannot be written."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    owner = {'pid': os.getpid(), 'host': socket.gethostname(),
             'started': time.strftime('%Y-%m-%d %H:%M:%S %z')}
    for _ in range(3):  # a takeover can race with another process's: try again, then give up
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _check_stale(folder, path, warn)
            continue
        except OSError as exc:
            raise PermissionError(f'{folder}: cannot write in the run folder ({exc.strerror})') from None
        with os.fdopen(fd, 'w') as f:
            f.write(json.dumps(owner) + '\n')
        return RunLock(path, owner)
    raise RunLocked(f'{folder}: another training run keeps taking this folder ({path.name}); try again')


def _check_stale(folder: Path, path: Path, warn: Callable[[str], None]) -> None:
    """Raise RunLocked if the lock's owner may be alive; else remove the stale lock and say so."""
    owner = _read_owner(path)
    if owner is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return
        if age < _UNWRITTEN_GRACE_S:
            raise RunLocked(f'{folder}: a training run is starting in this folder ({path.name} was just created)')
        warn(f'warning: {folder}: removing an unreadable {path.name} left by a run that died while starting')
    else:
        pid, host, started = owner.get('pid'), owner.get('host'), owner.get('started', '?')
        if host != socket.gethostname():
            raise RunLocked(f'{folder}: in use by the training run of pid {pid} on host {host} (started {started}); '
                            f'if that run is gone, delete {path}')
        if _alive(pid):
            raise RunLocked(f'{folder}: in use by the training run of pid {pid} (started {started}); wait for it to '
                            f'end or stop it, or choose another --name')
        warn(f'warning: {folder}: taking over from the run of pid {pid} (started {started}), which is no longer '
             f'running')
    path.unlink(missing_ok=True)


def _read_owner(path: Path) -> dict | None:
    """The lock's owner record, or None when the file is missing, empty or not ours."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get('pid'), int) else None


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True
