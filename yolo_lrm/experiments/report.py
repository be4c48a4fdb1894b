"""The reports of an experiment grid from its runs' records: aggregation over seeds (mean, sample std, the paired
improvement over the Loss2 baseline), the markdown table and report, the CSV files and the mAP-vs-K plot.  A record
here is a run's experiment.json dict (RunRecord.to_json())."""
from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..cfg import parse_cfg
from .grids import Variant, common_seed_means, is_plain, nms_text
from ..reports.plots import MISSING, pyplot, save_figure


# ------------------------------------------------------------------------------------------------- aggregation
def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


# Student's t at 97.5 % for 1..30 degrees of freedom (two-sided 95 % intervals); above 30 the value at 30, a
# slight overestimate of the interval.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def ci95(values: Sequence[float]) -> float | None:
    """Half-width of the t-based 95 % confidence interval of the mean of `values` (None for fewer than two)."""
    if len(values) < 2:
        return None
    return _T975[min(len(values) - 1, len(_T975)) - 1] * statistics.stdev(values) / len(values) ** 0.5


def welch_ci95(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Half-width of the Welch 95 % interval of mean(a) − mean(b) (unequal variances; Welch–Satterthwaite degrees of
    freedom, rounded down); None with fewer than two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return _T975[min(max(int(df), 1), len(_T975)) - 1] * (va + vb) ** 0.5


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of paired values (None for fewer than three pairs or a constant side)."""
    if len(x) < 3:
        return None
    try:
        return statistics.correlation(x, y)
    except statistics.StatisticsError:  # a constant side
        return None


def split_stats(runs: Sequence[dict[str, Any]], scores: Sequence[dict[str, Any] | None],
                base_by_seed: dict[int, float | None] | None) -> dict[str, Any]:
    """Over seeds, for one split: mAP mean and std, per-class means and stds, and (with `base_by_seed`, the
    baseline's mAP per seed) the paired improvement: per seed ([seed, Δ] pairs), mean, std, 95 % interval
    half-width, wins and losses; whether pairing helps: `pair_r`, the correlation of the row's and the baseline's
    mAP over the paired seeds (pairing narrows the interval only when it is clearly positive), and the unpaired
    difference of means over all seeds of both with its Welch interval.  `scores` holds each run's `{'map',
    'per_class'}` on the split (None: diverged, or not scored there)."""
    maps = [s['map'] if s else None for s in scores]
    m, sd = _mean_std(maps)
    classes = list(next((s['per_class'] for s in scores if s), {}))
    per_class = {c: _mean_std([s['per_class'][c] if s else None for s in scores]) for c in classes}
    pairs = [(r['seed'], v, base_by_seed[r['seed']]) for r, v in zip(runs, maps)
             if base_by_seed is not None and v is not None and base_by_seed.get(r['seed']) is not None]
    by_seed = [[seed, v - b] for seed, v, b in pairs]
    deltas = [d for _, d in by_seed]
    dm, ds = _mean_std(deltas) if base_by_seed is not None else (None, None)
    mine = [v for v in maps if v is not None]
    base_all = [v for v in (base_by_seed or {}).values() if v is not None]
    unpaired = statistics.fmean(mine) - statistics.fmean(base_all) if mine and base_all else None
    return {'map_mean': m, 'map_std': sd, 'delta_mean': dm, 'delta_std': ds, 'delta_ci95': ci95(deltas),
            'wins': sum(d > 0 for d in deltas), 'losses': sum(d < 0 for d in deltas), 'pairs': len(deltas),
            'delta_by_seed': by_seed, 'pair_r': pearson([v for _, v, _ in pairs], [b for _, _, b in pairs]),
            'delta_unpaired': unpaired, 'delta_unpaired_ci95': welch_ci95(mine, base_all) if unpaired is not None
            else None,
            'per_class_mean': {c: v[0] for c, v in per_class.items()},
            'per_class_std': {c: v[1] for c, v in per_class.items()}}


def aggregate(variants: Sequence[Variant], records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant, over seeds: `split_stats` on `valid=` (at the top level of the row) and, for runs scored on the
    test split too, under `test`; the improvement is over the Loss2 baseline (the first variant with Loss2, no focal
    loss and no LRM), paired by seed; diverged runs are counted and left out of the means."""
    by_variant = {v.name: [r for r in records if r['variant'] == v.name] for v in variants}
    base = next((v.name for v in variants if by_variant[v.name] and _is_baseline(by_variant[v.name][0])), None)
    base_runs = by_variant.get(base, [])
    base_valid = {r['seed']: r['map'] for r in base_runs}
    base_test = {r['seed']: (r.get('test') or {}).get('map') for r in base_runs}
    rows = []
    for v in variants:
        runs = sorted(by_variant[v.name], key=lambda r: r['seed'])
        if not runs:
            continue
        pairs = base is not None and v.name != base
        valid = split_stats(runs, [r if r['map'] is not None else None for r in runs], base_valid if pairs else None)
        tests = [r.get('test') for r in runs]
        train_s = [r['train_s'] for r in runs if r.get('train_s') is not None]
        rows.append({'variant': v.name, 'settings': runs[0]['settings'], 'seeds': [r['seed'] for r in runs],
                     'diverged': sum(r['map'] is None for r in runs), 'baseline': base, **valid,
                     'train_s_mean': statistics.fmean(train_s) if train_s else None,
                     'test': split_stats(runs, tests, base_test if pairs else None) if any(tests) else None})
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


def _hard_examples(k: int, predictions: int | None) -> str:
    return f'{k} ({100 * k / predictions:.1f} %)' if predictions else str(k)


def _paired_cells(stats: dict[str, Any]) -> list[str]:
    """Δ vs Loss2 (mean ± std), its 95 % interval and wins / losses over the paired seeds."""
    if stats['delta_mean'] is None:
        return ['-', '-', '-']
    ci = stats['delta_ci95']
    low, high = (None, None) if ci is None else (stats['delta_mean'] - ci, stats['delta_mean'] + ci)
    interval = '-' if ci is None else f'[{100 * low:+.2f}, {100 * high:+.2f}]'
    return [_pct(stats['delta_mean'], stats['delta_std'], sign=True), interval, f'{stats["wins"]} / {stats["losses"]}']


def markdown_table(rows: Sequence[dict[str, Any]], backbone: str, split: str = 'valid',
                   predictions: int | None = None) -> str:
    """The paper's layout (Tables II-IV in one): settings, mAP, improvement over Loss2 paired by seed (mean ± std,
    95 % interval, wins / losses), per-class AP, in percent, on `split` ('valid' or 'test'); a Method column (LRM, or
    the options beyond the paper) when some row uses such an option; K also as a share of `predictions`."""
    rows = [r for r in rows if split == 'valid' or r.get('test')]
    stats = [r if split == 'valid' else r['test'] for r in rows]
    classes = list(stats[0]['per_class_mean']) if rows else []
    method = ['Method'] if any(r['settings'].get('method') for r in rows) else []
    head = ['Variant', *method, 'Detector', 'Backbone', 'Loss', 'FL', 'LRM', 'Hard examples', 'NMS', 'Seeds', 'mAP',
            'Δ vs Loss2', '95 % CI of Δ', 'W / L', *classes]
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] * (9 + len(method)) + ['---:'] * (4 + len(classes))) + '|']
    for r, st in zip(rows, stats):
        s = r['settings']
        cells = [r['variant'], *[s.get('method') or ('LRM' if s['lrm'] else '-') for _ in method], 'YOLOv2',
                 backbone, s['loss'].capitalize(), '✓' if s['focal'] else '✗', '✓' if s['lrm'] else '✗',
                 _hard_examples(s['hard_examples'], predictions) if s['lrm'] else '-',
                 nms_text(s['nms']) if s['lrm'] else '-', str(len(r['seeds'])), _map_cell({**r, **st}),
                 *_paired_cells(st), *(_pct(st['per_class_mean'][c]) for c in classes)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def seed_delta_table(rows: Sequence[dict[str, Any]], split: str = 'valid') -> str:
    """The paired Δ vs Loss2 of every row and seed on `split`, in points ('' when no row has one)."""
    stats = [(r['variant'], r if split == 'valid' else r.get('test')) for r in rows]
    stats = [(name, dict(st['delta_by_seed'])) for name, st in stats if st and st.get('delta_by_seed')]
    if not stats:
        return ''
    seeds = sorted({seed for _, by in stats for seed in by})
    lines = ['| Variant | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |', '|---|' + '---:|' * len(seeds)]
    lines += ['| ' + ' | '.join([name, *(_pct(by.get(s), sign=True) for s in seeds)]) + ' |' for name, by in stats]
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
        stat = ('map_mean', 'map_std', 'delta_mean', 'delta_std', 'delta_ci95')
        w.writerow(['variant', *keys, 'seeds', 'diverged', 'train_s_mean', 'mAP_mean', 'mAP_std', 'delta_mean',
                    'delta_std', 'delta_ci95', 'wins', 'losses',
                    *(f'{c}_{m}' for c in classes for m in ('mean', 'std')),
                    *(f'test_{k}' for k in stat), 'test_wins', 'test_losses', *(f'test_{c}_mean' for c in classes)])
        for r in rows:
            t = r.get('test') or {}
            w.writerow([r['variant'], *(_cell(r['settings'].get(k)) for k in keys), len(r['seeds']), r['diverged'],
                        _cell(r.get('train_s_mean')), *(_cell(r[k], 100) for k in stat), r['wins'], r['losses'],
                        *(_cell(r[f'per_class_{m}'][c], 100) for c in classes for m in ('mean', 'std')),
                        *(_cell(t.get(k), 100) for k in stat), _cell(t.get('wins')), _cell(t.get('losses')),
                        *(_cell((t.get('per_class_mean') or {}).get(c), 100) for c in classes)])


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
    plt = pyplot()
    if plt is None:
        return f'{path.name} not drawn: {MISSING}'
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
    save_figure(fig, path, dpi=110)
    return None


def plot_deltas(rows: Sequence[dict[str, Any]], path: Path, title: str) -> str | None:
    """Δ vs Loss2 per row: each seed's paired Δ as a dot, the mean with its 95 % interval as a bar; one panel per split
    (valid=, and the test split when scored).  Returns a note when nothing was drawn."""
    rows = [r for r in rows if r.get('delta_by_seed')]
    if not rows:
        return None
    plt = pyplot()
    if plt is None:
        return f'{path.name} not drawn: {MISSING}'
    splits = [('valid=', rows)] + ([('test', [r['test'] for r in rows])] if all(r.get('test') for r in rows) else [])
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 0.4 * len(rows) + 1.2), sharey=True,
                             squeeze=False)
    ys = range(len(rows))[::-1]
    for ax, (name, stats) in zip(axes[0], splits):
        for y, st in zip(ys, stats):
            if not st.get('delta_by_seed'):
                continue
            ax.plot([100 * d for _, d in st['delta_by_seed']], [y] * len(st['delta_by_seed']), 'o', color='gray',
                    alpha=0.5, markersize=4)
            ci = st['delta_ci95']
            ax.errorbar(100 * st['delta_mean'], y, xerr=None if ci is None else 100 * ci, fmt='D', color='C0',
                        capsize=3)
        ax.axvline(0, color='black', linewidth=0.8)
        ax.set(xlabel='Δ mAP vs Loss2 (points)\n◆ mean, bar: its 95 % interval, ●: one seed', title=f'{title}: {name}')
    axes[0][0].set_yticks(list(ys), [r['variant'] for r in rows])
    save_figure(fig, path, dpi=110)
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
    note = plot_deltas(rows, out / f'{grid}-deltas.png', Path(context['data']).stem)
    notes += [note] if note else []
    (out / f'{grid}.md').write_text(markdown_report(grid, rows, records, context, complete))
    return notes


def markdown_report(grid: str, rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]], ctx: dict[str, Any],
                    complete: bool) -> str:
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
    predictions = predictions_per_image(ctx['cfg'])
    if predictions:
        parts.append(f'- predictions per image: {predictions} (the share of them K keeps is in brackets)')
    minutes = [r['train_s_mean'] / 60 for r in rows if r.get('train_s_mean')]
    if minutes:
        parts.append(f'- training time per run: {min(minutes):.1f}-{max(minutes):.1f} min (mean per row)')
    parts.append('- 95 % CI of Δ: t interval of the mean paired Δ over seeds; W / L: seeds where the row beat / lost '
                 'to the baseline')
    parts += ['', '## On `valid=` (where a setting is chosen)', '',
              markdown_table(rows, backbone_name(ctx['cfg']), 'valid', predictions), *_by_seed(rows, 'valid')]
    if any(r.get('test') for r in rows):
        parts += ['', f'## On the test split (`{Path(ctx["test_data"]).name}`: reported, never used to choose)', '',
                  markdown_table(rows, backbone_name(ctx['cfg']), 'test', predictions), *_by_seed(rows, 'test'), '',
                  *best_rows(rows, records)]
    return '\n'.join(parts + [''])


def _by_seed(rows: Sequence[dict[str, Any]], split: str) -> list[str]:
    table = seed_delta_table(rows, split)
    pairing = pairing_table(rows, split)
    return (['', 'Paired Δ vs Loss2 by seed (points):', '', table] if table else []) + (
        ['', 'Does pairing by seed help? r: correlation of the row\'s and the baseline\'s mAP over the same seeds '
             '(pairing narrows the interval only when r is clearly positive); unpaired: the difference of the means '
             'over all seeds of each, with its Welch 95 % interval:', '', pairing] if pairing else [])


def pairing_table(rows: Sequence[dict[str, Any]], split: str = 'valid') -> str:
    """Per row with a paired Δ on `split`: same-seed r, the paired Δ and interval, the unpaired Δ and interval."""
    stats = [(r, r if split == 'valid' else r.get('test')) for r in rows]
    stats = [(r, st) for r, st in stats if st and st.get('delta_unpaired') is not None and r['variant'] != r['baseline']]
    if not stats:
        return ''
    lines = ['| Variant | seeds (row / baseline) | r | paired Δ | 95 % CI | unpaired Δ | Welch 95 % CI |',
             '|---|---|---:|---:|---:|---:|---:|']
    base = next((r for r in rows if r['variant'] == r['baseline']), None)
    n_base = len(base['seeds']) - base['diverged'] if base else 0
    for r, st in stats:
        r_text = '-' if st.get('pair_r') is None else f"{st['pair_r']:+.2f}"
        paired, interval, _ = _paired_cells(st)
        ci = st['delta_unpaired_ci95']
        welch = '-' if ci is None else f"[{100 * (st['delta_unpaired'] - ci):+.2f}, {100 * (st['delta_unpaired'] + ci):+.2f}]"
        lines.append(f"| {r['variant']} | {len(r['seeds']) - r['diverged']} / {n_base} | {r_text} | {paired} | "
                     f"{interval} | {_pct(st['delta_unpaired'], sign=True)} | {welch} |")
    return '\n'.join(lines)


def best_rows(rows: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> list[str]:
    """Which LRM row is best on valid= and which on test, with both of their scores: the honest choice and the
    choose-on-test one (the gap between them is the bias of choosing on the test split).  Rows are ranked on the seeds
    every LRM row has finished, as the loss grid chooses its row."""
    names = [r['variant'] for r in rows if r['settings']['lrm'] and r.get('test')]
    seeds, valid = common_seed_means(records, names)
    test = common_seed_means(records, names, 'test')[1]
    both = [n for n in names if n in valid and n in test]
    if len(both) < 2:  # the loss grid's one LRM row: nothing to choose between
        return []
    on_valid, on_test = max(both, key=valid.get), max(both, key=test.get)
    uneven = len({s for r in rows for s in r['seeds']}) > len(seeds)
    over = f' (means over seeds {" ".join(map(str, seeds))}, the ones every LRM row has)' if uneven else ''
    return [f'- best LRM row on valid=: **{on_valid}** (valid {_pct(valid[on_valid])}, test {_pct(test[on_valid])}); '
            f'best LRM row on test: **{on_test}** (valid {_pct(valid[on_test])}, test {_pct(test[on_test])}){over}']


def predictions_per_image(cfg_path: str) -> int | None:
    """Anchors x cells of the cfg's region layer at its input size (stride 32, as every YOLOv2 cfg here); None if
    the cfg cannot be read from here."""
    try:
        cfg = parse_cfg(cfg_path)
    except (OSError, ValueError):
        return None
    return cfg.region['num'] * (cfg.net['width'] // 32) * (cfg.net['height'] // 32)
