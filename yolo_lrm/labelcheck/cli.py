"""`python -m yolo_lrm.labelcheck`'s command line: check the inputs, audit (one model, or `--folds`), write the
outputs, print what was found (see `yolo_lrm/labelcheck/__init__.py` and `--help`)."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cfg import CfgError
from ..distributed import pick_device
from ..train.track import TrackError, read_track, stays_hard
from .audit import SPLITS, ImageAudit, Split, audit_images, load_split
from .issues import KINDS, Issue, find_issues, rank
from .report import write_outputs

log = logging.getLogger('yolo_lrm.labelcheck')


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options (see `--help`)."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.labelcheck', description=(
        'Find label errors and hard examples in a dataset with a trained detector: per-box region loss, issues of '
        'four kinds (missing, wrong_class, bad_box, spurious), the highest-loss images as a Darknet list.'))
    ap.add_argument('--weights', help='the trained model (.pt, or Darknet .weights with --cfg); with --folds, the '
                    'initial weights of every fold (optional)')
    ap.add_argument('--data', required=True, help='.data file (classes=, names=, the list to audit)')
    ap.add_argument('--split', default='train', choices=SPLITS, help='which list of the .data file (default train)')
    ap.add_argument('--out', type=Path, help='output folder (default runs/labelcheck/<data>-<split>)')
    ap.add_argument('--cfg', help="the network's cfg (a .pt carries its own; needed with .weights and --folds)")
    ap.add_argument('--set', nargs='*', default=[], metavar='SECTION.KEY=VALUE', help='cfg overrides')
    ap.add_argument('--conf', type=float, default=0.25, help='score of a detection the model means (default .25)')
    ap.add_argument('--hard', type=float, default=0.1, help='share of the images in hard_images.txt (default .1)')
    ap.add_argument('--top', type=int, default=16, help='issues in the mosaic issues.jpg (default 16, 0: none)')
    ap.add_argument('--track', help="a training run's track folder (RUN/track/, written by train.py --track): rank "
                    "the hard images by their loss over training; default: WEIGHTS' run's track/ when it covers the "
                    "split")
    ap.add_argument('--folds', type=int, default=0, help='K >= 2: audit each of K parts with a model trained on the '
                    'others (trains K runs)')
    ap.add_argument('--budget', help='with --folds: the trainer settings, a preset of python -m yolo_lrm.experiments '
                    '(e.g. bccd-cpu) or a JSON file (default: the cfg as it is)')
    ap.add_argument('--seed', type=int, default=0, help='with --folds: the parts and the training seed')
    ap.add_argument('--batch', type=int, default=8, help='images per forward pass')
    ap.add_argument('--size', type=int, help='network input size (default: the cfg width)')
    ap.add_argument('--workers', type=int, help='image loading processes (default 2; with --folds the budget\'s)')
    ap.add_argument('--device', default='', help='cpu, cuda, cuda:N or N (default: cuda when available)')
    return ap.parse_args(argv)


def check_args(a: argparse.Namespace) -> None:
    """Option errors that need no file."""
    if not 0 < a.conf <= 1:
        raise ValueError(f'--conf {a.conf}: must be in (0, 1]')
    if not 0 < a.hard <= 1:
        raise ValueError(f'--hard {a.hard}: a share of the images, in (0, 1]')
    if a.top < 0 or a.batch < 1:
        raise ValueError('--top must be >= 0 and --batch >= 1')
    if a.folds:
        if not a.cfg:
            raise ValueError('--folds trains a model per fold: give the network with --cfg')
        if a.track:
            raise ValueError('--track ranks by a training run of the whole split; --folds trains its own runs')
    elif not a.weights:
        raise ValueError('give the trained model with --weights (or train per fold with --folds K --cfg CFG)')


def class_names(split: Split, stored: list[str] | None, weights: str, num_classes: int) -> list[str]:
    """The class names of the audit: the .data file's and the model's must agree where both exist; the model's
    class count must be the data's."""
    data = split.data
    if num_classes != data.classes:
        raise CfgError(f'{weights}: the model detects {num_classes} classes, {data.path} has classes={data.classes}')
    names = data.names() if data['names'] else None
    if names and stored and list(stored) != names:
        raise CfgError(f'{weights}: the model was trained on the classes {", ".join(stored)}, {data.path} names '
                       f'{", ".join(names)}; the class ids of the labels would be read as other classes')
    if names is None and not stored:
        raise CfgError(f'{weights}: the model file holds no class names and {data.path} has no names=; add names= '
                       f'to {data.path}')
    return list(names or stored)


def load_net(weights: str, a: argparse.Namespace, split: Split):
    """The model in eval mode on the device, and the audit's class names."""
    from ..checkpoint import load_model
    net, stored = load_model(weights, a.cfg, a.set, pick_device(a.device))
    return net, class_names(split, stored, weights, net.num_classes)


def track_hardness(a: argparse.Namespace, split: Split, audits: list[ImageAudit]) -> tuple[np.ndarray | None, str]:
    """Hardness over training per audit (None: none used) and the words saying which source ranks the images."""
    folder = Path(a.track) if a.track else Path(a.weights).resolve().parent.parent / 'track'
    fallback = f'the region loss of each image under {a.weights}'
    if not a.track and not folder.is_dir():
        return None, fallback
    track = read_track(folder)
    hardness = stays_hard(track, [split.paths[x.index] for x in audits])
    if np.isnan(hardness).all():
        if a.track:
            raise TrackError(f'{folder}: the track holds none of the {len(audits)} images of {split.source}')
        return None, fallback + f' ({folder} holds none of these images)'
    return hardness, f'the loss over training of {track.describe()} (images never drawn: by the final loss)'


def audit_one(a: argparse.Namespace, split: Split) -> tuple[list[ImageAudit], list[str], list[str], dict]:
    """One model over the whole split."""
    net, names = load_net(a.weights, a, split)
    audits, skipped = audit_images(net, split, size=a.size, batch_size=a.batch, workers=_workers(a))
    return audits, skipped, names, {'model': a.weights}


def audit_folds(a: argparse.Namespace, split: Split, out: Path) -> tuple[list[ImageAudit], list[str], list[str],
                                                                        dict]:
    """Train each fold's model (or reuse it) and audit its held-out part."""
    from .folds import prepare_folds, train_fold
    plan = prepare_folds(split, out, a.folds, a.seed, a.cfg, a.weights, a.budget, a.set, a.device, a.workers)
    for _, args in plan:
        train_fold(args)
    audits, skipped, names, folds = [], [], None, {}
    for fold, _ in plan:
        net, names = load_net(str(fold.weights), argparse.Namespace(**{**vars(a), 'cfg': None, 'set': []}), split)
        part, bad = audit_images(net, split, fold.audited, a.size, a.batch, _workers(a))
        audits += part
        skipped += bad
        folds.update({i: fold.k for i in fold.audited})
    audits.sort(key=lambda x: x.index)
    return audits, skipped, names, {'model': [str(f.weights) for f, _ in plan], 'folds': folds}


def _workers(a: argparse.Namespace) -> int:
    return 2 if a.workers is None else a.workers


@dataclass
class AuditRun:
    """What one audit found (for callers such as bench/bench_labelcheck.py): the split, the class names, every
    image's audit, the ranked issues and the summary written to OUT/summary.json."""
    split: Split
    names: list[str]
    audits: list[ImageAudit]
    issues: list[Issue]
    summary: dict[str, Any]


def run(a: argparse.Namespace) -> AuditRun:
    """The audit as the command runs it."""
    check_args(a)
    split = load_split(a.data, a.split)
    out = a.out or Path('runs/labelcheck') / f'{Path(split.data.path).stem}-{a.split}'
    if a.folds:
        out.mkdir(parents=True, exist_ok=True)  # the folds' runs live there
        audits, skipped, names, info = audit_folds(a, split, out)
        hardness, source = None, 'the region loss of each image under the model of its fold'
    else:
        audits, skipped, names, info = audit_one(a, split)   # a model that does not fit leaves no folder
        hardness, source = track_hardness(a, split, audits)
        out.mkdir(parents=True, exist_ok=True)
    if not audits:
        raise ValueError(f'{split.source}: none of the {len(split.paths)} images could be read ({skipped[0]})')
    issues = rank([x for au in audits for x in find_issues(au.index, au.labels, au.dets, a.conf)])
    folds = info.pop('folds', {})
    summary = {'data': split.data.path, 'split': a.split, 'list': split.source, **info, 'conf': a.conf,
               'hard_images_ranked_by': source, 'unreadable': skipped}
    summary = write_outputs(out, split, names, audits, issues, hardness, a.hard, folds, summary, a.top, a.conf)
    _print(out, summary, issues, split, names)
    return AuditRun(split, names, audits, issues, summary)


def _print(out: Path, summary: dict, issues: list[Issue], split: Split, names: list[str]) -> None:
    counts = ', '.join(f'{k} {summary["issues"][k]}' for k in KINDS)
    print(f'{summary["images"]} images, {summary["boxes"]} boxes of {summary["list"]}: {counts}')
    for kind in KINDS:
        for x in [x for x in issues if x.kind == kind][:3]:
            what = names[x.suggested_class] if x.suggested_class >= 0 else 'no object'
            print(f'  {kind:<11s} {x.score:.3f}  {split.paths[x.image]}  -> {what}')
    print(f'hard images ({summary["hard_images"]}) ranked by {summary["hard_images_ranked_by"]}')
    for reason in summary['unreadable']:
        print(f'warning: skipped unreadable image {reason}', file=sys.stderr)
    picture = ', issues.jpg' if (out / 'issues.jpg').is_file() else ''
    print(f'results in {out}: label_issues.csv, boxes.csv, images.csv, hard_images.txt{picture}, summary.json')


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point: input errors end with `error: <message naming the file>`, not a traceback; returns the summary."""
    try:
        return run(parse_args(argv)).summary
    except (ValueError, OSError, RuntimeError) as exc:  # CfgError, DatasetError, TrackError are ValueErrors
        raise SystemExit(f'error: {exc}') from None
