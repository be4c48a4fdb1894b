"""The rows of the experiment grids and what they share: budgets (trainer settings of every run of a grid), variants
(a row's cfg overrides), the built-in lrm / loss / mining grids, and the settings a run's resolved cfg amounts to
(the columns of the tables).  The command line and the grids in words: yolo_lrm/experiments/cli.py."""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..cfg import Section, parse_cfg
from ..data.datafile import parse_data
from ..evaluation.evaluate import METRICS
from ..loss.mining import mining_on
from ..loss.region import check_loss_settings
from ..train.args import TrainArgs, cfg_overrides
from ..textfile import read_text

GRIDS = ('lrm', 'loss', 'mining', 'fixed', 'custom')
HARD_EXAMPLES = (64, 128, 256)
NMS_THRESHOLDS = (None, 0.5, 0.7)          # None: no NMS on the loss ranking (lrm.nms=1)
PAPER_BEST = (256, 0.7)                    # Table III (VOC): the best K / NMS of the paper
KITTI_BEST = (128, 0.7)                    # Table II (KITTI): the best K / NMS of the paper
SLRM_BETA = 1.9                            # S-OHEM's target β on VOC07 (2.3 on KITTI)
SLRM_SCHEDULE = (0.5, 0.25)                # β ramps from 0 after this share of a run's images, over this share
SLRM_FIXED = (1_440_000, 720_000)          # the same shares of the paper budget (45k x 64), for runs of unknown length
_NOT_IN_BUDGET = ('cfg', 'data', 'resume', 'project', 'name', 'exist_ok', 'seed', 'device', 'backup')
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._+-]*$')


class ExperimentError(ValueError):
    """A grid that cannot run as asked (bad variant, settings that clash with stored runs, ...)."""


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
    # the pretrained study (#33): cfg/yolov2-mobilenet-bccd.cfg from weights/mobilenet_v1.conv.27 on data/bccd.data
    # on a CPU: 2400 updates of 8 at 416 (twice the cfg's own 1200, which ended 8 points below this schedule's
    # plateau: docs/results.md); lr .002 (the network diverged at .005 and .01 at batch 8); channels_last (fp32:
    # bf16 is native on few CPUs and every row of a grid must run alike); every run also measures what LRM
    # K=256 / NMS .7 would drop (lrm.probe)
    'bccd-mobilenet-cpu': Budget('bccd-mobilenet-cpu',
                                 {'batch': 8, 'subdivisions': 1, 'max_batches': 2400, 'img_size': 416, 'workers': 2,
                                  'eval_interval': 200, 'save_interval': 100, 'channels_last': True,
                                  'set': ['net.burn_in=200', 'net.learning_rate=0.002', 'net.policy=steps',
                                          'net.steps=1920,2160', 'net.scales=.1,.1', 'region.random=0',
                                          'lrm.probe=1']},
                                 'voc07', 'BCCD at 416, MobileNet-YOLOv2 from ImageNet (cfg/yolov2-mobilenet-bccd.cfg), '
                                 'CPU'),
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
        raw = json.loads(read_text(path, 'budget file', ExperimentError))
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



def default_metric(data: str) -> str:
    """voc07, or kitti-voc (the paper's KITTI table: VOC AP on KITTI) for `eval=kitti` data."""
    return 'kitti-voc' if parse_data(data)['eval'] == 'kitti' else 'voc07'


# ------------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of a table: a name (also its run folder) and the cfg overrides that make it."""
    name: str
    overrides: tuple[str, ...]


def _loss(loss: str, focal: int) -> tuple[str, ...]:
    return f'region.loss={loss}', f'region.focal={focal}'


BASELINE = Variant('baseline', (*_loss('loss2', 0), 'lrm.hard_examples=0'))
LOSS1 = Variant('loss1', (*_loss('loss1', 0), 'lrm.hard_examples=0'))
LOSS1_FOCAL = Variant('loss1-focal', (*_loss('loss1', 1), 'lrm.hard_examples=0'))


def lrm_variant(k: int, nms: float | None) -> Variant:
    """Loss2 + LRM keeping k predictions per image, NMS on the ranking at `nms` (None: none)."""
    return Variant(f'lrm-k{k}-nms{"none" if nms is None else f"{nms:g}"}',
                   (*_loss('loss2', 0), f'lrm.hard_examples={k}', f'lrm.nms={1 if nms is None else nms:g}'))


def lrm_grid() -> list[Variant]:
    """Tables II/III: the baseline, then K x NMS."""
    return [BASELINE] + [lrm_variant(k, t) for t in NMS_THRESHOLDS for k in HARD_EXAMPLES]


def loss_grid(best: tuple[int, float | None]) -> list[Variant]:
    """Table IV: Loss2, Loss1, Loss1 + focal loss, Loss2 + LRM(best)."""
    return [BASELINE, LOSS1, LOSS1_FOCAL, lrm_variant(*best)]


def fixed_grid() -> list[Variant]:
    """The pretrained study's rows, fixed in advance from the paper's own best settings (none chosen on a split):
    Loss2, Loss2 + LRM at Table II's and Table III's best, Loss1, Loss1 + focal loss (Table IV)."""
    return [BASELINE, lrm_variant(*KITTI_BEST), lrm_variant(*PAPER_BEST), LOSS1, LOSS1_FOCAL]


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


def common_seed_means(records: Sequence[dict[str, Any]], names: Sequence[str], split: str = 'valid'
                      ) -> tuple[list[int], dict[str, float]]:
    """The seeds every one of `names` has finished, and each one's mean mAP over just those seeds on `split` ('valid'
    or 'test'; diverged runs left out): rows that have more seeds than others are ranked on the same ground."""
    finished = [{r['seed'] for r in records if r['variant'] == n} for n in names]
    seeds = sorted(set.intersection(*finished)) if finished else []
    means = {}
    for n in names:
        maps = [r['map'] if split == 'valid' else (r.get('test') or {}).get('map')
                for r in records if r['variant'] == n and r['seed'] in seeds]
        maps = [m for m in maps if m is not None]
        if maps:
            means[n] = sum(maps) / len(maps)
    return seeds, means


def best_lrm_setting(out: Path) -> tuple[tuple[int, float | None], str]:
    """(K, NMS) of the best LRM row of the lrm grid in `out` once every row has a finished run, ranked on valid= over
    the seeds every LRM row has finished (so a row given extra seeds later does not change the choice by luck), else
    the paper's; and a note saying which."""
    path = out / 'lrm.json'
    if path.is_file():
        summary = json.loads(path.read_text())
        lrm = {r['variant']: r['settings'] for r in summary['aggregate']
               if r['settings']['lrm'] and is_plain(r['settings'])}
        seeds, means = common_seed_means(summary['runs'], list(lrm))
        if len(summary['aggregate']) == len(summary['variants']) and seeds and means:
            s = lrm[max(means, key=means.get)]
            where = (f"on valid= of {summary['data']}; {summary['test_data']} is only reported"
                     if summary.get('test_data') else 'on the split the tables report, as the paper does: biased up')
            return (s['hard_examples'], s['nms']), (f"K={s['hard_examples']}, NMS {nms_text(s['nms'])}: the best "
                                                     f"LRM row of the lrm grid in {path.name} over seeds "
                                                     f"{' '.join(map(str, seeds))}, the ones every LRM row has "
                                                     f"finished (chosen {where})")
    k, t = PAPER_BEST
    return PAPER_BEST, (f'K={k}, NMS {t}: the paper\'s best on VOC (Table III); no lrm grid in this --out with a '
                        f'finished run in every row and a seed that every LRM row has finished')


def grid_variants(grid: str, extra: Sequence[Variant], out: Path, images: int | None = None
                  ) -> tuple[list[Variant], str]:
    """The variants of a grid plus `extra`, and a note on how the loss and mining grids chose their LRM setting (and
    the mining grid its S-LRM schedule); `images`: a run's training images, if known."""
    note = ''
    if grid == 'lrm':
        variants = lrm_grid()
    elif grid == 'fixed':
        variants = fixed_grid()
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


# ------------------------------------------------------------------------------------------------- settings
def settings_of(args: TrainArgs) -> dict[str, Any]:
    """What the table shows about a run, read from its resolved cfg (so a bad override fails here, before training)."""
    cfg = parse_cfg(args.cfg, cfg_overrides(args))
    check_loss_settings(cfg.region, cfg.lrm)  # the loss's own checks (mining values in range, focal with loss1, ...)
    on, k, nms = mining_on(cfg.lrm), cfg.lrm['hard_examples'], cfg.lrm['nms']
    return {'loss': cfg.region['loss'], 'focal': bool(cfg.region['focal']), 'lrm': on,
            'hard_examples': k if on else None, 'nms': nms if on and nms < 1 else None,
            'method': method_of(cfg.region, cfg.lrm)}


def method_of(region: Section, lrm: Section) -> str:
    """The Method column: the options beyond the paper that a resolved cfg switches on, in words ('' when none)."""
    parts = []
    if region['iou_balanced_cls']:
        parts.append(f"IoU-balanced cls, η {region['eta']:g}")
    if region['iou_balanced_loc']:
        parts.append(f"IoU-balanced loc, λ {region['lambda']:g}, w_loc {region['w_loc']:g}")
    if mining_on(lrm):
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


def is_plain(settings: dict[str, Any]) -> bool:
    """Loss2 without focal loss or any option beyond the paper (the baseline, or LRM when `lrm`)."""
    return settings['loss'] == 'loss2' and not settings['focal'] and not settings.get('method')


def nms_text(nms: float | None) -> str:
    """The NMS column: the threshold, or ✗ for no NMS on the loss ranking."""
    return '✗' if nms is None else f'{nms:g}'
