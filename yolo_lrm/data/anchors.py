"""Anchor boxes by k-means on box shapes with the distance 1 - IoU (YOLOv2 paper, section "Dimension Clusters").

Boxes are compared by (w, h) only, as if they shared a corner, so the clusters do not depend on where boxes are.
Inputs are widths/heights normalised to the network input; anchors come out in grid cells (`size/32` per side),
the unit of a `[region]` `anchors=` line.

Readers (on top of `yolo_lrm.data`'s parsers): Darknet label files (a folder of `.txt`, or a list of image or label
paths) and KITTI `label_2` folders.  Relative entries of a list are taken from the list file's folder, as the training
dataset does (`yolo_lrm.data.imagelist.entry_label_path`), whatever the working directory.
KITTI labels are in pixels and carry no image size: we assume 1242x375, the size of most KITTI frames (a few
sequences are 1224x370, 1238x374 or 1241x376, an error below 1.5% in a box's normalised size).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from ..cfg import CfgError
from .datafile import parse_data
from .kitti import KITTI_CLASSES, kitti_class_map, parse_kitti_label
from .labels import parse_label_text
from .imagelist import DatasetError, entry_label_path, read_list
from .scan import scan_dataset
from ..textfile import read_text

KITTI_IMAGE_SIZE = (1242, 375)


class LabelError(ValueError):
    """A label file that cannot be read (the message names the file and line)."""


def iou_wh(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU (N, K) of corner-aligned boxes (N, 2) and anchors (K, 2), both as (w, h)."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def mean_iou(boxes: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the IoU with their best anchor (the YOLOv2 paper's "Avg IOU")."""
    return float(iou_wh(boxes, anchors).max(axis=1).mean())


def _init_centres(boxes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with the 1 - IoU distance: far boxes are likelier to start a cluster."""
    centres = [boxes[rng.integers(len(boxes))]]
    dist = 1.0 - iou_wh(boxes, centres[0][None])[:, 0]
    for _ in range(1, k):
        weights = dist ** 2
        # all boxes identical to a centre: any choice is as good
        pick = rng.choice(len(boxes), p=weights / weights.sum()) if weights.sum() > 0 else rng.integers(len(boxes))
        centres.append(boxes[pick])
        dist = np.minimum(dist, 1.0 - iou_wh(boxes, boxes[pick][None])[:, 0])
    return np.array(centres)


def _kmeans(boxes: np.ndarray, k: int, rng: np.random.Generator, max_iter: int) -> np.ndarray:
    centres = _init_centres(boxes, k, rng)
    assign = None
    for _ in range(max_iter):
        iou = iou_wh(boxes, centres)
        new = iou.argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=k)
        sums = np.stack([np.bincount(assign, boxes[:, j], minlength=k) for j in (0, 1)], axis=1)
        empty = counts == 0
        centres = np.where(empty[:, None], centres, sums / np.maximum(counts, 1)[:, None])
        if empty.any():  # restart empty clusters at the worst-fitting boxes
            worst = np.argsort(iou.max(axis=1))[:int(empty.sum())]
            centres[empty] = boxes[worst]
    return centres


def calc_anchors(boxes_wh: np.ndarray, k: int, size: int = 416, seed: int = 0, restarts: int = 5,
                 max_iter: int = 300) -> tuple[np.ndarray, float]:
    """k-means (1 - IoU) anchors for normalised (w, h) boxes: (anchors (k, 2) in grid cells sorted by area, mean IoU).

    The best of `restarts` k-means++ runs (by mean IoU) is kept; the result depends only on the data and `seed`.
    """
    boxes = np.asarray(boxes_wh, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 2:
        raise ValueError(f'boxes_wh must have shape (N, 2), got {boxes.shape}')
    bad = ~(np.isfinite(boxes) & (boxes > 0)).all(axis=1)
    if bad.any():
        raise ValueError(f'{int(bad.sum())} boxes have a non-positive or non-finite size')
    if len(boxes) < k:
        raise ValueError(f'{len(boxes)} boxes cannot make {k} anchors')
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(max(1, restarts)):
        centres = _kmeans(boxes, k, rng, max_iter)
        score = mean_iou(boxes, centres)
        if score > best_iou:
            best, best_iou = centres, score
    best = best[np.argsort(best[:, 0] * best[:, 1], kind='stable')]
    return best * (size / 32), best_iou


def letterboxed(boxes_wh: np.ndarray, image_w: int | np.ndarray, image_h: int | np.ndarray, net_w: int = 416,
                net_h: int = 416) -> np.ndarray:
    """Image-normalised (w, h) as fractions of a net input the image is letterboxed into (aspect kept); the image
    size may be one (w, h) for every box or arrays with one per box.

    Darknet HEAD trains and tests that way (placement jitter keeps the aspect on average; letterbox at test), so for
    images far from the net's aspect (KITTI: 3.3:1 into 1:1) these are the shapes the network actually sees.
    """
    image_w, image_h = np.asarray(image_w, np.float64), np.asarray(image_h, np.float64)
    scale = np.minimum(net_w / image_w, net_h / image_h)
    factor = np.stack(np.broadcast_arrays(image_w * scale / net_w, image_h * scale / net_h), -1)
    return np.asarray(boxes_wh, dtype=np.float64) * factor


# ---------------------------------------------------------------------------------------------------- readers
def read_kitti(label_dir: str | Path, image_size: tuple[int, int] = KITTI_IMAGE_SIZE
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """KITTI `label_2/*.txt` → (class ids (N,) in `KITTI_CLASSES` order, normalised (w, h) (N, 2), empty boxes).

    Keeps car, van, truck, tram, pedestrian, cyclist; drops Person_sitting, Misc and DontCare.  Boxes of zero or
    negative size are dropped, as the KITTI converter does, and returned as `file:line: type x1 y1 x2 y2`.
    """
    files = sorted(Path(label_dir).glob('*.txt'))
    if not files:
        raise LabelError(f'{label_dir}: no KITTI label files (*.txt)')
    keep = kitti_class_map()   # the 6 classes; Person_sitting dropped as in the paper's setup
    classes, sizes, empty = [], [], []
    for path in files:
        for obj in parse_kitti_label(str(path)):
            if obj.type not in keep:
                continue
            if obj.x2 <= obj.x1 or obj.y2 <= obj.y1:
                empty.append(f'{path}:{obj.line}: {obj.type} {obj.x1:g} {obj.y1:g} {obj.x2:g} {obj.y2:g}')
                continue
            classes.append(keep[obj.type])
            sizes.append((obj.x2 - obj.x1, obj.y2 - obj.y1))
    wh = np.array(sizes, dtype=np.float64).reshape(-1, 2) / np.array(image_size, dtype=np.float64)
    return np.array(classes, dtype=np.int64), wh, empty


def _label_files(source: Path) -> list[Path]:
    """Label files of a folder, or of a list file by the training dataset's rules (see `scan_dataset`)."""
    if source.is_dir():
        return sorted(source.glob('*.txt'))
    base = os.path.dirname(os.path.abspath(source))   # relative entries from the list file's folder, whatever the cwd
    return [Path(os.path.normpath(os.path.join(base, entry)) if entry.endswith('.txt')
                 else entry_label_path(base, entry)) for entry in read_list(str(source))]


def read_darknet_labels(source: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Darknet label files (`class cx cy w h`, normalised) → (class ids (N,), (w, h) (N, 2)).

    `source` is a folder of `.txt` files or a list file of image paths (Darknet's `train=` list) or label paths;
    relative entries are taken from the list file's folder, image entries map to labels by Darknet's rule, both
    exactly as the training dataset does.
    """
    source = Path(source)
    try:
        files = _label_files(source)
    except OSError as exc:
        raise LabelError(f'{source}: {exc.strerror}') from None
    except DatasetError as exc:    # the list file cannot be read (the message names it)
        raise LabelError(str(exc)) from None
    if not files:
        raise LabelError(f'{source}: no label files')
    classes, sizes = [], []
    for path in files:
        rows, lines, bad = parse_label_text(read_text(path, f'label file (listed in {source})', LabelError))
        if bad:
            raise LabelError(f'{path}:{bad[0][0]}: expected "class cx cy w h", got {bad[0][1]!r}')
        wrong = ~((rows[:, 3:] > 0) & (rows[:, 3:] <= 1)).all(axis=1)
        if wrong.any():
            i = int(wrong.argmax())
            raise LabelError(f'{path}:{lines[i]}: w, h must be in (0, 1] (normalised), got {rows[i, 3]}, {rows[i, 4]}')
        classes.append(rows[:, 0].astype(np.int64))
        sizes.append(rows[:, 3:].astype(np.float64))
    return np.concatenate(classes), np.concatenate(sizes)


def read_data_split(data: str | Path, split: str = 'train') -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A data file's split (`.data` or data.yaml) as the trainer scans it → (class ids (N,), normalised (w, h) (N, 2),
    each box's image (w, h) (N, 2), the class names): the boxes training sees (clipped, degenerate ones dropped)."""
    cfg = parse_data(data)
    report = scan_dataset(cfg.images(split), cfg.classes)
    report.raise_errors()
    if not len(report.boxes):
        raise LabelError(f'{data}: {split}= holds no usable box ({report.entries} entries)')
    per_box = np.repeat(report.sizes, np.diff(report.offsets), axis=0).astype(np.float64)
    return report.boxes[:, 0].astype(np.int64), report.boxes[:, 3:].astype(np.float64), per_box, cfg.names()


# --------------------------------------------------------------------------------------------------------- CLI
def format_anchors(anchors: np.ndarray) -> str:
    """The `anchors=` value of a `[region]` section."""
    return ', '.join(f'{w:.4g},{h:.4g}' for w, h in anchors)


def _image_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition('x')
    if not sep:
        raise argparse.ArgumentTypeError(f'expected WxH, e.g. 1242x375, got {text!r}')
    return int(w), int(h)


def main(argv: list[str] | None = None) -> None:
    """`python -m yolo_lrm.data.anchors --kitti DIR | --labels LIST | --data DATA -k 5 --size 416 [--letterbox]`."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.data.anchors', description=__doc__.split('\n')[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument('--kitti', help='KITTI label_2 folder (6 classes kept)')
    src.add_argument('--labels', help='folder of Darknet label .txt files, or a list of image/label paths')
    src.add_argument('--data', help='a .data file or data.yaml: its --split as the trainer scans it, each image\'s '
                                    'own size for --letterbox')
    ap.add_argument('--split', default='train', choices=('train', 'valid', 'test'), help='with --data (default train)')
    ap.add_argument('-k', type=int, default=5, help='number of anchors (default 5)')
    ap.add_argument('--size', type=int, default=416, help='square network input size (default 416)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--letterbox', action='store_true',
                    help='fit the shapes the net sees when the image is letterboxed (Darknet HEAD train and test)')
    ap.add_argument('--image-size', type=_image_size, default=None,
                    help=f'WxH of the images (KITTI default {KITTI_IMAGE_SIZE[0]}x{KITTI_IMAGE_SIZE[1]}); '
                         'needed with --letterbox')
    args = ap.parse_args(argv)
    image_size = args.image_size or (KITTI_IMAGE_SIZE if args.kitti else None)
    if args.letterbox and image_size is None and not args.data:
        ap.error('--letterbox needs --image-size WxH for Darknet label sets (or --data, which knows each image\'s)')
    try:
        if args.kitti:
            classes, wh, empty = read_kitti(args.kitti, image_size)
            names = KITTI_CLASSES
        elif args.data:
            classes, wh, sizes, names = read_data_split(args.data, args.split)
            image_size, empty = image_size or (sizes[:, 0], sizes[:, 1]), []
        else:
            classes, wh = read_darknet_labels(args.labels)
            names, empty = None, []
        if args.letterbox:
            wh = letterboxed(wh, *image_size, args.size, args.size)
        anchors, iou = calc_anchors(wh, args.k, args.size, args.seed)
    except (LabelError, CfgError, DatasetError, ValueError) as exc:
        sys.exit(f'error: {exc}')
    counts = np.bincount(classes, minlength=len(names) if names else 0)
    per_class = ', '.join(f'{names[i] if names else i}: {c}' for i, c in enumerate(counts) if c)
    print(f'{len(wh)} boxes ({per_class})' + (f'; {len(empty)} empty boxes dropped' if empty else ''))
    for where in empty:
        print(f'empty box dropped: {where}')
    print(f'anchors at {args.size} ({args.size // 32}x{args.size // 32} cells), mean IoU {iou:.4f}:')
    print(f'anchors={format_anchors(anchors)}')


if __name__ == '__main__':
    main()
