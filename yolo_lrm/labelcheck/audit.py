"""What the label audit reads and measures: a split of a `.data` file, and a trained model run over it.

Per image: its region loss with its labels (the training criterion, `RegionLoss`, in eval mode: no mining; like
training, it reads the first `[region] max` labels, at most 30, and takes any further object for background), and
its detections (threshold .005, class-wise NMS .45, as `evaluate.py` scores).  Per label box: the coordinate,
objectness and class terms of its responsible prediction, read from the same criterion called with that box as the
image's only truth (so a box's terms never depend on which other box Darknet's "last truth wins" rule would let
overwrite it).  Losses are taken after the burn-in: no 0.01 anchor prior (`loss.PRIOR_SEEN`), so an image's loss
is what a trained run's update sees.  Everything is in the coordinates of the image: `cx, cy, w, h` normalised to
its width and height, as Darknet label files write them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..box import xyxy_to_cxcywh
from ..cfg import CfgError
from ..data.datafile import DataCfg, parse_data
from ..data import LetterboxImages, ScanReport, collate_images, letterbox_targets, scan_dataset
from ..data.dataset import Unreadable
from ..data.imagelist import DatasetError
from ..loss.region import PRIOR_SEEN, RegionLoss
from ..pipeline import Postprocess

SPLITS = ('train', 'valid', 'test')
DET_CONF = 0.005     # Darknet's `detector valid` threshold: every plausible box, for the scores to rank
DET_NMS = 0.45


@dataclass
class Split:
    """The images and labels of one list of a `.data` file, as the dataset scan reads them."""
    data: DataCfg
    split: str                  # train | valid | test
    report: ScanReport          # usable images, their sizes and boxes (class, cx, cy, w, h normalised)
    label_files: list[str]      # per usable image, the label file Darknet's rule finds
    source: str                 # what the split was read from (a list file, data.yaml folders), for messages

    @property
    def paths(self) -> list[str]:
        return self.report.images


def load_split(data_path: str | os.PathLike, split: str) -> Split:
    """Read `split=` of a `.data` file or data.yaml through the dataset scan, the one place the audit reads a
    dataset.  Errors name the file: no such split, a list without usable images, class ids outside `classes=`."""
    if split not in SPLITS:
        raise ValueError(f'--split {split}: choose one of {", ".join(SPLITS)}')
    data = parse_data(data_path)
    if not data.has(split):
        raise CfgError(f'{data.path}: no {split}= list to audit')
    data.require(split)
    images = data.images(split)
    report = scan_dataset(images, data.classes)
    report.raise_errors()
    if not report.images:
        issues = '\n'.join(f'  {issue}' for issue in report.issues[:5])
        raise DatasetError(f'{images.source}: no usable images out of {report.entries} entries'
                           + (f'\n{issues}' if issues else ''))
    label_of = dict(zip(images.paths(), images.label_paths()))
    return Split(data, split, report, [label_of[p] for p in report.images], images.source)


@dataclass
class ImageAudit:
    """One image under the model (boxes normalised to the image)."""
    index: int                  # position among the split's usable images
    size: tuple[int, int]       # width, height
    labels: np.ndarray          # (n, 5) class, cx, cy, w, h
    terms: np.ndarray           # (n, 3) coord, obj, cls of each label's responsible prediction
    loss: float                 # the image's region loss with all its labels
    dets: np.ndarray            # (m, 6) cx, cy, w, h, score, class; best first


def audit_images(net, split: Split, indices: Sequence[int] | None = None, size: int | None = None,
                 batch_size: int = 8, workers: int = 0) -> tuple[list[ImageAudit], list[str]]:
    """Run `net` (in eval mode on its device) over the split's images `indices` (default: all); returns the audits in
    that order and the images that could not be decoded ("path: reason")."""
    size = size or net.width
    net.check_input_size(size)
    device = next(net.parameters()).device
    indices = list(range(len(split.paths))) if indices is None else list(indices)
    crit = RegionLoss(net.region, net.cfg.lrm).eval()
    post = Postprocess.for_network(net, (size, size), DET_CONF, DET_NMS, device=device)
    loader = DataLoader(_Indexed(LetterboxImages([split.paths[i] for i in indices], size), indices),
                        batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    audits, skipped = [], []
    for images, where, sizes, bad in loader:
        skipped += [str(b) for b in bad]
        if not where:
            continue
        labels = [split.report.labels(i) for i in where]
        targets = _targets(labels, sizes, size).to(device)
        with torch.inference_mode():
            out = net(images.to(device))
            losses = crit(out, targets, PRIOR_SEEN).per_prediction.sum((1, 2, 3)).tolist()
            dets = post(out, sizes)
            for k, i in enumerate(where):
                audits.append(ImageAudit(i, sizes[k], labels[k], _box_terms(crit, out[k:k + 1], targets[k]),
                                         losses[k], _image_boxes(dets[k], sizes[k])))
    return audits, skipped


def _box_terms(crit: RegionLoss, out: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """(n, 3) coord, obj, cls of each valid row of `targets` (M, 5): the criterion with that box as the only truth;
    its `terms` then hold exactly that box's responsible prediction (the rest is no-object loss)."""
    rows = targets[targets[:, 0] >= 0]
    if not len(rows):
        return np.zeros((0, 3), np.float32)
    parts = []
    for row in rows:  # one call per label box: `terms` are sums, a box's own parts need a call of its own
        t = crit(out, row.view(1, 1, 5), PRIOR_SEEN).terms
        parts.append(torch.stack((t['coord'], t['obj'], t['cls'])))
    return torch.stack(parts).float().cpu().numpy()  # one copy per image


def _targets(labels: list[np.ndarray], sizes: list[tuple[int, int]], size: int) -> torch.Tensor:
    """Labels letterboxed into the network input as the loss's (B, M, 5) targets, padded with class -1."""
    boxes = [letterbox_targets(b, w, h, size, size) for b, (w, h) in zip(labels, sizes)]
    t = torch.full((len(boxes), max(1, max(len(b) for b in boxes)), 5), -1.0)
    for k, b in enumerate(boxes):
        t[k, :len(b)] = torch.from_numpy(b)
    return t


def _image_boxes(dets: torch.Tensor, im_size: tuple[int, int]) -> np.ndarray:
    """(n, 6) detections x1, y1, x2, y2 in image pixels -> cx, cy, w, h normalised to the image, score, class."""
    w, h = im_size
    boxes = xyxy_to_cxcywh(dets[:, :4] / dets.new_tensor([w, h, w, h]))
    return torch.cat((boxes, dets[:, 4:6].float()), 1).cpu().numpy()


class _Indexed(torch.utils.data.Dataset):
    """LetterboxImages items tagged with each image's index in the split."""

    def __init__(self, images: LetterboxImages, indices: list[int]):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.images[k], self.indices[k]


def _collate(batch):
    """collate_images over the images, plus the split index of each readable one."""
    images, _, sizes, bad = collate_images([item for item, _ in batch])
    return images, [i for item, i in batch if not isinstance(item, Unreadable)], sizes, bad
