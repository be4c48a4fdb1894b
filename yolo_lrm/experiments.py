"""The paper's comparison tables with one command: a grid of training runs, each evaluated, then tables and plots.

    python -m yolo_lrm.experiments --cfg CFG --data DATA [--grid lrm|loss|mining|custom] [--variant NAME:KEY=V,...]
                                   [--set KEY=V ...] [--seeds 0 1 2] [--budget demo|bccd|paper|FILE.json]
                                   [--out DIR] [--device D] [--workers N] [--metric voc07|area|kitti|kitti-voc]

Grids (each variant is a list of cfg overrides on top of the budget's and `--set`):
  lrm     Tables II/III: the baseline (Loss2, no LRM) and hard examples K in {64, 128, 256} x NMS in {none, .5, .7}.
  loss    Table IV: Loss2, Loss1, Loss1 + focal loss, Loss2 + LRM with the best K/NMS of a finished lrm grid in the
          same `--out` (else the paper's VOC best, K=256 / NMS .7; the table says which).
  mining  the mining options beyond the paper (keys in mining.py and loss.py), each added to that same LRM row
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
  custom  only the `--variant`s (which may also be added to the other grids).

Every run goes through the normal trainer with the same budget and seed (seed = initial weights, data order and
augmentation, so the variants of one seed see the same images in the same order), then its final weights
(`weights/last.pt`, not the best-on-test `best.pt`) are scored on the data's `valid=` list with `evaluate_model`.
A run lives in `OUT/runs/<variant>-s<seed>/` and is finished when its result file `experiment.json` exists; a run
with `weights/last.pt` but no result continues with the trainer's `--resume`, so an interrupted grid is resumed by
repeating the command.  Runs are shared between grids in one `--out` (the baseline of the lrm grid is the Loss2 row
of the loss and mining grids), and a stored run whose settings differ from the requested ones is an error, never
reused.  Grid runs write no Darknet backups outside their run folder (TrainArgs.backup = ''; each run keeps its
`weights/last.weights`): the variants of one cfg would overwrite each other's in the data's `backup=` folder.

Outputs in OUT, per grid G: `G.md` (the table: mean +- sample std over seeds, the improvement over the Loss2
baseline as in Table IV, paired by seed; a Method column names the options beyond the paper when a row has one),
`G.json` (every run and every aggregate), `G-runs.csv`, `G-summary.csv` and `G-map-vs-k.png` (Figs. 5/6: mAP
against K, one line per NMS threshold, the baseline as a horizontal line; needs matplotlib).  AP values are
fractions in the JSON and percentages in the tables and CSV files.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .cfg import CfgError, Section, parse_cfg, parse_data
from .checkpoint import atomic_write
from .evaluate import METRICS
from .loss import RegionLoss
from .trainer import NonFiniteLoss, TrainArgs, cfg_overrides, train

RESULT_FILE = 'experiment.json'
GRIDS = ('lrm', 'loss', 'mining', 'custom')
HARD_EXAMPLES = (64, 128, 256)
NMS_THRESHOLDS = (None, 0.5, 0.7)          # None: no NMS on the loss ranking (lrm.nms=1)
PAPER_BEST = (256, 0.7)                    # Table III (VOC): the best K / NMS of the paper
SLRM_BETA = 1.9                            # S-OHEM's target β on VOC07 (2.3 on KITTI)
SLRM_SCHEDULE = (0.5, 0.25)                # β ramps from 0 after this share of a run's images, over this share
SLRM_FIXED = (1_440_000, 720_000)          # the same shares of the paper budget (45k x 64), for runs of unknown length
# TrainArgs fields that make two runs the same experiment (paths compared by file name: an OUT may be moved); not
# where Darknet backups go (`backup`), which changes no result
_IDENTITY = ('cfg', 'data', 'weights', 'clear', 'set', 'seed', 'batch', 'subdivisions', 'max_batches', 'epochs',
             'lr', 'img_size', 'augment', 'eval_metric')
_NOT_IN_BUDGET = ('cfg', 'data', 'resume', 'project', 'name', 'exist_ok', 'seed', 'device', 'backup')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]*$')


class ExperimentError(ValueError):
    """A grid that cannot run as asked (bad variant, settings that clash with stored runs, ...)."""


class Interrupted(RuntimeError):
    """A run stopped on Ctrl-C/SIGTERM after saving; repeating the command resumes it."""


# ------------------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """Trainer settings (TrainArgs fields; `set` = cfg overrides) and the metric every run of a grid shares."""
    name: str
    train: dict[str, Any]
    metric: str | None = None          # None: kitti-voc for `eval=kitti` data, else voc07
    note: str = ''


BUDGETS = {
    # the built-in demo (cfg/demo.cfg on data/demo.data) on a 2-core CPU at a third of the cfg's own schedule: 400
    # updates of 8 images, about two and a half minutes per run; docs/results.md gives the measured times
    'demo': Budget('demo', {'batch': 8, 'subdivisions': 1, 'max_batches': 400, 'img_size': 256, 'workers': 2,
                            'eval_interval': 400, 'save_interval': 100,
                            'set': ['net.burn_in=100', 'net.learning_rate=0.02', 'net.policy=steps',
                                    'net.steps=320,360', 'net.scales=.1,.1', 'region.random=0']},
                   'voc07', 'demo dataset (cfg/demo.cfg), CPU'),
    # cfg/yolov2-bccd.cfg on data/bccd.data (train 205 -> val 87; --test-data data/bccd-test.data: test 72) on a
    # 2-core CPU: the cfg's own schedule, 1200 updates of 8 at 416 (~47 epochs); docs/results.md gives the learning
    # curve at twice this budget and the measured times
    'bccd-cpu': Budget('bccd-cpu', {'batch': 8, 'subdivisions': 1, 'max_batches': 1200, 'img_size': 416,
                                    'workers': 2, 'eval_interval': 1200, 'save_interval': 100,
                                    'set': ['net.burn_in=200', 'net.learning_rate=0.02', 'net.policy=steps',
                                            'net.steps=960,1080', 'net.scales=.1,.1', 'region.random=0']},
                       'voc07', 'BCCD at 416 (cfg/yolov2-bccd.cfg), CPU'),
    # BCCD converted with the VOC converter (3 classes, trainval 292 -> test 72), one GPU: ~220 epochs of 64 at 416
    'bccd': Budget('bccd', {'batch': 64, 'subdivisions': 1, 'max_batches': 1000, 'img_size': 416, 'workers': 8,
                            'eval_interval': 100,
                            'set': ['net.burn_in=100', 'net.policy=steps', 'net.steps=800,900', 'net.scales=.1,.1']},
                   'voc07', 'BCCD, one GPU'),
    # Sec. IV-A: VOC07+12 trainval -> VOC07 test (or KITTI 6 classes, 9:1), 45k iterations of 64 images at 416
    'paper': Budget('paper', {'batch': 64, 'subdivisions': 8, 'max_batches': 45000, 'img_size': 416},
                    None, 'the paper: 45k x 64 images, 416, one GPU'),
}


def load_budget(spec: str | None) -> Budget:
    """A preset name, a JSON file `{"train": {TrainArgs fields}, "metric": ...}`, or None (the cfg as it is)."""
    if spec is None:
        return Budget('cfg', {})
    if spec in BUDGETS:
        return BUDGETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ExperimentError(f'--budget {spec}: neither a preset ({", ".join(BUDGETS)}) nor a file')
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExperimentError(f'{path}: not valid JSON ({exc})') from None
    if not isinstance(raw, dict) or not isinstance(raw.get('train', {}), dict):
        raise ExperimentError(f'{path}: expected {{"train": {{...}}, "metric": "voc07"}}')
    extra = sorted(set(raw) - {'train', 'metric', 'note'})
    if extra:
        raise ExperimentError(f'{path}: unknown keys {extra}; expected train, metric, note')
    allowed = {f.name for f in dataclasses.fields(TrainArgs)} - set(_NOT_IN_BUDGET)
    unknown = sorted(set(raw.get('train', {})) - allowed)
    if unknown:
        raise ExperimentError(f'{path}: train: unknown options {unknown}; accepted: {", ".join(sorted(allowed))}')
    if raw.get('metric') not in (None, *METRICS):
        raise ExperimentError(f'{path}: metric {raw["metric"]!r}: choose one of {", ".join(METRICS)}')
    return Budget(path.stem, raw.get('train', {}), raw.get('metric'), raw.get('note', ''))


# ------------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of a table: a name (also its run folder) and the cfg overrides that make it."""
    name: str
    overrides: tuple[str, ...]


def _loss(loss: str, focal: int) -> tuple[str, ...]:
    return f'region.loss={loss}', f'region.focal={focal}'


BASELINE = Variant('baseline', (*_loss('loss2', 0), 'lrm.hard_examples=0'))


def lrm_variant(k: int, nms: float | None) -> Variant:
    """Loss2 + LRM keeping k predictions per image, NMS on the ranking at `nms` (None: none)."""
    return Variant(f'lrm-k{k}-nms{"none" if nms is None else f"{nms:g}"}',
                   (*_loss('loss2', 0), f'lrm.hard_examples={k}', f'lrm.nms={1 if nms is None else nms:g}'))


def lrm_grid() -> list[Variant]:
    """Tables II/III: the baseline, then K x NMS."""
    return [BASELINE] + [lrm_variant(k, t) for t in NMS_THRESHOLDS for k in HARD_EXAMPLES]


def loss_grid(best: tuple[int, float | None]) -> list[Variant]:
    """Table IV: Loss2, Loss1, Loss1 + focal loss, Loss2 + LRM(best)."""
    return [BASELINE, Variant('loss1', (*_loss('loss1', 0), 'lrm.hard_examples=0')),
            Variant('loss1-focal', (*_loss('loss1', 1), 'lrm.hard_examples=0')), lrm_variant(*best)]


def mining_grid(best: tuple[int, float | None], images: int | None) -> list[Variant]:
    """The mining options (module docstring), each on top of Loss2 + LRM(best), the IoU-balanced losses on top of the
    baseline; `images`: a run's training images (the S-LRM schedule is a share of them), None when not known."""
    lrm, k = lrm_variant(*best), best[0]
    start, ramp = slrm_schedule(images)

    def on_lrm(prefix: str, *keys: str) -> Variant:
        return Variant(lrm.name.replace('lrm', prefix, 1), (*lrm.overrides, *keys))
    return [BASELINE, lrm,
            on_lrm('slrm', 'lrm.select=stratified', f'lrm.select_beta={SLRM_BETA:g}', f'lrm.beta_start={start}',
                   f'lrm.beta_ramp={ramp}'),
            Variant('iou-cls', (*BASELINE.overrides, 'region.iou_balanced_cls=1', 'region.eta=1.5')),
            Variant('iou-loc', (*BASELINE.overrides, 'region.iou_balanced_loc=1', 'region.lambda=1.5',
                                'region.w_loc=3')),
            on_lrm('ktruths', 'lrm.k_mode=truths', 'lrm.k_per_truth=16', f'lrm.k_min={k // 4}'),
            on_lrm('kshare', 'lrm.k_mode=loss_share', 'lrm.loss_share=0.9'),
            on_lrm('soft', 'lrm.soft=0.25'),
            on_lrm('ohem', 'lrm.mode=ohem', 'lrm.neg_pos_ratio=3')]


def slrm_schedule(images: int | None) -> tuple[int, int]:
    """S-LRM's (beta_start, beta_ramp) in training images: shares of a run's `images`, fixed when that is unknown."""
    return SLRM_FIXED if images is None else (round(SLRM_SCHEDULE[0] * images), round(SLRM_SCHEDULE[1] * images))


def parse_variant(text: str) -> Variant:
    """`NAME:section.key=value,section.key=value` (a bare NAME means the cfg as it is)."""
    name, _, rest = text.partition(':')
    if not _NAME.match(name):
        raise ExperimentError(f'--variant {text!r}: the name must be letters, digits, ., _, + or - '
                              f'(it names the run folder)')
    overrides = tuple(o.strip() for o in rest.split(',') if o.strip())
    bad = [o for o in overrides if '=' not in o or '.' not in o.partition('=')[0]]
    if bad:
        raise ExperimentError(f'--variant {text!r}: {bad[0]!r} is not section.key=value')
    return Variant(name, overrides)


def best_lrm_setting(out: Path) -> tuple[tuple[int, float | None], str]:
    """(K, NMS) of the best LRM row of a complete lrm grid in `out`, else the paper's; and a note saying which."""
    path = out / 'lrm.json'
    if path.is_file():
        summary = json.loads(path.read_text())
        rows = [r for r in summary['aggregate'] if r['settings']['lrm'] and _plain(r['settings'])
                and r['map_mean'] is not None]
        if summary.get('complete') and rows:
            best = max(rows, key=lambda r: r['map_mean'])
            s = best['settings']
            return (s['hard_examples'], s['nms']), (f"K={s['hard_examples']}, NMS {_nms_text(s['nms'])}: the best "
                                                     f"LRM row of the finished lrm grid in {path.name} (chosen on "
                                                     f"the same test split, as the paper does)")
    k, t = PAPER_BEST
    return PAPER_BEST, f'K={k}, NMS {t}: the paper\'s best on VOC (Table III); no finished lrm grid in this --out'


def grid_variants(grid: str, extra: Sequence[Variant], out: Path, images: int | None = None
                  ) -> tuple[list[Variant], str]:
    """The variants of a grid plus `extra`, and a note on how the loss and mining grids chose their LRM setting (and
    the mining grid its S-LRM schedule); `images`: a run's training images, if known."""
    note = ''
    if grid == 'lrm':
        variants = lrm_grid()
    elif grid in ('loss', 'mining'):
        best, note = best_lrm_setting(out)
        variants = loss_grid(best) if grid == 'loss' else mining_grid(best, images)
        if grid == 'mining':
            note += ('; every mining row but iou-cls/iou-loc adds its option to this LRM row; S-LRM\'s schedule: '
                     + (f'shares of a run\'s {images:,} training images' if images else 'fixed (with --epochs a '
                        'run\'s length is not known beforehand)'))
    else:
        if not extra:
            raise ExperimentError('--grid custom needs at least one --variant NAME:KEY=V,...')
        variants = []
    variants += extra
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ExperimentError(f'variant names must be unique; repeated: {", ".join(dup)}')
    return variants, note


# ------------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class RunSpec:
    """One (variant, seed) training run and where it lives."""
    variant: Variant
    seed: int
    args: TrainArgs
    metric: str
    test_data: str | None = None      # a second .data whose valid= list (the test split) also scores the run

    @property
    def run_dir(self) -> Path:
        return Path(self.args.project) / self.args.name


def make_spec(variant: Variant, seed: int, budget: Budget, user_set: Sequence[str], cfg: str, data: str,
              out: Path, metric: str, options: dict[str, Any], test_data: str | None = None) -> RunSpec:
    """The TrainArgs of one run: the budget's options, then `options` (command line: device, workers, weights,
    clear); cfg overrides: the budget's, then `--set`, then the variant's (the variant wins).  No Darknet backups
    outside the run folder: the runs of one cfg would overwrite each other's in the data's `backup=`."""
    train_opts = {**{k: v for k, v in budget.train.items() if k != 'set'}, **options}
    args = TrainArgs(cfg=os.path.abspath(cfg), data=os.path.abspath(data), seed=seed,
                     set=[*budget.train.get('set', []), *user_set, *variant.overrides],
                     project=str(out / 'runs'), name=f'{variant.name}-s{seed}', exist_ok=True,
                     eval_metric=metric, backup='', **train_opts)
    return RunSpec(variant, seed, args, metric, os.path.abspath(test_data) if test_data else None)


def cli_options(opts: argparse.Namespace) -> dict[str, Any]:
    """TrainArgs fields given on the command line (they override the budget's)."""
    out: dict[str, Any] = {'device': opts.device}
    if opts.workers is not None:
        out['workers'] = opts.workers
    if opts.weights:
        out.update(weights=os.path.abspath(opts.weights), clear=opts.clear)
    return out


def run_images(args: TrainArgs) -> int | None:
    """Training images of a run (max_batches x batch of its resolved cfg); None with --epochs (the data decides)."""
    net = parse_cfg(args.cfg, cfg_overrides(args)).net
    return None if args.epochs is not None or net['max_batches'] <= 0 else net['max_batches'] * net['batch']


def settings_of(args: TrainArgs) -> dict[str, Any]:
    """What the table shows about a run, read from its resolved cfg (so a bad override fails here, before training)."""
    cfg = parse_cfg(args.cfg, cfg_overrides(args))
    RegionLoss(cfg.region, cfg.lrm)  # the loss's own checks (mining values in range, focal with loss1, ...)
    k, nms = cfg.lrm['hard_examples'], cfg.lrm['nms']
    return {'loss': cfg.region['loss'], 'focal': bool(cfg.region['focal']), 'lrm': k > 0,
            'hard_examples': k if k > 0 else None, 'nms': nms if k > 0 and nms < 1 else None,
            'method': method_of(cfg.region, cfg.lrm)}


def method_of(region: Section, lrm: Section) -> str:
    """The Method column: the options beyond the paper that a resolved cfg switches on, in words ('' when none)."""
    parts = []
    if region['iou_balanced_cls']:
        parts.append(f"IoU-balanced cls, η {region['eta']:g}")
    if region['iou_balanced_loc']:
        parts.append(f"IoU-balanced loc, λ {region['lambda']:g}, w_loc {region['w_loc']:g}")
    if lrm['hard_examples'] > 0:
        if lrm['mode'] == 'ohem':
            parts.append(f"OHEM, {lrm['neg_pos_ratio']:g} backgrounds per foreground")
        if lrm['select'] != 'loss':
            target = f"β 0→{lrm['select_beta']:g}" if lrm['select'] == 'stratified' else \
                f"cls share 1→{lrm['strata_cls_share']:g}"
            parts.append(f"S-LRM {lrm['select']}, {target} from image {lrm['beta_start']:,} over {lrm['beta_ramp']:,}")
        if lrm['k_mode'] == 'truths':
            parts.append(f"adaptive K = {lrm['k_per_truth']:g}·truths·anchors, ≥ {lrm['k_min']}")
        elif lrm['k_mode'] == 'loss_share':
            parts.append(f"adaptive K: {lrm['loss_share']:g} of the loss, ≥ {lrm['k_min']}")
        if lrm['soft']:
            parts.append(f"soft LRM {lrm['soft']:g}" + (f", decay {lrm['soft_decay']:g}" if lrm['soft_decay'] else ''))
    return '; '.join(parts)


def _identity(args: dict[str, Any]) -> dict[str, Any]:
    return {k: (Path(args[k]).name if k in ('cfg', 'data', 'weights') and args[k] else args[k]) for k in _IDENTITY}


def check_same_run(spec: RunSpec, stored: dict[str, Any], where: Path) -> None:
    """Refuse to reuse a stored run made with other settings."""
    want, have = _identity(dataclasses.asdict(spec.args)), _identity({k: stored.get(k) for k in _IDENTITY})
    diff = [k for k in _IDENTITY if want[k] != have[k]]
    if diff:
        k = diff[0]
        raise ExperimentError(f'{where}: this run was made with {k}={have[k]!r}, the grid asks for {want[k]!r}; '
                              f'use another --out or delete {spec.run_dir}')


def run_one(spec: RunSpec, log=print) -> tuple[dict[str, Any], bool]:
    """Train (or resume) and evaluate one run unless its result exists; returns (record, ran now)."""
    run_dir, result_path = spec.run_dir, spec.run_dir / RESULT_FILE
    if result_path.is_file():
        record = json.loads(result_path.read_text())
        check_same_run(spec, record['args'], result_path)
        if spec.test_data and 'test' not in record and record['map'] is not None:  # --test-data added later
            record['test'] = score_weights(spec, spec.test_data)
            text = json.dumps(record, indent=2) + '\n'
            atomic_write(result_path, lambda f: f.write(text.encode()))
        return record, False
    last = run_dir / 'weights' / 'last.pt'
    if last.is_file():
        check_same_run(spec, json.loads((run_dir / 'args.json').read_text())['args'], run_dir / 'args.json')
        log(f'== {run_dir.name}: resuming')
        args = TrainArgs(resume=str(run_dir), device=spec.args.device, workers=spec.args.workers)
    else:
        if run_dir.exists():  # a start that never reached its first checkpoint: nothing to keep
            shutil.rmtree(run_dir)
        log(f'== {run_dir.name}: training')
        args = spec.args
    start = time.perf_counter()
    try:
        result = train(args)
    except NonFiniteLoss as exc:  # a diverged run is a result of the comparison, not a failure of the grid
        record = diverged_record(spec, str(exc))
    else:
        if result.reason == 'interrupted':
            raise Interrupted(f'{run_dir.name} stopped at update {result.updates}; repeat the command to resume it')
        record = evaluate_run(spec, result.updates, result.seen, result.reason, result.last_map)
    record['wall_s'] = round(time.perf_counter() - start, 1)
    text = json.dumps(record, indent=2) + '\n'
    atomic_write(result_path, lambda f: f.write(text.encode()))  # a torn result file would poison the resume
    log(f'== {run_dir.name}: {map_text(record)} ({record["wall_s"] / 60:.1f} min)')
    return record, True


def map_text(record: dict[str, Any]) -> str:
    """`mAP 12.34`, or `diverged` for a run stopped on a non-finite loss."""
    return 'diverged' if record['map'] is None else f'mAP {100 * record["map"]:.2f}'


def score_weights(spec: RunSpec, data: str) -> dict[str, Any]:
    """Score the run's final weights (`weights/last.pt`) on the `valid=` list of `data`: mAP, per-class AP, the
    evaluation's JSON and the CPU/GPU seconds it took."""
    from .checkpoint import checkpoint_model, load_checkpoint
    from .evaluate import evaluate_model
    last = spec.run_dir / 'weights' / 'last.pt'
    device = spec.args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    net = checkpoint_model(load_checkpoint(last), last).to(device).eval()
    start = time.perf_counter()
    ev = evaluate_model(net, parse_data(data), spec.metric, 0.5, batch_size=spec.args.eval_batch,
                        workers=min(spec.args.workers, 2), progress=False)
    return {'data': Path(data).name, 'map': ev.map, 'per_class': {k: _num(v) for k, v in ev.per_class.items()},
            'eval': ev.to_json(), 'eval_s': round(time.perf_counter() - start, 1), 'device': str(device)}


def evaluate_run(spec: RunSpec, updates: int, seen: int, reason: str, trainer_map: float | None) -> dict[str, Any]:
    """Score the run's final weights on `valid=` (and on the test data's, when given) and build its result record."""
    from .checkpoint import load_checkpoint
    train_s = float(load_checkpoint(spec.run_dir / 'weights' / 'last.pt').get('train_time', 0.0))
    valid = score_weights(spec, spec.args.data)
    record = {'variant': spec.variant.name, 'overrides': list(spec.variant.overrides), 'seed': spec.seed,
              'run_dir': spec.run_dir.name, 'weights': 'weights/last.pt', 'settings': settings_of(spec.args),
              'args': dataclasses.asdict(spec.args), 'updates': updates, 'seen': seen, 'reason': reason,
              'train_s': round(train_s, 1), 'eval_s': valid['eval_s'],
              'device': valid['device'], 'metric': spec.metric, 'map': valid['map'],
              'per_class': valid['per_class'], 'trainer_final_map': trainer_map, 'eval': valid['eval']}
    if spec.test_data:
        record['test'] = score_weights(spec, spec.test_data)
    return record


def diverged_record(spec: RunSpec, message: str) -> dict[str, Any]:
    """The result of a run that stopped on a non-finite loss: no mAP, the trainer's message kept."""
    names = parse_data(spec.args.data).names()
    return {'variant': spec.variant.name, 'overrides': list(spec.variant.overrides), 'seed': spec.seed,
            'run_dir': spec.run_dir.name, 'weights': None, 'settings': settings_of(spec.args),
            'args': dataclasses.asdict(spec.args), 'updates': None, 'seen': None, 'reason': 'non-finite',
            'train_s': None, 'eval_s': 0.0, 'device': spec.args.device or 'auto', 'metric': spec.metric,
            'map': None, 'per_class': {n: None for n in names}, 'trainer_final_map': None, 'error': message}


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


# ------------------------------------------------------------------------------------------------- aggregation
def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(variants: Sequence[Variant], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: mean and sample std over seeds of mAP and per-class AP, and the improvement over the Loss2
    baseline (the first variant with Loss2, no focal loss and no LRM), paired by seed; diverged runs are counted and
    left out of the means."""
    by_variant = {v.name: [r for r in records if r['variant'] == v.name] for v in variants}
    base = next((v.name for v in variants if by_variant[v.name] and _is_baseline(by_variant[v.name][0])), None)
    base_map = {r['seed']: r['map'] for r in by_variant.get(base, [])}
    rows = []
    for v in variants:
        runs = sorted(by_variant[v.name], key=lambda r: r['seed'])
        if not runs:
            continue
        classes = list(runs[0]['per_class'])
        m, s = _mean_std([r['map'] for r in runs])
        deltas = [r['map'] - base_map[r['seed']] for r in runs
                  if r['map'] is not None and base_map.get(r['seed']) is not None]
        dm, ds = _mean_std(deltas) if base and v.name != base else (None, None)
        per_class = {c: _mean_std([r['per_class'][c] for r in runs]) for c in classes}
        rows.append({'variant': v.name, 'settings': runs[0]['settings'], 'seeds': [r['seed'] for r in runs],
                     'diverged': sum(r['map'] is None for r in runs),
                     'map_mean': m, 'map_std': s, 'delta_mean': dm, 'delta_std': ds, 'baseline': base,
                     'per_class_mean': {c: ms[0] for c, ms in per_class.items()},
                     'per_class_std': {c: ms[1] for c, ms in per_class.items()}})
    return rows


def _is_baseline(record: dict[str, Any]) -> bool:
    return _plain(record['settings']) and not record['settings']['lrm']


def _plain(settings: dict[str, Any]) -> bool:
    """Loss2 without focal loss or any option beyond the paper (the baseline, or LRM when `lrm`)."""
    return settings['loss'] == 'loss2' and not settings['focal'] and not settings.get('method')


# ------------------------------------------------------------------------------------------------- reports
def backbone_name(cfg_path: str) -> str:
    """The backbone column, from the cfg's file name."""
    stem = Path(cfg_path).stem.lower()
    if 'mobilenet' in stem:
        return 'MobileNet'
    if 'tiny' in stem:
        return 'Tiny Darknet'
    if stem in ('yolov2-voc', 'yolov2-kitti', 'yolov2'):
        return 'Darknet-19'
    return Path(cfg_path).stem


def _pct(v: float | None, std: float | None = None, sign: bool = False) -> str:
    if v is None:
        return '-'
    text = f'{100 * v:+.2f}' if sign else f'{100 * v:.2f}'
    return text + (f' ± {100 * std:.2f}' if std is not None else '')


def _map_cell(row: dict[str, Any]) -> str:
    n, bad = len(row['seeds']), row['diverged']
    if bad == n:
        return 'diverged'
    return _pct(row['map_mean'], row['map_std']) + (f' ({bad} of {n} diverged)' if bad else '')


def _nms_text(nms: float | None) -> str:
    return '✗' if nms is None else f'{nms:g}'


def markdown_table(rows: Sequence[dict[str, Any]], backbone: str) -> str:
    """The paper's layout (Tables II-IV in one): settings, mAP, improvement over Loss2, per-class AP, in percent;
    a Method column (LRM, or the options beyond the paper) when some row uses such an option."""
    classes = list(rows[0]['per_class_mean']) if rows else []
    method = ['Method'] if any(r['settings'].get('method') for r in rows) else []
    head = ['Variant', *method, 'Detector', 'Backbone', 'Loss', 'FL', 'LRM', 'Hard examples', 'NMS', 'Seeds', 'mAP',
            'Δ vs Loss2', *classes]
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * (9 + len(method)) + ['---:'] * (2 + len(classes))) + '|']
    for r in rows:
        s = r['settings']
        cells = [r['variant'], *[s.get('method') or ('LRM' if s['lrm'] else '-') for _ in method], 'YOLOv2',
                 backbone, s['loss'].capitalize(), '✓' if s['focal'] else '✗', '✓' if s['lrm'] else '✗',
                 str(s['hard_examples']) if s['lrm'] else '-', _nms_text(s['nms']) if s['lrm'] else '-',
                 str(len(r['seeds'])), _map_cell(r), _pct(r['delta_mean'], r['delta_std'], sign=True),
                 *(_pct(r['per_class_mean'][c]) for c in classes)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_csvs(out: Path, grid: str, records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> None:
    """`G-runs.csv` (one line per run) and `G-summary.csv` (one per variant), AP in percent."""
    keys = ('loss', 'focal', 'lrm', 'hard_examples', 'nms', 'method')  # method: absent from runs stored before it
    classes = list(records[0]['per_class']) if records else []
    with open(out / f'{grid}-runs.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', 'seed', *keys, 'updates', 'train_s', 'mAP', *classes])
        for r in records:
            w.writerow([r['variant'], r['seed'], *(_cell(r['settings'].get(k)) for k in keys), _cell(r['updates']),
                        _cell(r['train_s']), _cell(r['map'], 100), *(_cell(r['per_class'][c], 100) for c in classes)])
    with open(out / f'{grid}-summary.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['variant', *keys, 'seeds', 'diverged', 'mAP_mean', 'mAP_std', 'delta_mean', 'delta_std',
                    *(f'{c}_{m}' for c in classes for m in ('mean', 'std'))])
        for r in rows:
            w.writerow([r['variant'], *(_cell(r['settings'].get(k)) for k in keys), len(r['seeds']), r['diverged'],
                        *(_cell(r[k], 100) for k in ('map_mean', 'map_std', 'delta_mean', 'delta_std')),
                        *(_cell(r[f'per_class_{m}'][c], 100) for c in classes for m in ('mean', 'std'))])


def _cell(v: Any, scale: float = 1) -> str:
    if v is None:
        return ''
    if isinstance(v, float):
        return f'{scale * v:.4f}'
    return str(v)


def plot_map_vs_k(rows: Sequence[dict[str, Any]], path: Path, title: str) -> str | None:
    """Figs. 5/6: mAP against K, a line per NMS threshold, the baseline as a horizontal line.  Returns a note when
    nothing was drawn (no LRM rows, or no matplotlib)."""
    lines: dict[float | None, list[tuple[int, float, float]]] = {}
    for r in rows:
        s = r['settings']
        if s['lrm'] and _plain(s) and r['map_mean'] is not None:
            lines.setdefault(s['nms'], []).append((s['hard_examples'], r['map_mean'], r['map_std'] or 0.0))
    if not lines:
        return None
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return f'{path.name} not drawn: matplotlib is not installed (pip install matplotlib)'
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for nms in sorted(lines, key=lambda t: 2.0 if t is None else t):
        pts = sorted(lines[nms])
        ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts], marker='o',
                    capsize=3, label='no NMS' if nms is None else f'NMS {nms:g}')
    base = next((r for r in rows if r['variant'] == r['baseline']), None)
    if base is not None and base['map_mean'] is not None:
        ax.axhline(100 * base['map_mean'], color='gray', linestyle='--', label='baseline (no LRM)')
    ks = sorted({p[0] for pts in lines.values() for p in pts})
    ax.set_xscale('log', base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel='hard examples K', ylabel='mAP (%)', title=title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return None


def write_reports(out: Path, grid: str, variants: Sequence[Variant], records: Sequence[dict[str, Any]],
                  context: dict[str, Any]) -> list[str]:
    """Table, JSON, CSVs and the plot of a grid from the finished runs; returns notes for the user."""
    rows = aggregate(variants, records)
    complete = len(records) == len(variants) * len(context['seeds'])
    summary = {**context, 'grid': grid, 'complete': complete, 'variants': [dataclasses.asdict(v) for v in variants],
               'aggregate': rows, 'runs': list(records)}
    (out / f'{grid}.json').write_text(json.dumps(summary, indent=2) + '\n')
    write_csvs(out, grid, records, rows)
    notes = [] if complete else [f'{grid}: {len(records)} of {len(variants) * len(context["seeds"])} runs finished']
    note = plot_map_vs_k(rows, out / f'{grid}-map-vs-k.png', f'{Path(context["data"]).stem}: mAP vs hard examples')
    notes += [note] if note else []
    (out / f'{grid}.md').write_text(markdown_report(grid, rows, context, complete))
    return notes


def markdown_report(grid: str, rows: Sequence[dict[str, Any]], ctx: dict[str, Any], complete: bool) -> str:
    """`G.md`: what was run, then the table."""
    runs = ctx['seeds']
    parts = [f'# {grid} grid: {Path(ctx["cfg"]).name} on {Path(ctx["data"]).name}', '',
             f'- command: `{ctx["command"]}`',
             f'- budget `{ctx["budget"]}`' + (f' ({ctx["budget_note"]})' if ctx['budget_note'] else '')
             + f': {json.dumps(ctx["budget_train"])}', f'- seeds: {" ".join(map(str, runs))}',
             f'- initial weights: {ctx["weights"] or "none (random initialisation)"}',
             f'- metric: {ctx["metric"]} @ IoU 0.5 on `valid=`, final weights (`last.pt`); AP in %, mean ± sample '
             f'std over seeds (per-class: mean; stds in {grid}-summary.csv)',
             '- Δ vs Loss2: mAP minus the baseline\'s mAP of the same seed, mean ± std',
             f'- hardware: {ctx["hardware"]}']
    if ctx.get('note'):
        parts.append(f'- Loss2 + LRM setting: {ctx["note"]}')
    if not complete:
        parts.append('- **incomplete**: not every run has finished; repeat the command to continue')
    return '\n'.join(parts + ['', markdown_table(rows, backbone_name(ctx['cfg'])), ''])


def hardware(device: str) -> str:
    """One line on where the runs ran."""
    if (device or ('cuda' if torch.cuda.is_available() else 'cpu')).startswith('cpu'):
        what = f'CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ' \
               f'{torch.get_num_threads()} torch threads'
    else:
        what = f'GPU {torch.cuda.get_device_name(f"cuda:{device}" if device.isdigit() else device or "cuda")}'
    return f'{what}; torch {torch.__version__}, Python {platform.python_version()}'


# ------------------------------------------------------------------------------------------------- the grid
def default_metric(data: str) -> str:
    """voc07, or kitti-voc (the paper's KITTI table: VOC AP on KITTI) for `eval=kitti` data."""
    return 'kitti-voc' if parse_data(data)['eval'] == 'kitti' else 'voc07'


def run_grid(opts: argparse.Namespace, log=print) -> dict[str, Any]:
    """Run every missing (variant, seed) of the grid, then write its reports; returns the summary JSON."""
    out = Path(opts.out or f'runs/experiments/{Path(opts.cfg).stem}-{Path(opts.data).stem}')
    budget = load_budget(opts.budget)
    metric = opts.metric or budget.metric or default_metric(opts.data)
    options = cli_options(opts)
    images = run_images(make_spec(BASELINE, 0, budget, opts.set, opts.cfg, opts.data, out, metric, options).args)
    variants, note = grid_variants(opts.grid, [parse_variant(v) for v in opts.variant], out, images)
    if note:
        log(f'Loss2 + LRM: {note}')
    specs = [make_spec(v, s, budget, opts.set, opts.cfg, opts.data, out, metric, options, opts.test_data)
             for v in variants for s in dict.fromkeys(opts.seeds)]
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
            record, ran = run_one(spec, log)
            if not ran:
                log(f'== {spec.run_dir.name}: finished before, skipped ({map_text(record)})')
            records.append(record)
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
    except (ExperimentError, CfgError, OSError) as exc:
        raise SystemExit(f'error: {exc}') from None


if __name__ == '__main__':
    main()
