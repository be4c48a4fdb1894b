"""What a training run leaves on disk besides checkpoints and pictures: `train.log`, `results.csv` and its
`results.png`, and what shows that a folder holds a run (`previous_run`; the folder is named in `runfolder.py`).

`results.csv` has one row per evaluation; every training column is the mean over the updates since the previous
row.  Loss columns are per image (the update's summed loss divided by its batch, as Darknet normalises); `iou`,
`class_prob`, `obj_prob`, `recall50`, `recall75` are Darknet's region statistics over the truths of those updates;
`lrm_fg`/`lrm_bg` are the foreground/background predictions LRM kept per image, `lrm_passed` those its NMS passed
over (ranked above the image's last kept one), `lrm_share` the share of the loss the kept ones carry and, with
`[lrm] probe=1`, `lrm_grad_share` their share of the squared gradient norm at F (empty when LRM is off; with
`probe=1` and LRM off, what LRM at `probe_k` / `probe_nms` would keep).
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from tqdm import tqdm

from ..atomic import atomic_write
from ..reports.plots import MISSING, pyplot, save_figure
from .stats import LOGGED

COLUMNS = ('update', 'epoch', 'images', 'lr', *LOGGED, 'map50', 'time_s', 'images_per_s')
RESULTS_PLOTTED = ('loss', 'coord', 'obj', 'noobj', 'cls', 'prior', 'iou', 'recall50', 'obj_prob', 'noobj_prob', 'lr',
                   'lrm_share', 'map50')
RUN_FILES = ('weights/last.pt', 'weights/best.pt', 'results.csv')


def previous_run(folder: str | os.PathLike) -> str | None:
    """What shows that `folder` holds a training run already (its files, named), or None."""
    found = [f for f in RUN_FILES if Path(folder, f).exists()]
    return ', '.join(found) if found else None


class RunLog:
    """Messages to the console (above the progress bar) and to `train.log` in the run directory.  Until `attach`
    names the file, messages are kept and then written first: the run directory is made only once inputs are valid."""

    def __init__(self, path: Path | None = None, echo: bool = True):
        self.path, self.echo = path, echo
        self._pending: list[str] = []

    def attach(self, path: Path) -> None:
        """From now on append to `path`, starting with the messages so far."""
        self.path = path
        with open(path, 'a') as f:
            f.writelines(m + '\n' for m in self._pending)
        self._pending.clear()

    def info(self, message: str) -> None:
        """Print and append to the log file."""
        if self.echo:
            tqdm.write(message)
        if self.path is None:
            self._pending.append(message)
            return
        with open(self.path, 'a') as f:
            f.write(message + '\n')


class Meter:
    """Running sums of per-update values; `means()` gives the averages since the last `reset()`."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, float]) -> None:
        """Add one update's values; NaN (e.g. the IoU of an update without truths) is left out of its mean."""
        for key, v in values.items():
            if not math.isnan(v):
                self.sums[key] = self.sums.get(key, 0.0) + v
                self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


class ResultsCsv:
    """`results.csv`: appended one row per evaluation, so an interrupted run keeps every finished row."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        """The rows written so far."""
        if not self.path.exists():
            return []
        with open(self.path, newline='') as f:
            return list(csv.DictReader(f))

    def truncate_after(self, update: int) -> None:
        """Drop rows past `update` (written after the checkpoint a run resumes from).  The file is rewritten
        atomically with today's columns, so a run resumed by a newer version keeps its rows under the right names
        (columns it lacks stay empty; columns no longer logged are dropped)."""
        if not self.path.exists():
            return
        rows = [r for r in self.rows() if int(r['update']) <= update]

        def write(f) -> None:
            text = io.StringIO(newline='')
            writer = csv.DictWriter(text, COLUMNS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(rows)
            f.write(text.getvalue().encode())

        atomic_write(self.path, write)

    def append(self, row: dict[str, float | int | None]) -> None:
        """Write one row (missing or None values are left empty)."""
        new = not self.path.exists()
        with open(self.path, 'a', newline='') as f:
            writer = csv.DictWriter(f, COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})


def _cell(v: float | int | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ''
    return f'{v:.6g}' if isinstance(v, float) else str(v)


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
