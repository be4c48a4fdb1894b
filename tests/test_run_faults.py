"""The probe's root causes at the trainer (issue 29): a run owns its folder (R6), a train set without a usable box
stops at the start (R3), --resume keeps an edited cfg copy (R5), a full disk while saving says what last.pt holds
(R7), and the smaller messages (--set, a .pt of another cfg, a read-only run folder)."""
import errno
import json
import os
import subprocess
import sys
import time

import pytest

import yolo_lrm.checkpoint
from test_train import ROOT, data_file, demo, one_thread, run_args, tiny_cfg, write  # noqa: F401 (fixtures)
from test_train_safety import CHILD_ENV
from yolo_lrm.checkpoint import load_checkpoint
from yolo_lrm.data.imagelist import DatasetError
from yolo_lrm.lockfile import LOCK_NAME, RunLocked, acquire
from yolo_lrm.train.args import TrainArgs
from yolo_lrm.train.trainer import SaveFailed, train


def tiny(tmp_path, max_batches=2):
    return write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=max_batches))


# ------------------------------------------------------------------------------------------------------ R6 lock
def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        (tmp_path / LOCK_NAME).write_text(f'{{"pid": {sleeper.pid}, "host": "{os.uname().nodename}", '
                                          f'"started": "now"}}\n')
        with pytest.raises(RunLocked, match=rf'{tmp_path}: in use by the training run of pid {sleeper.pid}'):
            acquire(tmp_path, print)
    finally:
        sleeper.kill()
        sleeper.wait()
    said = []
    lock = acquire(tmp_path, said.append)  # the owner is dead now: taken over, with a warning
    assert said and f'pid {sleeper.pid}' in said[0] and 'no longer running' in said[0]
    assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_second_run_cannot_join_a_running_one(tmp_path, demo):
    """R6: a run that has started but not saved yet owns its folder: `--exist-ok` on it is refused (exit 2, one
    line naming the folder and the owner's pid), and the first run finishes alone."""
    cfg = write(tmp_path, 'slow.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=5000))
    data = data_file(tmp_path, demo, train_images=8)
    run = tmp_path / 'runs' / 'exp'
    common = [str(cfg), str(data), '--project', str(tmp_path / 'runs'), '--device', 'cpu', '--workers', '0',
              '--save-interval', '0', '--eval-interval', '10000']
    first = subprocess.Popen([sys.executable, 'train.py', *common], cwd=ROOT, env=CHILD_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (run / LOCK_NAME).exists() and not (run / 'weights' / 'last.pt').exists()
        second = subprocess.run([sys.executable, 'train.py', *common, '--exist-ok', '--lr', '0.5'], cwd=ROOT,
                                env=CHILD_ENV, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and 'Traceback' not in second.stderr, second.stderr
        assert f'error: {run}: in use by the training run of pid {first.pid} (started ' in second.stderr
        assert first.poll() is None  # the second start was refused while the first still trained
        assert json.loads((run / 'args.json').read_text())['args']['lr'] is None  # the first run's files only
    finally:
        first.terminate()
        first.wait(timeout=120)
    assert not (run / LOCK_NAME).exists()  # released at the end, even when stopped by a signal


def test_resume_in_a_read_only_folder_names_the_folder(tmp_path, demo):
    if os.geteuid() == 0:
        pytest.skip('root writes into read-only folders')
    cfg, data = tiny(tmp_path), data_file(tmp_path, demo, train_images=8)
    first = train(run_args(tmp_path, cfg, data, max_batches=1))
    first.run_dir.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=rf'{first.run_dir}: cannot write in the run folder'):
            train(TrainArgs(resume=str(first.run_dir), device='cpu', workers=0))
    finally:
        first.run_dir.chmod(0o755)


# ------------------------------------------------------------------------------------------------ R3 no boxes
def test_a_train_set_without_a_usable_box_stops_at_the_start(tmp_path, demo):
    """R3: an exporter that appends a score to every line: every line malformed, no box; exit 0 before."""
    images = tmp_path / 'set' / 'images'
    images.mkdir(parents=True)
    entries = (demo / 'train.txt').read_text().splitlines()[:4]
    for e in entries:
        src = demo / e
        (images / src.name).write_bytes(src.read_bytes())
        label = (images.parent / 'labels' / src.name).with_suffix('.txt')
        label.parent.mkdir(exist_ok=True)
        rows = (demo / e.replace('images', 'labels', 1)).with_suffix('.txt').read_text().splitlines()
        label.write_text(''.join(f'{r} 0.9\n' for r in rows))
    (tmp_path / 'train.txt').write_text(''.join(f'{images / (demo / e).name}\n' for e in entries))
    data = write(tmp_path, 'x.data', f'classes=6\ntrain={tmp_path / "train.txt"}\nnames={demo / "demo.names"}\n')
    with pytest.raises(DatasetError, match=r'no usable box in its 4 usable images \(\d+ malformed label lines.*'
                                           r'6 fields, expected 5 \(class cx cy w h\): .* 0\.9\''):
        train(run_args(tmp_path, tiny(tmp_path), data))
    assert not (tmp_path / 'runs').exists()


# ------------------------------------------------------------------------------------------------ R5 resume cfg
def test_resume_keeps_an_edited_cfg_copy(tmp_path, demo, capsys):
    cfg, data = tiny(tmp_path, max_batches=2), data_file(tmp_path, demo, train_images=8)
    first = train(run_args(tmp_path, cfg, data, max_batches=1))
    copy = first.run_dir / 'tiny.cfg'
    edited = copy.read_text().replace('learning_rate=0.001', 'learning_rate=0.5')
    assert edited != copy.read_text()
    copy.write_text(edited)
    ckpt_cfg = load_checkpoint(first.run_dir / 'weights' / 'last.pt')['cfg_text']
    capsys.readouterr()
    train(TrainArgs(resume=str(first.run_dir), device='cpu', workers=0))
    assert copy.read_text() == edited  # the user's file is kept
    assert (first.run_dir / 'tiny.checkpoint.cfg').read_text() == ckpt_cfg  # what the run trains with
    out = capsys.readouterr().out
    assert "--resume trains with the checkpoint's cfg (written to tiny.checkpoint.cfg)" in out and str(copy) in out


# ------------------------------------------------------------------------------------------------ R7 full disk
def test_a_full_disk_while_saving_names_the_update_last_pt_holds(tmp_path, demo, monkeypatch, capsys):
    """R7: the second save of last.pt fails with ENOSPC: one line (folder, space, the update last.pt holds), in
    train.log too, exit 3; the previous last.pt still loads."""
    import train as train_py
    cfg, data = tiny(tmp_path, max_batches=4), data_file(tmp_path, demo, train_images=8)
    real, calls = yolo_lrm.checkpoint.atomic_write, []

    def full_disk(path, write):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, write)

    monkeypatch.setattr(yolo_lrm.checkpoint, 'atomic_write', full_disk)
    code = train_py.main([str(cfg), str(data), '--project', str(tmp_path / 'runs'), '--device', 'cpu',
                          '--workers', '0', '--save-interval', '2', '--eval-interval', '1000', '--backup', 'none'])
    err = capsys.readouterr().err
    run = tmp_path / 'runs' / 'exp'
    assert code == 3 and 'Traceback' not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f'error: cannot save last.pt in {run / "weights"} (No space left on device): it needs '
                           f'about ') and f'weights/last.pt still holds update 2 (continue with' in line
    assert line[len('error: '):] in (run / 'train.log').read_text()
    assert load_checkpoint(run / 'weights' / 'last.pt')['update'] == 2
    assert not (run / LOCK_NAME).exists()


def test_save_failed_is_its_own_exit_code():
    assert issubclass(SaveFailed, RuntimeError) and not issubclass(SaveFailed, (OSError, ValueError))


# ------------------------------------------------------------------------------------------------ messages
def test_a_set_override_error_names_the_set_argument(tmp_path, demo):
    from yolo_lrm.cfg import CfgError
    with pytest.raises(CfgError, match=r"tiny\.cfg: --set net\.width=100: \[net\] key 'width': training needs"):
        train(run_args(tmp_path, tiny(tmp_path), data_file(tmp_path, demo, train_images=8), set=['net.width=100']))


def test_a_pt_of_another_cfg_is_one_line(tmp_path, demo):
    cfg, data = tiny(tmp_path), data_file(tmp_path, demo, train_images=8)
    first = train(run_args(tmp_path, cfg, data, max_batches=1))
    other = write(tmp_path, 'other.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=1,
                                                  widths=(8, 16, 32, 32, 48)))
    with pytest.raises(ValueError) as info:
        train(run_args(tmp_path, other, data, weights=str(first.run_dir / 'weights' / 'last.pt')))
    message = str(info.value)
    assert '\n' not in message and 'weights do not fit' in message and 'in the file' in message
    assert 'more differences' in message


def test_an_empty_valid_list_says_so(tmp_path, demo):
    from yolo_lrm.cfg import CfgError
    data = data_file(tmp_path, demo, train_images=8)
    (tmp_path / 'empty.txt').write_text('')
    data.write_text(data.read_text() + f'valid={tmp_path / "empty.txt"}\n')
    with pytest.raises(CfgError) as info:
        train(run_args(tmp_path, tiny(tmp_path), data))
    assert str(info.value).endswith('empty.txt: the list is empty') and 'below' not in str(info.value)
