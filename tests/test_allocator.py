"""The host allocator setting: freed 64 MB activations are reused without new page faults, and it can be declined."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# allocate, touch and free a 64 MB tensor again and again; print whether the setting took and the page faults of
# the last three rounds.  The warm-up rounds fault pages in under any allocator, and with the heap they also settle
# its fragmentation: small blocks allocated meanwhile land in the freed space until a 64 MB hole stays free.
PROBE = '''
import resource, torch
from yolo_lrm.allocator import keep_freed_memory
applied = keep_freed_memory()
for _ in range(16):
    torch.empty(2 ** 24).fill_(1)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    torch.empty(2 ** 24).fill_(1)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
'''


def probe(malloc: str) -> tuple[str, int]:
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'YOLO_LRM_MALLOC': malloc, 'OMP_NUM_THREADS': '1'}
    out = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc',
                    reason='the setting is glibc-specific (elsewhere keep_freed_memory is a no-op)')
def test_freed_blocks_are_reused_unless_declined():
    applied, faults = probe('keep')
    assert applied == 'True'
    assert faults < 500                          # the heap hands the same pages back
    applied, faults = probe('system')
    assert applied == 'False'
    assert faults > 3 * 16384 * 0.9              # glibc default: fresh mmap, every 4 KB page faulted again
