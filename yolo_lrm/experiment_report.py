"""The reports of an experiment grid from its runs' records: aggregation over seeds (mean, sample std, the paired
improvement over the Loss2 baseline), the markdown table and report, the CSV files and the mAP-vs-K plot.  A record
here is a run's experiment.json dict (RunRecord.to_json())."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from .distributed import pick_device
from .experiment_grids import Variant, is_plain, nms_text


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
    return is_plain(record['settings']) and not record['settings']['lrm']


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
                 str(s['hard_examples']) if s['lrm'] else '-', nms_text(s['nms']) if s['lrm'] else '-',
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
        if s['lrm'] and is_plain(s) and r['map_mean'] is not None:
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
    where = pick_device(device)
    if where.type == 'cpu':
        what = f'CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ' \
               f'{torch.get_num_threads()} torch threads'
    else:
        what = f'GPU {torch.cuda.get_device_name(where)}'
    return f'{what}; torch {torch.__version__}, Python {platform.python_version()}'
