"""The paper's comparison tables with one command: a grid of training runs, each evaluated, then tables and plots.

    python -m yolo_lrm.experiments --cfg CFG --data DATA [--grid lrm|loss|mining|fixed|custom] [--variant NAME:KEY=V,...]
                                   [--set KEY=V ...] [--seeds 0 1 2] [--budget demo|bccd|paper|FILE.json]
                                   [--out DIR] [--device D] [--workers N] [--metric voc07|area|kitti|kitti-voc]

Grids (each variant is a list of cfg overrides on top of the budget's and `--set`):
  lrm     Tables II/III: the baseline (Loss2, no LRM) and hard examples K in {64, 128, 256} x NMS in {none, .5, .7}.
  loss    Table IV: Loss2, Loss1, Loss1 + focal loss, Loss2 + LRM with the best K/NMS of the lrm grid in the same
          `--out`, on the seeds every LRM row of it has finished (else the paper's VOC best, K=256 / NMS .7; the table
          says which).
  mining  the mining options beyond the paper (keys in loss/mining.py and loss/region.py), each added to that same LRM row
          (`lrm-kK-nmsT`), except the IoU-balanced losses, added to the baseline:
            baseline, lrm-kK-nmsT      Loss2; Loss2 + LRM as in the loss grid
            slrm-kK-nmsT               S-LRM: select=stratified, β ramped linearly from 0 to S-OHEM's 1.9 (VOC)
                                       from half of a run's training images to three quarters (the paper: from
                                       40k of 80k iterations, once the loss is stable); with --epochs, where a run's
                                       length is not known beforehand, from image 1,440,000 over 720,000 (the same
                                       fractions of the paper budget, 45k x 64)
            iou-cls, iou-loc           IoU-balanced classification (eta 1.5) / localisation (lambda 1.5, w_loc 3)
            ktruths-kK-nmsT            adaptive K = 16 x truths x anchors per image, at least K/4, at most K
            kshare-kK-nmsT             adaptive K: the hard examples carrying 0.9 of the image's loss, at most K
            soft-kK-nmsT               soft LRM: the other predictions keep 0.25 of their loss
            ohem-kK-nmsT               SSD-style: every foreground + 3 hard backgrounds per foreground, at most K
  fixed   the pretrained study's rows, fixed in advance from the paper's own best settings: baseline (Loss2),
          Loss2 + LRM K=128 / NMS .7 (Table II's best, KITTI), K=256 / NMS .7 (Table III's best, VOC), Loss1,
          Loss1 + focal loss (Table IV); no row is chosen on a split.
  custom  only the `--variant`s (which may also be added to the other grids).

Runs go seed by seed (every row of seed 0, then of seed 1, ...), each through the normal trainer with the same
budget and seed (seed = initial weights, data order and augmentation, so the variants of one seed see the same
images in the same order), then its final weights
(`weights/last.pt`, not the best-on-test `best.pt`) are scored on the data's `valid=` list with `evaluate_model`.
A run lives in `OUT/runs/<variant>-s<seed>/` and is finished when its result file `experiment.json` exists; a run
with `weights/last.pt` but no result continues with the trainer's `--resume`, so an interrupted grid is resumed by
repeating the command (`--report-only` writes the tables of what has finished and runs nothing).  Each run's
folder also holds `eval-<data>/`: the PR curves and confusion matrix of its final weights.  Runs are shared between grids in one `--out` (the baseline of the lrm grid is the Loss2 row
of the loss and mining grids), and a stored run whose settings differ from the requested ones is an error, never
reused.  Grid runs write no Darknet backups outside their run folder (TrainArgs.backup = ''; each run keeps its
`weights/last.weights`): the variants of one cfg would overwrite each other's in the data's `backup=` folder.

Outputs in OUT, per grid G: `G.md` (the table: mean +- sample std over seeds, the improvement over the Loss2
baseline as in Table IV, paired by seed, with its 95 % t interval and wins / losses; K also as a share of the
predictions; a second table on `--test-data`; a Method column names the options beyond the paper when a row has one),
`G.json` (every run and every aggregate), `G-runs.csv`, `G-summary.csv`, `G-map-vs-k.png` (Figs. 5/6: mAP
against K, one line per NMS threshold, the baseline as a horizontal line) and `G-deltas.png` (each row's paired Δ
per seed and its mean with the 95 % interval); the figures need matplotlib.  AP values are
fractions in the JSON and percentages in the tables and CSV files.
"""
# the command line and the grid loop; the rows of the grids: grids.py, one run and its record: runs.py, the tables
# and plots: report.py
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from ..evaluation.evaluate import METRICS
from .grids import (BASELINE, BUDGETS, GRIDS, ExperimentError, default_metric, grid_variants, load_budget,
                               parse_variant, settings_of)
from .report import write_reports
from .runs import (Interrupted, finished_record, hardware, make_spec, map_text, portable_path, run_images,
                   run_one)


def cli_options(opts: argparse.Namespace) -> dict[str, Any]:
    """TrainArgs fields given on the command line (they override the budget's)."""
    out: dict[str, Any] = {'device': opts.device}
    if opts.workers is not None:
        out['workers'] = opts.workers
    if opts.weights:
        out.update(weights=portable_path(opts.weights), clear=opts.clear)
    return out


def run_grid(opts: argparse.Namespace, log=print) -> dict[str, Any]:
    """Run every missing (variant, seed) of the grid (with `--report-only`, none), then write its reports from the
    finished runs; returns the summary JSON."""
    out = Path(opts.out or f'runs/experiments/{Path(opts.cfg).stem}-{Path(opts.data).stem}')
    budget = load_budget(opts.budget)
    metric = opts.metric or budget.metric or default_metric(opts.data)
    options = cli_options(opts)
    images = run_images(make_spec(BASELINE, 0, budget, opts.set, opts.cfg, opts.data, out, metric, options).args)
    variants, note = grid_variants(opts.grid, [parse_variant(v) for v in opts.variant], out, images)
    if note:
        log(f'Loss2 + LRM: {note}')
    specs = [make_spec(v, s, budget, opts.set, opts.cfg, opts.data, out, metric, options, opts.test_data)
             for s in dict.fromkeys(opts.seeds) for v in variants]  # seed by seed: each seed's rows pair up early
    for spec in specs:  # every override is checked before the first run starts
        settings_of(spec.args)
    out.mkdir(parents=True, exist_ok=True)
    context = {'command': opts.command, 'cfg': opts.cfg, 'data': opts.data, 'weights': opts.weights,
               'budget': budget.name, 'budget_note': budget.note, 'budget_train': budget.train,
               'seeds': list(dict.fromkeys(opts.seeds)), 'metric': metric, 'note': note,
               'test_data': opts.test_data,
               'hardware': hardware(opts.device)}
    records: list[dict[str, Any]] = []

    def report() -> None:
        for n in write_reports(out, opts.grid, variants, records, context):
            log(n)
        log(f'tables: {out / (opts.grid + ".md")}')
    try:
        for spec in specs:
            if opts.report_only:
                record = finished_record(spec, opts.records)
                if record is not None:
                    records.append(record.to_json())
                continue
            record, ran = run_one(spec, log, opts.records)
            if not ran:
                log(f'== {spec.run_dir.name}: finished before, skipped ({map_text(record)})')
            records.append(record.to_json())
    except (Interrupted, KeyboardInterrupt):  # tables of what has finished; other errors leave the old ones
        report()
        raise
    report()
    return json.loads((out / f'{opts.grid}.json').read_text())


def parser() -> argparse.ArgumentParser:
    """The command line."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.experiments', description=__doc__.split('\n')[0],
                                 epilog=__doc__.split('\n\n', 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cfg', required=True, help='base network cfg')
    ap.add_argument('--data', required=True, help='.data file (train=, valid=, names=, annotations=)')
    ap.add_argument('--test-data', metavar='DATA', help='also score every run\'s final weights on the valid= list '
                    'of this .data (a held-out test split: choose settings on --data\'s valid=, report on this); '
                    'stored in each run\'s record as "test"')
    ap.add_argument('--grid', choices=GRIDS, default='lrm')
    ap.add_argument('--variant', action='append', default=[], metavar='NAME:KEY=V,KEY=V',
                    help='an extra row, e.g. lrm-k32:lrm.hard_examples=32,lrm.nms=0.5 (repeatable)')
    ap.add_argument('--set', nargs='+', default=[], metavar='SECTION.KEY=VALUE',
                    help='cfg overrides for every run (the variants\' own overrides win)')
    ap.add_argument('--seeds', nargs='+', type=int, default=[0])
    ap.add_argument('--budget', help=f'{"|".join(BUDGETS)} or a JSON file (default: the cfg\'s own settings)')
    ap.add_argument('--out', help='output folder (default runs/experiments/<cfg>-<data>); share it between the '
                    'lrm, loss and mining grids of one dataset')
    ap.add_argument('--weights', help='initial weights of every run: a Darknet .weights (e.g. a pretrained backbone '
                    'such as darknet19_448.conv.23, as the paper starts from ImageNet) or our .pt')
    ap.add_argument('--clear', action='store_true', help='reset the --weights\' seen to 0 (the schedule, burn-in '
                    'and anchor prior start again), as train.py --clear')
    ap.add_argument('--device', default='', help='cpu, cuda, cuda:N (default: cuda when available)')
    ap.add_argument('--workers', type=int, help='data loading processes (default: the budget\'s, else 4)')
    ap.add_argument('--records', type=Path, metavar='DIR',
                    help='also keep every finished run\'s result as DIR/<run>.json, and count a run found there as '
                         'finished: commit DIR, and a later session (a fresh checkout without OUT/runs) resumes the '
                         'grid where it stood')
    ap.add_argument('--report-only', action='store_true',
                    help='write the tables from the runs that have finished; train, resume and score nothing (e.g. '
                         'to see a grid while another process runs it)')
    ap.add_argument('--metric', choices=METRICS,
                    help='default: the budget\'s, else kitti-voc for eval=kitti data, else voc07')
    return ap


def main(argv: list[str] | None = None) -> None:
    """Entry point; exit status 130 when a run was interrupted (repeat the command to resume)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parser().parse_args(argv)
    opts.command = shlex.join(['python', '-m', 'yolo_lrm.experiments', *argv])
    try:
        run_grid(opts)
    except Interrupted as exc:
        print(f'interrupted: {exc}', file=sys.stderr)
        raise SystemExit(130) from None
    except (ExperimentError, ValueError, OSError) as exc:  # cfg errors and --device are ValueErrors
        raise SystemExit(f'error: {exc}') from None
