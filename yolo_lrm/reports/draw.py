"""Drawing detections on images: Darknet's class palette, boxes and labels (OpenCV, BGR uint8 images)."""
from __future__ import annotations

import cv2
import numpy as np

# Darknet's `get_color` anchor colours (r, g, b), interpolated across the classes.
_ANCHOR_RGB = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=np.float32)


def palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 BGR colour per class, Darknet's rule: offset = c*123457 % C, then a ramp through 6 colours."""
    offset = (np.arange(num_classes, dtype=np.int64) * 123457) % num_classes
    ratio = offset.astype(np.float32) / num_classes * 5
    lo, hi = np.floor(ratio).astype(np.int64), np.ceil(ratio).astype(np.int64)
    frac = (ratio - lo)[:, None]
    rgb = (1 - frac) * _ANCHOR_RGB[lo] + frac * _ANCHOR_RGB[hi]
    return np.round(rgb[:, ::-1] * 255).astype(np.uint8)


def clip_boxes(boxes: np.ndarray, im_w: int, im_h: int) -> np.ndarray:
    """(n, 4+) pixel boxes x1, y1, x2, y2, ... clipped to the image's pixel indices (as Darknet's drawing does)."""
    out = boxes.copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, im_w - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, im_h - 1)
    return out


def draw_detections(image_bgr: np.ndarray, dets: np.ndarray, names: list[str], colors: np.ndarray,
                    show_conf: bool = True) -> np.ndarray:
    """Draw (n, 6) clipped pixel rows `x1, y1, x2, y2, score, class` on a BGR uint8 image, in place; returns it."""
    h, w = image_bgr.shape[:2]
    thick = max(1, round(h * 0.003))  # Darknet: width = h * .006 as a full width; cv2 thickness grows both ways
    scale = max(0.35, h / 1000)
    # one OpenCV call per box: drawing is inherently per box, and cheap next to the network
    for x1, y1, x2, y2, score, cls in dets.tolist():
        c = int(cls)
        color = tuple(int(v) for v in colors[c % len(colors)])
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(image_bgr, p1, p2, color, thick, cv2.LINE_AA)
        label = f'{names[c]} {score:.2f}' if show_conf else names[c]
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick // 2))
        # label above the box when there is room, inside it otherwise
        top = p1[1] - th - base if p1[1] - th - base >= 0 else p1[1]
        cv2.rectangle(image_bgr, (p1[0], top), (min(p1[0] + tw, w - 1), top + th + base), color, -1)
        text = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
        cv2.putText(image_bgr, label, (p1[0], top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, text,
                    max(1, thick // 2), cv2.LINE_AA)
    return image_bgr
