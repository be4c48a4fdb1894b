"""The training DataLoader's worker processes: how they start, which signals they ignore, and that they never
outlive the training process (Ctrl-C, SIGTERM, an exception, or `kill -9` of the main process)."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import select
import signal
import threading
import time
from functools import partial
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, Dataset, Sampler


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_when_gone(pid: int) -> None:
    # A worker's parent is the forkserver, not the training process, so DataLoader's own watchdog (it watches the
    # parent) misses a `kill -9` of the training process: the workers, the forkserver and the resource tracker stayed
    # alive, each holding memory.  A pidfd becomes readable when the process ends; older kernels get a 1 s poll.
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while process_alive(pid):
            time.sleep(1.0)
    else:
        select.select([fd], [], [])
    os._exit(0)


def _worker_init(main_pid: int, _worker_id: int) -> None:
    # Ctrl-C (and a SIGTERM to the process group) reaches the workers too; the main process finishes the update and
    # saves, so the workers must survive it.  They end when the main process closes the loader or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_gone, args=(main_pid,), name='main-process-watch', daemon=True).start()


def default_workers(most: int = 4) -> int:
    """Loader processes by default: up to `most`, never more than the CPUs this process may use (more only makes
    PyTorch warn and the processes compete for the cores)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(most, cpus))


def train_loader(dataset: Dataset, sampler: Sampler, collate: Callable, workers: int, pin_memory: bool) -> DataLoader:
    """The DataLoader of a training run: batches from `sampler`, `workers` processes started from a clean forkserver."""
    # not a fork of this process: a fork inherits OpenCV's thread pool in whatever state the main process left it (it
    # deadlocks when the worker reconfigures it)
    context = None if not workers else \
        'forkserver' if 'forkserver' in multiprocessing.get_all_start_methods() else 'spawn'
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers, pin_memory=pin_memory,
                      multiprocessing_context=context,
                      worker_init_fn=partial(_worker_init, os.getpid()) if workers else None,
                      prefetch_factor=4 if workers else None)


@contextlib.contextmanager
def closing_batches(batches: Iterator[Any]) -> Iterator[None]:
    """`close_batches(batches)` when the block ends, however it ends."""
    try:
        yield
    finally:
        close_batches(batches)


def close_batches(batches: Iterator[Any] | None) -> None:
    """Stop the worker processes of a DataLoader iterator now.  Needed because the workers ignore SIGTERM: left to
    interpreter exit, multiprocessing would SIGTERM and then wait for them forever (a hang seen after an error)."""
    shutdown = getattr(batches, '_shutdown_workers', None)  # PyTorch's own clean shutdown of its iterator
    if shutdown is not None:
        shutdown()
