"""Darknet's test-time input: `resize_image` (align-corners bilinear), `letterbox_image` on 0.5 gray, and the
inverse mapping of boxes (`correct_region_boxes`).  Evaluation and detection both use exactly these functions."""
from __future__ import annotations

import numpy as np
import torch


def darknet_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's `resize_image` on a (C, H, W) float32 array: separable bilinear with scale (in-1)/(out-1),
    horizontal pass first, last column copied, and its float32 arithmetic (including the last-row rule)."""
    c, h0, w0 = im.shape
    im = im.astype(np.float32, copy=False)
    if w0 == 1:
        part = np.repeat(im[:, :, :1], w, axis=2)
    else:
        sx = np.arange(w, dtype=np.float32) * (np.float32(w0 - 1) / np.float32(max(w - 1, 1)))
        ix = np.minimum(sx.astype(np.int64), w0 - 1)
        dx = (sx - ix).astype(np.float32)
        part = (np.float32(1) - dx) * im[:, :, ix] + dx * im[:, :, np.minimum(ix + 1, w0 - 1)]
        part[:, :, w - 1] = im[:, :, w0 - 1]
    sy = np.arange(h, dtype=np.float32) * (np.float32(h0 - 1) / np.float32(max(h - 1, 1)))
    iy = np.minimum(sy.astype(np.int64), h0 - 1)
    dy = (sy - iy).astype(np.float32)[:, None]
    out = (np.float32(1) - dy) * part[:, iy, :]
    if h0 > 1:
        # Darknet adds the lower neighbour for every row but the last one
        out[:, :h - 1] += dy[:h - 1] * part[:, np.minimum(iy[:h - 1] + 1, h0 - 1), :]
    return out


def letterbox_size(im_w: int, im_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """(new_w, new_h) of the resized image inside the letterbox, with Darknet's integer arithmetic."""
    if net_w / im_w < net_h / im_h:
        return net_w, (im_h * net_w) // im_w
    return (im_w * net_h) // im_h, net_h


def letterbox(image: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Darknet's `letterbox_image`: an (H, W, 3) uint8 or [0,1] float RGB image -> (3, net_h, net_w) float32 in
    [0, 1], resized keeping the aspect ratio and pasted at the integer centre of a 0.5-gray canvas."""
    im = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    im = np.ascontiguousarray(im.transpose(2, 0, 1))
    h0, w0 = im.shape[1:]
    new_w, new_h = letterbox_size(w0, h0, net_w, net_h)
    canvas = np.full((3, net_h, net_w), 0.5, dtype=np.float32)
    dx, dy = (net_w - new_w) // 2, (net_h - new_h) // 2
    canvas[:, dy:dy + new_h, dx:dx + new_w] = darknet_resize(im, new_w, new_h)
    return canvas


def unletterbox(boxes: torch.Tensor, im_w: int, im_h: int, net_w: int, net_h: int) -> torch.Tensor:
    """Darknet's `correct_region_boxes`: (..., 4) x1, y1, x2, y2 relative to the letterboxed network input ->
    pixels of the original image (0-based, unclipped).  Offsets use float division as in Darknet."""
    new_w, new_h = letterbox_size(im_w, im_h, net_w, net_h)
    ox, oy = (net_w - new_w) / 2.0 / net_w, (net_h - new_h) / 2.0 / net_h
    sx, sy = new_w / net_w, new_h / net_h
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 - ox) / sx * im_w, (y1 - oy) / sy * im_h,
                        (x2 - ox) / sx * im_w, (y2 - oy) / sy * im_h), -1)
