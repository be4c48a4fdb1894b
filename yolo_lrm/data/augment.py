"""Darknet's training augmentation (`load_data_detection`, HEAD) as an albumentations pipeline.

Per image, in Darknet's order: random aspect and placement on a 0.5-gray canvas of the network size (`jitter`,
scale 1), HSV distortion (`hue`, `saturation`, `exposure` with `rand_scale`), horizontal flip with probability 1/2;
then the truths are shuffled, clipped to [0, 1], cut to `max_truths` and boxes narrower or lower than .001 dropped.

Deliberate differences from Darknet, all small:
- The image is sampled exactly as `place_image` does (bilinear at `x * ow / nw`, zero outside, then pasted), but the
  boxes use the same integer-truncated `nw, nh, dx, dy` as the pixels; Darknet moves the boxes with the untruncated
  floats, so its labels sit up to a pixel off the image content.  (Darknet's sampling itself is not half-pixel
  centred, which puts the content up to half a pixel right/down of the labels; we keep that.)
- Random numbers come from numpy/Python generators seeded per item, not from C `rand()`.
- Labels are clipped to the image at scan time (`scan.py`); Darknet clips only after placement, which cannot move a
  box out of the canvas when scale is 1, so this changes nothing but boxes that were out of range in the file.
"""
from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np

from .hyp import AugmentHyp

MIN_BOX = 0.001  # Darknet drops truths with w or h below this (normalised)


class DarknetJitter(A.DualTransform):
    """Random aspect ratio and placement of the whole image on a `size` x `size` 0.5-gray canvas (scale 1)."""

    def __init__(self, size: int, jitter: float, p: float = 1.0):
        super().__init__(p=p)
        self.size, self.jitter = size, jitter

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        oh, ow = params['shape'][:2]
        u = self.py_random.uniform
        dw, dh = self.jitter * ow, self.jitter * oh
        new_ar = (ow + u(-dw, dw)) / (oh + u(-dh, dh))
        if new_ar < 1:
            nh = float(self.size)
            nw = nh * new_ar
        else:
            nw = float(self.size)
            nh = nw / new_ar
        dx, dy = u(0, self.size - nw), u(0, self.size - nh)
        # Darknet truncates these to int when it calls place_image
        return {'nw': max(int(nw), 1), 'nh': max(int(nh), 1), 'dx': int(dx), 'dy': int(dy)}

    def apply(self, img: np.ndarray, nw: int, nh: int, dx: int, dy: int, **_: Any) -> np.ndarray:
        oh, ow = img.shape[:2]
        m = np.array([[ow / nw, 0, 0], [0, oh / nh, 0]], dtype=np.float64)
        placed = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        canvas = np.full((self.size, self.size, img.shape[2]), 0.5, dtype=img.dtype)
        canvas[dy:dy + nh, dx:dx + nw] = placed.reshape(nh, nw, -1)
        return canvas

    def apply_to_bboxes(self, bboxes: np.ndarray, nw: int, nh: int, dx: int, dy: int, **_: Any) -> np.ndarray:
        out = bboxes.copy()
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * nw + dx) / self.size
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * nh + dy) / self.size
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('size', 'jitter')


def rand_scale(u: random.Random, s: float) -> float:
    """Darknet's `rand_scale`: U(1, s), inverted with probability 1/2."""
    scale = u.uniform(min(1.0, s), max(1.0, s))
    return scale if u.random() < 0.5 else 1.0 / scale


class DarknetHSV(A.ImageOnlyTransform):
    """Darknet's `random_distort_image` on float RGB in [0, 1]: H += U(-hue, hue) (wrapped), S *= rand_scale(sat),
    V *= rand_scale(exposure), back to RGB, clamped to [0, 1]."""

    def __init__(self, hue: float, saturation: float, exposure: float, p: float = 1.0):
        super().__init__(p=p)
        self.hue, self.saturation, self.exposure = hue, saturation, exposure

    def get_params(self) -> dict[str, float]:
        u = self.py_random
        dhue = u.uniform(-self.hue, self.hue)
        return {'dhue': dhue, 'dsat': rand_scale(u, self.saturation), 'dexp': rand_scale(u, self.exposure)}

    def apply(self, img: np.ndarray, dhue: float, dsat: float, dexp: float, **_: Any) -> np.ndarray:
        return distort_hsv(img, dhue, dsat, dexp)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ('hue', 'saturation', 'exposure')


def distort_hsv(img: np.ndarray, dhue: float, dsat: float, dexp: float) -> np.ndarray:
    """Scale S and V, shift H (fraction of a turn) of a float32 RGB image; OpenCV's float HSV uses Darknet's
    formulas (H in degrees), and S > 1 is allowed before the final clamp, as in Darknet."""
    if dhue == 0 and dsat == 1 and dexp == 1:
        return img
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    if dhue:
        h = hsv[..., 0]
        h += np.float32(dhue * 360.0)
        wrap_hue(h)
    hsv[..., 1] *= np.float32(dsat)
    hsv[..., 2] *= np.float32(dexp)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def wrap_hue(h: np.ndarray) -> np.ndarray:
    """`np.mod(h, 360)` in place, bit for bit, for float32 hues in (-360, 720) (7x faster than np.mod)."""
    # subtract first: a tiny negative hue plus 360 rounds to 360.0, which np.mod keeps, and so must we
    np.subtract(h, np.float32(360.0), out=h, where=h >= 360)
    np.add(h, np.float32(360.0), out=h, where=h < 0)
    return h


def build_pipeline(size: int, hyp: AugmentHyp) -> A.Compose:
    """The training pipeline at one network size (float32 RGB in, boxes as normalised x1, y1, x2, y2)."""
    transforms = [DarknetJitter(size, hyp.jitter), DarknetHSV(hyp.hue, hyp.saturation, hyp.exposure)]
    if hyp.flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, bbox_params=A.BboxParams(format='albumentations', label_fields=['classes'],
                                                          clip=True), strict=False)


def finalize_truths(classes: np.ndarray, xyxy: np.ndarray, rng: np.random.Generator,
                    max_truths: int) -> np.ndarray:
    """Darknet's `fill_truth_detection` tail: shuffle, clip to [0, 1], keep the first `max_truths`, then drop boxes
    with w or h below .001.  Returns (n, 5) float32 rows class, cx, cy, w, h."""
    order = rng.permutation(len(classes))
    b = np.clip(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)[order], 0.0, 1.0)[:max_truths]
    c = np.asarray(classes, dtype=np.float32)[order][:max_truths]
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    rows = np.stack((c, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, w, h), 1)
    return rows[(w >= MIN_BOX) & (h >= MIN_BOX)].astype(np.float32)


def augment(image: np.ndarray, boxes: np.ndarray, pipeline: A.Compose, seed: int,
            max_truths: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the pipeline on an (H, W, 3) uint8 RGB image and its (n, 5) class, cx, cy, w, h boxes with a per-item
    seed: ((size, size, 3) float32 in [0, 1], (m, 5) float32 rows)."""
    rng = np.random.default_rng(seed)
    pipeline.set_random_state(rng, random.Random(seed))
    xyxy = np.stack((boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2] - boxes[:, 4] / 2,
                     boxes[:, 1] + boxes[:, 3] / 2, boxes[:, 2] + boxes[:, 4] / 2), 1)
    out = pipeline(image=image.astype(np.float32) / np.float32(255), bboxes=np.clip(xyxy, 0, 1),
                   classes=boxes[:, 0])
    return out['image'], finalize_truths(np.asarray(out['classes']), np.asarray(out['bboxes']), rng, max_truths)
