"""LRM overhead on one training step (forward, loss, backward, SGD update), side by side with the same step
without LRM.

    python bench/bench_lrm.py                 # yolov2-tiny-voc, 416, batch 8, CPU
    python bench/bench_lrm.py --device cuda --reps 20

Every configuration runs the same batch with the same weights (lr = 0, so the update is computed but changes
nothing); repetitions are interleaved and the order rotates each round, so that drifting machine load hits every
configuration alike.  Reported: median step time and its ratio to the step without LRM, the median time of the
criterion alone (loss, target assignment and, where on, the hard-example selection) and what that adds to the
step, and peak memory.  The criterion-only difference is the steadier estimate of LRM's cost on a busy machine.
"""
from __future__ import annotations

import argparse
import copy
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout without installing

from yolo_lrm.allocator import keep_freed_memory  # noqa: E402
from yolo_lrm.cfg import apply_overrides  # noqa: E402
from yolo_lrm.distributed import pick_device  # noqa: E402
from yolo_lrm.loss.region import RegionLoss  # noqa: E402
from yolo_lrm.model import Darknet  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cfg', default=str(ROOT / 'cfg' / 'yolov2-tiny-voc.cfg'))
    ap.add_argument('--size', type=int, default=416)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--ks', default='64,128,256', help='hard_examples values, comma-separated')
    ap.add_argument('--nms', type=float, default=0.5, help='LRM NMS threshold of the "with NMS" runs')
    ap.add_argument('--reps', type=int, default=3, help='timed steps per configuration')
    ap.add_argument('--loss-reps', type=int, default=20, help='timed criterion calls per configuration')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    return ap.parse_args(argv)


def machine_info(device: torch.device) -> str:
    """torch version, threads, CPU model and, on CUDA, the GPU."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.exists():
        names = [ln.split(':', 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith('model name')]
        cpu = f'{names[0]} x{len(names)}' if names else cpu
    text = f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu}'
    if device.type == 'cuda':
        text += f', GPU {torch.cuda.get_device_name(device)}'
    return text


def criteria(net: Darknet, ks: list[int], nms: float) -> dict[str, RegionLoss]:
    """The plain criterion and one per (K, with/without NMS), built from copies of the network's cfg."""
    variants = {'no LRM': []}
    for k in ks:
        variants[f'K={k} no NMS'] = [f'lrm.hard_examples={k}', 'lrm.nms=1']
        variants[f'K={k} NMS {nms:g}'] = [f'lrm.hard_examples={k}', f'lrm.nms={nms}']
    out = {}
    for name, overrides in variants.items():
        cfg = copy.deepcopy(net.cfg)
        apply_overrides(cfg, overrides)
        out[name] = RegionLoss(cfg.region, cfg.lrm)
    return out


def random_targets(batch: int, classes: int, g: torch.Generator) -> torch.Tensor:
    """1 to 15 random boxes per image, padded to 30 rows with class -1."""
    t = torch.full((batch, 30, 5), -1.0)
    for b in range(batch):
        n = int(torch.randint(1, 16, (1,), generator=g))
        t[b, :n, 0] = torch.randint(0, classes, (n,), generator=g).float()
        t[b, :n, 1:3] = torch.rand(n, 2, generator=g) * 0.9 + 0.05
        t[b, :n, 3:5] = torch.rand(n, 2, generator=g) * 0.55 + 0.05
    return t


def timed(fn, device: torch.device) -> float:
    """Seconds one call takes, with the device drained before and after."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if device.type == 'cpu':
        keep_freed_memory()  # as the trainer does (YOLO_LRM_MALLOC=system declines)
    torch.manual_seed(0)
    net = Darknet(args.cfg, [f'net.width={args.size}', f'net.height={args.size}']).to(device).train()
    crits = criteria(net, [int(k) for k in args.ks.split(',')], args.nms)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    targets = random_targets(args.batch, net.num_classes, g).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4)
    seen = 0

    def step(crit: RegionLoss) -> None:
        opt.zero_grad(set_to_none=True)
        crit(net(x), targets, seen).total.backward()
        opt.step()

    print(machine_info(device))
    print(f'{Path(args.cfg).name} at {args.size}, batch {args.batch}, {args.reps} interleaved steps per configuration')
    names = list(crits)
    timed(lambda: step(crits[names[0]]), device)  # warm-up (allocator, first-call kernels)
    steps = {n: [] for n in names}
    peak = {n: 0 for n in names}
    for rep in range(args.reps):
        for n in names[rep % len(names):] + names[:rep % len(names)]:
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            steps[n].append(timed(lambda: step(crits[n]), device))
            if device.type == 'cuda':
                peak[n] = max(peak[n], torch.cuda.max_memory_allocated(device))

    out = net(x).detach().requires_grad_()
    calls = {n: [] for n in names}
    for rep in range(args.loss_reps + 1):  # the first round warms up and is dropped
        for n in names[rep % len(names):] + names[:rep % len(names)]:
            t = timed(lambda: crits[n](out, targets, seen).total.backward(), device)
            if rep:
                calls[n].append(t)
    loss_ms = {n: statistics.median(c) * 1e3 for n, c in calls.items()}

    base, base_loss = statistics.median(steps[names[0]]), loss_ms[names[0]]
    print(f'{"configuration":<18}{"step s":>9}{"ratio":>8}{"loss ms":>10}{"loss +% of step":>17}'
          + ('{:>12}'.format('peak MiB') if device.type == 'cuda' else ''))
    for n in names:
        med = statistics.median(steps[n])
        extra = (loss_ms[n] - base_loss) / 1e3 / base * 100
        line = f'{n:<18}{med:9.3f}{med / base:8.3f}{loss_ms[n]:10.2f}{extra:16.2f}%'
        if device.type == 'cuda':
            line += f'{peak[n] / 2**20:12.1f}'
        print(line)
    spread = max(steps[names[0]]) / min(steps[names[0]]) - 1
    print(f'step time spread without LRM (max/min - 1): {spread * 100:.1f}% (the noise floor of the ratios)')
    if device.type == 'cpu':
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(f'peak resident memory of the process: {rss:.0f} MiB')


if __name__ == '__main__':
    main()
