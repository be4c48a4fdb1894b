"""Pictures of what the network sees and says (OpenCV, BGR uint8): the augmented training batches with the boxes
the loss is given, and validation images with the ground truth beside the predictions."""
from __future__ import annotations

import math
import os
from typing import Sequence

import cv2
import numpy as np
import torch

from ..atomic import atomic_write
from .draw import clip_boxes, draw_detections, palette

GRAY = (114, 114, 114)


def title_bar(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with a white band above it holding `text`."""
    scale = 0.5
    (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = np.full((th + base + 8, image.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate((band, image))


def fit(image: np.ndarray, side: int) -> np.ndarray:
    """Shrink an image so that its longer side is at most `side` pixels (never enlarged)."""
    h, w = image.shape[:2]
    k = side / max(h, w)
    if k >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def tile(images: Sequence[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Images in a grid of `columns`, each cell as large as the largest image, gray between and around."""
    cell_h, cell_w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    rows = math.ceil(len(images) / columns)
    out = np.full((rows * (cell_h + gap) + gap, columns * (cell_w + gap) + gap, 3), GRAY, np.uint8)
    for k, im in enumerate(images):
        y, x = gap + (k // columns) * (cell_h + gap), gap + (k % columns) * (cell_w + gap)
        out[y:y + im.shape[0], x:x + im.shape[1]] = im
    return out


def target_boxes(targets: torch.Tensor, size: int) -> np.ndarray:
    """A (M, 5) target tensor (class, cx, cy, w, h normalised; padding rows have class -1) as (n, 6) pixel rows
    `x1, y1, x2, y2, 1, class` of a `size`-pixel square input."""
    t = targets[targets[:, 0] >= 0].double().cpu().numpy()
    half_w, half_h = t[:, 3] / 2, t[:, 4] / 2
    xyxy = np.stack((t[:, 1] - half_w, t[:, 2] - half_h, t[:, 1] + half_w, t[:, 2] + half_h), 1) * size
    return np.concatenate((xyxy, np.ones((len(t), 1)), t[:, :1]), 1)


def batch_mosaic(images: torch.Tensor, targets: torch.Tensor, names: Sequence[str], title: str,
                 max_images: int = 16, side: int = 256) -> np.ndarray:
    """A training mini-batch as the loss gets it: the augmented (B, 3, S, S) [0, 1] RGB inputs, each with the boxes
    and class names of its row of the (B, M, 5) targets, at most `max_images` tiles of `side` pixels."""
    n, size = min(len(images), max_images), images.shape[-1]
    colors = palette(len(names))
    pixels = (images[:n].detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    tiles = []
    for image, rows in zip(pixels.permute(0, 2, 3, 1).numpy(), targets[:n]):
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        draw_detections(bgr, clip_boxes(target_boxes(rows, size), size, size), list(names), colors, show_conf=False)
        tiles.append(fit(bgr, side))
    return title_bar(tile(tiles, min(4, n)), title)


def prediction_pair(image_bgr: np.ndarray, truth: np.ndarray, dets: np.ndarray, names: Sequence[str],
                    conf: float, side: int = 320) -> np.ndarray:
    """One validation image twice, side by side: its ground truth (n, 5) `x1, y1, x2, y2, class` on the left, its
    detections (n, 6) above `conf` on the right; 0-based pixels of the original image."""
    h, w = image_bgr.shape[:2]
    colors = palette(len(names))
    truth_rows = np.concatenate((truth[:, :4], np.ones((len(truth), 1)), truth[:, 4:5]), 1)
    left = draw_detections(image_bgr.copy(), clip_boxes(truth_rows, w, h), list(names), colors, show_conf=False)
    right = draw_detections(image_bgr.copy(), clip_boxes(dets[dets[:, 4] > conf], w, h), list(names), colors)
    return tile([title_bar(fit(left, side), 'ground truth'),
                 title_bar(fit(right, side), f'predictions > {conf:g}')], 2)


def jpeg(image_bgr: np.ndarray, quality: int = 85) -> bytes:
    """A BGR image encoded as JPEG."""
    ok, data = cv2.imencode('.jpg', image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError('OpenCV could not encode the image as JPEG')
    return data.tobytes()


def write_jpeg(path: str | os.PathLike, encoded: bytes) -> None:
    """Save JPEG bytes (see `jpeg`), atomically."""
    atomic_write(path, lambda f: f.write(encoded))
