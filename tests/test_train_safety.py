"""No lost work, no hangs, no silent overwrites: what the trainer does on a fresh data folder, bad validation data,
errors, a killed process, reused run folders and unusable output locations."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train import ROOT, data_file, demo, one_thread, run_args, tiny_cfg, write  # noqa: F401 (fixtures)
from yolo_lrm.cfg import CfgError
from yolo_lrm.checkpoint import load_checkpoint
from yolo_lrm.data.loader import default_workers, process_alive
from yolo_lrm.train.args import TrainArgs
from yolo_lrm.train.trainer import train

CHILD_ENV = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}


def corrupt_copy(tmp: Path, demo: Path, n: int) -> Path:
    """A valid list of the first `n` demo test images whose second image is garbage bytes under a .jpg name."""
    entries = (demo / 'test.txt').read_text().splitlines()[:n]
    bad = tmp / 'broken.jpg'
    bad.write_bytes(os.urandom(3000))
    listed = [str(demo / e) for e in entries]
    listed[1] = str(bad)
    path = tmp / 'valid.txt'
    path.write_text('\n'.join(listed) + '\n')
    return path


def with_valid(tmp: Path, demo: Path, valid: Path) -> Path:
    """The demo .data of `data_file` (8 training images) with `valid` as its list and demo's VOC XML."""
    path = data_file(tmp, demo, train_images=8)
    path.write_text(path.read_text() + f'valid={valid}\nannotations={demo / "Annotations"}\n')
    return path


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


# ------------------------------------------------------------------------------------------------ fresh start
def test_generated_dataset_on_a_fresh_folder_trains(tmp_path):
    """generate= on a folder that does not exist yet: the set is made before the class names are read (the
    README's first command failed here on a fresh clone)."""
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    data = write(tmp_path, 'fresh.data', 'classes=6\ntrain=fresh/train.txt\nnames=fresh/demo.names\n'
                                         'generate=demo-small\n')
    result = train(run_args(tmp_path, cfg, data))
    assert result.reason == 'finished' and (tmp_path / 'fresh' / 'demo.names').read_text().split()[0] == 'circle'
    assert load_checkpoint(result.run_dir / 'weights' / 'last.pt')['names'][0] == 'circle'


def test_a_failed_start_leaves_no_run_folder(tmp_path, demo):
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    data = data_file(tmp_path, demo, train_images=8)
    wrong = write(tmp_path, 'wrong.weights', '')
    wrong.write_bytes(b'\0' * 100)  # a header and a few floats: fits no cfg
    with pytest.raises(ValueError, match='wrong.weights'):
        train(run_args(tmp_path, cfg, data, weights=str(wrong)))
    assert not (tmp_path / 'runs').exists()
    assert train(run_args(tmp_path, cfg, data)).run_dir.name == 'exp'  # not exp2


def test_generate_never_overwrites_a_users_folder(tmp_path):
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'train.txt').write_text('my/own/image.jpg\n')
    data = write(tmp_path, 'user.data', 'classes=6\ntrain=mine/train.txt\nnames=mine/demo.names\n'
                                        'generate=demo-small\n')
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    with pytest.raises(CfgError, match=r'holds files it did not generate \(train.txt\)'):
        train(run_args(tmp_path, cfg, data))
    assert (mine / 'train.txt').read_text() == 'my/own/image.jpg\n'
    assert sorted(p.name for p in mine.iterdir()) == ['train.txt'] and not (tmp_path / 'runs').exists()


def test_an_unfinished_generation_is_redone(tmp_path):
    """A generation stopped half way leaves the generator's stamp, so the next start may replace its files."""
    from yolo_lrm.data import prepare_data
    from yolo_lrm.data.synthetic import STAMP_FILE
    folder = tmp_path / 'gen'
    data = write(tmp_path, 'gen.data', 'classes=6\ntrain=gen/train.txt\nnames=gen/demo.names\ngenerate=demo-small\n')
    prepare_data(data)
    (folder / 'train.txt').unlink()  # as if killed before the lists were written
    (folder / STAMP_FILE).write_text((folder / STAMP_FILE).read_text().rstrip() + ' (unfinished)\n')
    prepare_data(data)
    assert len((folder / 'train.txt').read_text().split()) == 240


# ------------------------------------------------------------------------------------------------ bad valid data
def test_unreadable_valid_image_is_skipped_and_training_finishes(tmp_path, demo):
    """Default-style loader workers, one garbage image in valid=: the run finishes, the image is in the scan log
    and no process of ours is left (before: a worker traceback, then the process hung at exit forever)."""
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=2))
    data = with_valid(tmp_path, demo, corrupt_copy(tmp_path, demo, 6))
    proc = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), str(cfg), str(data), '--device', 'cpu',
                             '--workers', '2', '--project', str(tmp_path / 'runs'), '--eval-interval', '1'],
                            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        pytest.fail('train.py did not exit within 240 s')
    assert proc.returncode == 0, out[-3000:]
    run = tmp_path / 'runs' / 'exp'
    assert 'broken.jpg' in (run / 'dataset-scan.log').read_text()
    assert 'valid: 5 images' in (run / 'train.log').read_text()  # the scan found it by its header
    assert sum(1 for _ in open(run / 'results.csv')) == 3  # header + updates 1 and 2


def test_valid_list_with_wrong_class_ids_stops_before_the_run_folder(tmp_path, demo):
    labels = tmp_path / 'labels'
    images = tmp_path / 'images'
    images.mkdir()
    labels.mkdir()
    image = demo / (demo / 'test.txt').read_text().split()[0]
    (images / 'a.jpg').write_bytes(image.read_bytes())
    (labels / 'a.txt').write_text('9 0.5 0.5 0.2 0.2\n')
    write(tmp_path, 'valid.txt', f'{images / "a.jpg"}\n')
    data = data_file(tmp_path, demo, train_images=8)
    data.write_text(data.read_text() + f'valid={tmp_path / "valid.txt"}\n')
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    with pytest.raises(ValueError, match='class id outside'):
        train(run_args(tmp_path, cfg, data))
    assert not (tmp_path / 'runs').exists()


def test_a_failed_evaluation_keeps_the_update(tmp_path, demo, monkeypatch):
    """Evaluation runs after the update and before its save; if it fails, that update is saved first (with its
    --track chunk)."""
    import yolo_lrm.evaluation.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError('out of memory (simulated)')

    monkeypatch.setattr(yolo_lrm.evaluation.evaluate, 'evaluate_model', broken)
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=6))
    data = data_file(tmp_path, demo, train_images=8, valid=True)
    with pytest.raises(RuntimeError, match='simulated'):
        train(run_args(tmp_path, cfg, data, eval_interval=3, save_interval=0, track=True))
    run = tmp_path / 'runs' / 'exp'
    assert load_checkpoint(run / 'weights' / 'last.pt')['update'] == 3
    assert [p.name for p in (run / 'track').glob('*.npz')] == ['updates_00000001-00000003.npz']
    assert '--resume' in (run / 'train.log').read_text()


# ------------------------------------------------------------------------------------------------ processes
def test_kill_9_of_the_trainer_leaves_no_process_behind(tmp_path, demo):
    """The loader workers (children of the forkserver), the forkserver and the resource tracker all end within
    seconds of a SIGKILL to the training process."""
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=100000))
    data = data_file(tmp_path, demo, train_images=16)
    proc = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), str(cfg), str(data), '--device', 'cpu',
                             '--workers', '2', '--project', str(tmp_path / 'runs'), '--eval-interval', '0'],
                            env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    csv_path = tmp_path / 'runs' / 'exp' / 'train.log'
    deadline = time.monotonic() + 120
    kids: list[int] = []
    while time.monotonic() < deadline and len(kids) < 4:  # forkserver, resource tracker, 2 workers
        time.sleep(0.5)
        kids = descendants(proc.pid) if csv_path.exists() else []
    assert len(kids) >= 4, f'the workers did not start: {kids}'
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(process_alive(k) and not _zombie(k) for k in kids):
        time.sleep(0.2)
    left = [k for k in kids if process_alive(k) and not _zombie(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not left, f'processes left after kill -9 of the trainer: {left}'


def _zombie(pid: int) -> bool:
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z'
    except OSError:
        return False


def test_default_workers_fit_the_cpus(monkeypatch):
    monkeypatch.setattr(os, 'sched_getaffinity', lambda _pid: {0, 1}, raising=False)
    assert default_workers() == 2 and TrainArgs().workers == 2
    monkeypatch.setattr(os, 'sched_getaffinity', lambda _pid: set(range(16)), raising=False)
    assert default_workers() == 4


# ------------------------------------------------------------------------------------------------ run folders
def test_exist_ok_never_mixes_two_runs(tmp_path, demo):
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=2))
    data = data_file(tmp_path, demo, train_images=8)
    first = train(run_args(tmp_path, cfg, data, eval_interval=1))
    before = {p.name: p.read_bytes() for p in [first.run_dir / 'results.csv', first.run_dir / 'weights' / 'last.pt']}
    with pytest.raises(FileExistsError, match=r'holds a training run already .*--resume'):
        train(run_args(tmp_path, cfg, data, exist_ok=True))
    assert before == {p.name: p.read_bytes() for p in [first.run_dir / 'results.csv',
                                                       first.run_dir / 'weights' / 'last.pt']}
    (tmp_path / 'runs' / 'empty').mkdir()
    assert train(run_args(tmp_path, cfg, data, exist_ok=True, name='empty')).run_dir.name == 'empty'


def test_resume_removes_torn_temporaries(tmp_path, demo):
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=2))
    data = data_file(tmp_path, demo, train_images=8)
    first = train(run_args(tmp_path, cfg, data))
    torn = first.run_dir / 'weights' / '.last.pt.abc123.tmp'  # as a kill -9 during a save leaves it
    torn.write_bytes(b'half a checkpoint')
    assert train(TrainArgs(resume=str(first.run_dir), device='cpu', workers=0)).updates == 2
    assert not torn.exists()


@pytest.mark.parametrize('where, message', [
    ('project', r'--project .*is a file, not a folder'),
    ('backup', r'--backup \(Darknet backups\) .*is a file, not a folder'),
])
def test_unusable_output_folders_fail_before_the_run(tmp_path, demo, where, message):
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    data = data_file(tmp_path, demo, train_images=8)
    blocker = write(tmp_path, 'a-file', 'x')
    kw = {'project': str(blocker / 'runs')} if where == 'project' else {'backup': str(blocker / 'backup')}
    with pytest.raises(OSError, match=message):
        train(run_args(tmp_path, cfg, data, **kw))
    assert not (tmp_path / 'runs').exists()


def test_train_py_reports_a_file_as_project_without_traceback(tmp_path, capsys):
    import train as train_py
    blocker = write(tmp_path, 'a-file', 'x')
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    data = write(tmp_path, 'x.data', f'classes=6\ntrain={tmp_path / "none.txt"}\n')
    assert train_py.main([str(cfg), str(data), '--project', str(blocker), '--device', 'cpu']) == 2
    assert 'is a file, not a folder' in capsys.readouterr().err


def test_darknet_weights_get_the_umask_mode(tmp_path):
    from yolo_lrm.model import Darknet
    from yolo_lrm.weights import save_darknet_weights
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1))
    old = os.umask(0o022)
    try:
        save_darknet_weights(Darknet(cfg), tmp_path / 'x.weights')
    finally:
        os.umask(old)
    assert (tmp_path / 'x.weights').stat().st_mode & 0o777 == 0o644


def test_resume_rewrites_an_older_results_csv_under_todays_columns(tmp_path):
    """A run started by an older version (no lrm_passed column, one column since dropped) and resumed by this one:
    the kept rows stay under their names, the new column is empty, rows past the checkpoint go."""
    import csv

    from yolo_lrm.train.runlog import COLUMNS, ResultsCsv
    old = [c for c in COLUMNS if c != 'lrm_passed'] + ['gone']
    path = tmp_path / 'results.csv'
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, old)
        writer.writeheader()
        for update in (100, 200):
            writer.writerow({c: '' for c in old} | {'update': update, 'lrm_share': 0.5, 'map50': update / 1000,
                                                    'gone': 7})
    results = ResultsCsv(path)
    results.truncate_after(150)
    results.append({'update': 200, 'lrm_share': 0.6, 'lrm_passed': 2.5, 'map50': 0.3})
    with open(path, newline='') as f:
        header = next(csv.reader(f))
    rows = results.rows()
    assert tuple(header) == COLUMNS
    assert [(r['update'], r['lrm_share'], r['lrm_passed'], r['map50']) for r in rows] == \
        [('100', '0.5', '', '0.1'), ('200', '0.6', '2.5', '0.3')]
