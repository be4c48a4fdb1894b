"""Host memory reuse on CPU: glibc's malloc made to keep the big blocks PyTorch frees, as a caching allocator does.

glibc serves every allocation above 32 MB with a fresh `mmap` and hands it back with `munmap` when freed.  A CPU
training step allocates and frees such activations by the dozen (tiny-yolo-voc at 416, batch 8: 88 MB per early
layer), so each step the kernel zero-fills ~1.4 GB of new pages: 360k page faults and about a quarter of the step
(bench/README.md).  Turning `mmap` off and trimming off makes freed blocks stay in the heap for the next step; the
process then keeps its peak footprint, as PyTorch's CUDA allocator keeps GPU memory, plus what fragmentation adds
(measured: +11% peak at a fixed size, +41% with a new input size every step, levelling off after ~30 steps).
Set YOLO_LRM_MALLOC=system to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

_M_TRIM_THRESHOLD = -1   # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the OS; True when in effect.

    Process-wide and inherited by forked DataLoader workers.  A no-op (False) off Linux/glibc or when
    YOLO_LRM_MALLOC=system.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get('YOLO_LRM_MALLOC', '').lower() == 'system':
        return False
    if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
        return False
    libc = ctypes.CDLL(None)
    # no mmap for big blocks (they come from the heap and go back to it), and never shrink the heap
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))
    return _applied
