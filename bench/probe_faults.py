"""Fault probe (issue 29): bad inputs and faults a new user meets, each run as a tiny real command on a generated
dataset, checked for no traceback, the expected exit status, no mixed run and the right number.

    python bench/probe_faults.py [--only NAME ...] [--keep DIR]

Every case: the demo cfg at 64 px, 2 updates of 2 images on the CPU (a few seconds each on a loaded 2-core
machine; the whole probe takes a few minutes).  Prints a table: case, expected, got, ok (what failed if not).
Exit status 1 when a case fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
TRAIN = ['--img-size', '64', '--batch', '2', '--subdivisions', '1', '--max-batches', '2', '--device', 'cpu',
         '--workers', '0', '--eval-interval', '2', '--backup', 'none', '--set', 'net.burn_in=0']
Check = Callable[[Path, str], str | None]  # (case folder, stderr) -> what is wrong, or None


@dataclass
class Case:
    """One probe case: `make(folder)` builds its inputs and returns its command lines (all run in order; the last
    one is judged) with the exit status expected of the last, and an extra check."""
    name: str
    make: Callable[[Path], list[list[str]]]
    expect: int
    check: Check | None = None


# ------------------------------------------------------------------------------------------------------ inputs
def make_set(folder: Path, n: int = 6, names: list[str] | None = None) -> Path:
    """n 96x72 images with one labelled square each (6 classes), a train and a valid list, and a .data file."""
    images, labels = folder / 'images', folder / 'labels'
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    names = names or [f'im{k}' for k in range(n)]
    for k, stem in enumerate(names):
        im = rng.integers(0, 60, (72, 96, 3), dtype=np.uint8)
        im[20:52, 30:62] = 200
        cv2.imencode('.jpg', im)[1].tofile(str(images / f'{stem}.jpg'))
        (labels / f'{stem}.txt').write_text(f'{k % 6} 0.4948 0.5 0.3333 0.4444\n')
    entries = ''.join(f'images/{s}.jpg\n' for s in names)
    (folder / 'train.txt').write_text(entries)
    (folder / 'valid.txt').write_text(entries)
    (folder / 'names').write_text('circle\nsquare\ntriangle\ncross\nstar\nring\n')
    data = folder / 'x.data'
    data.write_text('classes=6\ntrain=train.txt\nvalid=valid.txt\nnames=names\n')
    return data


def train_cmd(folder: Path, *extra: str, data: str = 'x.data', weights: str | None = None) -> list[str]:
    """train.py on the demo cfg and the case's data (WEIGHTS before the options: --set takes every word after it)."""
    return [sys.executable, str(ROOT / 'train.py'), str(ROOT / 'cfg' / 'demo.cfg'), str(folder / data),
            *([weights] if weights else []), *TRAIN, '--project', str(folder / 'runs'), *extra]


def resume_cmd(folder: Path) -> list[str]:
    return [sys.executable, str(ROOT / 'train.py'), '--resume', str(folder / 'runs' / 'exp'), '--device', 'cpu',
            '--workers', '0']


def with_image(write: Callable[[Path], None], name: str = 'odd.jpg') -> Callable[[Path], list[list[str]]]:
    """A case whose train list gets one more image written by `write` (label: one box)."""
    def make(folder: Path) -> list[list[str]]:
        make_set(folder)
        path = folder / 'images' / name
        write(path)
        (folder / 'labels' / (Path(name).stem + '.txt')).write_text('0 0.5 0.5 0.5 0.5\n')
        with open(folder / 'train.txt', 'a') as f:
            f.write(f'images/{name}\n')
        return [train_cmd(folder)]
    return make


def edit_labels(edit: Callable[[str], str], lists: bool = False) -> Callable[[Path], list[list[str]]]:
    """A case whose label files (and list files, with `lists`) are rewritten by `edit`."""
    def make(folder: Path) -> list[list[str]]:
        make_set(folder)
        for p in [*(folder / 'labels').glob('*.txt'), *([folder / 'train.txt'] if lists else [])]:
            p.write_bytes(edit(p.read_text()).encode('utf-8'))
        return [train_cmd(folder)]
    return make


# ------------------------------------------------------------------------------------------------------ checks
def mapped(folder: Path, _err: str) -> str | None:
    """The run has a results.csv whose last row has an mAP."""
    rows = (folder / 'runs' / 'exp' / 'results.csv')
    if not rows.exists():
        return 'no results.csv'
    last = rows.read_text().splitlines()[-1].split(',')
    header = rows.read_text().splitlines()[0].split(',')
    return None if last[header.index('map50')] else 'no mAP in results.csv'


def says(*texts: str) -> Check:
    """stderr (or the run's train.log) holds every text."""
    def check(folder: Path, err: str) -> str | None:
        log = folder / 'runs' / 'exp' / 'train.log'
        where = err + (log.read_text() if log.exists() else '')
        missing = [t for t in texts if t not in where]
        return f'missing {missing[0]!r}' if missing else None
    return check


def both(*checks: Check) -> Check:
    def check(folder: Path, err: str) -> str | None:
        return next((r for c in checks if (r := c(folder, err))), None)
    return check


def one_error_line(folder: Path, err: str) -> str | None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return None if len(lines) <= 2 else f'{len(lines)} lines on stderr'


# ------------------------------------------------------------------------------------------------------ cases
def r4_snippet(folder: Path) -> list[list[str]]:
    """A perfect detector on the scan's boxes (zero-size, outside and clipped boxes in the labels) scores 1.0."""
    make_set(folder, 2)
    (folder / 'labels' / 'im0.txt').write_text('0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.3\n2 1.5 0.5 0.2 0.2\n')
    (folder / 'labels' / 'im1.txt').write_text('1 0.9 0.5 0.4 0.2\n')
    code = f'''
import sys, numpy as np, yolo_lrm.evaluation.evaluate as ev
from yolo_lrm.model import Darknet
boxes = {{"im0": [(0, 38.4, 28.8, 57.6, 43.2)], "im1": [(1, 67.2, 28.8, 96, 43.2)]}}
def run(net, paths, size=None, **kw):
    dets = [np.array([[*b[1:], .9, b[0]] for b in boxes[p.rsplit("/", 1)[1][:3]]], np.float32) for p in paths]
    return ev.ListRun(list(paths), list(range(len(paths))), dets, [(96, 72)] * len(paths), [])
ev.run_list = run
res = ev.evaluate_model(Darknet("{ROOT / 'cfg' / 'demo.cfg'}"), "{folder / 'x.data'}", progress=False)
print(f"mAP {{res.map:.4f}}")
sys.exit(0 if abs(res.map - 1) < 1e-9 else 4)
'''
    return [[sys.executable, '-c', code]]


def r6_second_run(folder: Path) -> list[list[str]]:
    make_set(folder)
    return [['BACKGROUND', *train_cmd(folder, '--max-batches', '3000', '--eval-interval', '10000', '--lr', '1e-5')],
            ['WAIT_LOCK', str(folder / 'runs' / 'exp' / 'train.lock')],
            train_cmd(folder, '--exist-ok', '--lr', '0.5')]


def r7_full_disk(folder: Path) -> list[list[str]]:
    make_set(folder)
    code = f'''
import errno, os, sys, yolo_lrm.checkpoint as c
real, calls = c.atomic_write, []
def full(path, write):
    calls.append(path)
    if len(calls) > 1:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    real(path, write)
c.atomic_write = full
sys.argv = {train_cmd(folder, '--max-batches', '4', '--save-interval', '2', '--eval-interval', '100')[1:]!r}
import runpy; runpy.run_path(sys.argv[0], run_name="__main__")
'''
    return [[sys.executable, '-c', code]]


def r5_edited_cfg(folder: Path) -> list[list[str]]:
    make_set(folder)
    return [train_cmd(folder, '--max-batches', '1'), ['EDIT_CFG', str(folder / 'runs' / 'exp' / 'demo.cfg')],
            resume_cmd(folder)]


def r5_check(folder: Path, err: str) -> str | None:
    run = folder / 'runs' / 'exp'
    if 'learning_rate=0.5' not in (run / 'demo.cfg').read_text():
        return 'the edited cfg was overwritten'
    return None if (run / 'demo.checkpoint.cfg').exists() else 'no demo.checkpoint.cfg'


def broken_last_pt(payload: bytes) -> Callable[[Path], list[list[str]]]:
    def make(folder: Path) -> list[list[str]]:
        make_set(folder)
        return [train_cmd(folder, '--max-batches', '1'), ['WRITE', str(folder / 'runs' / 'exp' / 'weights' /
                                                                       'last.pt'), payload.hex()],
                resume_cmd(folder)]
    return make


def wrong_weights(folder: Path) -> list[list[str]]:
    make_set(folder)
    other = folder / 'other.cfg'
    other.write_text((ROOT / 'cfg' / 'demo.cfg').read_text().replace('filters=16', 'filters=24', 1))
    first = train_cmd(folder, '--max-batches', '1')
    first[2] = str(other)
    return [first, train_cmd(folder, '--name', 'b', weights=str(folder / 'runs' / 'exp' / 'weights' / 'last.pt'))]


def read_only_resume(folder: Path) -> list[list[str]]:
    make_set(folder)
    return [train_cmd(folder, '--max-batches', '1'), ['CHMOD', str(folder / 'runs' / 'exp'), '555'],
            resume_cmd(folder)]


def fake_video(folder: Path) -> list[list[str]]:
    make_set(folder)
    (folder / 'clip.mp4').write_bytes(b'not a video at all' * 100)
    return [train_cmd(folder, '--max-batches', '1'),
            [sys.executable, str(ROOT / 'detect.py'), '-', str(folder / 'runs' / 'exp' / 'weights' / 'last.pt'),
             str(folder / 'clip.mp4'), '--device', 'cpu', '--project', str(folder / 'det')]]


def cmyk_jpeg(path: Path) -> None:
    from PIL import Image
    Image.new('CMYK', (80, 60), (0, 128, 128, 0)).save(path, 'JPEG')


def r1_names(folder: Path) -> list[list[str]]:
    data = make_set(folder, names=['a b', 'ünïcødé 画像 1', 'c', 'd', 'e', 'f'])
    return [train_cmd(folder, data=data.name)]


def r2_valid_skips(folder: Path) -> list[list[str]]:
    make_set(folder)
    (folder / 'labels' / 'im1.txt').unlink()
    (folder / 'labels' / 'im2.txt').write_text('0 0.5 0.5 0.2 0.2 0.9\n')
    (folder / 'labels' / 'im3.txt').write_text('2.0 0.5 0.5 0.2 0.2\n')
    return [train_cmd(folder)]


def options(*extra: str) -> Callable[[Path], list[list[str]]]:
    """A case of the plain set with more command-line options."""
    def make(folder: Path) -> list[list[str]]:
        make_set(folder)
        return [train_cmd(folder, *extra)]
    return make


CASES = [
    Case('R1 spaces / non-ASCII ids in valid=', r1_names, 0, mapped),
    Case('R2 valid= skips (no label, 6 cols, 2.0)', r2_valid_skips, 0, mapped),
    Case('R3 every line has a score column', edit_labels(lambda t: t.replace('\n', ' 0.9\n')), 2,
         says('no usable box', '6 fields, expected 5')),
    Case('R4 perfect detector, scan boxes', r4_snippet, 0, None),
    Case('R5 --resume with an edited cfg copy', r5_edited_cfg, 0, r5_check),
    Case('R6 --exist-ok on a running run', r6_second_run, 2, says('in use by the training run of pid')),
    Case('R7 full disk while saving', r7_full_disk, 3, says('No space left on device', 'still holds update 2')),
    Case('16-bit PNG', with_image(lambda p: cv2.imwrite(str(p), np.full((60, 80, 3), 40000, np.uint16)),
                                  'deep.png'), 0, mapped),
    Case('alpha PNG', with_image(lambda p: cv2.imwrite(str(p), np.full((60, 80, 4), 99, np.uint8)), 'alpha.png'),
         0, mapped),
    Case('CMYK JPEG', with_image(cmyk_jpeg), 0, mapped),
    Case('1x1 image', with_image(lambda p: cv2.imwrite(str(p), np.zeros((1, 1, 3), np.uint8))), 0, mapped),
    Case('8000x6000 image', with_image(lambda p: cv2.imwrite(str(p), np.zeros((6000, 8000, 3), np.uint8))), 0,
         mapped),
    Case('PNG named .jpg', with_image(lambda p: p.write_bytes(cv2.imencode('.png', np.zeros((60, 80, 3),
                                                                                           np.uint8))[1].tobytes()))
         , 0, mapped),
    Case('zero-byte image', with_image(lambda p: p.write_bytes(b'')), 0, mapped),
    Case('non-ASCII train names', r1_names, 0, mapped),
    Case('empty label files', edit_labels(lambda t: ''), 2, says('no usable box')),
    Case('CRLF labels and list', edit_labels(lambda t: t.replace('\n', '\r\n'), lists=True), 0, mapped),
    Case('BOM in labels and list', edit_labels(lambda t: '\ufeff' + t, lists=True), 0, mapped),
    Case('truncated last.pt --resume', broken_last_pt(b'PK\x03\x04' + b'\0' * 50), 2, one_error_line),
    Case('zero-byte last.pt --resume', broken_last_pt(b''), 2, one_error_line),
    Case('read-only run folder --resume', read_only_resume, 2, says('cannot write in the run folder')),
    Case('.pt of another cfg as WEIGHTS', wrong_weights, 2, both(one_error_line, says('weights do not fit'))),
    Case('fake video to detect.py', fake_video, 2, None),
    Case('--img-size 100', options('--img-size', '100'), 2, says('--img-size 100')),
    Case('--set net.width=100', options('--set', 'net.width=100'), 2,
         both(says('--set net.width=100'), lambda f, e: 'names demo.cfg:0' if 'demo.cfg:0' in e else None)),
]


# ------------------------------------------------------------------------------------------------------ running
def run_case(case: Case, folder: Path) -> tuple[str, bool, str]:
    """Run one case; returns (got, ok, why)."""
    background = None
    try:
        commands = case.make(folder)
        proc = None
        for cmd in commands:
            if cmd[0] == 'BACKGROUND':
                background = subprocess.Popen(cmd[1:], cwd=folder, env=ENV, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
            elif cmd[0] == 'WAIT_LOCK':
                deadline = time.time() + 120
                while not Path(cmd[1]).exists() and time.time() < deadline:
                    time.sleep(0.2)
            elif cmd[0] == 'EDIT_CFG':
                Path(cmd[1]).write_text(Path(cmd[1]).read_text().replace('learning_rate=0.02', 'learning_rate=0.5'))
            elif cmd[0] == 'WRITE':
                Path(cmd[1]).write_bytes(bytes.fromhex(cmd[2]))
            elif cmd[0] == 'CHMOD':
                if os.geteuid() == 0:
                    return 'skipped', True, 'root writes into read-only folders'
                os.chmod(cmd[1], int(cmd[2], 8))
            else:
                proc = subprocess.run(cmd, cwd=folder, env=ENV, capture_output=True, text=True, timeout=600)
        if background is not None and background.poll() is not None:
            return str(proc.returncode), False, 'the first run had ended before the second started'
    finally:
        if background is not None:
            background.terminate()
            background.wait(timeout=120)
    problems = []
    if 'Traceback' in proc.stderr:
        problems.append('traceback: ' + proc.stderr.strip().splitlines()[-1][:80])
    if proc.returncode != case.expect:
        problems.append(f'stderr: {proc.stderr.strip().splitlines()[-1][:100] if proc.stderr.strip() else ""}')
    if case.check and not problems:
        problem = case.check(folder, proc.stderr)
        if problem:
            problems.append(problem)
    return str(proc.returncode), not problems, '; '.join(problems)


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', nargs='+', help='cases whose name starts with one of these')
    ap.add_argument('--keep', help='keep the case folders here (default: a temporary folder, removed)')
    a = ap.parse_args(argv)
    cases = [c for c in CASES if not a.only or any(c.name.startswith(o) for o in a.only)]
    base = Path(a.keep or tempfile.mkdtemp(prefix='probe_faults_'))
    rows, failed = [], 0
    width = max(len(c.name) for c in cases)
    print(f'{"case":<{width}}  expected  got  ok')
    for k, case in enumerate(cases):
        folder = base / f'case{k:02d}'
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        got, ok, why = run_case(case, folder)
        failed += not ok
        rows.append({'case': case.name, 'expected': case.expect, 'got': got, 'ok': ok, 'why': why})
        print(f'{case.name:<{width}}  {case.expect:>8}  {got:>3}  {"yes" if ok else "NO"}  '
              f'({time.time() - t0:.0f} s){"  " + why if why else ""}', flush=True)
    if not a.keep:
        shutil.rmtree(base, ignore_errors=True)
    print(f'{len(cases) - failed} of {len(cases)} cases hold')
    if failed:
        print(json.dumps([r for r in rows if not r['ok']]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
