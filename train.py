"""Train a YOLOv2 network the Darknet way: `python train.py CFG DATA [WEIGHTS] [options]` (see `--help`).

Multi-GPU: `torchrun --nproc_per_node N train.py CFG DATA ...` (the cfg's batch is split over the processes).
Exit status: 0 finished or early-stopped, 130 stopped by Ctrl-C/SIGTERM after saving, 1 non-finite loss, 2 bad input
(or the run folder in use by another run), 3 a checkpoint could not be saved (full disk, ...).
"""
from __future__ import annotations

import argparse
import os
import sys

# OpenMP threads that wait by spinning collapse CPU training when anything else wants a core: measured 6 vs 16
# images/s (demo cfg, 2-core CPU, one other busy process); sleeping costs a few microseconds per operator.  Must be
# set before torch loads OpenMP; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from yolo_lrm.cfg import CfgError  # noqa: E402  (after the OpenMP setting)
from yolo_lrm.train.args import TrainArgs  # noqa: E402
from yolo_lrm.train.trainer import NonFiniteLoss, SaveFailed, train  # noqa: E402

EXAMPLES = """examples:
  python train.py cfg/demo.cfg data/demo.data                          # the built-in demo, 2-core CPU: 4 min
  python train.py cfg/yolov2-voc.cfg data/voc.data weights/darknet19_448.conv.23
  python train.py cfg/yolov2-voc.cfg data/voc.data --set lrm.hard_examples=128 lrm.nms=0.7 --name lrm128
  python train.py --resume runs/train/exp                              # continue exactly where it stopped
  torchrun --nproc_per_node 4 train.py cfg/yolov2-voc.cfg data/voc.data --sync-bn --amp
"""


def parser() -> argparse.ArgumentParser:
    """The command line (defaults come from `TrainArgs`)."""
    d = TrainArgs()
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('cfg', nargs='?', help='Darknet .cfg')
    ap.add_argument('data', nargs='?', help='Darknet .data (train=, valid=, names=, backup=)')
    ap.add_argument('weights', nargs='?', help='initial weights: Darknet .weights (a shorter backbone file such as '
                    'darknet19_448.conv.23 loads its layers) or our .pt; its `seen` continues the schedule')
    g = ap.add_argument_group('cfg overrides (recorded in the run directory)')
    g.add_argument('--batch', type=int, help='[net] batch: images per update')
    g.add_argument('--subdivisions', type=int, help='[net] subdivisions: mini-batches per update')
    g.add_argument('--max-batches', type=int, help='[net] max_batches: number of updates')
    g.add_argument('--epochs', type=float, help='set max_batches to this many passes over the train list')
    g.add_argument('--lr', type=float, help='[net] learning_rate')
    g.add_argument('--img-size', type=int, help='[net] width and height (training base size and validation size)')
    g.add_argument('--set', nargs='+', default=[], metavar='SECTION.KEY=VALUE',
                   help='any cfg key, e.g. lrm.hard_examples=128 lrm.nms=0.7 region.loss=loss1 14.learning_rate=0.1')
    g = ap.add_argument_group('run')
    g.add_argument('--project', default=d.project, help=f'parent of run directories (default {d.project})')
    g.add_argument('--name', default=d.name, help='run directory name; exp, exp2, ... when taken')
    g.add_argument('--exist-ok', action='store_true', help='reuse --name even if it exists')
    g.add_argument('--resume', nargs='?', const='', metavar='RUN_DIR|last.pt',
                   help='continue a run exactly (model, optimizer, schedule, seen, data order, RNG); alone: the '
                   'newest run under --project')
    g.add_argument('--clear', action='store_true', help="reset the initial weights' seen to 0 (Darknet -clear)")
    g.add_argument('--eval-interval', type=int, default=d.eval_interval,
                   help='validation mAP every N updates and at the end (default: about 10 per run)')
    g.add_argument('--eval-metric', default=d.eval_metric, choices=('voc07', 'area', 'kitti', 'kitti-voc'))
    g.add_argument('--eval-batch', type=int, default=d.eval_batch, help='images per validation batch')
    g.add_argument('--patience', type=int, default=d.patience,
                   help='stop after N evaluations without a better mAP (0: never)')
    g.add_argument('--save-interval', type=int, default=d.save_interval,
                   help='weights/last.pt and Darknet backups every N updates (Darknet: 100; 0: only at evaluations)')
    g.add_argument('--save-period', type=int, default=d.save_period, help='also keep weights/update_N.pt every N')
    g.add_argument('--backup', metavar='DIR', help="folder of Darknet's backups (<cfg>.backup, <cfg>_N.weights, "
                   "<cfg>_final.weights; default: the data file's backup=); 'none' or '': none (the run directory's "
                   "weights/last.weights stays)")
    g.add_argument('--no-augment', dest='augment', action='store_false',
                   help='no jitter/HSV/flip: letterboxed training images')
    g.add_argument('--cache-dir', help='where the dataset scan cache goes (default: beside the list file)')
    g.add_argument('--track', action='store_true', help="record each training image's loss at every update in "
                   'RUN/track/ (written at each save; python -m yolo_lrm.labelcheck ranks the images that stay hard '
                   'by it)')
    g = ap.add_argument_group('speed and hardware')
    g.add_argument('--device', default=d.device, help="cpu, cuda, cuda:N or N (default: cuda when available)")
    g.add_argument('--workers', type=int, default=d.workers, help='data loading processes')
    g.add_argument('--seed', type=int, default=d.seed, help='data order, augmentation and initial weights')
    g.add_argument('--deterministic', action='store_true', help='deterministic kernels (slower on CUDA)')
    g.add_argument('--amp', nargs='?', const='bf16', default=d.amp, choices=('off', 'bf16', 'fp16'),
                   help='mixed precision (alone: bf16; fp16 uses a gradient scaler): CUDA, or bf16 on a CPU with '
                        'native bfloat16 (AVX-512 BF16 / AMX; elsewhere float32, said in the log)')
    g.add_argument('--channels-last', action='store_true', help='NHWC memory format')
    g.add_argument('--compile', action='store_true', help='torch.compile the network')
    g.add_argument('--sync-bn', action='store_true', help='synchronised batch norm across DDP processes (CUDA)')
    return ap


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    """Command line -> TrainArgs (with --resume only --device and --workers may be given)."""
    ap = parser()
    ns = ap.parse_args(argv)
    values = vars(ns)
    if ns.resume is not None:
        defaults = vars(ap.parse_args([]))
        changed = [k for k, v in values.items() if v != defaults[k] and k not in ('resume', 'device', 'workers')]
        if changed:
            ap.error(f'--resume takes the cfg, data and options from the checkpoint; only --device and --workers may '
                     f'be given with it (got {", ".join(changed)})')
    elif not ns.cfg or not ns.data:
        ap.error('CFG and DATA are required (or --resume)')
    if ns.workers < 0 or ns.eval_interval < 0 or ns.patience < 0 or ns.save_interval < 0 or ns.save_period < 0:
        ap.error('--workers, --eval-interval, --patience, --save-interval and --save-period must be >= 0')
    if ns.backup is not None and ns.backup.lower() == 'none':
        values['backup'] = ''
    return TrainArgs(**values)


def main(argv: list[str] | None = None) -> int:
    """Run `train.py`; returns the exit status."""
    args = parse_args(argv)
    try:
        result = train(args)
    except NonFiniteLoss as exc:
        print(f'\nerror: {exc}', file=sys.stderr)
        return 1
    except SaveFailed as exc:
        print(f'\nerror: {exc}', file=sys.stderr)
        return 3
    except (CfgError, ValueError, OSError) as exc:  # OSError: a file in the way, no permission, ...
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 130 if result.reason == 'interrupted' else 0


if __name__ == '__main__':
    sys.exit(main())
