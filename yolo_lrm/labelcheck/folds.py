"""Held-out scoring (`--folds K`): the audited split is cut into K seeded, equal parts; part k is audited by a model
trained on the other parts, so no label is judged by a model that learnt it (cleanlab's out-of-sample setting).

Each fold trains through the normal trainer (`trainer.train` with `TrainArgs`): the cfg, the initial weights, a
budget (`experiments.grids.load_budget`: a preset such as `bccd-cpu` or a JSON file) and `--set`, into
`OUT/folds/fold<k>/`, on the list `OUT/folds/fold<k>.txt` with `OUT/folds/fold<k>.data` (the `.data` file with
`train=` replaced; `valid=` stays, for the run's mAP).  A fold that finished (`fold.json` beside its run) is reused
when its settings are the same, an interrupted one resumes, other settings are an error: repeating the command
costs nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write
from ..cfg import CfgError
from ..data import label_path
from ..experiments.grids import load_budget
from ..train.args import RESUME_KEEP, TrainArgs
from .audit import Split

FOLD_RECORD = 'fold.json'


@dataclass
class Fold:
    """One fold: the split indices it audits and the run that trains on the rest."""
    k: int
    audited: list[int]
    run_dir: Path

    @property
    def weights(self) -> Path:
        return self.run_dir / 'weights' / 'last.pt'


def assign_folds(n: int, folds: int, seed: int) -> list[list[int]]:
    """Split indices 0..n-1 into `folds` seeded parts of equal size (+-1), each in index order."""
    if folds < 2:
        raise ValueError(f'--folds {folds}: needs at least 2 (1 would audit the images the model trained on)')
    if n < folds:
        raise ValueError(f'--folds {folds}: the split has only {n} usable images')
    part = np.empty(n, np.int64)
    part[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return [np.flatnonzero(part == k).tolist() for k in range(folds)]


def fold_args(split: Split, k: int, train_list: Path, out: Path, cfg: str, weights: str | None, budget: str | None,
              overrides: Sequence[str], seed: int, device: str, workers: int | None) -> TrainArgs:
    """The TrainArgs of fold k: the budget's options, then the command line's (cfg overrides: the budget's, then
    `--set`); no Darknet backups (the folds of one cfg would overwrite each other's in the data's backup=)."""
    b = load_budget(budget)
    options = {key: v for key, v in b.train.items() if key != 'set'}
    if workers is not None:
        options['workers'] = workers
    data_path = train_list.with_suffix('.data')
    lines = {'classes': split.data.classes, **split.data.options, 'train': str(train_list.resolve())}
    text = ''.join(f'{key}={v}\n' for key, v in lines.items() if v not in ('', None))
    atomic_write(data_path, lambda f: f.write(text.encode()))
    return TrainArgs(cfg=os.path.abspath(cfg), data=str(data_path.resolve()),
                     weights=os.path.abspath(weights) if weights else None,
                     set=[*b.train.get('set', []), *overrides], seed=seed, device=device,
                     project=str((out / 'folds').resolve()), name=f'fold{k}', exist_ok=True, backup='', **options)


def write_train_list(split: Split, images: Sequence[int], path: Path) -> None:
    """The fold's training list, absolute image paths; each must find the label file the split's list finds
    (Darknet's rule reads the path as written), else CfgError naming the image."""
    for i in images:
        if os.path.abspath(label_path(split.paths[i])) != os.path.abspath(split.label_files[i]):
            raise CfgError(f'{split.paths[i]}: as an absolute path, Darknet\'s label rule finds '
                           f'{label_path(split.paths[i])} instead of {split.label_files[i]}; --folds writes absolute '
                           f'paths, so move the dataset to a folder whose path has no "images", "JPEGImages" or "raw"')
    text = ''.join(f'{split.paths[i]}\n' for i in images)
    atomic_write(path, lambda f: f.write(text.encode()))


def train_fold(args: TrainArgs, log=print) -> None:
    """Train (or resume, or reuse) one fold's run; raises on another run's settings or an interrupted run."""
    from ..train.trainer import train  # the trainer only where folds train
    run_dir = Path(args.project) / args.name
    record = run_dir / FOLD_RECORD
    wanted = dataclasses.asdict(args)
    if record.is_file():
        _check_same(json.loads(record.read_text())['args'], wanted, record)
        log(f'{args.name}: trained already ({record})')
        return
    last = run_dir / 'weights' / 'last.pt'
    if last.is_file():
        _check_same(json.loads((run_dir / 'args.json').read_text())['args'], wanted, run_dir / 'args.json')
        log(f'{args.name}: resuming {run_dir}')
        result = train(TrainArgs(resume=str(run_dir), device=args.device, workers=args.workers))
    else:
        if run_dir.exists():  # a start that never reached its first checkpoint
            shutil.rmtree(run_dir)
        log(f'{args.name}: training on {args.data}')
        result = train(args)
    if result.reason == 'interrupted':
        raise RuntimeError(f'{run_dir} stopped at update {result.updates}; repeat the command to resume it')
    text = json.dumps({'args': wanted, 'updates': result.updates, 'reason': result.reason}, indent=2) + '\n'
    atomic_write(record, lambda f: f.write(text.encode()))


def _check_same(stored: dict, wanted: dict, where: Path) -> None:
    """A stored fold run must have been asked for the same thing (device and workers may change, as on --resume)."""
    for key, value in wanted.items():
        if key not in (*RESUME_KEEP, 'resume') and stored.get(key) != value:
            raise CfgError(f'{where}: this fold was trained with {key}={stored.get(key)!r}, now {value!r}; use another '
                           f'--out or delete {where.parent}')


def prepare_folds(split: Split, out: Path, folds: int, seed: int, cfg: str, weights: str | None,
                  budget: str | None, overrides: Sequence[str], device: str,
                  workers: int | None) -> list[tuple[Fold, TrainArgs]]:
    """The folds of the split and each one's TrainArgs (lists and .data files written; nothing trained yet)."""
    parts = assign_folds(len(split.paths), folds, seed)
    (out / 'folds').mkdir(parents=True, exist_ok=True)
    plan = []
    for k, audited in enumerate(parts):
        rest = sorted(set(range(len(split.paths))) - set(audited))
        train_list = out / 'folds' / f'fold{k}.txt'
        write_train_list(split, rest, train_list)
        args = fold_args(split, k, train_list, out, cfg, weights, budget, overrides, seed, device, workers)
        plan.append((Fold(k, audited, Path(args.project) / args.name), args))
    return plan
