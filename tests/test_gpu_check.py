"""bench/gpu_check.py, the prepared GPU check, cannot rot before a GPU comes: its `--quick` mode runs every section's
code path on the CPU here, and the table it writes must be complete and sane."""
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, bench_module
from yolo_lrm.model import Darknet

SECTIONS = ['correctness', 'amp', 'inference', 'lrm', 'training']


@pytest.fixture(scope='module')
def table(tmp_path_factory) -> dict:
    """The JSON of one quick run on the CPU (about 25 s on a busy 2-core machine)."""
    out = tmp_path_factory.mktemp('gpu_check') / 'quick.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), '--quick', '--device', 'cpu',
                           '--json', str(out)], check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert '\nsection ' in proc.stdout  # the final table's header
    return json.loads(out.read_text())


def rows(table: dict, section: str) -> list[dict]:
    """The table's rows of one section."""
    return [r for r in table['rows'] if r['section'] == section]


def positive(value) -> bool:
    """A finite number above zero."""
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_section_ran_without_errors(table):
    assert list(table['sections']) == SECTIONS
    assert all(s['status'] == 'done' for s in table['sections'].values()), table['sections']
    assert [r for r in table['rows'] if r['status'] in ('FAIL', 'error')] == []
    assert table['meta']['mode'] == 'quick' and table['meta']['device'] == 'cpu'


def test_correctness_rows_pass_and_say_what_they_compared(table):
    checks = {r['name']: r for r in rows(table, 'correctness')}
    assert len(checks) == 4 and all(r['status'] == 'PASS' for r in checks.values())
    assert all('compared with itself' in r['note'] for r in checks.values())  # CPU against CPU: said so
    forward = checks['forward (fixture weights)']['metrics']
    assert forward['max_abs'] == 0 and forward['atol'] > 0 and positive(forward['max_value'])
    mask = next(r for name, r in checks.items() if name.startswith('LRM mask'))['metrics']
    assert 0 < mask['kept'] <= mask['predictions'] and mask['differing'] == 0
    update = checks['one trainer update']['metrics']
    assert update['same_start'] and positive(update['update_max']) and positive(update['loss_cpu'])


def test_amp_curves_are_finite_and_compared(table):
    amp = {r['name']: r['metrics'] for r in rows(table, 'amp')}
    assert list(amp) == ['demo cfg off', 'demo cfg bf16', 'demo cfg fp16']
    updates = table['meta']['plan']['amp_updates']
    assert all(m['updates'] == updates and positive(m['first_loss']) and positive(m['last_loss'])
               for m in amp.values())
    assert all(math.isfinite(amp[k]['max_dev']) for k in ('demo cfg bf16', 'demo cfg fp16'))


def test_inference_figures(table):
    plan = table['meta']['plan']
    found = rows(table, 'inference')
    assert len(found) == 2 * len(plan['cfgs']) * len(plan['infer_batches'])
    for r in found:
        m = r['metrics']
        assert all(positive(m[k]) for k in ('net_img_s', 'net_ms', 'e2e_img_s', 'e2e_ms', 'batch_latency_ms'))


def test_lrm_ratio(table):
    (row,) = rows(table, 'lrm')
    assert positive(row['metrics']['ratio']) and positive(row['metrics']['step_ms'])


def test_training_rows_in_memory_with_the_loader_and_compile_skipped(table):
    found = {r['name']: r for r in rows(table, 'training')}
    memory = [r for name, r in found.items() if name.endswith('in memory') and 'compile' not in name]
    loader = [r for name, r in found.items() if 'loader' in name]
    assert len(memory) == 3 and all(positive(r['metrics']['img_s']) and positive(r['metrics']['peak_mb'])
                                    for r in memory)
    assert len(loader) == len(table['meta']['plan']['workers'])
    for r in loader:
        m = r['metrics']
        assert positive(m['img_s']) and 0 <= m['waiting_share'] <= 1 and m['bound'] in ('loader', 'contention',
                                                                                          'CPU step')
    assert found['demo compile in memory']['status'] == 'skipped'
    save = found['demo checkpoint save']['metrics']  # last.pt (weights + momentum) and the .backup (weights)
    params_mb = sum(p.numel() for p in Darknet(str(ROOT / 'cfg' / 'demo.cfg')).parameters()) * 4 / 2 ** 20
    assert positive(save['save_s']) and 2.9 * params_mb < save['mb'] < 3.5 * params_mb and save['of_100_updates'] > 0


def test_a_failing_row_is_recorded_and_the_run_goes_on(tmp_path):
    gpu_check = bench_module('gpu_check')
    report = gpu_check.Report(tmp_path / 'out.json', {'mode': 'test'})
    ctx = gpu_check.Context(None, gpu_check.QUICK, gpu_check.torch.device('cpu'), tmp_path, report,
                            section='lrm')
    ctx.row('breaks', lambda: 1 / 0)
    ctx.row('works', lambda: report.add('lrm', 'works', 'ok', ratio=1.0))
    ctx.deadline = 0.0
    ctx.row('too late', lambda: report.add('lrm', 'too late', 'ok'))
    saved = json.loads((tmp_path / 'out.json').read_text())['rows']
    assert [(r['name'], r['status']) for r in saved] == [('breaks', 'error'), ('works', 'ok'), ('too late', 'skipped')]
    assert 'ZeroDivisionError' in saved[0]['note']
