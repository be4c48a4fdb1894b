"""The built-in demo dataset: shapes on textured backgrounds, written in Darknet layout, fully deterministic.

Six classes (circle, ring, square, triangle, cross, star) with random rotation, colour, shading and a wide range of
sizes (many small), on backgrounds mixing gradients, noise, stripes and blotches.  Unlabelled clutter makes it a
real detection problem: ellipses, bars, arcs, half discs, line strokes, irregular blobs and dots, some drawn over the
objects (partial occlusion); objects may overlap each other and the image border.  A box is the tight box of the
object's whole silhouette inside the image; an object less than 45% visible is not labelled (it is clutter then).
Some images have no objects at all.

Every image depends only on (seed, split, index), so the output is identical for a seed whatever the number of
processes (byte-identical JPEGs for one OpenCV build).  Layout: `images/{train,test}/*.jpg` (quality 90),
`labels/{train,test}/*.txt`, `train.txt`, `test.txt` (paths relative to the list), `Annotations/*.xml` (VOC-style
ground truth of the test split), `demo.names`, `demo.data`, and `.generated` (generator version and settings).

    python -m yolo_lrm.data.synthetic OUT [--preset demo|demo-small] [--seed N]
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from .layout import label_line, parallel_map, write_data_file, write_list, write_text
from .voc import write_voc_xml

CLASSES = ('circle', 'ring', 'square', 'triangle', 'cross', 'star')
_SHIFT = 4                 # cv2 drawing with 1/16-pixel coordinates
_ONE = 1 << _SHIFT
_MIN_VISIBLE = 0.45        # fraction of its silhouette an object must show to be labelled
_MIN_BOX_PX = 3            # smaller boxes are not labelled
JPEG_QUALITY = 90
GENERATOR_VERSION = 2      # bump when the output changes: prepare_data then regenerates old copies
STAMP_FILE = '.generated'
OUTPUTS = ('train.txt', 'test.txt', 'demo.names', 'demo.data', 'images', 'labels', 'Annotations')  # besides the stamp


@dataclass(frozen=True)
class DemoSpec:
    """One setting of the generator."""
    train: int
    test: int
    width: tuple[int, int]          # image width range (inclusive)
    height: tuple[int, int]
    max_objects: int
    min_size: int                   # smallest object diameter in pixels
    max_size: float                 # largest object diameter as a fraction of min(width, height)
    max_clutter: int
    background_images: float        # fraction of images without objects
    seed: int = 0


PRESETS = {
    # sized so that cfg/demo.cfg learns it from scratch in minutes on a 2-core CPU: images near the network's 256,
    # objects from 14 px.  The first version (256-416 px, up to 10 objects from 10 px, 8 clutter items) was too hard:
    # class probabilities still at chance after 300 updates of 16 images, best mAP@.5 .04 after 500 updates.
    'demo': DemoSpec(train=2000, test=300, width=(224, 320), height=(176, 256), max_objects=6, min_size=14,
                     max_size=0.55, max_clutter=4, background_images=0.05),
    'demo-small': DemoSpec(train=240, test=60, width=(160, 224), height=(128, 192), max_objects=6, min_size=12,
                           max_size=0.55, max_clutter=4, background_images=0.08),
}


# ------------------------------------------------------------------------------------------------- geometry
def _regular(n: int, radius: float, angle: float, inner: float | None = None) -> np.ndarray:
    """Vertices of a regular polygon (or a star with `inner` radius) around (0, 0)."""
    k = 2 * n if inner is not None else n
    t = angle + np.arange(k) * (2 * math.pi / k)
    r = np.full(k, radius)
    if inner is not None:
        r[1::2] = inner
    return np.stack((r * np.cos(t), r * np.sin(t)), 1)


def _cross(radius: float, arm: float, angle: float) -> np.ndarray:
    a, b = arm / 2, radius
    pts = np.array([(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a),
                    (-a, a), (-a, b)], dtype=np.float64)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _fill(mask: np.ndarray, pts: np.ndarray, centre: tuple[float, float]) -> None:
    poly = np.round((pts + centre) * _ONE).astype(np.int32)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA, _SHIFT)


def _disc(mask: np.ndarray, centre: tuple[float, float], radius: float, value: int = 255) -> None:
    c = (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE)))
    cv2.circle(mask, c, max(1, int(round(radius * _ONE))), value, -1, cv2.LINE_AA, _SHIFT)


def draw_object(mask: np.ndarray, cls: int, centre: tuple[float, float], size: float, rng: np.random.Generator) -> None:
    """Draw the silhouette of a class-`cls` object of diameter `size` into a uint8 mask (anti-aliased)."""
    r, angle = size / 2, rng.uniform(0, 2 * math.pi)
    name = CLASSES[cls]
    if name == 'circle':
        _disc(mask, centre, r)
    elif name == 'ring':
        _disc(mask, centre, r)
        hole = np.zeros_like(mask)
        _disc(hole, centre, r * rng.uniform(0.45, 0.7))
        np.subtract(mask, np.minimum(mask, hole), out=mask)
    elif name == 'square':
        _fill(mask, _regular(4, r, angle), centre)
    elif name == 'triangle':
        _fill(mask, _regular(3, r, angle), centre)
    elif name == 'cross':
        _fill(mask, _cross(r, size * rng.uniform(0.28, 0.4), angle), centre)
    else:
        _fill(mask, _regular(5, r, angle, inner=r * rng.uniform(0.38, 0.5)), centre)


def draw_clutter(mask: np.ndarray, centre: tuple[float, float], size: float, rng: np.random.Generator) -> None:
    """Draw a distractor that is none of the classes: ellipse, bar, arc, half disc, stroke, blob or dots."""
    kind = rng.integers(7)
    cx, cy = centre
    angle = rng.uniform(0, 360)
    c = (int(round(cx * _ONE)), int(round(cy * _ONE)))
    if kind == 0:      # elongated ellipse
        a = size / 2
        axes = (int(a * _ONE), int(a / rng.uniform(2.0, 4.0) * _ONE))
        cv2.ellipse(mask, c, axes, angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 1:    # bar
        w = size / rng.uniform(3.0, 6.0)
        pts = np.array([(-size / 2, -w / 2), (size / 2, -w / 2), (size / 2, w / 2), (-size / 2, w / 2)])
        t = math.radians(angle)
        _fill(mask, pts @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]), centre)
    elif kind == 2:    # open arc (a partial ring)
        a = int(size / 2 * _ONE)
        span = rng.uniform(60, 220)
        thick = max(1, int(size * rng.uniform(0.08, 0.2)))
        cv2.ellipse(mask, c, (a, a), angle, 0, span, 255, thick, cv2.LINE_AA, _SHIFT)
    elif kind == 3:    # half disc
        a = int(size / 2 * _ONE)
        cv2.ellipse(mask, c, (a, a), angle, 0, 180, 255, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 4:    # stroke: a thick polyline
        pts = np.cumsum(rng.normal(0, size / 3, (int(rng.integers(2, 5)), 2)), 0) + centre
        thick = max(1, int(size * rng.uniform(0.05, 0.15)))
        cv2.polylines(mask, [np.round(pts * _ONE).astype(np.int32)], False, 255, thick, cv2.LINE_AA, _SHIFT)
    elif kind == 5:    # irregular blob
        n = int(rng.integers(7, 13))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = size / 2 * rng.uniform(0.65, 1.0, n)
        _fill(mask, np.stack((rad * np.cos(t), rad * np.sin(t)), 1), centre)
    else:              # a few small dots
        for _ in range(int(rng.integers(2, 6))):
            _disc(mask, (cx + rng.normal(0, size / 2), cy + rng.normal(0, size / 2)), rng.uniform(1.5, 3.5))


# ------------------------------------------------------------------------------------------------- painting
def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 360), rng.uniform(0, 1) ** 0.7, rng.uniform(0.15, 1.0)]]], dtype=np.float32)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A textured float32 RGB background: gradient plus one or two of noise, stripes, blotches, checker."""
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    t = rng.uniform(0, 2 * math.pi)
    ramp = x * math.cos(t) + y * math.sin(t)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    img = c0 + ramp[..., None] * (c1 - c0)
    for kind in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        amp = np.float32(rng.uniform(0.04, 0.2))
        if kind == 0:      # fine noise
            noise = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), rng.uniform(0.5, 2))
            img += (amp * 0.5 / max(float(noise.std()), 1e-6)) * noise[..., None]
        elif kind == 1:    # stripes
            a, period = rng.uniform(0, math.pi), rng.uniform(6, 40)
            wave = np.sin((x * math.cos(a) + y * math.sin(a)) * np.float32(2 * math.pi / period))
            img += wave[..., None] * (amp * (_random_colour(rng) - 0.5))
        elif kind == 2:    # blotches: coarse noise, smoothly upsampled
            g = rng.uniform(-1, 1, (int(rng.integers(3, 10)), int(rng.integers(3, 10)), 3)).astype(np.float32)
            img += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        else:              # checker
            cell = rng.uniform(8, 48)
            board = (np.floor(x / cell) + np.floor(y / cell)) % 2 - np.float32(0.5)
            img += amp * board[..., None]
    return np.clip(img, 0, 1, out=img)


def _paint(img: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], colour: np.ndarray,
           rng: np.random.Generator) -> None:
    """Blend a shaded, slightly noisy colour into the image through an anti-aliased mask (in place)."""
    x0, y0, x1, y1 = box
    alpha = mask[y0:y1, x0:x1, None].astype(np.float32) * np.float32(1 / 255)
    gx = np.arange(x0, x1, dtype=np.float32)[None, :] - (x0 + x1) / 2
    gy = np.arange(y0, y1, dtype=np.float32)[:, None] - (y0 + y1) / 2
    t = rng.uniform(0, 2 * math.pi)
    shade = 1 + np.float32(rng.uniform(0, 0.35) / max(x1 - x0 + y1 - y0, 1)) * (gx * math.cos(t) + gy * math.sin(t))
    noise = rng.standard_normal((y1 - y0, x1 - x0, 1), dtype=np.float32) * np.float32(rng.uniform(0, 0.04))
    paint = np.clip(colour * shade[..., None] + noise, 0, 1)
    region = img[y0:y1, x0:x1]
    region += alpha * (paint - region)


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the non-zero pixels (x1, y1 exclusive), or None for an empty mask."""
    x, y, w, h = cv2.boundingRect(mask)
    return (x, y, x + w, y + h) if w and h else None


def _contrasting_colour(img: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
                        rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = box
    under = img[y0:y1, x0:x1][mask[y0:y1, x0:x1] > 127]
    base = _luma(under.mean(0)) if len(under) else 0.5
    colour = _random_colour(rng)
    for _ in range(8):
        if abs(_luma(colour) - base) >= 0.18:
            break
        colour = _random_colour(rng)
    return colour


def render_image(spec: DemoSpec, split: int, index: int) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """One image (H, W, 3) uint8 RGB and its boxes `(class, x0, y0, x1, y1)` in pixel edges (x1, y1 exclusive)."""
    rng = np.random.default_rng([spec.seed, split, index])
    w = int(rng.integers(spec.width[0], spec.width[1] + 1))
    h = int(rng.integers(spec.height[0], spec.height[1] + 1))
    img = background(w, h, rng)
    n_objects = 0 if rng.random() < spec.background_images else int(rng.integers(1, spec.max_objects + 1))
    over = rng.random(int(rng.integers(0, spec.max_clutter + 1))) < 0.35   # this clutter goes over the objects
    big = spec.max_size * min(w, h)
    for _ in range(int((~over).sum())):
        _clutter(img, rng, w, h, big)
    owner = np.zeros((h, w), dtype=np.int32)
    objects = []  # (class, mask, extent)
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(n_objects):
        placed = _place(rng, w, h, spec.min_size, big, boxes)
        if placed is None:
            continue
        cls, centre, size = placed
        mask = np.zeros((h, w), dtype=np.uint8)
        draw_object(mask, cls, centre, size, rng)
        box = _extent(mask)
        if box is None:
            continue
        _paint(img, mask, box, _contrasting_colour(img, mask, box, rng), rng)
        objects.append((cls, mask, box))
        owner[mask > 127] = len(objects)
        boxes.append((centre[0] - size / 2, centre[1] - size / 2, centre[0] + size / 2, centre[1] + size / 2))
    for _ in range(int(over.sum())):
        _clutter(img, rng, w, h, big, owner)
    return _finish(img, rng), _boxes(objects, owner)


def _clutter(img: np.ndarray, rng: np.random.Generator, w: int, h: int, big: float,
             owner: np.ndarray | None = None) -> None:
    mask = np.zeros((h, w), dtype=np.uint8)
    size = float(np.exp(rng.uniform(math.log(6), math.log(max(big, 7)))))
    draw_clutter(mask, (rng.uniform(0, w), rng.uniform(0, h)), size, rng)
    box = _extent(mask)
    if box is None:
        return
    _paint(img, mask, box, _contrasting_colour(img, mask, box, rng), rng)
    if owner is not None:
        x0, y0, x1, y1 = box
        owner[y0:y1, x0:x1][mask[y0:y1, x0:x1] > 127] = 0   # what the clutter covers is no longer visible


def _place(rng: np.random.Generator, w: int, h: int, min_size: int, big: float,
           boxes: list[tuple[float, float, float, float]]):
    """(class, centre, size) for a new object overlapping earlier ones by at most 35% of either box, or None."""
    cls = int(rng.integers(len(CLASSES)))
    for _ in range(10):
        size = float(np.exp(rng.uniform(math.log(min_size), math.log(max(big, min_size + 1)))))
        cx, cy = rng.uniform(size * 0.1, w - size * 0.1), rng.uniform(size * 0.1, h - size * 0.1)
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        if all(_overlap(box, b) <= 0.35 for b in boxes):
            return cls, (cx, cy), size
    return None


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / max(min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])), 1e-9)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-ish global effects: contrast/brightness, occasional blur, sensor noise; to uint8."""
    gain = rng.uniform(0.75, 1.15)
    img *= np.float32(255 * gain)
    img += np.float32(255 * (0.5 + rng.uniform(-0.08, 0.08) - 0.5 * gain) + 0.5)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.1))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(255 * rng.uniform(0, 0.03))
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _boxes(objects: list[tuple[int, np.ndarray, tuple[int, int, int, int]]],
           owner: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Tight boxes of the objects that stay visible enough (pixels with mask > 127)."""
    out = []
    for k, (cls, mask, (x0, y0, x1, y1)) in enumerate(objects, 1):
        solid = mask[y0:y1, x0:x1] > 127
        area = int(solid.sum())
        if area == 0 or (owner[y0:y1, x0:x1] == k).sum() < _MIN_VISIBLE * area:
            continue
        box = _extent(solid.view(np.uint8))
        if box is None:
            continue
        bx0, by0, bx1, by1 = box
        if bx1 - bx0 >= _MIN_BOX_PX and by1 - by0 >= _MIN_BOX_PX:
            out.append((cls, x0 + bx0, y0 + by0, x0 + bx1, y0 + by1))
    return out


# ---------------------------------------------------------------------------------------------------- writing
def _write_image(job: tuple[int, str, int], spec: DemoSpec, out: str) -> int:
    """Render and write one image, its label file and (test split) its VOC annotation; returns the box count."""
    split, split_name, index = job
    img, boxes = render_image(spec, split, index)
    h, w = img.shape[:2]
    name = f'{split_name}{index:06d}'
    ok, jpg = cv2.imencode('.jpg', cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f'cannot encode {name}.jpg')
    image_path = Path(out, 'images', split_name, f'{name}.jpg')
    image_path.parent.mkdir(parents=True, exist_ok=True)
    image_path.write_bytes(jpg.tobytes())
    lines = ''.join(label_line(c, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
                    for c, x0, y0, x1, y1 in boxes)
    write_text(Path(out, 'labels', split_name, f'{name}.txt'), lines)
    if split_name == 'test':
        # exclusive 0-based ends are the 1-based inclusive VOC corners as they are; starts shift by one
        objects = [(CLASSES[c], 0, x0 + 1, y0 + 1, x1, y1) for c, x0, y0, x1, y1 in boxes]
        write_voc_xml(Path(out, 'Annotations', f'{name}.xml'), 'demo', f'{name}.jpg', w, h, objects)
    return len(boxes)


def stamp(spec: DemoSpec) -> str:
    """What `generate` writes into `.generated`: the generator version and the settings."""
    return f'yolo_lrm demo generator {GENERATOR_VERSION}: {spec!r}\n'


def is_current(out_dir: str | os.PathLike, spec: DemoSpec) -> bool:
    """Whether `out_dir` holds a complete dataset written by this generator version with these settings."""
    marker, train = Path(out_dir, STAMP_FILE), Path(out_dir, 'train.txt')
    return train.is_file() and marker.is_file() and marker.read_text() == stamp(spec)


def generate(out_dir: str | os.PathLike, preset: str | DemoSpec = 'demo', seed: int | None = None,
             workers: int | None = None) -> dict[str, int]:
    """Write the demo dataset (a preset name or a `DemoSpec`) into `out_dir`; the lists come last, so a present list
    means a complete dataset.  Returns counts: train/test images and boxes."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f'unknown demo preset {preset!r}; choose one of {", ".join(PRESETS)}')
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    if seed is not None:
        spec = replace(spec, seed=seed)
    out = str(Path(out_dir).resolve())
    # the stamp first, marked unfinished: a folder that a stopped generation left behind is still known to be ours
    write_text(Path(out, STAMP_FILE), stamp(spec).rstrip('\n') + ' (unfinished)\n')
    jobs = [(0, 'train', i) for i in range(spec.train)] + [(1, 'test', i) for i in range(spec.test)]
    counts = parallel_map(partial(_write_image, spec=spec, out=out), jobs, workers)
    write_text(Path(out, 'demo.names'), ''.join(f'{c}\n' for c in CLASSES))
    write_data_file(Path(out, 'demo.data'), {
        'classes': len(CLASSES), 'train': 'train.txt', 'valid': 'test.txt', 'names': 'demo.names',
        'eval': 'voc', 'annotations': 'Annotations'}, f'demo dataset, {spec}')
    write_text(Path(out, STAMP_FILE), stamp(spec))
    for split_name, n in (('test', spec.test), ('train', spec.train)):
        write_list(Path(out, f'{split_name}.txt'), (f'images/{split_name}/{split_name}{i:06d}.jpg' for i in range(n)))
    return {'train': spec.train, 'test': spec.test, 'train_boxes': sum(counts[:spec.train]),
            'test_boxes': sum(counts[spec.train:])}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.data.synthetic', description=__doc__.split('\n')[0])
    ap.add_argument('out', help='output folder')
    ap.add_argument('--preset', choices=sorted(PRESETS), default='demo')
    ap.add_argument('--seed', type=int, default=None, help='default: the preset seed (0)')
    ap.add_argument('--workers', type=int, default=None, help='processes (default: all cores)')
    args = ap.parse_args(argv)
    start = time.perf_counter()
    counts = generate(args.out, args.preset, args.seed, args.workers)
    print(f"{counts['train']} train images ({counts['train_boxes']} boxes), {counts['test']} test images "
          f"({counts['test_boxes']} boxes) in {args.out} ({time.perf_counter() - start:.1f} s)")


if __name__ == '__main__':
    main()
