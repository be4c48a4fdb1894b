"""OpenCV DNN (`cv2.dnn.readNetFromDarknet`) as a timing worker for bench_engines.py, run by another interpreter.

OpenCV 5 dropped the Darknet importer, so the OpenCV rows of bench_engines.py need an OpenCV 4.x; this script runs
under that interpreter (`--opencv-python PATH`: a plain venv with numpy and `opencv-python-headless<5`) and imports
nothing but numpy and cv2.  Protocol: one JSON object per line on stdin, one answer per line on stdout.

    start:  python opencv_dnn.py CFG WEIGHTS --size 416 --threads 2  ->  {"ok": true, "version": ...} or
            {"ok": false, "reason": "..."} (no readNetFromDarknet, a cfg it cannot read) and exit
    {"op": "net", "batch": B}    -> {"s": seconds}  one forward pass on a prepared (B, 3, S, S) blob
    {"op": "e2e", "batch": B}    -> {"s": seconds, "dets": n}  letterbox + forward + decode + class-wise NMS +
                                    unletterbox of B camera-sized frames (an OpenCV user's pipeline)
    {"op": "forward", "input": PATH.npy, "output": PATH.npy}  -> {}  the region output for a given blob
    {"op": "rss"}                -> {"peak_mb": ..., "before_mb": ...}  peak resident memory, and before the net
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time

import numpy as np


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith('VmRSS:')) / 1024


def frames(batch: int) -> list[np.ndarray]:
    """The frames bench_engines.py uses: 768x576 random content, seed 0 (BGR here, as OpenCV reads them)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (576, 768, 3), dtype=np.uint8) for _ in range(batch)]


def letterbox(cv2, image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Aspect-preserving resize onto a 0.5-gray square (cv2.resize, bilinear); returns it with scale and offsets."""
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = int(w * scale), int(h * scale)
    canvas = np.full((size, size, 3), 127, np.uint8)
    dx, dy = (size - nw) // 2, (size - nh) // 2
    canvas[dy:dy + nh, dx:dx + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, scale, dx, dy


def detect(cv2, net, images: list[np.ndarray], size: int, conf: float = 0.25, nms: float = 0.45) -> int:
    """The whole pipeline on a batch; returns the number of detections kept."""
    boxed = [letterbox(cv2, im, size) for im in images]
    net.setInput(cv2.dnn.blobFromImages([b[0] for b in boxed], 1 / 255.0, (size, size), swapRB=True))
    out = net.forward()                     # (B * A*H*W, 5 + C): x, y, w, h, obj, obj * class prob
    per_image = out.reshape(len(images), -1, out.shape[-1])
    kept = 0
    for (_, scale, dx, dy), rows in zip(boxed, per_image):
        scores = rows[:, 5:]
        cls = scores.argmax(1)
        best = scores[np.arange(len(rows)), cls]
        sel = best > conf
        xywh = rows[sel, :4] * size
        x1 = (xywh[:, 0] - xywh[:, 2] / 2 - dx) / scale
        y1 = (xywh[:, 1] - xywh[:, 3] / 2 - dy) / scale
        boxes = np.stack((x1, y1, xywh[:, 2] / scale, xywh[:, 3] / scale), 1)
        keep = cv2.dnn.NMSBoxesBatched(boxes.tolist(), best[sel].tolist(), cls[sel].tolist(), conf, nms)
        kept += len(keep)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('cfg')
    ap.add_argument('weights')
    ap.add_argument('--size', type=int, default=416)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    say = lambda obj: print(json.dumps(obj), flush=True)  # noqa: E731
    try:
        import cv2
    except ImportError as exc:
        say({'ok': False, 'reason': f'no OpenCV in {sys.executable} ({exc})'})
        return
    if not hasattr(cv2.dnn, 'readNetFromDarknet'):
        say({'ok': False, 'reason': f'OpenCV {cv2.__version__} has no readNetFromDarknet (removed in OpenCV 5)'})
        return
    cv2.setNumThreads(args.threads)
    before = rss_mb()
    try:
        net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    except cv2.error as exc:
        found = re.search(r'error: \([^)]*\) (.*?)(?: in function|$)', ' '.join(str(exc).split()))
        say({'ok': False, 'reason': f'OpenCV {cv2.__version__} cannot read the cfg: '
                                    f'{found.group(1) if found else str(exc)[-200:]}'})
        return
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    say({'ok': True, 'version': cv2.__version__})
    blobs: dict[int, np.ndarray] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd['op']
        if op == 'net':
            b = cmd['batch']
            if b not in blobs:
                blobs[b] = cv2.dnn.blobFromImages([letterbox(cv2, im, args.size)[0] for im in frames(b)], 1 / 255.0,
                                                  (args.size, args.size), swapRB=True)
            t = time.perf_counter()
            net.setInput(blobs[b])
            net.forward()
            say({'s': time.perf_counter() - t})
        elif op == 'e2e':
            images = frames(cmd['batch'])
            t = time.perf_counter()
            n = detect(cv2, net, images, args.size)
            say({'s': time.perf_counter() - t, 'dets': n})
        elif op == 'forward':
            net.setInput(np.load(cmd['input']))
            np.save(cmd['output'], net.forward())
            say({})
        elif op == 'rss':
            say({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'before_mb': before})
        else:
            say({'error': f'unknown op {op!r}'})


if __name__ == '__main__':
    main()
