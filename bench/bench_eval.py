"""Speed of VOC scoring on a synthetic VOC2007-test-sized case (4952 images, 20 classes, ~12k objects, ~1M
detections): the vectorised scorer on arrays, the whole `evaluate.py voc` path from files (XML + result parsing),
and a straightforward py-faster-rcnn-style loop over detections on a few classes, extrapolated per detection.

    python bench/bench_eval.py [--runs 3] [--dets 1000000] [--ref-classes 2] [--no-files]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from yolo_lrm.evaluation.evaluate import score_voc, score_voc_files  # noqa: E402
from yolo_lrm.evaluation.voc import Detections, GroundTruth, class_ap, class_pr  # noqa: E402

NAMES = [f'c{k:02d}' for k in range(20)]


def synthetic(n_images: int, n_dets: int, seed: int = 0) -> tuple[GroundTruth, list[Detections]]:
    """GT with ~2.4 objects per image (10% difficult); per class, half the detections jitter a GT box of the class
    (TPs and duplicates), half are random boxes on random images."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.4, n_images)
    image = np.repeat(np.arange(n_images), counts)
    n = len(image)
    xy = rng.integers(1, 400, (n, 2))
    wh = rng.integers(10, 100, (n, 2))
    gt = GroundTruth([f'{i:06d}' for i in range(n_images)], image, rng.integers(0, 20, n),
                     np.concatenate((xy, xy + wh), 1).astype(np.float64), rng.random(n) < 0.1)
    dets = []
    per_class = n_dets // 20
    for c in range(20):
        mine = np.flatnonzero(gt.cls == c)
        pick = mine[rng.integers(0, len(mine), per_class // 2)]
        near = gt.boxes[pick] + rng.normal(0, 8, (len(pick), 4))
        m = per_class - len(pick)
        rxy = rng.uniform(1, 400, (m, 2))
        far = np.concatenate((rxy, rxy + rng.uniform(10, 100, (m, 2))), 1)
        dets.append(Detections(np.r_[gt.image[pick], rng.integers(0, n_images, m)],
                               np.round(rng.random(per_class), 4), np.r_[near, far]))
    return gt, dets


def reference_class_ap(gt: GroundTruth, cls: int, d: Detections, thr: float = 0.5) -> float:
    """py-faster-rcnn's `voc_eval` loop (numpy per detection), for timing and a cross-check."""
    recs = {}
    for i in range(len(gt.ids)):
        sel = (gt.image == i) & (gt.cls == cls)
        recs[i] = (gt.boxes[sel], gt.difficult[sel], np.zeros(sel.sum(), bool))
    npos = sum(int((~r[1]).sum()) for r in recs.values())
    order = np.argsort(-d.score, kind='stable')
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for k, j in enumerate(order):
        bbgt, diff, det = recs[int(d.image[j])]
        bb = d.boxes[j]
        ovmax = -np.inf
        if bbgt.size:
            iw = np.maximum(np.minimum(bbgt[:, 2], bb[2]) - np.maximum(bbgt[:, 0], bb[0]) + 1., 0.)
            ih = np.maximum(np.minimum(bbgt[:, 3], bb[3]) - np.maximum(bbgt[:, 1], bb[1]) + 1., 0.)
            inters = iw * ih
            uni = (bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) + \
                (bbgt[:, 2] - bbgt[:, 0] + 1.) * (bbgt[:, 3] - bbgt[:, 1] + 1.) - inters
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > thr:
            if not diff[jmax]:
                if not det[jmax]:
                    tp[k], det[jmax] = 1., True
                else:
                    fp[k] = 1.
        else:
            fp[k] = 1.
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.
    for t in np.arange(0., 1.1, 0.1):
        ap += (np.max(prec[rec >= t]) if (rec >= t).any() else 0.) / 11.
    return ap


def write_files(folder: str, gt: GroundTruth, dets: list[Detections]) -> None:
    """VOC XML per image, an image set and Darknet-format result files."""
    os.makedirs(os.path.join(folder, 'Annotations'))
    for i, image_id in enumerate(gt.ids):
        objs = ''.join(f'<object><name>{NAMES[c]}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]:.0f}'
                       f'</xmin><ymin>{b[1]:.0f}</ymin><xmax>{b[2]:.0f}</xmax><ymax>{b[3]:.0f}</ymax></bndbox></object>'
                       for c, d, b in zip(gt.cls[gt.image == i], gt.difficult[gt.image == i],
                                          gt.boxes[gt.image == i]))
        with open(os.path.join(folder, 'Annotations', image_id + '.xml'), 'w') as f:
            f.write(f'<annotation>{objs}</annotation>')
    with open(os.path.join(folder, 'test.txt'), 'w') as f:
        f.write(''.join(i + '\n' for i in gt.ids))
    for name, d in zip(NAMES, dets):
        with open(os.path.join(folder, f'comp4_det_test_{name}.txt'), 'w') as f:
            f.write(''.join('%s %f %f %f %f %f\n' % (gt.ids[i], s, *b)
                            for i, s, b in zip(d.image.tolist(), d.score.tolist(), d.boxes.tolist())))


def timed(fn, runs: int) -> tuple[float, object]:
    """Median wall time of `runs` calls, and the last result."""
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--images', type=int, default=4952)
    ap.add_argument('--dets', type=int, default=1_000_000)
    ap.add_argument('--ref-classes', type=int, default=2, help='classes the slow reference runs on (0: skip)')
    ap.add_argument('--no-files', action='store_true', help='skip the from-files timing')
    a = ap.parse_args()
    gt, dets = synthetic(a.images, a.dets)
    n_dets = sum(len(d.score) for d in dets)
    print(f'{len(gt.ids)} images, {len(gt.cls)} objects ({int(gt.difficult.sum())} difficult), {n_dets} detections')
    t_arrays, res = timed(lambda: score_voc(gt, dets, NAMES), a.runs)
    print(f'vectorised, from arrays : {t_arrays:.2f} s (median of {a.runs}), mAP {100 * res.map:.2f}')
    if not a.no_files:
        with tempfile.TemporaryDirectory() as tmp:
            write_files(tmp, gt, dets)
            t_files, res_f = timed(lambda: score_voc_files(os.path.join(tmp, 'Annotations'),
                                                           os.path.join(tmp, 'test.txt'), NAMES,
                                                           os.path.join(tmp, 'comp4_det_test_{}.txt')), a.runs)
        print(f'vectorised, from files  : {t_files:.2f} s (XML + result parsing included), mAP {100 * res_f.map:.2f}')
    if a.ref_classes:
        ref_dets = sum(len(dets[c].score) for c in range(a.ref_classes))
        start = time.perf_counter()
        ref = [reference_class_ap(gt, c, dets[c]) for c in range(a.ref_classes)]
        t_ref = (time.perf_counter() - start) / ref_dets * n_dets
        ours = [class_ap(class_pr(gt, c, dets[c]), 'voc07') for c in range(a.ref_classes)]
        assert np.allclose(ref, ours, rtol=0, atol=1e-12), (ref, ours)
        print(f'reference loop          : {t_ref:.1f} s extrapolated from {a.ref_classes} classes '
              f'({ref_dets} detections, same APs) -> {t_ref / t_arrays:.0f}x slower than the vectorised scorer')


if __name__ == '__main__':
    main()
