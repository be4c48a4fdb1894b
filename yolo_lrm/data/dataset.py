"""Datasets over Darknet image lists: training/validation items, letterboxed images for evaluation, collation."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..letterbox import letterbox, letterbox_size
from .hyp import AugmentHyp
from .labels import ImageError, read_image
from .imagelist import DatasetError, ImageList, image_list
from .scan import scan_dataset

log = logging.getLogger('yolo_lrm.data')
_MAX_SUBSTITUTES = 10
# No cv2.setNumThreads() in DataLoader workers: in a forked child of a process whose OpenCV thread pool has run, that
# call deadlocks (seen with OpenCV 5.0 pthreads); OpenCV's own after-fork handling makes plain use safe.


def letterbox_targets(boxes: np.ndarray, im_w: int, im_h: int, net_w: int, net_h: int) -> np.ndarray:
    """Map (n, 5) class, cx, cy, w, h rows from the image into its letterboxed network input, with the float
    offsets of `yolo_lrm.letterbox.unletterbox` so that unletterboxing returns the original boxes exactly (the
    pixels are pasted at the integer offset, Darknet's half-pixel difference)."""
    new_w, new_h = letterbox_size(im_w, im_h, net_w, net_h)
    ox, oy = (net_w - new_w) / 2.0 / net_w, (net_h - new_h) / 2.0 / net_h
    sx, sy = new_w / net_w, new_h / net_h
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    out[:, 1] = out[:, 1] * sx + ox
    out[:, 2] = out[:, 2] * sy + oy
    out[:, 3] *= sx
    out[:, 4] *= sy
    return out.astype(np.float32)


def _unpack(key: Any) -> tuple[int, int, int]:
    if isinstance(key, (tuple, list)) and len(key) in (2, 3):
        index, size = int(key[0]), int(key[1])
        seed = int(key[2]) if len(key) == 3 else index
        if size <= 0:
            raise ValueError(f'network size must be positive, got {size}')
        return index, size, seed
    raise TypeError(f'index a ListDataset with (index, size) or a sampler Sample(index, size, seed), got {key!r}')


class ListDataset(Dataset):
    """The images of an `ImageList` (or of a Darknet list file: one image path per line, relative paths from the list
    file's folder).

    `ds[(index, size)]` or `ds[Sample(index, size, seed)]` -> (image (3, size, size) float32 RGB in [0, 1],
    targets (n, 5) float32 class, cx, cy, w, h normalised to the network input, image path, its index in `paths`).
    With `augment`, the Darknet training augmentation (`augment.py`) seeded by `seed` and at most `max_truths` truths;
    without, the Darknet letterbox and every box of the image (evaluation needs them all).
    The list is scanned on construction (`ds.report`); issues go to `log_file`; `paths` are the usable images.
    An image that fails to decode later is logged and replaced by the next one (whose path and index the item has).
    """

    def __init__(self, split: ImageList | str | os.PathLike, num_classes: int, augment: bool,
                 hyp: dict[str, Any] | None = None, max_truths: int = 30,
                 cache_dir: str | os.PathLike | None = None, log_file: str | os.PathLike | None = None):
        listed = image_list(split)
        self.list_path, self.num_classes, self.augment = listed.source, num_classes, augment
        self.hyp = AugmentHyp.from_dict(hyp)
        if max_truths <= 0:
            raise ValueError(f'max_truths must be positive, got {max_truths}')
        self.max_truths = max_truths
        self.log_file = str(log_file) if log_file else None
        self.report = scan_dataset(listed, num_classes, cache_dir)
        if self.log_file:  # without one the caller reports the issues (the trainer writes them into its run)
            self.report.write_log(self.log_file)
            if self.report.issues:
                log.warning('%s: %d issues in the dataset, listed in %s', self.list_path, len(self.report.issues),
                            self.log_file)
        self.report.raise_errors()
        if not self.report.images:
            raise DatasetError(f'{self.list_path}: no usable images out of {self.report.entries} entries')
        self.paths: list[str] = self.report.images
        self._pipelines: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self, index: int) -> np.ndarray:
        """The scanned (n, 5) boxes of image `index` (class, cx, cy, w, h normalised to the image)."""
        return self.report.labels(index)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state['_pipelines'] = {}  # rebuilt lazily in each worker
        return state

    def _augment(self, image: np.ndarray, boxes: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from .augment import augment, build_pipeline  # albumentations only where training needs it
        if size not in self._pipelines:
            self._pipelines[size] = build_pipeline(size, self.hyp)
        return augment(image, boxes, self._pipelines[size], seed, self.max_truths)

    def _load(self, index: int) -> tuple[np.ndarray, int]:
        for attempt in range(min(_MAX_SUBSTITUTES, len(self.paths))):
            i = (index + attempt) % len(self.paths)
            try:
                return read_image(self.paths[i]), i
            except ImageError as exc:
                self._note_failure(str(exc))
        raise DatasetError(f'{self.list_path}: {_MAX_SUBSTITUTES} images in a row from index {index} cannot be '
                           f'decoded; see {self.log_file or "the warnings"}')

    def _note_failure(self, message: str) -> None:
        log.warning('%s; using the next image instead', message)
        if self.log_file:
            with open(self.log_file, 'a') as f:
                f.write(f'image_undecodable\t{message} (replaced by the next image)\n')

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, torch.Tensor, str, int]:
        index, size, seed = _unpack(key)
        if not 0 <= index < len(self.paths):
            raise IndexError(f'index {index} out of range for {len(self.paths)} images')
        image, i = self._load(index)
        boxes = self.report.labels(i)
        if self.augment:
            img, targets = self._augment(image, boxes, size, seed)
            tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        else:
            tensor = torch.from_numpy(letterbox(image, size, size))
            targets = letterbox_targets(boxes, image.shape[1], image.shape[0], size, size)
        return tensor, torch.from_numpy(targets), self.paths[i], i


def collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, int]]
            ) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """Stack items: images (B, 3, S, S), targets (B, M, 5) padded with class -1 rows (M >= 1), paths, indices (B,)
    int64."""
    images = torch.stack([b[0] for b in batch])
    m = max(1, max(len(b[1]) for b in batch))
    targets = torch.zeros(len(batch), m, 5, dtype=torch.float32)
    targets[:, :, 0] = -1
    for k, (_, t, _, _) in enumerate(batch):
        targets[k, :len(t)] = t
    return images, targets, [b[2] for b in batch], torch.tensor([b[3] for b in batch])


@dataclass
class Unreadable:
    """A LetterboxImages item whose image cannot be decoded: evaluation skips and reports it instead of stopping."""
    index: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f'{self.path}: {self.reason}'


class LetterboxImages(Dataset):
    """Images of a list, letterboxed for evaluation/detection: item -> (image (3, size, size), path, (w, h)), or an
    `Unreadable` for an image that cannot be read (raising in a DataLoader worker would end the whole run)."""

    def __init__(self, paths: Sequence[str], size: int):
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, tuple[int, int]] | Unreadable:
        path = self.paths[index]
        try:
            image = read_image(path)
        except ImageError as exc:
            message = str(exc)
            return Unreadable(index, path, message.removeprefix(f'{path}: '))
        return torch.from_numpy(letterbox(image, self.size, self.size)), path, (image.shape[1], image.shape[0])


def collate_images(batch: Sequence[tuple[torch.Tensor, str, tuple[int, int]] | Unreadable]
                   ) -> tuple[torch.Tensor, list[str], list[tuple[int, int]], list[Unreadable]]:
    """Stack the readable LetterboxImages items: (images (B, 3, S, S), their paths, their original (w, h) sizes,
    the unreadable items); B counts the readable ones and may be 0 (then `images` is an empty tensor)."""
    good = [b for b in batch if not isinstance(b, Unreadable)]
    images = torch.stack([b[0] for b in good]) if good else torch.empty(0)
    return images, [b[1] for b in good], [b[2] for b in good], [b for b in batch if isinstance(b, Unreadable)]
