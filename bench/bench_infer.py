"""Inference speed of the YOLOv2 cfgs at 416: network only and end to end (letterbox + network + decode/NMS +
unletterbox, the `detect.py` steps without file I/O), batch 1 and 16, BN fused, NCHW vs channels_last; medians of
several runs, compared with Darknet's CPU times on this kind of machine (../shared/docs/darknet-reference.md §8:
OpenMP build on 2 threads, tiny 0.37-0.60 s and yolov2-voc 1.57-2.33 s per image; without OpenMP 0.55-1.22 s and
2.50-4.18 s).  Wall time is compared with the OpenMP build; process CPU time, which other processes' load does not
inflate (on a shared machine wall time can be several times higher), with the 1-thread build: run with
`--threads 1` for that comparison.

    python bench/bench_infer.py [--device cpu] [--cfgs ...] [--batches 1 16] [--runs 5] [--threads N] [--profile]

`--profile` adds, for the first cfg at batch 1, the effect of each speed-up on its own: thread count, BN fusion,
channels_last, `torch.inference_mode` vs `torch.no_grad`.  Weights are random (speed does not depend on them).
OpenMP's wait policy can only be chosen before torch starts: compare `OMP_WAIT_POLICY=PASSIVE python bench/...`
(what `detect.py` sets by default) with `OMP_WAIT_POLICY=ACTIVE`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from yolo_lrm.inference.detector import Detector, synchronize  # noqa: E402
from yolo_lrm.distributed import pick_device  # noqa: E402
from yolo_lrm.model import Darknet  # noqa: E402

CFGS = ['cfg/yolov2-tiny-voc.cfg', 'cfg/yolov2-voc.cfg', 'cfg/yolov2-mobilenet-voc.cfg']
# Darknet on this kind of machine, seconds per 416x416 image (§8), as (best harness loop, slowest `detector test`):
# OpenMP build on 2 threads (wall time), and the build without OpenMP (1 thread: wall time = CPU time)
DARKNET_OMP = {'yolov2-tiny-voc': (0.37, 0.60), 'yolov2-voc': (1.57, 2.33)}
DARKNET_1T = {'yolov2-tiny-voc': (0.55, 1.22), 'yolov2-voc': (2.50, 4.18)}


@dataclass
class Timing:
    """Medians per image: wall-clock and process CPU time (all threads; insensitive to other processes' load)."""
    wall: float
    cpu: float


def timed(fn, runs: int, device: torch.device, per: int) -> Timing:
    """Medians of `fn()` over `runs` calls after one warm-up call, divided by `per` images."""
    fn()
    synchronize(device)
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return Timing(statistics.median(walls) / per, statistics.median(cpus) / per)


def make_detector(cfg: str, device: torch.device, channels_last: bool, fuse: bool = True) -> Detector:
    """A random-weight network of `cfg` at 416, ready for inference."""
    torch.manual_seed(0)
    net = Darknet(str(ROOT / cfg), ['net.width=416', 'net.height=416']).to(device)
    return Detector(net, (416, 416), conf=0.25, fuse=fuse, channels_last=channels_last)


def images(batch: int) -> list[np.ndarray]:
    """Camera-sized frames (768x576, the size of Darknet's dog.jpg) with random content."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (576, 768, 3), dtype=np.uint8) for _ in range(batch)]


def measure(det: Detector, batch: int, runs: int, grad_mode=torch.inference_mode) -> tuple[Timing, Timing]:
    """(network-only, end-to-end) timings per image."""
    frames = images(batch)
    x = torch.from_numpy(np.stack([det.prepare(im) for im in frames])).to(det.device)
    if det.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with grad_mode():
        net = timed(lambda: det.net(x), runs, det.device, batch)
    return net, timed(lambda: det(frames), runs, det.device, batch)


def darknet_ratio(cfg: str, e2e: Timing, device: torch.device) -> str:
    """Speed-up over Darknet for this cfg: wall time vs its 2-thread OpenMP build when we run on 2+ threads,
    CPU time vs its 1-thread build (a comparison that other processes' load does not distort)."""
    name = Path(cfg).stem
    if device.type != 'cpu' or name not in DARKNET_OMP:
        return 'no Darknet figure'
    parts = [f'CPU time {DARKNET_1T[name][0] / e2e.cpu:.1f}-{DARKNET_1T[name][1] / e2e.cpu:.1f}x Darknet 1-thread']
    if torch.get_num_threads() >= 2:
        omp = DARKNET_OMP[name]
        parts.insert(0, f'wall {omp[0] / e2e.wall:.1f}-{omp[1] / e2e.wall:.1f}x Darknet OpenMP')
    return ', '.join(parts)


def main_table(args: argparse.Namespace, device: torch.device) -> None:
    print(f'device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY", "(unset)")}, median of {args.runs} runs, 416x416, '
          f'BN fused, per image; e2e = letterbox + network + decode/NMS + unletterbox')
    print(f'{"cfg":<22}{"batch":>6}{"layout":>15}{"net ms":>9}{"net FPS":>9}{"e2e ms":>9}{"e2e FPS":>9}'
          f'{"e2e CPU ms":>12}  end to end vs Darknet')
    for cfg in args.cfgs:
        if not (ROOT / cfg).is_file():
            print(f'{cfg}: not found, skipped')
            continue
        for batch in args.batches:
            for channels_last in (False, True):
                net, e2e = measure(make_detector(cfg, device, channels_last), batch, args.runs)
                layout = 'channels_last' if channels_last else 'NCHW'
                print(f'{Path(cfg).stem:<22}{batch:>6}{layout:>15}{net.wall * 1e3:>9.1f}{1 / net.wall:>9.2f}'
                      f'{e2e.wall * 1e3:>9.1f}{1 / e2e.wall:>9.2f}{e2e.cpu * 1e3:>12.1f}  '
                      f'{darknet_ratio(cfg, e2e, device)}', flush=True)


def profile(args: argparse.Namespace, device: torch.device) -> None:
    """Each speed-up on its own, for the first cfg at batch 1 (network only)."""
    cfg = next((c for c in args.cfgs if (ROOT / c).is_file()), None)
    if cfg is None:
        return
    print(f'\nprofile: {Path(cfg).stem}, batch 1, network only, ms per image')
    base = dict(channels_last=False, fuse=True)
    variants = [('fused, NCHW, inference_mode', base, torch.inference_mode),
                ('unfused BN', dict(base, fuse=False), torch.inference_mode),
                ('channels_last', dict(base, channels_last=True), torch.inference_mode),
                ('no_grad instead of inference_mode', base, torch.no_grad)]
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, kw, mode in variants:
            net, _ = measure(make_detector(cfg, device, **kw), 1, args.runs, mode)
            print(f'  {n} thread{"s" if n > 1 else " "} {name:<36}{net.wall * 1e3:>9.1f} wall '
                  f'{net.cpu * 1e3:>9.1f} CPU', flush=True)
    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--cfgs', nargs='+', default=CFGS)
    ap.add_argument('--batches', type=int, nargs='+', default=[1, 16])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--threads', type=int, help='intra-op threads (default: torch\'s, = physical cores)')
    ap.add_argument('--profile', action='store_true', help='also time each speed-up on its own')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    with contextlib.suppress(KeyboardInterrupt):
        main_table(args, device)
        if args.profile:
            profile(args, device)


if __name__ == '__main__':
    main()
