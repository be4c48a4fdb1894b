"""The experiment runner: a CI-scale grid on the demo-small dataset (real training and evaluation), skip/resume of
finished runs, refusal to reuse runs made with other settings, and the pure parts (variants, aggregation, budgets)."""
import csv
import dataclasses
import itertools
import json
import math
from pathlib import Path

import pytest

from yolo_lrm.experiments import grids
from yolo_lrm.experiments import report
from yolo_lrm.experiments import runs as runner
from yolo_lrm.experiments import cli as ex
from yolo_lrm.data import prepare_data
from yolo_lrm.train.args import TrainArgs

from conftest import ROOT

# a 96x96 network with a 3x3 grid of 2 anchors (18 predictions per image): a few updates take about a second
TINY_CFG = '[net]\nbatch=4\nsubdivisions=1\nwidth=96\nheight=96\nchannels=3\nmomentum=0.9\ndecay=0.0005\n' \
    'learning_rate=0.001\nmax_batches=3\npolicy=constant\n' + \
    '[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=leaky\n[maxpool]\nsize=2\n' \
    'stride=2\n' + '[maxpool]\nsize=2\nstride=2\n' * 4 + \
    '[convolutional]\nsize=1\nstride=1\npad=1\nfilters=22\nactivation=linear\n' + \
    '[region]\nanchors=1.5,1.5,2.5,2.5\nclasses=6\nnum=2\nsoftmax=1\njitter=.2\nrandom=0\n'
BUDGET = {'train': {'batch': 4, 'subdivisions': 1, 'max_batches': 3, 'workers': 0, 'eval_interval': 3,
                    'save_interval': 0}, 'metric': 'voc07'}
# the built-in rows (same names and overrides), so that the mining grid below shares these runs
VARIANTS = [f'{v.name}:{",".join(v.overrides)}' for v in (grids.BASELINE, grids.lrm_variant(4, 0.5))]


def write_inputs(tmp) -> None:
    """The tiny cfg, the budget, and a .data with 32 train / 16 valid images of the demo-small set."""
    demo = prepare_data(ROOT / 'data' / 'demo-small.data')
    for key, n in (('train', 32), ('valid', 16)):
        folder = Path(demo[key]).parent  # list entries are relative to the list's folder
        lines = Path(demo[key]).read_text().split()[:n]
        (tmp / f'{key}.txt').write_text(''.join(f'{(folder / p).resolve()}\n' for p in lines))
    (tmp / 'tiny.data').write_text(f"classes=6\ntrain=train.txt\nvalid=valid.txt\nnames={demo['names']}\n"
                                   f"annotations={demo['annotations']}\nbackup=backup\n")
    (tmp / 'tiny.cfg').write_text(TINY_CFG)
    (tmp / 'budget.json').write_text(json.dumps(BUDGET))


def _argv(tmp_path, *extra, grid='custom'):
    out = tmp_path / 'out'
    argv = ['--cfg', str(tmp_path / 'tiny.cfg'), '--data', str(tmp_path / 'tiny.data'), '--grid',
            grid, '--budget', str(tmp_path / 'budget.json'), '--out', str(out), '--device', 'cpu', *extra]
    for v in VARIANTS if grid == 'custom' else ():
        argv += ['--variant', v]
    return argv, out


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
    """Two variants x seeds 0, 1 trained and evaluated once for the whole module."""
    tmp = tmp_path_factory.mktemp('grid')
    write_inputs(tmp)
    argv, out = _argv(tmp, '--seeds', '0', '1')
    ex.main(argv)
    return tmp, out


def _table_rows(md: str) -> dict[str, dict[str, str]]:
    """The first markdown table of `md`, by its first column."""
    text = md.splitlines()
    start = next(i for i, ln in enumerate(text) if ln.startswith('|'))
    lines = [*itertools.takewhile(lambda ln: ln.startswith('|'), text[start:])]
    head = [c.strip() for c in lines[0].strip('|').split('|')]
    return {cells[0]: dict(zip(head, cells)) for cells in
            ([c.strip() for c in ln.strip('|').split('|')] for ln in lines[2:])}


def test_grid_writes_table_json_csv_and_plot_from_real_runs(grid):
    tmp, out = grid
    summary = json.loads((out / 'custom.json').read_text())
    assert summary['complete'] and len(summary['runs']) == 4
    for r in summary['runs']:
        run_dir = out / 'runs' / r['run_dir']
        stored = json.loads((run_dir / runner.RESULT_FILE).read_text())
        assert stored['map'] == r['map'] and r['updates'] == 3 and r['seen'] == 12 and r['args']['seed'] == r['seed']
        assert (run_dir / 'weights' / 'last.pt').is_file() and (run_dir / 'weights' / 'last.weights').is_file()
        # the trainer scored the same final weights on its own at its last update: same number
        with open(run_dir / 'results.csv') as f:
            last_row = list(csv.DictReader(f))[-1]
        assert float(last_row['map50']) == pytest.approx(r['map'], abs=1e-6)  # the CSV keeps 6 digits
        assert r['trainer_final_map'] == pytest.approx(r['map'], abs=1e-9)
        assert r['map'] == pytest.approx(sum(v for v in r['per_class'].values() if v is not None)
                                         / sum(v is not None for v in r['per_class'].values()))
    by = {(r['variant'], r['seed']): r for r in summary['runs']}
    assert by[('lrm-k4-nms0.5', 0)]['settings'] == {'loss': 'loss2', 'focal': False, 'lrm': True,
                                                   'hard_examples': 4, 'nms': 0.5, 'method': ''}
    # LRM changes the gradients, so the same seed gives other weights; another seed another start
    assert by[('baseline', 0)]['map'] != by[('lrm-k4-nms0.5', 0)]['map']
    assert by[('baseline', 0)]['map'] != by[('baseline', 1)]['map']

    rows = _table_rows((out / 'custom.md').read_text())
    for agg in summary['aggregate']:
        maps = [by[(agg['variant'], s)]['map'] for s in (0, 1)]
        mean = sum(maps) / 2
        assert agg['map_mean'] == pytest.approx(mean)
        assert agg['map_std'] == pytest.approx(abs(maps[0] - maps[1]) / math.sqrt(2))
        assert rows[agg['variant']]['mAP'] == f"{100 * mean:.2f} ± {100 * agg['map_std']:.2f}"
    deltas = [by[('lrm-k4-nms0.5', s)]['map'] - by[('baseline', s)]['map'] for s in (0, 1)]
    assert summary['aggregate'][1]['delta_mean'] == pytest.approx(sum(deltas) / 2)
    assert summary['aggregate'][1]['delta_std'] == pytest.approx(abs(deltas[0] - deltas[1]) / math.sqrt(2))
    assert rows['baseline']['LRM'] == '✗' and rows['lrm-k4-nms0.5']['Hard examples'] == '4 (22.2 %)'  # of 3x3x2
    assert rows['baseline']['Δ vs Loss2'] == '-' and rows['lrm-k4-nms0.5']['NMS'] == '0.5'
    assert 'Method' not in rows['baseline']  # only options beyond the paper add that column
    # the variants of one cfg write no Darknet backups into the data's backup= folder (they would overwrite each other)
    assert not (tmp / 'backup').exists() or not any((tmp / 'backup').iterdir())
    assert all(r['args']['backup'] == '' for r in summary['runs'])

    with open(out / 'custom-runs.csv') as f:
        runs_csv = list(csv.DictReader(f))
    assert len(runs_csv) == 4 and float(runs_csv[0]['mAP']) == pytest.approx(100 * summary['runs'][0]['map'], abs=1e-4)
    with open(out / 'custom-summary.csv') as f:
        assert [r['variant'] for r in csv.DictReader(f)] == ['baseline', 'lrm-k4-nms0.5']
    by_seed = _table_rows((out / 'custom.md').read_text().split('by seed (points):')[1])
    assert by_seed['lrm-k4-nms0.5'] == {'Variant': 'lrm-k4-nms0.5', **{f'seed {s}': f'{100 * d:+.2f}'
                                                                      for s, d in enumerate(deltas)}}
    pytest.importorskip('matplotlib')
    assert (out / 'custom-map-vs-k.png').stat().st_size > 1000
    assert (out / 'custom-deltas.png').stat().st_size > 1000


def test_records_keep_the_grid_across_checkouts(grid, tmp_path, monkeypatch):
    """--records: a finished run's record is copied there; a fresh OUT (a new checkout without runs/) with the same
    --records trains nothing and tables the same runs; each record names the machine and keeps the curve."""
    import shutil
    tmp, out = grid
    copy, records = tmp_path / 'old', tmp_path / 'records'
    shutil.copytree(out, copy)
    shutil.rmtree(copy / 'runs' / 'baseline-s1')        # this one runs again now, and lands in --records
    argv, _ = _argv(tmp, '--seeds', '0', '1', '--records', str(records))
    ex.main([*argv[:argv.index('--out') + 1], str(copy), *argv[argv.index('--out') + 2:]])
    assert sorted(p.name for p in records.iterdir()) == ['baseline-s1.json']
    for run in ('baseline-s0', 'lrm-k4-nms0.5-s0', 'lrm-k4-nms0.5-s1'):
        shutil.copy(copy / 'runs' / run / runner.RESULT_FILE, records / f'{run}.json')
    stored = json.loads((records / 'baseline-s1.json').read_text())
    assert stored['machine'].startswith('CPU ') and 'torch ' in stored['machine']
    assert [row['update'] for row in stored['curve']] == [3.0] and stored['curve'][0]['map50'] == pytest.approx(
        stored['map'], abs=1e-6)
    monkeypatch.setattr(runner, 'train', lambda args: pytest.fail(f'trained {args.name} again'))
    fresh = tmp_path / 'fresh'
    ex.main([*argv[:argv.index('--out') + 1], str(fresh), *argv[argv.index('--out') + 2:]])
    assert not (fresh / 'runs').exists()
    assert json.loads((fresh / 'custom.json').read_text())['runs'] == json.loads((copy / 'custom.json').read_text())[
        'runs']
    with pytest.raises(SystemExit, match='needs the run.s weights/last.pt'):
        ex.main([*argv[:argv.index('--out') + 1], str(fresh), *argv[argv.index('--out') + 2:], '--test-data',
                 str(tmp / 'tiny.data')])


def test_second_invocation_skips_finished_runs(grid, monkeypatch):
    tmp, out = grid
    before = json.loads((out / 'custom.json').read_text())['runs']

    def no_training(args):
        raise AssertionError(f'trained {args.name} again')
    monkeypatch.setattr(runner, 'train', no_training)
    argv, _ = _argv(tmp, '--seeds', '0', '1')
    ex.main(argv)
    assert json.loads((out / 'custom.json').read_text())['runs'] == before


def test_report_only_tables_the_finished_runs_and_runs_nothing(grid, tmp_path, monkeypatch):
    """--report-only with a seed that never ran: the tables hold the 4 finished runs, marked incomplete; nothing
    is trained, resumed or scored."""
    import shutil
    tmp, out = grid
    copy = tmp_path / 'out'
    shutil.copytree(out, copy)
    monkeypatch.setattr(runner, 'train', lambda args: pytest.fail(f'trained {args.name}'))
    monkeypatch.setattr(runner, 'score_weights', lambda *a: pytest.fail('scored a run'))
    argv, _ = _argv(tmp, '--seeds', '0', '1', '2', '--test-data', str(tmp / 'tiny.data'), '--report-only')
    ex.main([*argv[:argv.index('--out') + 1], str(copy), *argv[argv.index('--out') + 2:]])
    summary = json.loads((copy / 'custom.json').read_text())
    assert not summary['complete'] and len(summary['runs']) == 4 and not (copy / 'runs' / 'baseline-s2').exists()
    assert '**incomplete**' in (copy / 'custom.md').read_text()


def test_test_data_scores_finished_runs_without_training_them(grid, tmp_path, monkeypatch):
    """--test-data added to a finished grid: each run's final weights are scored on that data's valid= list and
    stored as "test" (the same .data here, so the same mAP), nothing is trained again."""
    import shutil
    tmp, out = grid
    copy = tmp_path / 'out'
    shutil.copytree(out, copy)
    monkeypatch.setattr(runner, 'train', lambda args: pytest.fail(f'trained {args.name} again'))
    argv, _ = _argv(tmp, '--seeds', '0', '1', '--test-data', str(tmp / 'tiny.data'))
    ex.main([*argv[:argv.index('--out') + 1], str(copy), *argv[argv.index('--out') + 2:]])
    runs = json.loads((copy / 'custom.json').read_text())['runs']
    assert len(runs) == 4 and json.loads((copy / 'custom.json').read_text())['test_data'].endswith('tiny.data')
    for r in runs:
        assert r['test']['data'] == 'tiny.data' and r['test']['map'] == pytest.approx(r['map'], abs=1e-12)
        stored = json.loads((copy / 'runs' / r['run_dir'] / runner.RESULT_FILE).read_text())
        assert stored['test']['per_class'] == r['per_class']


def test_run_without_result_resumes_through_the_trainer(grid, monkeypatch):
    tmp, out = grid
    run_dir = out / 'runs' / 'baseline-s1'
    old = json.loads((run_dir / runner.RESULT_FILE).read_text())
    (run_dir / runner.RESULT_FILE).unlink()
    calls = []
    real_train = runner.train
    monkeypatch.setattr(runner, 'train', lambda args: calls.append(args) or real_train(args))
    argv, _ = _argv(tmp, '--seeds', '1')
    ex.main(argv)
    assert [a.resume for a in calls] == [str(run_dir)]
    assert json.loads((run_dir / runner.RESULT_FILE).read_text())['map'] == pytest.approx(old['map'], abs=1e-9)


def test_mining_grid_shares_runs_and_tables_the_methods(grid, monkeypatch):
    """Two mining rows trained for real on top of the custom grid's runs (baseline and LRM K=4 shared, not retrained):
    S-LRM with its schedule as shares of the run's 12 images, and the IoU-balanced localisation loss."""
    tmp, out = grid
    real_grid, real_train, trained = grids.mining_grid, runner.train, []
    keep = ('baseline', 'lrm-k4-nms0.5', 'slrm-k4-nms0.5', 'iou-loc')
    monkeypatch.setattr(grids, 'PAPER_BEST', (4, 0.5))  # no lrm grid in this --out: the loss/mining grids take this
    monkeypatch.setattr(grids, 'mining_grid',
                        lambda best, images: [v for v in real_grid(best, images) if v.name in keep])
    monkeypatch.setattr(runner, 'train', lambda args: trained.append(args.name) or real_train(args))
    ex.main(_argv(tmp, '--seeds', '0', grid='mining')[0])
    assert trained == ['slrm-k4-nms0.5-s0', 'iou-loc-s0']
    summary = json.loads((out / 'mining.json').read_text())
    assert summary['complete'] and [r['variant'] for r in summary['runs']] == list(keep)
    by = {r['variant']: r for r in summary['runs']}
    assert by['slrm-k4-nms0.5']['overrides'][-2:] == ['lrm.beta_start=6', 'lrm.beta_ramp=3']  # 3 updates x 4 images
    md = (out / 'mining.md').read_text()
    assert "shares of a run's 12 training images" in md
    rows = _table_rows(md)
    assert [rows[v]['Method'] for v in keep] == ['-', 'LRM', 'S-LRM stratified, β 0→1.9 from image 6 over 3',
                                                 'IoU-balanced loc, λ 1.5, w_loc 3']
    for v in keep[1:]:
        assert rows[v]['Δ vs Loss2'] == f"{100 * (by[v]['map'] - by['baseline']['map']):+.2f}"
    assert not (tmp / 'backup').exists() or not any((tmp / 'backup').iterdir())


# experiment.json's keys in the order the runner wrote them before RunRecord (a finished run's, scored on --test-data
# too, and a diverged run's): stored runs in this format must load and be written back unchanged
FINISHED_KEYS = ['variant', 'overrides', 'seed', 'run_dir', 'weights', 'settings', 'args', 'updates', 'seen', 'reason',
                 'train_s', 'eval_s', 'device', 'metric', 'map', 'per_class', 'trainer_final_map', 'eval', 'test',
                 'wall_s', 'machine', 'curve']
DIVERGED_KEYS = [*FINISHED_KEYS[:FINISHED_KEYS.index('eval')], 'error', 'wall_s']


def _rewritten(text: str) -> str:
    """`text` (an experiment.json) read as a RunRecord and written back as the runner writes it."""
    return json.dumps(runner.RunRecord.from_json(json.loads(text)).to_json(), indent=2) + '\n'


def test_run_records_keep_the_stored_format(grid, tmp_path):
    """A real run's experiment.json, one with a test block and a diverged run's are read and written back byte for
    byte; diverged_record builds that diverged record."""
    tmp, out = grid
    text = (out / 'runs' / 'baseline-s0' / runner.RESULT_FILE).read_text()
    stored = json.loads(text)
    assert list(stored) == [k for k in FINISHED_KEYS if k != 'test'] and _rewritten(text) == text
    test = {'data': 'test.data', 'map': 0.25, 'per_class': {c: 0.25 for c in stored['per_class']},
            'eval': stored['eval'], 'eval_s': 0.5, 'device': 'cpu'}
    with_test = {k: test if k == 'test' else stored[k] for k in FINISHED_KEYS}
    text = json.dumps(with_test, indent=2) + '\n'
    assert _rewritten(text) == text

    budget = grids.load_budget(str(tmp / 'budget.json'))
    spec = runner.make_spec(grids.BASELINE, 0, budget, [], str(tmp / 'tiny.cfg'), str(tmp / 'tiny.data'), tmp_path,
                            'voc07', {'device': 'cpu'})
    diverged = {'variant': 'baseline', 'overrides': list(grids.BASELINE.overrides), 'seed': 0,
                'run_dir': 'baseline-s0', 'weights': None, 'settings': stored['settings'],
                'args': dataclasses.asdict(spec.args), 'updates': None, 'seen': None, 'reason': 'non-finite',
                'train_s': None, 'eval_s': 0.0, 'device': 'cpu', 'metric': 'voc07', 'map': None,
                'per_class': {c: None for c in stored['per_class']}, 'trainer_final_map': None,
                'error': 'non-finite loss at update 2', 'wall_s': 1.5}
    assert list(diverged) == DIVERGED_KEYS
    record = runner.diverged_record(spec, 'non-finite loss at update 2')
    built = dataclasses.replace(record, wall_s=1.5).to_json()
    assert built == diverged and list(built) == DIVERGED_KEYS
    text = json.dumps(diverged, indent=2) + '\n'
    assert _rewritten(text) == text


def test_stored_runs_made_with_other_settings_are_refused(grid):
    tmp, _ = grid
    argv, _ = _argv(tmp, '--seeds', '0', '--set', 'net.learning_rate=0.01')
    with pytest.raises(SystemExit, match='learning_rate|set='):
        ex.main(argv)


@pytest.mark.parametrize('variant, match', [('typo:lrm.hard_exampels=4', 'hard_exampels'),   # unknown key
                                            ('bad:lrm.hard_examples=4,lrm.soft=2', 'soft')])  # mining value
def test_bad_override_fails_before_any_training(tmp_path, variant, match):
    write_inputs(tmp_path)
    argv, out = _argv(tmp_path, '--variant', variant)
    with pytest.raises(SystemExit, match=match):
        ex.main(argv)
    assert not (out / 'runs').exists()


# ---------------------------------------------------------------------------------------------- pure parts
def test_builtin_grids():
    lrm = grids.lrm_grid()
    assert [v.name for v in lrm][:2] == ['baseline', 'lrm-k64-nmsnone'] and len(lrm) == 10
    assert 'lrm.nms=1' in grids.lrm_variant(128, None).overrides
    assert grids.lrm_variant(256, 0.7).name == 'lrm-k256-nms0.7'
    loss = grids.loss_grid((128, 0.5))
    assert [v.name for v in loss] == ['baseline', 'loss1', 'loss1-focal', 'lrm-k128-nms0.5']
    assert 'region.focal=1' in loss[2].overrides



def test_fixed_grid_is_the_papers_best_rows_and_resolves_on_the_mobilenet_cfg(tmp_path):
    """The pretrained study's rows are fixed in advance; each resolves on the MobileNet cfg with its CPU preset (the
    preset's own keys hold: lr .002, channels_last, the probe on every row)."""
    rows = grids.fixed_grid()
    assert [v.name for v in rows] == ['baseline', 'lrm-k128-nms0.7', 'lrm-k256-nms0.7', 'loss1', 'loss1-focal']
    budget = grids.load_budget('bccd-mobilenet-cpu')
    settings = []
    for v in rows:
        spec = runner.make_spec(v, 0, budget, [], str(ROOT / 'cfg' / 'yolov2-mobilenet-bccd.cfg'),
                                str(ROOT / 'data' / 'demo.data'), tmp_path, 'voc07', {'device': 'cpu'})
        assert spec.args.channels_last and 'lrm.probe=1' in spec.args.set and 'net.learning_rate=0.002' in spec.args.set
        settings.append(grids.settings_of(spec.args))
    assert [(s['loss'], s['focal'], s['hard_examples'], s['nms']) for s in settings] == [
        ('loss2', False, None, None), ('loss2', False, 128, 0.7), ('loss2', False, 256, 0.7),
        ('loss1', False, None, None), ('loss1', True, None, None)]


def test_mining_grid_variants_parse_and_name_their_method(tmp_path):
    lrm = grids.lrm_variant(256, 0.7).overrides
    base = grids.BASELINE.overrides
    assert lrm == ('region.loss=loss2', 'region.focal=0', 'lrm.hard_examples=256', 'lrm.nms=0.7')
    grid = grids.mining_grid((256, 0.7), 64 * 45000)
    assert [(v.name, v.overrides) for v in grid] == [
        ('baseline', base), ('lrm-k256-nms0.7', lrm),
        ('slrm-k256-nms0.7', (*lrm, 'lrm.select=stratified', 'lrm.select_beta=1.9', 'lrm.beta_start=1440000',
                              'lrm.beta_ramp=720000')),
        ('iou-cls', (*base, 'region.iou_balanced_cls=1', 'region.eta=1.5')),
        ('iou-loc', (*base, 'region.iou_balanced_loc=1', 'region.lambda=1.5', 'region.w_loc=3')),
        ('ktruths-k256-nms0.7', (*lrm, 'lrm.k_mode=truths', 'lrm.k_per_truth=16', 'lrm.k_min=64')),
        ('kshare-k256-nms0.7', (*lrm, 'lrm.k_mode=loss_share', 'lrm.loss_share=0.9')),
        ('soft-k256-nms0.7', (*lrm, 'lrm.soft=0.25')),
        ('ohem-k256-nms0.7', (*lrm, 'lrm.mode=ohem', 'lrm.neg_pos_ratio=3'))]
    # a run of unknown length (--epochs): the same shares of the paper budget; another budget, other shares
    assert grids.mining_grid((256, 0.7), None)[2] == grid[2]
    assert grids.mining_grid((64, None), 1000)[2].overrides[-2:] == ('lrm.beta_start=500', 'lrm.beta_ramp=250')
    assert grids.mining_grid((64, None), 1000)[5].overrides[-1] == 'lrm.k_min=16'

    write_inputs(tmp_path)
    budget = grids.load_budget(str(tmp_path / 'budget.json'))
    methods = {}
    for v in grid:  # the real cfg parser and the loss's own checks, against the tiny cfg
        spec = runner.make_spec(v, 0, budget, [], str(tmp_path / 'tiny.cfg'), str(tmp_path / 'tiny.data'), tmp_path,
                                'voc07', {'device': 'cpu'})
        s = grids.settings_of(spec.args)
        assert spec.args.backup == '' and s['loss'] == 'loss2' and not s['focal']
        assert s['lrm'] == (not v.name.startswith(('baseline', 'iou'))), v.name
        methods[v.name] = s['method']
    assert methods == {
        'baseline': '', 'lrm-k256-nms0.7': '',
        'slrm-k256-nms0.7': 'S-LRM stratified, β 0→1.9 from image 1,440,000 over 720,000',
        'iou-cls': 'IoU-balanced cls, η 1.5', 'iou-loc': 'IoU-balanced loc, λ 1.5, w_loc 3',
        'ktruths-k256-nms0.7': 'adaptive K = 16·truths·anchors, ≥ 64',
        'kshare-k256-nms0.7': 'adaptive K: 0.9 of the loss, ≥ 0', 'soft-k256-nms0.7': 'soft LRM 0.25',
        'ohem-k256-nms0.7': 'OHEM, 3 backgrounds per foreground'}
    variants, note = grids.grid_variants('mining', [], tmp_path, 12)
    assert variants[2].name == 'slrm-k256-nms0.7' and 'paper' in note and '12 training images' in note


def test_parse_variant():
    v = grids.parse_variant('big-k:lrm.hard_examples=512, lrm.nms=0.6')
    assert v == grids.Variant('big-k', ('lrm.hard_examples=512', 'lrm.nms=0.6'))
    for bad in ('a/b:lrm.nms=1', 'x:nms=1', 'x:lrm.nms'):
        with pytest.raises(grids.ExperimentError):
            grids.parse_variant(bad)


def test_loss_grid_takes_the_best_lrm_row_on_the_seeds_every_row_has(tmp_path):
    assert grids.best_lrm_setting(tmp_path)[0] == grids.PAPER_BEST

    def run(name, seed, m, k=0, nms=None, loss='loss2'):
        settings = {'loss': loss, 'focal': False, 'lrm': k > 0, 'hard_examples': k or None, 'nms': nms}
        return {'variant': name, 'seed': seed, 'map': m, 'settings': settings}
    rows = [('base', 0, None, .9), ('k64', 64, None, .5), ('k128', 128, 0.5, .6), ('k256', 256, 0.7, .55),
            ('l1', 32, None, .95, 'loss1')]
    runs = [run(n, seed, m + seed / 100, k, nms, *loss) for n, k, nms, m, *loss in rows for seed in (0, 1)]
    # k256 alone got a third seed, and a lucky one: it must not win by that (its mean over 0..2 would be .9)
    runs.append(run('k256', 2, 1.6, 256, 0.7))
    summary = {'variants': [{'name': r[0]} for r in rows], 'runs': runs,
               'aggregate': [{'variant': r[0], 'settings': runs[2 * i]['settings']} for i, r in enumerate(rows)]}
    (tmp_path / 'lrm.json').write_text(json.dumps(summary))
    (k, nms), note = grids.best_lrm_setting(tmp_path)
    assert (k, nms) == (128, 0.5) and 'over seeds 0 1, the ones every LRM row has finished' in note
    assert 'as the paper does: biased up' in note
    summary.update(data='data/x.data', test_data='data/x-test.data')  # chosen on val, reported on a test split
    (tmp_path / 'lrm.json').write_text(json.dumps(summary))
    assert grids.best_lrm_setting(tmp_path)[1].endswith('(chosen on valid= of data/x.data; data/x-test.data is only '
                                                         'reported)')
    summary['runs'] = [r for r in runs if r['variant'] != 'k64' or r['seed'] == 1]  # still a common seed: 1
    (tmp_path / 'lrm.json').write_text(json.dumps(summary))
    assert grids.best_lrm_setting(tmp_path)[0] == (128, 0.5)
    summary['runs'] = [r for r in runs if r['variant'] != 'k64']  # a row with no finished run: no choice yet
    (tmp_path / 'lrm.json').write_text(json.dumps(summary))
    assert grids.best_lrm_setting(tmp_path)[0] == grids.PAPER_BEST
    summary['aggregate'] = [a for a in summary['aggregate'] if a['variant'] != 'k64']  # as the report writes it
    (tmp_path / 'lrm.json').write_text(json.dumps(summary))
    assert grids.best_lrm_setting(tmp_path)[0] == grids.PAPER_BEST


def test_budget_presets_and_files(tmp_path):
    assert grids.load_budget('paper').train['max_batches'] == 45000
    assert grids.load_budget(None).train == {}
    path = tmp_path / 'b.json'
    path.write_text(json.dumps({'train': {'max_batches': 7, 'set': ['lrm.nms=0.5']}, 'metric': 'area'}))
    b = grids.load_budget(str(path))
    spec = runner.make_spec(grids.BASELINE, 3, b, ['net.decay=0.001'], 'a.cfg', 'd.data', tmp_path, b.metric,
                            {'device': 'cpu'})
    assert spec.args.max_batches == 7 and spec.args.seed == 3 and spec.args.eval_metric == 'area'
    assert spec.args.set == ['lrm.nms=0.5', 'net.decay=0.001', *grids.BASELINE.overrides]
    assert spec.run_dir == tmp_path / 'runs' / 'baseline-s3'
    path.write_text(json.dumps({'train': {'seed': 1}}))
    with pytest.raises(grids.ExperimentError, match='seed'):
        grids.load_budget(str(path))
    for preset in grids.BUDGETS.values():  # every preset key is a trainer option
        TrainArgs(**preset.train)



def test_run_records_keep_paths_below_the_working_directory_relative(tmp_path, monkeypatch):
    """Records are committed: a cfg, data, weights or output folder below the working directory is kept relative
    (no machine's folders in them); one outside it stays absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cfg').mkdir()
    spec = runner.make_spec(grids.BASELINE, 0, grids.load_budget(None), [], str(tmp_path / 'cfg' / 'a.cfg'), 'd.data',
                            tmp_path / 'out', 'voc07', {'device': 'cpu', 'weights': runner.portable_path('w.conv')},
                            str(tmp_path.parent / 'test.data'))
    assert (spec.args.cfg, spec.args.data, spec.args.weights) == (str(Path('cfg', 'a.cfg')), 'd.data', 'w.conv')
    assert spec.args.project == str(Path('out', 'runs')) and spec.test_data == str(tmp_path.parent / 'test.data')


def _record(variant, seed, m, loss='loss2', k=None):
    settings = {'loss': loss, 'focal': False, 'lrm': k is not None, 'hard_examples': k, 'nms': None}
    return {'variant': variant, 'seed': seed, 'map': m, 'settings': settings,
            'per_class': {'a': m, 'b': None if m is None else m / 2}}


def test_aggregate_pairs_seeds_and_counts_diverged_runs():
    variants = [grids.Variant('base', ()), grids.Variant('lrm', ()), grids.Variant('l1', ())]
    records = [_record('base', 0, .50), _record('base', 1, .40), _record('lrm', 0, .56, k=64),
               _record('lrm', 1, .42, k=64), _record('l1', 0, None, loss='loss1'), _record('l1', 1, .30, 'loss1')]
    base, lrm, l1 = report.aggregate(variants, records)
    assert base['baseline'] == 'base' and base['delta_mean'] is None and base['map_std'] == pytest.approx(.1 / 2 ** .5)
    assert lrm['delta_mean'] == pytest.approx(.04) and lrm['delta_std'] == pytest.approx(.04 / 2 ** .5)
    assert l1['diverged'] == 1 and l1['map_mean'] == pytest.approx(.30) and l1['delta_mean'] == pytest.approx(-.10)
    assert l1['map_std'] is None and l1['per_class_mean'] == {'a': .30, 'b': .15}
    assert lrm['delta_by_seed'] == [[0, pytest.approx(.06)], [1, pytest.approx(.02)]]
    assert l1['delta_by_seed'] == [[1, pytest.approx(-.10)]] and base['delta_by_seed'] == []
    assert _table_rows(report.seed_delta_table([base, lrm, l1])) == {
        'lrm': {'Variant': 'lrm', 'seed 0': '+6.00', 'seed 1': '+2.00'},
        'l1': {'Variant': 'l1', 'seed 0': '-', 'seed 1': '-10.00'}}
    rows = _table_rows(report.markdown_table([base, lrm, l1], 'MobileNet'))
    assert rows['l1']['mAP'] == '30.00 (1 of 2 diverged)' and rows['lrm']['Δ vs Loss2'] == '+4.00 ± 2.83'
    assert rows['lrm']['Backbone'] == 'MobileNet' and rows['l1']['Loss'] == 'Loss1'
    # two seeds, Δ +6 and +2: t(1) = 12.706 times the std error 2 / 1 -> +4 ± 25.41
    assert rows['lrm']['95 % CI of Δ'] == '[-21.41, +29.41]' and rows['lrm']['W / L'] == '2 / 0'
    assert rows['l1']['W / L'] == '0 / 1' and rows['base']['W / L'] == '-'
    assert 'Method' not in rows['lrm']  # records stored before the Method existed, and the paper's rows: no column


def test_test_split_aggregates_apart_and_names_the_best_rows():
    variants = [grids.Variant('base', ()), grids.Variant('k64', ()), grids.Variant('k256', ())]
    records = [_record('base', 0, .50), _record('base', 1, .40), _record('k64', 0, .56, k=64),
               _record('k64', 1, .42, k=64), _record('k256', 0, .52, k=256), _record('k256', 1, .41, k=256)]
    for r, t in zip(records, (.45, .35, .44, .36, .50, .40)):
        r['test'] = {'map': t, 'per_class': {'a': t, 'b': t / 2}}
    base, k64, k256 = report.aggregate(variants, records)
    assert k64['delta_mean'] == pytest.approx(.04) and k64['test']['delta_mean'] == pytest.approx(0.0)
    assert k256['test']['delta_mean'] == pytest.approx(.05) and k256['test']['wins'] == 2
    assert report.ci95([.01, .03]) == pytest.approx(12.706 * .01) and report.ci95([.01]) is None
    table = _table_rows(report.markdown_table([base, k64, k256], 'x', 'test', predictions=845))
    assert table['k256']['mAP'] == '45.00 ± 7.07' and table['k64']['Hard examples'] == '64 (7.6 %)'
    assert report.best_rows([base, k64, k256], records) == [
        '- best LRM row on valid=: **k64** (valid 49.00, test 40.00); best LRM row on test: **k256** (valid 46.50, '
        'test 45.00)']
    # a third seed for k256 only, good enough to lift its mean past k64's: the ranking stays on seeds 0 and 1
    records.append({**_record('k256', 2, .70, k=256), 'test': {'map': .60, 'per_class': {'a': .6, 'b': .3}}})
    rows = report.aggregate(variants, records)
    assert rows[2]['map_mean'] == pytest.approx(.5433, abs=1e-4)
    assert report.best_rows(rows, records) == [
        '- best LRM row on valid=: **k64** (valid 49.00, test 40.00); best LRM row on test: **k256** (valid 46.50, '
        'test 45.00) (means over seeds 0 1, the ones every LRM row has)']
    assert report.best_rows(rows[:2], records) == []  # one LRM row (the loss grid's): no choice to report


def test_mining_table_has_method_and_improvement_columns():
    variants = [grids.Variant(n, ()) for n in ('baseline', 'lrm', 'slrm', 'iou-cls')]
    records = [_record('baseline', 0, .50), _record('baseline', 1, .40), _record('lrm', 0, .56, k=256),
               _record('lrm', 1, .42, k=256), _record('slrm', 0, .60, k=256), _record('slrm', 1, .47, k=256),
               _record('iou-cls', 0, .46), _record('iou-cls', 1, .40)]
    for r in records:
        r['settings']['method'] = {'slrm': 'S-LRM stratified', 'iou-cls': 'IoU-balanced cls, η 1.5'}.get(
            r['variant'], '')
    rows = report.aggregate(variants, records)
    assert rows[0]['baseline'] == 'baseline' and [r['baseline'] for r in rows] == ['baseline'] * 4
    md = report.markdown_table(rows, 'Tiny Darknet')
    head = [c.strip() for c in md.splitlines()[0].strip('|').split('|')]
    assert head[:3] == ['Variant', 'Method', 'Detector']
    assert head[-6:] == ['mAP', 'Δ vs Loss2', '95 % CI of Δ', 'W / L', 'a', 'b']
    assert md.splitlines()[1] == '|' + '|'.join(['---'] * 10 + ['---:'] * 6) + '|'
    table = _table_rows(md)
    assert [table[v.name]['Method'] for v in variants] == ['-', 'LRM', 'S-LRM stratified', 'IoU-balanced cls, η 1.5']
    assert table['slrm']['Δ vs Loss2'] == '+8.50 ± 2.12' and table['iou-cls']['Δ vs Loss2'] == '-2.00 ± 2.83'
    assert table['iou-cls']['LRM'] == '✗' and table['slrm']['Hard examples'] == '256'


def test_pairing_statistics_against_hand_computation():
    """pair_r, the unpaired Δ and its Welch interval, by hand for three seeds (and a fourth baseline seed)."""
    base = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.65}
    runs = [{'seed': s} for s in (0, 1, 2)]
    scores = [{'map': m, 'per_class': {}} for m in (0.52, 0.63, 0.56)]
    st = report.split_stats(runs, scores, base)
    x, y = [0.52, 0.63, 0.56], [0.50, 0.60, 0.55]
    mx, my = sum(x) / 3, sum(y) / 3
    r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sum((a - mx) ** 2 for a in x)
                                                                    * sum((b - my) ** 2 for b in y))
    assert st['pair_r'] == pytest.approx(r) and r > 0.9
    assert st['delta_unpaired'] == pytest.approx(mx - sum(base.values()) / 4)
    va, vb = 0.0031 / 3, 0.0041666667 / 4                            # sample variances / n
    assert st['delta_unpaired_ci95'] == pytest.approx(report._T975[3] * math.sqrt(va + vb), rel=1e-3)  # df 4.8 -> 4
    # with r this high the paired interval is far narrower than the unpaired one
    assert st['delta_ci95'] < st['delta_unpaired_ci95'] / 3
    assert report.pearson([1, 2], [3, 4]) is None and report.welch_ci95([1.0], [1.0, 2.0]) is None
