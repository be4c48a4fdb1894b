"""What a training run starts from, decided before anything is written: its options and cfg (fresh, or from the
checkpoint it resumes), the checks of every input that needs no data, how its updates are cut (`BatchPlan`), the
initial weights, mixed precision and the wrapped model.  The Trainer calls these in order; none creates a file."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable

import torch

from ..cfg import Cfg, apply_overrides, parse_cfg, parse_cfg_text
from ..checkpoint import load_checkpoint, load_weights
from ..data.datafile import DataCfg
from ..distributed import DistInfo
from ..model import Darknet
from ..runfolder import check_parent_dir
from ..weights import load_darknet_weights
from .runlog import previous_run
from .args import RESUME_KEEP, TrainArgs, cfg_overrides, find_resume_checkpoint


@dataclasses.dataclass
class ResolvedRun:
    """A run's options and cfg; for a resumed run also its folder and checkpoint."""
    args: TrainArgs
    cfg: Cfg
    run_dir: Path | None
    ckpt: dict | None


def resolve_run(args: TrainArgs) -> ResolvedRun:
    """Fresh run: the options with absolute paths and the parsed cfg.  Resume: everything from the checkpoint (only
    `RESUME_KEEP` options from the command line)."""
    if args.resume is not None:
        path = find_resume_checkpoint(args.resume, args.project)
        ckpt = load_checkpoint(path)
        if 'optimizer' not in ckpt or 'args' not in ckpt:
            raise ValueError(f'{path}: holds weights only (no optimizer/schedule state); start a new run with it '
                             f'as WEIGHTS instead of --resume')
        stored = TrainArgs(**ckpt['args'])
        resolved = dataclasses.replace(stored, **{k: getattr(args, k) for k in RESUME_KEEP}, resume=str(path))
        run_dir = path.parent.parent if path.parent.name == 'weights' else path.parent
        return ResolvedRun(resolved, parse_cfg_text(ckpt['cfg_text'], f'{path} (embedded cfg)'), run_dir, ckpt)
    if not args.cfg or not args.data:
        raise ValueError('need CFG and DATA (or --resume)')
    # absolute paths: --resume may run from another working directory
    resolved = dataclasses.replace(args, cfg=os.path.abspath(args.cfg), data=os.path.abspath(args.data),
                                   weights=os.path.abspath(args.weights) if args.weights else None,
                                   backup=os.path.abspath(args.backup) if args.backup else args.backup)
    return ResolvedRun(resolved, parse_cfg(args.cfg, cfg_overrides(args)), None, None)


def backup_dir(args: TrainArgs, data: DataCfg) -> Path | None:
    """Where Darknet's backups go: `--backup`, else the data file's `backup=` (a `.data`'s default `backup`; a
    data.yaml has none); None: nowhere."""
    if args.backup == '' or (args.backup is None and not data['backup']):
        return None
    return Path(data['backup'] if args.backup is None else args.backup)


def check_inputs(args: TrainArgs, cfg: Cfg, data: DataCfg, dist: DistInfo) -> None:
    """Input errors that need no data or model, caught before a run directory is created."""
    n, world = cfg.net, dist.world_size
    batch, subdivisions = n['batch'], n['subdivisions']
    if batch <= 0 or subdivisions <= 0 or batch % (subdivisions * world):
        raise n.error(f'batch={batch} must split into subdivisions={subdivisions} x {world} process(es) of equal '
                      f'whole mini-batches', 'batch')
    if n['max_batches'] <= 0 and args.epochs is None:
        raise n.error('max_batches must be positive (or use --epochs / --max-batches)', 'max_batches')
    if n['width'] != n['height'] or n['width'] % 32:
        raise n.error(f'training needs a square input whose side is a multiple of 32, got '
                      f'{n["width"]}x{n["height"]}', 'width')
    if args.weights and args.resume is None and not os.path.isfile(args.weights):
        raise FileNotFoundError(f'WEIGHTS {args.weights}: file not found')
    if args.sync_bn and (dist.device.type != 'cuda' or world == 1):
        raise ValueError('--sync-bn needs several CUDA processes (torchrun on GPUs); PyTorch\'s SyncBatchNorm has '
                         'no CPU implementation')
    if args.amp not in ('off', 'bf16', 'fp16'):
        raise ValueError(f'--amp {args.amp}: expected off, bf16 or fp16')
    region = cfg.region
    if region['classes'] != data.classes:
        raise region.error(f'{region["classes"]} classes, but {data.path} has {data.classes}; train with --set '
                           f'{" ".join(cfg.classes_overrides(data.classes))}', 'classes')
    if args.resume is None:
        check_run_location(args)
    backup = backup_dir(args, data)
    if backup is not None:
        check_parent_dir(backup, '--backup (Darknet backups)' if args.backup else
                         f'backup= of {data.path} (Darknet backups; --backup DIR or none changes it)')


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """How a run's updates are cut: `batch` images per update (the cfg's), as `subdivisions` mini-batches of
    `minibatch` images over all processes (`local_minibatch` in each), `max_batches` updates in all."""
    batch: int
    subdivisions: int
    minibatch: int
    local_minibatch: int
    max_batches: int


def plan_batches(args: TrainArgs, cfg: Cfg, world_size: int, train_images: int,
               log: Callable[[str], None]) -> BatchPlan:
    """The run's `BatchPlan` (after `check_inputs`); a fresh run with `--epochs` gets the updates that many passes
    over `train_images` take, written into the cfg as its `max_batches` (so the checkpoint's cfg carries them)."""
    n = cfg.net
    batch, subdivisions = n['batch'], n['subdivisions']
    if args.epochs is not None and args.resume is None:
        if args.epochs <= 0:
            raise ValueError(f'--epochs must be positive, got {args.epochs}')
        updates = math.ceil(args.epochs * train_images / batch)
        apply_overrides(cfg, [f'net.max_batches={updates}'])
        log(f'--epochs {args.epochs}: {updates} updates of {batch} images')
    minibatch = batch // subdivisions
    return BatchPlan(batch, subdivisions, minibatch, minibatch // world_size, n['max_batches'])


def check_run_location(args: TrainArgs) -> None:
    """--project must be a folder we can write; --exist-ok must not reuse a folder that holds a run."""
    project = Path(args.project)
    check_parent_dir(project, '--project')
    target = project / args.name
    held = previous_run(target) if args.exist_ok else None
    if held:
        raise FileExistsError(f'--exist-ok {target}: holds a training run already ({held}); continue it with '
                              f'--resume {target}, choose another --name, or delete the folder first')


def setup_determinism(args: TrainArgs, device: torch.device) -> None:
    """Deterministic kernels when asked (else cuDNN's autotuner on CUDA), and the seed of the initial weights."""
    if args.deterministic:
        if device.type == 'cuda':
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)  # same on every process: identical initial weights


def load_initial_weights(net: Darknet, args: TrainArgs, cfg: Cfg, log: Callable[[str], None]) -> None:
    """WEIGHTS into a fresh network: a `.pt` whole, a Darknet file as far as it goes (a partial backbone); --clear."""
    if args.weights:
        if args.weights.endswith('.pt'):
            load_weights(net, load_checkpoint(args.weights), f'{args.weights}: weights do not fit {cfg.path}')
            log(f'weights: {args.weights} (seen {net.seen:,})')
        else:
            convs = len(net.conv_layers())
            loaded = load_darknet_weights(net, args.weights, partial=True)
            what = 'all' if loaded == convs else f'the first {loaded} of {convs} (partial: the rest keep ' \
                                                 f'their random initialisation)'
            log(f'weights: {args.weights}: {what} conv layers loaded, header seen {net.seen:,}')
    if args.clear and net.seen:
        log(f'--clear: seen {net.seen:,} -> 0 (schedule, burn-in and prior restart)')
        net.seen = 0


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX, as oneDNN sees it)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mixed_precision(args: TrainArgs, device: torch.device,
                    log: Callable[[str], None]) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """The autocast dtype (None: float32) and the gradient scaler (active for fp16 only).  On a CPU only bf16, and
    only where the CPU has it: emulated (AVX2) it ran MobileNet-YOLOv2 5x slower than float32 (bench/README.md)."""
    amp = args.amp
    if device.type == 'cpu' and amp == 'fp16':
        log('--amp fp16: half precision needs CUDA; training in float32 on the CPU (--amp bf16 where the CPU has it)')
        amp = 'off'
    elif device.type == 'cpu' and amp == 'bf16' and not cpu_has_bf16():
        log(f'--amp bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bfloat16 (AVX-512 BF16 '
            f'or AMX), where it runs several times slower than float32; training in float32')
        amp = 'off'
    elif device.type not in ('cpu', 'cuda') and amp != 'off':
        log(f'--amp {amp}: mixed precision needs CUDA or a CPU; training in float32 on {device}')
        amp = 'off'
    dtype = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]
    return dtype, torch.amp.GradScaler(device.type, enabled=amp == 'fp16')


def wrap_model(net: Darknet, args: TrainArgs, dist: DistInfo) -> torch.nn.Module:
    """What the forward pass calls: the network, converted to SyncBatchNorm, in DDP, compiled, as asked."""
    model: torch.nn.Module = net
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == 'cuda' else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if args.compile:
        model = torch.compile(model)
    return model
