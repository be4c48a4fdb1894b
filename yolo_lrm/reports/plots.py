"""Figures drawn with matplotlib: a run's `results.png`, per-class precision-recall curves, the confusion matrix.

matplotlib is optional (the `plots` extra): without it `pyplot()` is None and each caller says what it skipped.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..atomic import atomic_write
from ..train.runlog import ResultsCsv

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvalResult

MISSING = 'matplotlib is not installed (pip install "yolo_lrm[plots]")'
RESULTS_PLOTTED = ('loss', 'coord', 'obj', 'noobj', 'cls', 'prior', 'iou', 'recall50', 'obj_prob', 'noobj_prob', 'lr',
                   'lrm_share', 'map50')


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Write a figure as PNG atomically (a reader never sees half a file) and free it."""
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=dpi, bbox_inches='tight'))
    pyplot().close(fig)


def plot_results(csv_path: Path, png_path: Path) -> str | None:
    """Draw `results.png` from `results.csv`; returns why not when matplotlib is missing or there is nothing yet."""
    plt = pyplot()
    if plt is None:
        return f'results.png skipped: {MISSING}'
    rows = ResultsCsv(csv_path).rows()
    if not rows:
        return 'results.png skipped: no results yet'
    x = [int(r['update']) for r in rows]
    columns = [c for c in RESULTS_PLOTTED if any(r.get(c) for r in rows)]
    ncol = 4
    nrow = math.ceil(len(columns) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 2.8 * nrow), squeeze=False)
    for ax, col in zip(axes.flat, columns):
        pts = [(u, float(r[col])) for u, r in zip(x, rows) if r[col]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker='.', linewidth=1.5)
        ax.set_title(col)
        ax.set_xlabel('update')
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis('off')
    fig.tight_layout()
    save_figure(fig, png_path)
    return None


def plot_pr(result: EvalResult, out_dir: str | os.PathLike) -> list[str]:
    """One PR plot per class (`pr_<class>.png`, a line per row that has curves); a RuntimeError without
    matplotlib."""
    plt = pyplot()
    if plt is None:
        raise RuntimeError(f'PR plots need matplotlib: {MISSING}')
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for name in result.per_class:
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in result.rows():
            if name in r.curves:
                rec, prec = r.curves[name]
                ax.plot(rec, prec, label=f'{r.label} AP {100 * r.per_class[name]:.2f}')
        ax.set(xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1.02), title=name)
        if ax.lines:
            ax.legend(loc='lower left', fontsize=8)
        path = os.path.join(out_dir, f'pr_{name}.png')
        save_figure(fig, path)
        written.append(path)
    return written


def plot_confusion(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike, subtitle: str) -> None:
    """The confusion matrix as a picture: colour = share of each true class's row, the counts written in the cells;
    the last row and column are background.  Needs matplotlib (a RuntimeError without it)."""
    plt = pyplot()
    if plt is None:
        raise RuntimeError(f'the confusion matrix picture needs matplotlib: {MISSING}')
    labels = [*names, 'background']
    n = len(labels)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = min(2.5 + 0.45 * n, 16)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='share of the true class (row)')
    if n <= 30:  # beyond that the numbers cannot be read anyway
        for (t, p), count in np.ndenumerate(matrix):
            if count:
                ax.text(p, t, str(count), ha='center', va='center', fontsize=7,
                        color='white' if share[t, p] > 0.5 else 'black')
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel='predicted', ylabel='true', title=f'confusion matrix\n{subtitle}')
    save_figure(fig, path)
