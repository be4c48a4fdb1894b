"""How well the label audit (`python -m yolo_lrm.labelcheck`) finds label errors, measured on injected ones, against
cleanlab's object-detection label-issue finder on the same model's predictions (issue #31, item 3).

    # 1. a copy of the LABELS of a split with seeded errors (images stay where they are, linked):
    python bench/bench_labelcheck.py inject --data data/bccd.data --split train --out runs/lc-bench/bccd --seed 0
    # 2. train on the copy as usual (its .data file replaces train= by the corrupted list):
    python train.py cfg/yolov2-bccd.cfg runs/lc-bench/bccd/bccd.data ...
    # 3. audit, run cleanlab on the audit's own predictions, score both against what was injected:
    python bench/bench_labelcheck.py score --bench runs/lc-bench/bccd --weights runs/train/exp/weights/last.pt

Injection (`inject`): of the split's boxes (as the dataset scan reads them), a seeded random 5 % are removed, another
5 % relabelled to a random other class, and another 5 % shifted so that the shifted box has IoU 0.4 with the
original (same size, a random direction that keeps it inside the image); the three sets are disjoint.  The copy is
`OUT/images/` (a link per image, so Darknet's path rule finds `OUT/labels/`), `OUT/labels/`, `OUT/<split>.txt`,
`OUT/<data>.data` (the original with `<split>=` pointing at the copy) and `OUT/injected.csv` (one row per injected
error: image, kind, the original box and class, and what the label file now says).

Scoring (`score`): the audit's issues of each kind are ranked by their score; with N = the number of errors of the
matching kind injected (removed -> `missing`, relabelled -> `wrong_class`, shifted -> `bad_box`), precision = hits in
the top N / N and recall = hits in the top N / injected.  A hit: `missing` whose suggested box has IoU >= 0.5 with a
removed box of the same image; `wrong_class` / `bad_box` whose label box is the relabelled / shifted box.  cleanlab
(optional: `pip install cleanlab`) gets the audit's detections (threshold .005, NMS .45) and the corrupted labels;
its per-box scores for the three kinds (`compute_overlooked_box_scores`, `compute_swap_box_scores`,
`compute_badloc_box_scores`, the scores its `find_label_issues` thresholds) are ranked the same way, and its
image-level `find_label_issues` is scored against the images that received an error.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from yolo_lrm.data.datafile import parse_data  # noqa: E402
from yolo_lrm.data import scan_dataset  # noqa: E402

KINDS = {'removed': 'missing', 'relabelled': 'wrong_class', 'shifted': 'bad_box'}  # injected -> audit kind
SHIFT_IOU = 0.4
INJECTED_FIELDS = ('image', 'kind', 'class', 'cx', 'cy', 'w', 'h', 'new_class', 'new_cx', 'new_cy', 'new_w', 'new_h')


# ---------------------------------------------------------------------------------------------------- inject
def shift_scale(cos: float, sin: float, iou: float) -> float:
    """The shift s (in box sizes) along direction (cos, sin) that leaves a box with IoU `iou` with itself:
    overlap share r = (1 - s|cos|)(1 - s|sin|) with iou = r / (2 - r)."""
    r = 2 * iou / (1 + iou)
    a, b = abs(cos), abs(sin)
    if a * b < 1e-12:                      # along an axis: 1 - s·max(a, b) = r
        return (1 - r) / max(a, b)
    # a·b·s² - (a + b)·s + 1 - r = 0, the smaller root
    disc = (a + b) ** 2 - 4 * a * b * (1 - r)
    return ((a + b) - math.sqrt(disc)) / (2 * a * b)


def shifted_box(box: np.ndarray, rng: np.random.Generator, iou: float = SHIFT_IOU,
                tries: int = 16) -> np.ndarray | None:
    """`box` (cx, cy, w, h normalised) moved in a random direction to IoU `iou` with itself, inside [0, 1]; None
    when no tried direction keeps it inside (a box nearly as large as the image)."""
    cx, cy, w, h = box
    for _ in range(tries):
        angle = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(angle), math.sin(angle)
        k = shift_scale(c, s, iou)
        nx, ny = cx + k * c * w, cy + k * s * h
        if w / 2 <= nx <= 1 - w / 2 and h / 2 <= ny <= 1 - h / 2:
            return np.array([nx, ny, w, h], np.float32)
    return None


def inject(data_path: str, split: str, out: Path, seed: int, rate: float) -> dict[str, int]:
    """Write the corrupted copy of `split` of `data_path` into `out` (see the module docstring); returns the counts."""
    data = parse_data(data_path)
    if not data.has(split):
        raise SystemExit(f'{data_path}: no {split}= list')
    report = scan_dataset(data.images(split), data.classes)
    report.raise_errors()
    rng = np.random.default_rng(seed)
    boxes = report.boxes.copy()
    owner = np.repeat(np.arange(len(report.images)), np.diff(report.offsets))
    n = len(boxes)
    per_kind = int(round(rate * n))
    order = rng.permutation(n)
    removed, relabelled, rest = order[:per_kind], order[per_kind:2 * per_kind], order[2 * per_kind:]
    keep = np.ones(n, bool)
    keep[removed] = False
    rows = [_row(report.images[owner[i]], 'removed', boxes[i], None) for i in removed]
    for i in relabelled:
        new = boxes[i].copy()
        new[0] = (boxes[i, 0] + rng.integers(1, data.classes)) % data.classes
        rows.append(_row(report.images[owner[i]], 'relabelled', boxes[i], new))
        boxes[i] = new
    shifted = 0
    for i in rest:
        if shifted == per_kind:
            break
        moved = shifted_box(boxes[i, 1:], rng)
        if moved is None:
            continue
        new = np.concatenate((boxes[i, :1], moved))
        rows.append(_row(report.images[owner[i]], 'shifted', boxes[i], new))
        boxes[i] = new
        shifted += 1
    _write_copy(out, data, split, report.images, boxes, owner, keep)
    with open(out / 'injected.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, INJECTED_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    counts = {'boxes': n, 'removed': len(removed), 'relabelled': len(relabelled), 'shifted': shifted}
    (out / 'injected.json').write_text(json.dumps({'data': str(data_path), 'split': split, 'seed': seed,
                                                   'rate': rate, **counts}, indent=2) + '\n')
    return counts


def _row(image: str, kind: str, old: np.ndarray, new: np.ndarray | None) -> dict:
    row = {'image': os.path.basename(image), 'kind': kind, 'class': int(old[0]),
           **{k: f'{v:.6f}' for k, v in zip(('cx', 'cy', 'w', 'h'), old[1:])}}
    if new is not None:
        row.update({'new_class': int(new[0]),
                    **{f'new_{k}': f'{v:.6f}' for k, v in zip(('cx', 'cy', 'w', 'h'), new[1:])}})
    return row


def _write_copy(out: Path, data, split: str, images: list[str], boxes: np.ndarray, owner: np.ndarray,
                keep: np.ndarray) -> None:
    """OUT/images (links), OUT/labels, OUT/<split>.txt and OUT/<data>.data."""
    names = [os.path.basename(p) for p in images]
    if len(set(names)) != len(names):
        raise SystemExit(f'{data.images(split).source}: two images share a file name; the copy names images by file name')
    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'labels').mkdir(parents=True, exist_ok=True)
    for path, name in zip(images, names):
        link = out / 'images' / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.abspath(path))
    for k, name in enumerate(names):
        rows = boxes[(owner == k) & keep]
        text = ''.join(f'{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n' for r in rows)
        (out / 'labels' / (os.path.splitext(name)[0] + '.txt')).write_text(text)
    (out / f'{split}.txt').write_text(''.join(f'images/{name}\n' for name in names))
    options = {**data.options, split: str((out / f'{split}.txt').resolve())}
    lines = [f'{k}={v}' for k, v in {'classes': data.classes, **options}.items() if v not in ('', None)]
    (out / Path(data.path).name).write_text('\n'.join(dict.fromkeys(lines)) + '\n')


# ----------------------------------------------------------------------------------------------------- score
def read_injected(bench: Path) -> list[dict]:
    """injected.csv as rows with float boxes (`box`: the original, `new`: what the label file says, or None)."""
    with open(bench / 'injected.csv') as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r['box'] = np.array([float(r[k]) for k in ('cx', 'cy', 'w', 'h')])
        r['new'] = np.array([float(r[f'new_{k}']) for k in ('cx', 'cy', 'w', 'h')]) if r['new_cx'] else None
    return rows


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two cx, cy, w, h boxes."""
    import torch
    from yolo_lrm.box import iou_cxcywh
    return float(iou_cxcywh(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)))


def hit_finder(injected: list[dict], kind: str):
    """A function (image name, label box or None, suggested box or None) -> the injected row it finds, or None:
    removed -> a suggestion with IoU >= .5 with the removed box; relabelled / shifted -> the label box itself."""
    rows = [r for r in injected if r['kind'] == kind]
    by_image: dict[str, list[dict]] = {}
    for r in rows:
        by_image.setdefault(r['image'], []).append(r)

    def find(image: str, label_box, suggested_box):
        for r in by_image.get(image, []):
            if kind == 'removed' and suggested_box is not None and _iou(r['box'], suggested_box) >= 0.5:
                return r
            if kind != 'removed' and label_box is not None and np.allclose(r['new'], label_box, atol=2e-6):
                return r
        return None
    return find


def precision_recall(ranked: list[tuple], injected: list[dict], kind: str) -> dict:
    """`ranked`: (image name, label box, suggested box) best first.  Hits in the top N (N = injected of the kind;
    each injected error counted once), precision = hits / min(N, flagged), recall = hits / N; also over all flagged."""
    n = sum(r['kind'] == kind for r in injected)
    find, found = hit_finder(injected, kind), set()
    hits_at = []
    for image, label_box, suggested in ranked:
        r = find(image, label_box, suggested)
        new = r is not None and id(r) not in found
        if new:
            found.add(id(r))
        hits_at.append(new)
    top = hits_at[:n]
    return {'injected': n, 'flagged': len(ranked), 'hits_at_n': int(sum(top)),
            'precision_at_n': sum(top) / max(1, min(n, len(ranked))), 'recall_at_n': sum(top) / max(1, n),
            'hits_all': int(sum(hits_at)), 'precision_all': sum(hits_at) / max(1, len(ranked)),
            'recall_all': sum(hits_at) / max(1, n)}


def ours(run, injected: list[dict]) -> dict:
    """The audit's ranking of each kind, scored."""
    by_index = {a.index: a for a in run.audits}
    out = {}
    for kind, audit_kind in KINDS.items():
        ranked = [(os.path.basename(run.split.paths[x.image]),
                   by_index[x.image].labels[x.label, 1:5] if x.label >= 0 else None, x.suggested_box)
                  for x in run.issues if x.kind == audit_kind]
        out[kind] = precision_recall(ranked, injected, kind)
    return out


def _xyxy_pixels(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack(((b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h,
                     (b[:, 0] + b[:, 2] / 2) * w, (b[:, 1] + b[:, 3] / 2) * h), 1)


def cleanlab_inputs(run) -> tuple[list[dict], list[list[np.ndarray]]]:
    """cleanlab's labels (xyxy pixels, class) and predictions (per class (M, 5) x1, y1, x2, y2, score) per image,
    from the audit's own labels and detections."""
    labels, predictions = [], []
    for a in run.audits:
        w, h = a.size
        labels.append({'bboxes': _xyxy_pixels(a.labels[:, 1:5], w, h), 'labels': a.labels[:, 0].astype(np.int64),
                       'image_name': run.split.paths[a.index]})
        boxes = _xyxy_pixels(a.dets[:, :4], w, h)
        cls = a.dets[:, 5].astype(np.int64)
        predictions.append([np.concatenate((boxes[cls == k], a.dets[cls == k, 4:5]), 1).astype(np.float32)
                            for k in range(len(run.names))])
    return labels, predictions


def theirs(run, injected: list[dict]) -> dict:
    """cleanlab on the audit's detections: its per-box scores of each kind ranked ascending (lowest = its surest
    issue; NaN = not scored), and its image-level find_label_issues."""
    try:
        from cleanlab.object_detection.filter import find_label_issues
        from cleanlab.object_detection.rank import (compute_badloc_box_scores, compute_overlooked_box_scores,
                                                    compute_swap_box_scores)
    except ImportError as exc:
        raise SystemExit(f'cleanlab is not installed ({exc}): pip install cleanlab, or score the audit alone with '
                         f'--no-cleanlab') from None
    labels, predictions = cleanlab_inputs(run)
    names = [os.path.basename(run.split.paths[a.index]) for a in run.audits]
    scorers = {'removed': compute_overlooked_box_scores, 'relabelled': compute_swap_box_scores,
               'shifted': compute_badloc_box_scores}
    out = {}
    for kind, scorer in scorers.items():
        entries = []
        for i, per_box in enumerate(scorer(labels=labels, predictions=predictions)):
            w, h = run.audits[i].size
            # overlooked: one score per predicted box, the classes' arrays in order; else one per label box
            boxes = np.concatenate([p[:, :4] for p in predictions[i]]) if kind == 'removed' else None
            for j, v in enumerate(np.asarray(per_box, np.float64).reshape(-1)):
                if np.isnan(v):
                    continue
                if kind == 'removed':
                    x1, y1, x2, y2 = boxes[j]
                    suggested = np.array([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h])
                    entries.append((v, i, j, (names[i], None, suggested)))
                else:
                    entries.append((v, i, j, (names[i], run.audits[i].labels[j, 1:5], None)))
        entries.sort(key=lambda e: e[:3])
        out[kind] = precision_recall([e[3] for e in entries], injected, kind)
    out['images'] = image_level(np.asarray(find_label_issues(labels, predictions), bool), names, injected)
    return out


def image_level(flagged: np.ndarray, names: list[str], injected: list[dict]) -> dict:
    """Precision and recall of flagged images against the images that received an injected error."""
    bad = {r['image'] for r in injected}
    truth = np.array([n in bad for n in names])
    hits = int((flagged & truth).sum())
    return {'images': len(names), 'with_errors': int(truth.sum()), 'flagged': int(flagged.sum()), 'hits': hits,
            'precision': hits / max(1, int(flagged.sum())), 'recall': hits / max(1, int(truth.sum()))}


def score(bench: Path, weights: str, out: Path, conf: float, device: str, use_cleanlab: bool) -> dict:
    """Audit the corrupted split with `weights`, score the audit and (optionally) cleanlab on the same detections."""
    from yolo_lrm.labelcheck.cli import parse_args, run as audit
    info = json.loads((bench / 'injected.json').read_text())
    data = next(bench.glob('*.data'))
    result = audit(parse_args(['--weights', weights, '--data', str(data), '--split', info['split'], '--out',
                               str(out), '--conf', str(conf), '--device', device]))
    injected = read_injected(bench)
    names = [os.path.basename(result.split.paths[a.index]) for a in result.audits]
    position = {a.index: k for k, a in enumerate(result.audits)}
    flagged = np.zeros(len(names), bool)
    flagged[[position[x.image] for x in result.issues if x.kind in KINDS.values()]] = True
    report = {'bench': str(bench), 'weights': weights, 'conf': conf, **info, 'ours': ours(result, injected)}
    report['ours']['images'] = image_level(flagged, names, injected)
    if use_cleanlab:
        report['cleanlab'] = theirs(result, injected)
    (out / 'bench.json').write_text(json.dumps(report, indent=2) + '\n')
    return report


def table(report: dict) -> str:
    """The comparison as a markdown table."""
    cl = report.get('cleanlab', {})
    lines = ['| injected | audit kind | N | ours P@N | ours R@N | cleanlab P@N | cleanlab R@N | '
             'ours as flagged: P / R (n) |',
             '| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |']
    for kind, audit_kind in KINDS.items():
        o, c = report['ours'][kind], cl.get(kind)
        them = f'{c["precision_at_n"]:.3f} | {c["recall_at_n"]:.3f}' if c else '- | -'
        lines.append(f'| {kind} | {audit_kind} | {o["injected"]} | {o["precision_at_n"]:.3f} | {o["recall_at_n"]:.3f} '
                     f'| {them} | {o["precision_all"]:.3f} / {o["recall_all"]:.3f} ({o["flagged"]}) |')
    o, c = report['ours']['images'], cl.get('images')
    them = f'{c["precision"]:.3f} | {c["recall"]:.3f}' if c else '- | -'
    flagged = f'images flagged: ours {o["flagged"]}' + (f', cleanlab {c["flagged"]}' if c else '')
    lines.append(f'| images with an error | (image level) | {o["with_errors"]} | {o["precision"]:.3f} | '
                 f'{o["recall"]:.3f} | {them} | {flagged} |')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='command', required=True)
    p = sub.add_parser('inject', help='write a copy of a split\'s labels with seeded errors')
    p.add_argument('--data', required=True)
    p.add_argument('--split', default='train', choices=('train', 'valid', 'test'))
    p.add_argument('--out', required=True, type=Path)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--rate', type=float, default=0.05, help='share of the boxes per kind of error')
    p = sub.add_parser('score', help='audit the corrupted copy, run cleanlab on the same detections, compare')
    p.add_argument('--bench', required=True, type=Path, help='the folder `inject` wrote')
    p.add_argument('--weights', required=True, help='the model trained on the corrupted copy')
    p.add_argument('--out', type=Path, help='audit output folder (default BENCH/audit)')
    p.add_argument('--conf', type=float, default=0.25)
    p.add_argument('--device', default='')
    p.add_argument('--no-cleanlab', action='store_true', help='score the audit alone')
    args = ap.parse_args(argv)
    if args.command == 'score':
        report = score(args.bench, args.weights, args.out or args.bench / 'audit', args.conf, args.device,
                       not args.no_cleanlab)
        print(table(report))
    if args.command == 'inject':
        counts = inject(args.data, args.split, args.out, args.seed, args.rate)
        print(f'{args.out}: {counts["boxes"]} boxes; removed {counts["removed"]}, relabelled {counts["relabelled"]}, '
              f'shifted {counts["shifted"]}')


if __name__ == '__main__':
    main()
