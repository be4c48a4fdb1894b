"""Making sure a `.data` file's dataset exists: built-in datasets (`generate=demo`) are generated on first use."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..cfg import CfgError
from .datafile import DataCfg, parse_data
from .loader import process_alive

_LOCK_NAME = '.generate.lock'
_LOCK_WAIT_S = 1800


@contextmanager
def _generation_lock(folder: Path) -> Iterator[None]:
    """One generator per folder at a time (e.g. DDP ranks starting together); a dead holder's lock is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / _LOCK_NAME
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                holder = 0
            if holder and not process_alive(holder):
                lock.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f'{lock}: another process has been generating for {_LOCK_WAIT_S} s') from None
            time.sleep(0.5)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _required(data: DataCfg) -> list[str]:
    return [data[k] for k in ('train', 'valid', 'names', 'annotations') if data[k]]


def _refuse_foreign_files(folder: Path, data: DataCfg, preset: str) -> None:
    """A folder that holds the generator's file names but no stamp of it is the user's: never overwrite it."""
    from .synthetic import OUTPUTS, STAMP_FILE
    if (folder / STAMP_FILE).exists():
        return
    found = [name for name in OUTPUTS if (folder / name).exists()]
    if found:
        raise CfgError(f'{data.path}: generate={preset} would write the built-in dataset into {folder}, which holds '
                       f'files it did not generate ({", ".join(found)}); point train= into an empty folder, or '
                       f'remove generate= to use the files that are there')


def _generate(folder: Path, preset: str) -> None:
    """Write built-in dataset `preset` into `folder`, saying why and how long it took."""
    from .synthetic import STAMP_FILE, generate
    stamp = folder / STAMP_FILE
    stamp_text = stamp.read_text() if stamp.exists() else ''
    why = 'first use' if not stamp_text else 'an earlier generation did not finish' \
        if stamp_text.rstrip().endswith('(unfinished)') else 'the generator changed'
    print(f'generating the {preset} dataset into {folder} ({why}) ...', file=sys.stderr, flush=True)
    start = time.perf_counter()
    counts = generate(folder, preset)
    print(f"  {counts['train']} train / {counts['test']} test images in {time.perf_counter() - start:.1f} s",
          file=sys.stderr, flush=True)


def prepare_data(data_cfg: DataCfg | str | os.PathLike) -> DataCfg:
    """Parse (if given a path) and return the `.data` config, generating a built-in dataset first when the file asks
    for one (`generate=<preset>`) and its train/valid/names/annotations paths are missing or were written by another
    generator version or settings.  The dataset goes into the folder of `train=`; the `.data` paths must match the
    generator's layout."""
    from .synthetic import PRESETS, is_current  # here: `python -m yolo_lrm.data.synthetic` stays clean
    data = data_cfg if isinstance(data_cfg, DataCfg) else parse_data(data_cfg)
    preset = data['generate']
    if not preset:
        data.require('train', 'valid', 'names')
        return data
    if preset not in PRESETS:
        raise CfgError(f'{data.path}: generate={preset}: unknown dataset; built-in ones: {", ".join(PRESETS)}')
    if not data['train']:
        raise CfgError(f'{data.path}: generate={preset} needs train= (the dataset is written into its folder)')
    folder = Path(data['train']).parent
    spec = PRESETS[preset]

    def ready() -> bool:
        return is_current(folder, spec) and all(os.path.exists(p) for p in _required(data))

    if not ready():
        _refuse_foreign_files(folder, data, preset)
        with _generation_lock(folder):
            if not ready():  # another process may have finished meanwhile
                _generate(folder, preset)
    missing = [p for p in _required(data) if not os.path.exists(p)]
    if missing:
        raise CfgError(f'{data.path}: generated {preset} into {folder}, but {", ".join(missing)} do not exist; '
                       'the generator writes train.txt, test.txt, demo.names and Annotations/ there')
    return data
