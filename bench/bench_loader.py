"""Data loading speed on BCCD (364 real 640x480 JPEGs, converted into a temporary folder with our VOC converter):
per item in this process, decode and Darknet augmentation (wall and process CPU time, medians), the letterboxed
validation item, and DataLoader throughput (images/s) with N workers at a fixed size.

    python bench/bench_loader.py [--bccd ../shared/datasets/BCCD] [--size 416] [--workers 0 1 2] [--items 120]

The allocator is set as the trainer sets it on CPU (yolo_lrm/allocator.py); YOLO_LRM_MALLOC=system for glibc's
defaults.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import albumentations  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from yolo_lrm.allocator import keep_freed_memory  # noqa: E402
from yolo_lrm.data import ListDataset, MultiScaleBatchSampler, collate, convert_voc, read_image  # noqa: E402
from yolo_lrm.data.augment import augment, build_pipeline  # noqa: E402

HYP = {'jitter': 0.3, 'hue': 0.1, 'saturation': 1.5, 'exposure': 1.5}   # yolov2-voc.cfg's augmentation


def machine() -> str:
    """One line about the CPU and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((ln.split(':', 1)[1].strip() for ln in f if ln.startswith('model name')), cpu)
    except OSError:
        pass
    load = ' load %.1f %.1f %.1f' % os.getloadavg() if hasattr(os, 'getloadavg') else ''
    return (f'{cpu}, {os.cpu_count()} cores{load}; python {platform.python_version()}, torch {torch.__version__}, '
            f'opencv {cv2.__version__} ({cv2.getNumThreads()} threads), albumentations {albumentations.__version__}')


def timed(fn, n: int) -> tuple[float, float]:
    """Median wall and median process-CPU milliseconds of n calls fn(i)."""
    wall, cpu = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def per_item(ds: ListDataset, size: int, n: int) -> None:
    """Decode, augment and letterbox costs per image, in this process."""
    paths = [ds.paths[i % len(ds)] for i in range(n)]
    images = [read_image(p) for p in paths[:8]]
    pipeline = build_pipeline(size, ds.hyp)
    rows = [('decode (cv2.imdecode + BGR->RGB)', timed(lambda i: read_image(paths[i]), n)),
            (f'augment at {size} (jitter, HSV, flip, truths)',
             timed(lambda i: augment(images[i % 8], ds.labels(i % 8), pipeline, i, 30), n)),
            (f'training item at {size} (decode + augment)', timed(lambda i: ds[(i % len(ds), size, i)], n))]
    val = ListDataset(ds.list_path, ds.num_classes, augment=False)
    rows.append((f'validation item at {size} (decode + letterbox)', timed(lambda i: val[(i % len(val), size)], n)))
    print(f'per image, {n} items, medians:')
    for name, (wall, cpu) in rows:
        print(f'  {name:<48s} {wall:7.2f} ms wall  {cpu:7.2f} ms CPU  -> {1e3 / wall:6.1f} images/s per worker')


def loader_throughput(ds: ListDataset, size: int, workers: int, batch: int, batches: int) -> float:
    """Images/s of a DataLoader at a fixed size (the first batch, which starts the workers, is not counted)."""
    sampler = MultiScaleBatchSampler(len(ds), batch, 1, seed=0, random=False, base_size=size,
                                     max_batches=batches + 1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers else None)
    times, last = [], None
    for _ in loader:
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
    return batch / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bccd', default=os.path.join(root, '..', 'shared', 'datasets', 'BCCD'))
    ap.add_argument('--size', type=int, default=416)
    ap.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--items', type=int, default=120, help='items timed one by one')
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--batches', type=int, default=12, help='batches per DataLoader measurement')
    args = ap.parse_args(argv)
    if not os.path.isdir(args.bccd):
        sys.exit(f'error: {args.bccd} not found (BCCD in VOC layout; see ../shared/datasets/README.md)')
    kept = keep_freed_memory()  # as the trainer does on CPU; its DataLoader workers inherit it
    print(machine() + f'\nallocator: {"keeps freed memory" if kept else "system defaults"} (YOLO_LRM_MALLOC)')
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = convert_voc(args.bccd, tmp)
        print(f'converted BCCD: {result.images} images, {result.boxes} boxes in {time.perf_counter() - start:.2f} s')
        ds = ListDataset(os.path.join(tmp, 'trainval.txt'), len(result.classes), augment=True,
                         hyp=HYP, cache_dir=tmp)
        print(f'scan: {len(ds)} images in {ds.report.seconds:.2f} s')
        per_item(ds, args.size, args.items)
        print(f'DataLoader at {args.size}, batch {args.batch}, medians over {args.batches} batches:')
        for w in args.workers:
            rate = loader_throughput(ds, args.size, w, args.batch, args.batches)
            print(f'  {w} workers: {rate:7.1f} images/s')


if __name__ == '__main__':
    main()
