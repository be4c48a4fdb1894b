"""One run of an experiment grid: its trainer settings (RunSpec), training or resuming it, scoring its final weights,
and its result record (RunRecord), stored as the run's experiment.json."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..cfg import parse_cfg
from ..data.datafile import parse_data
from ..atomic import atomic_write
from ..distributed import pick_device
from .grids import Budget, ExperimentError, Variant, settings_of
from ..train.runlog import ResultsCsv
from ..train.args import TrainArgs, cfg_overrides
from ..train.trainer import NonFiniteLoss, train

RESULT_FILE = 'experiment.json'
# TrainArgs fields that make two runs the same experiment (paths compared by file name: an OUT may be moved); not
# where Darknet backups go (`backup`), which changes no result
_IDENTITY = ('cfg', 'data', 'weights', 'clear', 'set', 'seed', 'batch', 'subdivisions', 'max_batches', 'epochs',
             'lr', 'img_size', 'augment', 'eval_metric')


class Interrupted(RuntimeError):
    """A run stopped on Ctrl-C/SIGTERM after saving; repeating the command resumes it."""


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


def portable_path(path: str | os.PathLike) -> str:
    """A path as a run's record keeps it: relative to the working directory when below it (records are committed and
    compared across checkouts: no machine's folders in them), else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return full if rel == '..' or rel.startswith('..' + os.sep) else rel


def make_spec(variant: Variant, seed: int, budget: Budget, user_set: Sequence[str], cfg: str, data: str,
              out: Path, metric: str, options: dict[str, Any], test_data: str | None = None) -> RunSpec:
    """The TrainArgs of one run: the budget's options, then `options` (command line: device, workers, weights,
    clear); cfg overrides: the budget's, then `--set`, then the variant's (the variant wins).  No Darknet backups
    outside the run folder: the runs of one cfg would overwrite each other's in the data's `backup=`."""
    train_opts = {**{k: v for k, v in budget.train.items() if k != 'set'}, **options}
    args = TrainArgs(cfg=portable_path(cfg), data=portable_path(data), seed=seed,
                     set=[*budget.train.get('set', []), *user_set, *variant.overrides],
                     project=portable_path(out / 'runs'), name=f'{variant.name}-s{seed}', exist_ok=True,
                     eval_metric=metric, backup='', **train_opts)
    return RunSpec(variant, seed, args, metric, portable_path(test_data) if test_data else None)


def run_images(args: TrainArgs) -> int | None:
    """Training images of a run (max_batches x batch of its resolved cfg); None with --epochs (the data decides)."""
    net = parse_cfg(args.cfg, cfg_overrides(args)).net
    return None if args.epochs is not None or net['max_batches'] <= 0 else net['max_batches'] * net['batch']


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


# ------------------------------------------------------------------------------------------------- its record
_OPTIONAL = ('eval', 'error', 'test', 'machine', 'curve')  # left out of experiment.json when None (older records
#                                                             lack machine and curve)


@dataclass(frozen=True)
class RunRecord:
    """The result of one run as its experiment.json stores it (AP as fractions; None where the run diverged)."""
    variant: str
    overrides: list[str]
    seed: int
    run_dir: str                            # the run folder's name, in OUT/runs
    weights: str | None                     # the scored weights, relative to the run folder; None when diverged
    settings: dict[str, Any]                # settings_of: the table's columns
    args: dict[str, Any]                    # the run's TrainArgs
    updates: int | None
    seen: int | None
    reason: str                             # why training stopped: the trainer's reason, or 'non-finite'
    train_s: float | None
    eval_s: float
    device: str
    metric: str
    map: float | None
    per_class: dict[str, float | None]
    trainer_final_map: float | None         # the trainer's own score of the same weights at its last update
    eval: dict[str, Any] | None = None      # the evaluation's JSON; None when diverged
    error: str | None = None                # the trainer's message when diverged
    test: dict[str, Any] | None = None      # score_weights on --test-data's valid= list, when given
    wall_s: float | None = None             # training and scoring; set once the run is over
    machine: str | None = None              # `hardware()` where the run ended: the same seed trains differently on
    #                                         another CPU model (float rounding), so pairs by seed must say it
    curve: list[dict[str, float | None]] | None = None  # the run's results.csv rows (None: empty cell)

    def to_json(self) -> dict[str, Any]:
        """The dict experiment.json holds: the fields in order, eval/error/test only when present."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in _OPTIONAL}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunRecord:
        """A record as read back from experiment.json."""
        return cls(**raw)


def _write_record(record: RunRecord, path: Path) -> None:
    text = json.dumps(record.to_json(), indent=2) + '\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))  # a torn result file would poison the resume


def _save_record(record: RunRecord, path: Path, records: Path | None) -> None:
    """The run's experiment.json, and its copy in `records` when given."""
    _write_record(record, path)
    if records is not None:
        _write_record(record, records / f'{record.run_dir}.json')


def read_curve(results_csv: Path) -> list[dict[str, float | None]]:
    """A run's results.csv as numbers, one dict per evaluation row (None for an empty cell)."""
    return [{k: float(v) if v != '' else None for k, v in row.items()} for row in ResultsCsv(results_csv).rows()]


def hardware(device: str) -> str:
    """One line on where runs run: the CPU model (or GPU), cores, threads, torch and Python versions."""
    where = pick_device(device)
    if where.type == 'cpu':
        what = f'CPU {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, ' \
               f'{torch.get_num_threads()} torch threads'
    else:
        what = f'GPU {torch.cuda.get_device_name(where)}'
    return f'{what}; torch {torch.__version__}, Python {platform.python_version()}'


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record_path(spec: RunSpec, records: Path | None) -> Path:
    """Where the run's result lives: its folder's experiment.json, else (`--records`) `records/<run>.json`."""
    local = spec.run_dir / RESULT_FILE
    if records is None or local.is_file():
        return local
    return records / f'{spec.run_dir.name}.json'


def finished_record(spec: RunSpec, records: Path | None = None) -> RunRecord | None:
    """The stored result of the run (its folder's, else the copy in `records`), checked to be this run's; None
    while it has not finished."""
    result_path = record_path(spec, records)
    if not result_path.is_file():
        return None
    record = RunRecord.from_json(json.loads(result_path.read_text()))
    check_same_run(spec, record.args, result_path)
    return record


def run_one(spec: RunSpec, log=print, records: Path | None = None) -> tuple[RunRecord, bool]:
    """Train (or resume) and evaluate one run unless its result exists (in its folder or in `records`, the
    committed copies a later session starts from); returns (record, ran now).  A finished run is also written
    to `records/<run>.json`."""
    run_dir, result_path = spec.run_dir, spec.run_dir / RESULT_FILE
    record = finished_record(spec, records)
    if record is not None:
        if spec.test_data and record.test is None and record.map is not None:  # --test-data added later
            if not (run_dir / 'weights' / 'last.pt').is_file():
                raise ExperimentError(f'{run_dir.name}: --test-data needs the run\'s weights/last.pt, which this '
                                      f'machine lacks (the record came from {record_path(spec, records)})')
            record = dataclasses.replace(record, test=score_weights(spec, spec.test_data))
            _save_record(record, result_path, records)
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
    record = dataclasses.replace(record, wall_s=round(time.perf_counter() - start, 1),
                                 machine=hardware(spec.args.device), curve=read_curve(run_dir / 'results.csv'))
    _save_record(record, result_path, records)
    log(f'== {run_dir.name}: {map_text(record)} ({record.wall_s / 60:.1f} min)')
    return record, True


def map_text(record: RunRecord) -> str:
    """`mAP 12.34`, or `diverged` for a run stopped on a non-finite loss."""
    return 'diverged' if record.map is None else f'mAP {100 * record.map:.2f}'


def score_weights(spec: RunSpec, data: str) -> dict[str, Any]:
    """Score the run's final weights (`weights/last.pt`) on the `valid=` list of `data`: mAP, per-class AP, the
    evaluation's JSON and the CPU/GPU seconds it took; its PR curves and confusion matrix go into the run's folder
    `eval-<data stem>/`."""
    from ..checkpoint import checkpoint_model, load_checkpoint
    from ..evaluation.evaluate import evaluate_model
    from ..reports.run import write_eval_figures
    last = spec.run_dir / 'weights' / 'last.pt'
    device = pick_device(spec.args.device)
    net = checkpoint_model(load_checkpoint(last), last).to(device).eval()
    start = time.perf_counter()
    ev = evaluate_model(net, parse_data(data), spec.metric, 0.5, batch_size=spec.args.eval_batch,
                        workers=min(spec.args.workers, 2), progress=False)
    seconds = round(time.perf_counter() - start, 1)
    write_eval_figures(ev, spec.run_dir / f'eval-{Path(data).stem}')  # without matplotlib: confusion.csv only
    return {'data': Path(data).name, 'map': ev.map, 'per_class': {k: _num(v) for k, v in ev.per_class.items()},
            'eval': ev.to_json(), 'eval_s': seconds, 'device': str(device)}


def _record(spec: RunSpec, **result: Any) -> RunRecord:
    """`spec`'s part of its record (names, settings, TrainArgs) plus `result`, the remaining RunRecord fields."""
    return RunRecord(variant=spec.variant.name, overrides=list(spec.variant.overrides), seed=spec.seed,
                     run_dir=spec.run_dir.name, settings=settings_of(spec.args), args=dataclasses.asdict(spec.args),
                     metric=spec.metric, **result)


def evaluate_run(spec: RunSpec, updates: int, seen: int, reason: str, trainer_map: float | None) -> RunRecord:
    """Score the run's final weights on `valid=` (and on the test data's, when given) and build its result record."""
    from ..checkpoint import load_checkpoint
    train_s = float(load_checkpoint(spec.run_dir / 'weights' / 'last.pt').get('train_time', 0.0))
    valid = score_weights(spec, spec.args.data)
    return _record(spec, weights='weights/last.pt', updates=updates, seen=seen, reason=reason,
                   train_s=round(train_s, 1), eval_s=valid['eval_s'], device=valid['device'], map=valid['map'],
                   per_class=valid['per_class'], trainer_final_map=trainer_map, eval=valid['eval'],
                   test=score_weights(spec, spec.test_data) if spec.test_data else None)


def diverged_record(spec: RunSpec, message: str) -> RunRecord:
    """The result of a run that stopped on a non-finite loss: no mAP, the trainer's message kept."""
    names = parse_data(spec.args.data).names()
    return _record(spec, weights=None, updates=None, seen=None, reason='non-finite', train_s=None, eval_s=0.0,
                   device=spec.args.device or 'auto', map=None, per_class={n: None for n in names},
                   trainer_final_map=None, error=message)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v
