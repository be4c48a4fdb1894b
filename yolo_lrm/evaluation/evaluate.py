"""Evaluation: run a model over an image list as Darknet's `detector valid`, write its result files, score them with
the VOC or the official KITTI protocol, and report a per-class table (JSON, CSV; pictures: `yolo_lrm/reports/run.py`).

Command line (top-level `evaluate.py`, parsed in `evaluate_cli.py`):

    python evaluate.py CFG DATA WEIGHTS [--metric voc07 area | kitti | kitti-voc] [--iou 0.5 ...] [--batch N]
                       [--device D] [--size N] [--out DIR] [--json OUT] [--csv OUT] [--plot DIR] [--iou-ge]
    python evaluate.py voc --annotations DIR --image-set FILE --names FILE --results "DIR/comp4_det_test_{}.txt"
                       [--metric voc07 area] [--iou 0.5 ...] [--iou-ge] [--json OUT] [--csv OUT] [--plot DIR]
    python evaluate.py kitti --labels DIR --results DIR [--frames FILE] [--json OUT] [--csv OUT] [--plot DIR]

The first form runs WEIGHTS (a Darknet `.weights`, which needs CFG, or our `.pt`, whose embedded cfg CFG replaces
unless CFG is `-`) over `valid=` of DATA and writes the result files into `--out` (default: `results=` of DATA):
`comp4_det_test_<class>.txt` for the VOC metrics, `data/<frame>.txt` for `kitti`, plus `eval.json`/`eval.csv`,
PR curves `pr_<class>.png` and the confusion matrix `confusion.csv`/`confusion.png` (`confusion.py`; `--plot` elsewhere).
Metrics: `voc07` (11-point, VOC2007, the default; `kitti` when DATA says `eval=kitti`), `area` (VOC2010+),
`kitti-voc` (the LRM paper's KITTI table: VOC AP over the dataset's classes, 11-point and area) and `kitti` (the
official KITTI 2D protocol, needs `kitti_labels=` in DATA); `voc07` and `area` may be given together (a row per
metric at every IoU), `kitti` and `kitti-voc` only alone.  VOC ground truth comes from `annotations=` (VOC XML)
when DATA has it, else from the Darknet label files as the training scan keeps them (see `scan_ground_truth`).
The list is scanned as training scans it (`scan_dataset`): the images, label lines and boxes it skips or drops are
left out of the scoring, clipped boxes are scored clipped, and an image that cannot be decoded is skipped too; each
is named in `EvalResult.skipped`.  Scoring works on the detections in memory, at the precision the result files
print; the files are written for the user (see `resultfiles.py` for image ids with spaces).

Inference is `detector valid`'s: letterbox, threshold .005 on objectness x class probability, class-wise NMS .45,
boxes mapped back to the original image.  Result lines are Darknet's (`print_detector_detections`):
`<image id> <score> <xmin> <ymin> <xmax> <ymax>` with `%f`, 1-based pixels `x - w/2 + 1` etc. clamped to
`xmin, ymin >= 1`, `xmax <= W`, `ymax <= H`; the image id is the file name up to its first `.`.  KITTI lines have the
16 columns of the devkit (`type -1 -1 -10 x1 y1 x2 y2 -1 -1 -1 -1000 -1000 -1000 -10 score`), 0-based pixels with the
same clamping shifted by one (`x1, y1 >= 0`, `x2 <= W-1`, `y2 <= H-1`).

Units: `EvalResult` and the JSON hold AP as fractions in [0, 1] (NaN, written as null, for a class without ground
truth); the printed table and the CSV hold percentages, as the paper's tables.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..allocator import keep_freed_memory
from ..cfg import CfgError
from ..data import LetterboxImages, collate_images
from ..data.datafile import DataCfg, parse_data
from ..data.dataset import Unreadable
from ..data.scan import ScanReport, scan_dataset
from .kitti import MIN_OVERLAP, KittiClass, evaluate_kitti_dirs
from ..pipeline import Postprocess
from .voc import (Detections, GroundTruth, class_ap, class_pr, load_voc_annotations, read_all_detections,
                  read_image_set)
from .resultfiles import darknet_boxes, printed, unique_ids, write_kitti_results, write_voc_results

DEFAULT_CONF = 0.005  # Darknet `detector valid`
DEFAULT_NMS = 0.45
METRICS = ('voc07', 'area', 'kitti', 'kitti-voc')
log = logging.getLogger('yolo_lrm.eval')


# ------------------------------------------------------------------------------------------------------ results
@dataclass
class EvalResult:
    """One row of AP values (fractions) per class; `also` holds the other rows of the same evaluation (another AP
    flavour, IoU threshold or KITTI level).  `curves[class] = (recall, precision)` feeds the PR plots; `skipped`
    names the images left out as unreadable; `scored` keeps what the headline row scored (see `Scored`)."""
    metric: str
    iou: float | dict[str, float]
    per_class: dict[str, float]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    also: list['EvalResult'] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # images left out as unreadable: "path: reason"
    scored: Scored | None = field(default=None, repr=False)  # what was scored, for the pictures

    @property
    def map(self) -> float:
        """Mean AP over the classes that have ground truth (NaN if none has)."""
        values = [v for v in self.per_class.values() if not math.isnan(v)]
        return sum(values) / len(values) if values else float('nan')

    @property
    def label(self) -> str:
        """Row name in the table: `voc07@0.5`, `kitti-r40-moderate`, ..."""
        return f'{self.metric}@{self.iou:g}' if isinstance(self.iou, float) else self.metric

    def rows(self) -> list['EvalResult']:
        """This row then the others."""
        return [self, *self.also]

    def to_json(self) -> dict:
        """`{"metric", "iou", "per_class", "map"}` (+ `"also": [...]` for further rows, `"skipped": [...]` for
        unreadable images); NaN becomes null."""
        out = {'metric': self.metric, 'iou': self.iou, 'per_class': {k: _num(v) for k, v in self.per_class.items()},
               'map': _num(self.map)}
        if self.also:
            out['also'] = [r.to_json() for r in self.also]
        if self.skipped:
            out['skipped'] = list(self.skipped)
        return out


def _num(v: float) -> float | None:
    return None if math.isnan(v) else v


def format_table(result: EvalResult) -> str:
    """The paper's layout: one line per row, mAP first, then one column per class, in percent."""
    names = list(result.per_class)
    first = max(len(r.label) for r in result.rows())
    widths = [max(6, len(n)) for n in ['mAP', *names]]
    lines = [' ' * first + ''.join(f' {n:>{w}}' for n, w in zip(['mAP', *names], widths))]
    for r in result.rows():
        values = [r.map, *(r.per_class[n] for n in names)]
        lines.append(f'{r.label:<{first}}' + ''.join(
            f' {"-":>{w}}' if math.isnan(v) else f' {100 * v:>{w}.2f}' for v, w in zip(values, widths)))
    return '\n'.join(lines)


def save_json(result: EvalResult, path: str | os.PathLike) -> None:
    """Write `result.to_json()`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result.to_json(), indent=2) + '\n')


def save_csv(result: EvalResult, path: str | os.PathLike) -> None:
    """Write the table as CSV (`row,mAP,<classes>`, percent, empty cell for NaN)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    names = list(result.per_class)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['row', 'mAP', *names])
        for r in result.rows():
            w.writerow([r.label, *('' if math.isnan(v) else f'{100 * v:.4f}'
                                   for v in (r.map, *(r.per_class[n] for n in names)))])



# ------------------------------------------------------------------------------------------------------ scoring
def score_voc(gt: GroundTruth, detections: Sequence[Detections], names: Sequence[str],
              metrics: Sequence[str] = ('voc07',), ious: Sequence[float] = (0.5,),
              inclusive: bool = False) -> EvalResult:
    """VOC AP rows (every metric at every IoU) from ground truth and per-class `voc.Detections`."""
    rows = []
    for iou in ious:
        prs = {n: class_pr(gt, c, detections[c], iou, inclusive) for c, n in enumerate(names)}
        for k, metric in enumerate(metrics):
            curves = {n: (pr.recall, pr.precision) for n, pr in prs.items() if pr.npos} if k == 0 else {}
            rows.append(EvalResult(metric, float(iou), {n: class_ap(pr, metric) for n, pr in prs.items()}, curves))
    return replace(rows[0], also=rows[1:], scored=Scored(None, gt, list(detections)))


def score_voc_files(annotations: str, image_set: str | Sequence[str], names: Sequence[str], results: str,
                    metrics: Sequence[str] = ('voc07',), ious: Sequence[float] = (0.5,),
                    inclusive: bool = False) -> EvalResult:
    """Score result files on disk (`results` = a template with `{}` for the class name) against VOC XML."""
    ids = read_image_set(image_set) if isinstance(image_set, (str, os.PathLike)) else list(image_set)
    gt = load_voc_annotations(annotations, ids, names)
    return score_voc(gt, read_all_detections(results, names, ids, gt), names, metrics, ious, inclusive)


def kitti_table(classes: dict[str, KittiClass]) -> EvalResult:
    """KITTI rows: AP|R40 moderate (the headline), then R40 easy/hard and R11 easy/moderate/hard."""
    order = [(40, 'moderate'), (40, 'easy'), (40, 'hard'), (11, 'easy'), (11, 'moderate'), (11, 'hard')]
    steps = np.arange(41) / 40
    rows = [EvalResult(f'kitti-r{points}-{level}', dict(MIN_OVERLAP),
                       {c: k.ap(level, points) for c, k in classes.items()},
                       {c: (steps, k.precision[level]) for c, k in classes.items()} if points == 40 else {})
            for points, level in order]
    return replace(rows[0], also=rows[1:])


def score_kitti_dirs(labels: str, results: str, frames: Sequence[str] | None = None) -> EvalResult:
    """The official KITTI 2D protocol on a result folder (see `kitti.py`)."""
    return kitti_table(evaluate_kitti_dirs(labels, results, frames))


# ------------------------------------------------------------------------------------------------ running a model
@dataclass
class ListRun:
    """What `run_list` made of an image list: per readable image, in list order, its path, position in the list,
    detections (see `predict_list`) and original (w, h); the unreadable images as "path: reason"."""
    paths: list[str]
    index: list[int]
    dets: list[np.ndarray]
    sizes: list[tuple[int, int]]
    skipped: list[str]


@dataclass
class Scored:
    """What an evaluation scored, kept for its pictures (confusion matrix, validation mosaics): the model's run over
    the list when there was one, the ground truth and the detections per class as scored (1-based VOC pixels)."""
    run: ListRun | None
    truth: GroundTruth
    detections: list[Detections]


def class_detections(run: ListRun, num_classes: int) -> list[Detections]:
    """A run's detections per class, scores and boxes exactly as the result files print them (`darknet_boxes`,
    `printed`), images in run order: scoring these equals scoring the files."""
    image = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(run.dets)] or [np.zeros(0, np.int64)])
    rows = np.concatenate(list(run.dets) or [np.zeros((0, 6), np.float32)])
    boxes = printed(np.concatenate([darknet_boxes(d, w, h) for d, (w, h) in zip(run.dets, run.sizes)]
                                   or [np.zeros((0, 4), np.float32)]))
    score = printed(rows[:, 4])
    cls = rows[:, 5].astype(np.int64)
    return [Detections(image[cls == c], score[cls == c], boxes[cls == c]) for c in range(num_classes)]


def run_list(net, paths: Sequence[str], size: int | None = None, conf: float = DEFAULT_CONF,
             nms: float = DEFAULT_NMS, batch_size: int = 8, device: str | torch.device | None = None,
             workers: int = 0, progress: bool = True) -> ListRun:
    """Darknet's `detector valid` over a list; an image that cannot be decoded is skipped and named in `skipped`.
    The network keeps its train/eval mode; `device` moves it there (default: where it is)."""
    size = size or net.width
    net.check_input_size(size)
    if device is not None:
        net.to(device)
    device = next(net.parameters()).device
    if device.type == 'cpu':
        keep_freed_memory()
    post = Postprocess.for_network(net, (size, size), conf, nms, device=device)  # every (box, class), as Darknet
    loader = DataLoader(LetterboxImages(paths, size), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_images, pin_memory=device.type == 'cuda')
    if progress:
        from tqdm import tqdm
        loader = tqdm(loader, desc='valid', unit='batch', leave=False)
    readable: list[str] = []
    dets: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    bad: list[Unreadable] = []
    was_training = net.training
    net.eval()
    try:
        for images, batch_paths, batch_sizes, batch_bad in loader:
            bad += batch_bad
            if not batch_paths:  # every image of the batch was unreadable
                continue
            with torch.inference_mode():
                out = net(images.to(device, non_blocking=True))
                dets += [d.cpu().numpy() for d in post(out, batch_sizes)]
            readable += batch_paths
            sizes += batch_sizes
    finally:
        net.train(was_training)
    skipped = {b.index for b in bad}
    return ListRun(readable, [i for i in range(len(paths)) if i not in skipped], dets, sizes, [str(b) for b in bad])


def predict_list(net, paths: Sequence[str], size: int | None = None, conf: float = DEFAULT_CONF,
                 nms: float = DEFAULT_NMS, batch_size: int = 8, device: str | torch.device | None = None,
                 workers: int = 0, progress: bool = True) -> list[np.ndarray]:
    """Darknet's `detector valid` over images: per image of `paths` an (n, 6) float32 array `x1, y1, x2, y2, score,
    class` in 0-based pixels of the original image (unclipped), best first.  An image that cannot be decoded gets
    an empty (0, 6) array and a logged warning (`run_list` tells the two apart)."""
    run = run_list(net, paths, size, conf, nms, batch_size, device, workers, progress)
    for reason in run.skipped:
        log.warning('skipped unreadable image %s', reason)
    out = [np.zeros((0, 6), np.float32) for _ in paths]
    for i, d in zip(run.index, run.dets):
        out[i] = d
    return out


# --------------------------------------------------------------------------------------- validation of a .data
def scan_ground_truth(report: ScanReport, keep: Sequence[int], sizes: Sequence[tuple[int, int]]) -> GroundTruth:
    """VOC ground truth of the scanned images `keep` (indices into `report.images`, with their (w, h)), for scoring
    when there is no XML: the boxes training sees (skipped lines and dropped boxes absent, clipped boxes clipped).

    A row `c cx cy w h` becomes the 1-based pixel box `x1 = (cx - w/2) * W + 1`, `x2 = (cx + w/2) * W + 1` (y
    likewise), rounded to integers: the exact inverse of `voc_label.py`, so labels made from VOC XML give back the
    XML's integers.  Label files have no `difficult` flag, and `voc_label.py` dropped the difficult objects, so
    detections of those count as FP here: scores are slightly below the XML-based ones."""
    keep = np.asarray(keep, np.int64)
    if len(keep) != len(sizes):
        raise ValueError(f'{report.list_path}: {len(keep)} images to score but {len(sizes)} image sizes')
    counts = np.diff(report.offsets)[keep]
    rows = np.concatenate([report.labels(i) for i in keep] or [np.zeros((0, 5), np.float32)]).astype(np.float64)
    wh = np.repeat(np.asarray(sizes, np.float64).reshape(-1, 2), counts, axis=0)
    half_w, half_h = rows[:, 3] / 2, rows[:, 4] / 2
    boxes = np.rint(np.stack(((rows[:, 1] - half_w) * wh[:, 0], (rows[:, 2] - half_h) * wh[:, 1],
                              (rows[:, 1] + half_w) * wh[:, 0], (rows[:, 2] + half_h) * wh[:, 1]), 1) + 1)
    ids = unique_ids([report.images[i] for i in keep])
    return GroundTruth(ids, np.repeat(np.arange(len(keep)), counts), rows[:, 0].astype(np.int64), boxes,
                       np.zeros(len(rows), bool))


def check_metrics(metric: str | Sequence[str]) -> list[str]:
    """`metric` as a list without repeats: VOC metrics (`voc07`, `area`) in any number, `kitti` or `kitti-voc` alone."""
    metrics = [metric] if isinstance(metric, str) else list(dict.fromkeys(metric))
    if not metrics:
        raise ValueError(f'no metric given (one of {", ".join(METRICS)})')
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f'metric must be one of {", ".join(METRICS)}, got {m!r}')
        if m in ('kitti', 'kitti-voc') and len(metrics) > 1:  # their rows are not VOC rows at each IoU
            raise ValueError(f'kitti and kitti-voc cannot be combined with other metrics, got {" ".join(metrics)}')
    return metrics


def evaluate_model(net, data_cfg: str | os.PathLike | DataCfg, metric: str | Sequence[str] = 'voc07',
                   iou: float | Sequence[float] = 0.5, names: Sequence[str] | None = None, size: int | None = None,
                   batch_size: int = 8, device: str | torch.device | None = None, out: str | None = None,
                   workers: int = 0, inclusive: bool = False, progress: bool = True,
                   report: ScanReport | None = None) -> EvalResult:
    """Run the network over `valid=` of a `.data` file, write the result files into `out` (a temporary folder if
    None) and score it: a row per metric at every IoU, the headline row being the first metric at the first IoU
    (VOC07 11-point @ .5 by default).  The list is scanned as training scans it, or `report` is that scan (the
    trainer's, whose issues it has reported already); what the scan skips and the images that cannot be decoded are
    left out of the scoring, their ground truth included, and listed in `result.skipped` (the scan's only when it is
    made here); a ValueError if no image can be read."""
    metrics = check_metrics(metric)
    data = data_cfg if isinstance(data_cfg, DataCfg) else parse_data(data_cfg)
    if not data['valid']:
        raise CfgError(f'{data.path}: no valid= list to evaluate')
    if metrics == ['kitti'] and not data['kitti_labels']:
        raise CfgError(f'{data.path}: metric kitti needs kitti_labels= (the KITTI label_2 folder)')
    data.require('valid', *(() if names else ('names',)))
    names = list(names or data.names())
    if len(names) != net.num_classes:
        raise CfgError(f'{data.path}: {len(names)} class names for a network with {net.num_classes} classes')
    skipped: list[str] = []
    if report is None:
        report = scan_dataset(data.images('valid'), len(names))
        report.raise_errors()
        skipped = report.skipped_images()
    if not report.entries:
        raise ValueError(f'{data["valid"]}: the image list is empty')
    unique_ids(report.images)  # before the long run: two images with one id would mix their result lines
    run = run_list(net, report.images, size, batch_size=batch_size, device=device, workers=workers,
                   progress=progress) if report.images else ListRun([], [], [], [], [])
    skipped += run.skipped
    if not run.paths:
        raise ValueError(f'{data["valid"]}: none of the {report.entries} images could be read ({skipped[0]})')
    ious = [iou] if isinstance(iou, (int, float)) else list(iou)
    with tempfile.TemporaryDirectory(prefix='yolo_lrm_eval_') as tmp:
        result = _score_run(run, data, report, names, metrics, ious, inclusive, out or tmp)
    return replace(result, skipped=skipped, scored=_scored(run, report, names, result.scored))


def _scored(run: ListRun, report: ScanReport, names: list[str], voc: Scored | None) -> Scored:
    """The VOC scoring's material with the run added; for the KITTI protocol, the scanned labels as ground truth."""
    if voc is not None:
        return replace(voc, run=run)
    return Scored(run, scan_ground_truth(report, run.index, run.sizes), class_detections(run, len(names)))


def _score_run(run: ListRun, data: DataCfg, report: ScanReport, names: list[str], metrics: list[str],
               ious: list[float], inclusive: bool, folder: str) -> EvalResult:
    """Write the result files of the readable images, and score their detections against the ground truth of
    those images alone."""
    ids = unique_ids(run.paths)
    if metrics == ['kitti']:
        write_kitti_results(os.path.join(folder, 'data'), run.paths, run.dets, run.sizes, names)
        return score_kitti_dirs(data['kitti_labels'], os.path.join(folder, 'data'), ids)
    write_voc_results(folder, run.paths, run.dets, run.sizes, names)
    gt = load_voc_annotations(data['annotations'], ids, names) if data['annotations'] else \
        scan_ground_truth(report, run.index, run.sizes)
    voc_metrics = ['voc07', 'area'] if metrics == ['kitti-voc'] else metrics
    return score_voc(gt, class_detections(run, len(names)), names, voc_metrics, ious, inclusive)
