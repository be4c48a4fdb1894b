"""What a run shows besides its numbers: labelled mosaics of the first training batches, validation images with
predictions beside the ground truth at every evaluation, PR curves and a confusion matrix after the last one, and a
live TensorBoard log when `tensorboard` is installed.

Every picture is optional: without matplotlib the PR curves and the confusion picture are skipped (its counts are
still written as CSV) and the run says so once; without tensorboard nothing is logged there and nothing fails.
The training step pays nothing after the first `batches` updates: the only per-update work is handing the logged
numbers to TensorBoard's writer, which queues them to a background thread.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..evaluation.confusion import DEFAULT_CONF, confusion_matrix
from ..data.labels import ImageError, read_image
from ..evaluation.evaluate import EvalResult
from .mosaic import batch_mosaic, jpeg, prediction_pair, tile, title_bar, write_jpeg
from .plots import MISSING, plot_confusion, plot_pr, pyplot

TRAIN_BATCHES = 3        # mosaics of the first updates' first mini-batch
VALID_IMAGES = 4         # validation images in each evaluation's mosaic


def eval_iou(result: EvalResult) -> float:
    """The IoU threshold of an evaluation's headline row (0.5 for the KITTI protocol's per-class thresholds)."""
    return result.iou if isinstance(result.iou, float) else 0.5


def write_confusion_csv(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> None:
    """The counts as CSV: a header of predicted classes, a row per true class, background last in both."""
    labels = [*names, 'background']
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['true \\ predicted', *labels])
        w.writerows([label, *row] for label, row in zip(labels, matrix.tolist()))


def write_eval_figures(result: EvalResult, out_dir: str | os.PathLike, conf: float = DEFAULT_CONF,
                       need_plots: bool = False) -> list[str]:
    """`pr_<class>.png`, `confusion.csv` and `confusion.png` of an evaluation in `out_dir`; returns notes on what was
    skipped (no matplotlib, nothing kept to count); `need_plots` makes a missing matplotlib an error instead."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names, notes, matrix = list(result.per_class), [], None
    if result.scored is not None:
        matrix = confusion_matrix(result.scored.truth, result.scored.detections, eval_iou(result), conf)
        write_confusion_csv(matrix, names, out / 'confusion.csv')
    else:
        notes.append('confusion matrix skipped: the ground truth of this evaluation was not kept')
    if pyplot() is None:
        if need_plots:
            raise RuntimeError(f'PR curves and the confusion matrix picture need matplotlib: {MISSING}')
        return notes + [f'PR curves and confusion.png skipped: {MISSING}']
    plot_pr(result, out)
    if matrix is not None:
        plot_confusion(matrix, names, out / 'confusion.png',
                       f'IoU > {eval_iou(result):g}, score > {conf:g}: {int(matrix[:-1].sum())} objects, '
                       f'{int(matrix[:, :-1].sum())} detections')
    return notes


def validation_mosaic(result: EvalResult, title: str, count: int = VALID_IMAGES,
                      conf: float = DEFAULT_CONF) -> np.ndarray | None:
    """The first `count` readable images of an evaluation, ground truth beside predictions; None if nothing was
    kept to draw."""
    scored = result.scored
    if scored is None or scored.run is None or not scored.run.paths:
        return None
    names, truth, pairs = list(result.per_class), scored.truth, []
    for i, (path, dets) in enumerate(zip(scored.run.paths[:count], scored.run.dets)):
        try:
            image = np.ascontiguousarray(read_image(path)[:, :, ::-1])
        except ImageError:  # gone since the evaluation read it: draw the others
            continue
        mine = (truth.image == i) & (truth.cls >= 0)
        boxes = np.concatenate((truth.boxes[mine] - 1, truth.cls[mine, None]), 1)  # 1-based VOC -> 0-based pixels
        pairs.append(prediction_pair(image, boxes, dets, names, conf))
    return title_bar(tile(pairs, 2), title) if pairs else None


def open_tensorboard(run_dir: Path):
    """A TensorBoard SummaryWriter on the run folder, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def add_jpeg(board, tag: str, image_bgr: np.ndarray, encoded: bytes, step: int) -> None:
    """An image in TensorBoard stored as the JPEG bytes already written to the run folder: `add_image` would
    encode it again as PNG, 4-5x larger for photographs, and a run's event file would grow by megabytes."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    image = Summary.Image(height=image_bgr.shape[0], width=image_bgr.shape[1], colorspace=3,
                          encoded_image_string=encoded)
    board.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


class RunReports:
    """The pictures and the TensorBoard log of one training run (create it on the main process only)."""

    def __init__(self, run_dir: Path, names: Sequence[str], note: Callable[[str], None],
                 batches: int = TRAIN_BATCHES):
        self.run_dir, self.names, self.note, self.batches = run_dir, list(names), note, batches
        self.board = open_tensorboard(run_dir)
        if self.board is None:
            note('tensorboard is not installed: no TensorBoard log (pip install "yolo_lrm[tensorboard]")')

    def wants_batch(self, update: int) -> bool:
        """Whether the mini-batch of 0-based update `update` is one to draw (a cheap test for the training step)."""
        return update < self.batches

    def training_batch(self, update: int, images: torch.Tensor, targets: torch.Tensor) -> None:
        """`train_batch<update>.jpg`: the first mini-batch of that update as the loss gets it."""
        size = images.shape[-1]
        mosaic = batch_mosaic(images, targets, self.names,
                              f'update {update + 1}: {len(images)} augmented images at {size}x{size}, boxes = targets')
        write_jpeg(self.run_dir / f'train_batch{update}.jpg', jpeg(mosaic))

    def update(self, update: int, values: dict[str, float]) -> None:
        """The update's logged numbers (results.csv's training columns) to TensorBoard."""
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(f'train/{key}', value, update)

    def evaluation(self, update: int, result: EvalResult | None, row: dict[str, float | int | None]) -> None:
        """`val_update<update>.jpg` and, in TensorBoard, the results.csv row and the mosaic."""
        mosaic = validation_mosaic(result, f'validation after update {update}: mAP@.5 {100 * result.map:.2f}') \
            if result is not None else None
        encoded = jpeg(mosaic) if mosaic is not None else None
        if encoded is not None:
            write_jpeg(self.run_dir / f'val_update{update}.jpg', encoded)
        if self.board is None:
            return
        for key, value in row.items():
            if key != 'update' and isinstance(value, (int, float)) and value == value:  # no None or NaN
                self.board.add_scalar(f'results/{key}', value, update)
        if encoded is not None:
            add_jpeg(self.board, 'valid/predictions', mosaic, encoded, update)
        self.board.flush()

    def final(self, result: EvalResult | None) -> None:
        """PR curves and the confusion matrix of the last evaluation, into the run folder."""
        if result is None:
            return
        for message in write_eval_figures(result, self.run_dir):
            self.note(message)

    def close(self) -> None:
        """Flush and close the TensorBoard log."""
        if self.board is not None:
            self.board.close()
