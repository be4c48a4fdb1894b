"""How a training run ends before its last update: on a signal (a flag the loop reads after each update; a second
Ctrl-C aborts at once) or on a non-finite loss (an error naming the update, each loss term and the batch's images)."""
from __future__ import annotations

import math
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import stats
from ..loss.region import TERMS
from .runstate import RunState


class NonFiniteLoss(RuntimeError):
    """Training stopped on a NaN/inf loss; the message names the update, each loss term and the batch's images."""


class SaveFailed(RuntimeError):
    """A checkpoint or weights file could not be written (a full disk, ...); the message says which update
    weights/last.pt still holds.  `train.py` exits with status 3."""


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about what saving it needs on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def save_failure(path: Path, exc: OSError, need: int, last_saved: int | None, run_dir: Path) -> str:
    """SaveFailed's one line: the folder, why, the space needed and free, the update weights/last.pt holds."""
    try:
        free = f', {shutil.disk_usage(path.parent).free / 2 ** 20:.1f} MiB are free'
    except OSError:
        free = ''
    held = (f'weights/last.pt still holds update {last_saved} (continue with: python train.py --resume {run_dir} '
            f'once there is room)' if last_saved is not None else 'no checkpoint of this run was saved before')
    return (f'cannot save {path.name} in {path.parent} ({exc.strerror or exc}): it needs about '
            f'{need / 2 ** 20:.1f} MiB{free}; {held}')


class StopRequest:
    """SIGINT/SIGTERM set `requested`, which the loop reads after each update; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():  # signal handlers live there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(f'\n{signal.Signals(signum).name}: finishing this update, then saving weights/last.pt '
                   f'(Ctrl-C again to abort without saving)')

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def nonfinite_message(state: RunState, rows: list[list[float]], paths: list[tuple[int, list[str]]],
                      rank: int | None, last: Path) -> str:
    """The NonFiniteLoss text: this process's mini-batches with a non-finite loss (`rows` as `stats.split_rows`,
    `paths` as (input size, image paths) per mini-batch), the last good checkpoint and the usual causes."""
    lines = [f'non-finite loss in update {state.update} (seen {state.seen:,} images): training stopped before the '
             f'optimizer step; nothing was saved after it.']
    for s, ((size, batch_paths), row) in enumerate(zip(paths, rows)):
        losses = stats.row_losses(row)
        if all(math.isfinite(v) for v in losses.values()):
            continue
        terms = ', '.join(f'{t} {losses[t]:.6g}' for t in TERMS)
        lines.append(f'  mini-batch {s + 1}/{len(paths)} (input {size}x{size}'
                     + (f', rank {rank}' if rank is not None else '') + f'): loss {losses["loss"]:.6g} ({terms}); '
                     f'images:')
        lines += [f'    {p}' for p in batch_paths]
    if len(lines) == 1:
        lines.append('  (the non-finite values came from another process; see its message)')
    lines.append(f'last good checkpoint: {last} (update {state.last_saved})'
                 if state.last_saved is not None else 'no checkpoint was written before this update')
    lines.append('common causes: a too high learning rate (try a longer burn_in or a lower --lr), --amp fp16 '
                 'overflow, or bad labels (see the dataset scan log)')
    return '\n'.join(lines)
