"""Training-step throughput of the real trainer (`Trainer.train_update`: forward, region loss, backward, SGD step).

    python bench/bench_train.py [--cfg CFG ...] [--size 416] [--batch 8] [--steps 5] [--device cpu]
                                [--workers 0 1 2] [--threads N] [--channels-last] [--compile] [--amp bf16]
                                [--malloc keep system] [--reports on off] [--rounds R] [--json OUT]

For each cfg (default: yolov2-tiny-voc, yolov2-voc, yolov2-mobilenet-voc, those present) and each `--workers`
value, in a fresh process: a Trainer is built on BCCD (`../shared/datasets/BCCD`, converted into a temporary
folder with the data package's VOC converter; labels 0-2 of the cfg's classes, as Darknet's measurement did) or,
without BCCD, on the generated demo-small set.  Two timings, each the median of `--steps` updates after one warm-up:
  memory  the same collated batch fed again and again (no data loading)
  data    batches from the trainer's own DataLoader (decode, Darknet augmentation, collate; `--workers` processes)
One update = `--batch` images in one mini-batch at `--size` (multi-scale off).  OMP_WAIT_POLICY=PASSIVE as in
train.py unless set.  `--malloc keep system --rounds 3` measures what glibc's allocator settings are worth
(yolo_lrm/allocator.py), alternating the two; page faults per update show the cause.  `--reports on off`
likewise measures what the run's pictures and TensorBoard log cost (the first three updates draw the batch mosaics:
they fall in the data phase, so the memory figure is the steady state with TensorBoard's per-update scalars).
Peak memory: CUDA allocator peak, or the process's peak RSS on CPU.  Darknet reference
(../shared/docs/darknet-reference.md §8): yolov2-tiny-voc, batch 8, 416, 2-core CPU, OpenMP build: 0.86 images/s.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BCCD = ROOT.parent / 'shared' / 'datasets' / 'BCCD'
DARKNET_TINY_CPU = 0.86   # images/s, yolov2-tiny-voc, batch 8, 416, OpenMP, 2 cores
DEFAULT_CFGS = ('cfg/yolov2-tiny-voc.cfg', 'cfg/yolov2-voc.cfg', 'cfg/yolov2-mobilenet-voc.cfg')


def make_data(folder: Path, classes: int) -> tuple[Path, str]:
    """A .data file with `classes` classes over BCCD (converted) or the generated demo-small set."""
    if BCCD.is_dir():
        from yolo_lrm.data import convert_voc
        result = convert_voc(BCCD, folder / 'bccd', workers=1)
        train_list, source = folder / 'bccd' / 'trainval.txt', 'BCCD trainval'
        if not train_list.is_file():
            train_list = Path(result.data_file).parent / 'train.txt'
    else:
        from yolo_lrm.data.synthetic import generate
        generate(folder / 'demo', 'demo-small', workers=1)
        train_list, source = folder / 'demo' / 'train.txt', 'demo-small (no ../shared/datasets/BCCD)'
    names = folder / 'bench.names'
    names.write_text(''.join(f'class{i}\n' for i in range(classes)))
    data = folder / 'bench.data'
    data.write_text(f'classes={classes}\ntrain={train_list}\nnames={names}\nbackup={folder / "backup"}\n')
    return data, source


def peak_memory_mb(device) -> float:
    import torch
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_updates(trainer, batches, steps: int, device) -> tuple[list[float], list[int], list[float]]:
    """Seconds and minor page faults (this process) per update, after one warm-up update; the run's reports get
    each update's numbers as in `Trainer.run` (TensorBoard's scalars, when installed), and the seconds that took
    come third (a direct figure, free of the machine's noise that an A/B of whole updates carries)."""
    import torch
    times, faults, reporting = [], [], []
    for i in range(steps + 1):
        start, start_faults = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        values, _ = trainer.train_update(batches)
        reported = time.perf_counter()
        if trainer.reports is not None:
            trainer.reports.update(trainer.state.update, values)
        reported = time.perf_counter() - reported
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
            reporting.append(reported)
    return times, faults, reporting


def bench_one(opts: argparse.Namespace) -> dict:
    """Build a Trainer for one cfg and time it (runs in its own process, see `main`)."""
    import torch
    from yolo_lrm.cfg import parse_cfg
    from yolo_lrm.train.args import TrainArgs
    from yolo_lrm.train.trainer import Trainer
    if opts.threads:
        torch.set_num_threads(opts.threads)
    classes = parse_cfg(opts.cfg[0]).region['classes']
    with tempfile.TemporaryDirectory(prefix='bench_train_') as tmp:
        data, source = make_data(Path(tmp), classes)
        args = TrainArgs(cfg=opts.cfg[0], data=str(data), project=str(Path(tmp) / 'runs'), device=opts.device,
                         workers=opts.workers[0], batch=opts.batch, subdivisions=1, max_batches=10 ** 6,
                         # burn-in: the tiny lr of an early update (a step costs the same at any lr); without
                         # it tiny-voc's constant lr .001 diverges on the repeated in-memory batch within ~6 updates
                         img_size=opts.size, set=['region.random=0', 'net.burn_in=100000'], amp=opts.amp,
                         channels_last=opts.channels_last, compile=opts.compile, eval_interval=10 ** 6,
                         save_interval=0)
        trainer = Trainer(args)
        if opts.reports[0] == 'off':
            trainer.reports.close()
            trainer.reports = None
        trainer.net.train()
        device = trainer.device
        loader = iter(trainer.loader)
        data_times, _, _ = timed_updates(trainer, loader, opts.steps, device)
        first = next(loader)
        memory_times, faults, reporting = timed_updates(trainer, iter(lambda: first, None), opts.steps, device)
        trainer.close()
    med_mem, med_data = statistics.median(memory_times), statistics.median(data_times)
    return {'cfg': opts.cfg[0], 'size': opts.size, 'batch': opts.batch, 'device': str(device),
            'threads': torch.get_num_threads(), 'workers': opts.workers[0], 'channels_last': opts.channels_last,
            'amp': opts.amp, 'compile': opts.compile, 'reports': opts.reports[0], 'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY', ''),
            'malloc': os.environ.get('YOLO_LRM_MALLOC') or 'keep', 'faults_per_update': statistics.median(faults),
            'data': source, 'memory_s': med_mem, 'data_s': med_data, 'memory_img_s': opts.batch / med_mem,
            'data_img_s': opts.batch / med_data, 'memory_all_s': memory_times, 'data_all_s': data_times,
            'peak_mb': peak_memory_mb(device), 'reports_ms': 1000 * statistics.median(reporting)}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cfg', nargs='+', default=[c for c in DEFAULT_CFGS if (ROOT / c).is_file()])
    ap.add_argument('--size', type=int, default=416)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--device', default='')
    ap.add_argument('--workers', type=int, nargs='+', default=[0])
    ap.add_argument('--threads', type=int, default=0, help='torch intra-op threads (default: torch\'s choice)')
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--amp', default='off', choices=('off', 'bf16', 'fp16'))
    ap.add_argument('--compile', action='store_true', help='torch.compile (the warm-up update pays the compilation)')
    ap.add_argument('--malloc', nargs='+', default=['keep'], choices=('keep', 'system'),
                    help='host allocator (YOLO_LRM_MALLOC, see yolo_lrm/allocator.py); two values: their ratio')
    ap.add_argument('--reports', nargs='+', default=['on'], choices=('on', 'off'),
                    help="the run's pictures and TensorBoard log (yolo_lrm/reports/run.py); two values: their ratio")
    ap.add_argument('--rounds', type=int, default=1, help='repeat every setting this many times, alternating')
    ap.add_argument('--json', help='write all results here')
    ap.add_argument('--one', action='store_true', help=argparse.SUPPRESS)  # internal: run one cfg in this process
    return ap.parse_args(argv)


def run_one(opts: argparse.Namespace, cfg: str, workers: int, malloc: str, reports: str) -> dict | None:
    """`bench_one` in a fresh process (OpenMP's wait policy and the allocator are fixed at start-up)."""
    cmd = [sys.executable, __file__, '--one', '--cfg', cfg, '--workers', str(workers), '--size', str(opts.size),
           '--batch', str(opts.batch), '--steps', str(opts.steps), '--device', opts.device,
           '--threads', str(opts.threads), '--amp', opts.amp, '--reports', reports] + ['--channels-last'] * opts.channels_last \
        + ['--compile'] * opts.compile
    # as train.py: sleeping OpenMP threads unless the caller chose a policy
    env = {'OMP_WAIT_POLICY': 'PASSIVE', **os.environ, 'PYTHONPATH': str(ROOT), 'YOLO_LRM_MALLOC': malloc}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith('RESULT ')), None)
    if line is None:
        print(f'{cfg} workers={workers} malloc={malloc} reports={reports}: failed\n{out.stderr[-2000:]}')
        return None
    r = json.loads(line[7:])
    ratio = f"  {r['data_img_s'] / DARKNET_TINY_CPU:.1f}x Darknet's 0.86" if 'tiny' in cfg and \
        r['device'] == 'cpu' and r['batch'] == 8 and r['size'] == 416 else ''
    print(f"{Path(cfg).name:<26s} {r['device']:<6s} threads {r['threads']} workers {workers} "
          f"{r['omp_wait_policy'] or 'default'} malloc {malloc} reports {reports}: memory {r['memory_img_s']:6.2f} img/s, "
          f"data {r['data_img_s']:6.2f} img/s, {r['faults_per_update']:,.0f} page faults/update, "
          f"peak {r['peak_mb']:,.0f} MB, reports {r['reports_ms']:.2f} ms/update{ratio}", flush=True)
    return r


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    if opts.one:
        print('RESULT ' + json.dumps(bench_one(opts)), flush=True)
        return
    results = []
    for cfg in opts.cfg:
        for workers in opts.workers:
            runs: dict[tuple[str, str], list[dict]] = {(m, r): [] for m in opts.malloc for r in opts.reports}
            for _ in range(opts.rounds):  # settings alternate, so drift of the machine hits each alike
                for malloc, reports in runs:
                    r = run_one(opts, cfg, workers, malloc, reports)
                    if r is not None:
                        runs[malloc, reports].append(r)
                        results.append(r)
            if len(runs) == 2 and all(runs.values()):
                (a, ra), (b, rb) = runs.items()
                for key in ('memory_img_s', 'data_img_s'):
                    ratios = [x[key] / y[key] for x, y in zip(ra, rb)]
                    print(f"{Path(cfg).name:<26s} workers {workers}: {key[:-6]} img/s malloc/reports "
                          f"{'/'.join(a)} over {'/'.join(b)} = "
                          f"{statistics.median(ratios):.2f} (median of {len(ratios)} paired runs, "
                          f"{min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    main()
