"""Figures drawn with matplotlib: per-class precision-recall curves, the confusion matrix (a run's `results.png`:
`train/runlog.py`, beside the file it draws).

matplotlib is optional (the `plots` extra): without it `pyplot()` is None and each caller says what it skipped.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..atomic import atomic_write

if TYPE_CHECKING:
    from ..evaluation.evaluate import EvalResult

MISSING = 'matplotlib is not installed (pip install "yolo_lrm[plots]")'


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
