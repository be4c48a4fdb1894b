"""Per-update training curves of runs, read from their TensorBoard logs, as means over blocks of updates (CSV).

    python bench/tb_curves.py RUN [RUN ...] --block 50 --tags noobj_prob obj_prob lrm_share lrm_passed --out F.csv

Each RUN is a run folder (the trainer writes `events.out.tfevents.*` there when tensorboard is installed); a row per
run, tag and block: the mean of `train/<tag>` over updates [start, start + block).  Needs tensorboard.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def block_means(run: Path, tags: list[str], block: int) -> list[dict]:
    """Rows (run, tag, first update, last update, mean) for every tag the run logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = sorted(run.glob('events.out.tfevents.*'), key=lambda p: p.stat().st_mtime)
    if not events:
        raise SystemExit(f'{run}: no TensorBoard log (events.out.tfevents.*) in this folder')
    curves: dict[str, dict[int, float]] = {}
    for path in events:  # oldest first: a resumed run's second file replays the updates after its checkpoint
        acc = EventAccumulator(str(path), size_guidance={'scalars': 0})
        acc.Reload()
        for tag in tags:
            if f'train/{tag}' in acc.Tags()['scalars']:
                curves.setdefault(tag, {}).update((e.step, e.value) for e in acc.Scalars(f'train/{tag}'))
    rows = []
    for tag, values in curves.items():
        for start in range(1, max(values) + 1, block):
            chunk = [values[s] for s in range(start, start + block) if s in values]
            if chunk:
                rows.append({'run': run.name, 'tag': tag, 'from': start, 'to': start + block - 1,
                             'mean': round(sum(chunk) / len(chunk), 5)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('runs', nargs='+', type=Path)
    ap.add_argument('--tags', nargs='+', default=['noobj_prob', 'obj_prob', 'class_prob', 'recall50', 'lrm_share',
                                                  'lrm_bg', 'lrm_passed'])
    ap.add_argument('--block', type=int, default=50)
    ap.add_argument('--out', type=Path, help='CSV file (default: standard output)')
    a = ap.parse_args(argv)
    rows = [row for run in a.runs for row in block_means(run, a.tags, a.block)]
    out = open(a.out, 'w', newline='') if a.out else sys.stdout
    writer = csv.DictWriter(out, ['run', 'tag', 'from', 'to', 'mean'])
    writer.writeheader()
    writer.writerows(rows)
    if a.out:
        out.close()


if __name__ == '__main__':
    main()
