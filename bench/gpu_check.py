"""The prepared GPU check (issue #18): correctness on the device against the CPU, mixed precision, inference and
training throughput, LRM overhead; one table, printed and rewritten as JSON after every row.

    python bench/gpu_check.py --device cuda --json gpu-check.json         # one H100: under 8 minutes
    python bench/gpu_check.py --quick --device cpu --json quick.json      # every code path on small sizes

Sections, in the order they run (the costly, riskiest rows last, so that a timeout loses the least):
  correctness  TF32 off; the device against the CPU: the network forward with Darknet's deterministic weights
               (../shared/fixtures/darknet/README.md §0, regenerated) on the fixture's letterboxed dog, the region
               loss and its gradient for the same F, the LRM mask for the same loss, one trainer update
  amp          the demo cfg trained in fp32, bf16 and fp16 on the same batches: finite, and inside the stated band
               around fp32's loss curve
  inference    batch 1 and 64, fp32 and fp16 (autocast), network only and end to end (letterbox, decode + NMS)
  lrm          the trainer's update with LRM (K=256, NMS .7) against the same update without, interleaved
  training     `Trainer.train_update` at 416, batch 64: in memory (NCHW / channels_last, fp32 / bf16), then the
               real loader on BCCD at each `--workers` count with the fastest in-memory setting, then torch.compile
Each section has a share of `--budget-s`; a row that would start after its section's deadline is recorded as
skipped, a row that fails as an error with its message, and the run goes on.  `--quick` runs the demo cfg at small
sizes: on the CPU the correctness rows then compare the CPU with itself (they check the code, not CUDA), and bf16 /
fp16 rows run in float32 (autocast is for CUDA in the trainer and the Detector).  bench/README.md says what to carry
to a GPU machine and how to read the figures.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'bench'), str(ROOT / 'tests')]  # the package, the benchmarks, the generator

import bench_infer
import bench_lrm
import bench_train
from fixture_weights import TINY_SHA256, V2_SHA256, conv_specs, fixture_weights, sha256

from yolo_lrm.cfg import parse_cfg
from yolo_lrm.atomic import atomic_write
from yolo_lrm.data import collate
from yolo_lrm.data.loader import close_batches
from yolo_lrm.inference.detector import Detector, synchronize
from yolo_lrm.distributed import pick_device
from yolo_lrm.head import grid_boxes, split_output
from yolo_lrm.loss.region import RegionLoss
from yolo_lrm.loss.lrm import select_hard_examples
from yolo_lrm.model import Darknet
from yolo_lrm.train.args import TrainArgs
from yolo_lrm.train.trainer import NonFiniteLoss, Trainer
from yolo_lrm.weights import load_darknet_weights, save_darknet_weights

SHARED = ROOT.parent / 'shared'
CARRY = ROOT / 'bench' / 'carry'            # git-ignored: what travels to a GPU machine
VOC, TINY, MOBILENET, DEMO = ('cfg/yolov2-voc.cfg', 'cfg/yolov2-tiny-voc.cfg', 'cfg/yolov2-mobilenet-voc.cfg',
                              'cfg/demo.cfg')
FIXTURE_WEIGHTS = {VOC: (2, V2_SHA256), TINY: (1, TINY_SHA256)}  # README §0: seed and sha256; other cfgs seed 2
LRM_K, LRM_NMS = 256, 0.7
# throughput rows: a burn-in that keeps the lr tiny (a step costs the same at any lr); tiny-voc's constant lr .001
# from random weights diverges within a few updates of one repeated batch, and a NaN would end the row
TIMING_LR = ('net.burn_in=100000',)
# tolerances, device against CPU (float32, TF32 off); the forward's is the fixtures README's for Darknet parity
FORWARD_TOL = (1e-4, 1e-4)                  # atol, rtol
LOSS_RTOL = 1e-5
GRAD_TOL = (1e-5, 1e-4)
UPDATE_RTOL = 1e-3                          # |Δw_device - Δw_cpu| / |Δw_cpu| over all parameters and BN statistics
# AMP band: the mean loss of the last AMP_TAIL updates within AMP_BAND of fp32's, every update within AMP_EACH
# (bf16 autocast emulated on the CPU: 0.4 % at most, 0.1 % on the tail; the burn-in keeps the lr below 1e-4 here)
AMP_TAIL, AMP_BAND, AMP_EACH = 10, 0.02, 0.05
# what bounds training with the loader: waiting for batches more than LOADER_BOUND of the time: the loader; else,
# slower than CONTENTION of the in-memory rate: loader processes taking the cores the training process needs
LOADER_BOUND, CONTENTION = 0.10, 0.90
# in-memory training settings: (name, channels_last, amp)
VARIANTS = (('NCHW fp32', False, 'off'), ('channels_last fp32', True, 'off'), ('channels_last bf16', True, 'bf16'))
SECTIONS = {'correctness': 0.12, 'amp': 0.08, 'inference': 0.12, 'lrm': 0.08, 'training': 0.60}  # budget shares


@dataclass(frozen=True)
class Plan:
    """Sizes and counts of one mode."""
    check_cfg: str
    check_size: int
    check_batch: int
    amp_size: int
    amp_batch: int
    amp_updates: int
    cfgs: tuple[str, ...]        # training and inference
    size: int
    batch: int
    steps: int                   # timed in-memory updates per row
    window: int                  # timed loader updates per row
    workers: tuple[int, ...]
    compile: bool
    compile_reserve_s: float     # a compile row starts only with this much of the section left
    infer_batches: tuple[int, ...]
    infer_runs: int
    lrm_cfgs: tuple[str, ...]
    lrm_reps: int
    budget_s: float
    threads: int                 # torch's CPU threads; 0: torch's choice


FULL = Plan(check_cfg=VOC, check_size=416, check_batch=4, amp_size=256, amp_batch=8, amp_updates=50,
            cfgs=(VOC, TINY, MOBILENET), size=416, batch=64, steps=10, window=10, workers=(4, 8, 16), compile=True,
            compile_reserve_s=60, infer_batches=(1, 64), infer_runs=10, lrm_cfgs=(VOC, TINY), lrm_reps=10,
            budget_s=420, threads=0)
# one CPU thread: on a shared 2-core machine a second one mostly waits for a core (2.5x faster in all, measured)
QUICK = Plan(check_cfg=DEMO, check_size=96, check_batch=2, amp_size=96, amp_batch=2, amp_updates=6, cfgs=(DEMO,),
             size=128, batch=2, steps=2, window=2, workers=(0, 1), compile=False, compile_reserve_s=0,
             infer_batches=(1, 2), infer_runs=2, lrm_cfgs=(DEMO,), lrm_reps=2, budget_s=600, threads=1)


class Report:
    """The rows so far: printed as they come, rewritten atomically to the JSON file after each."""

    def __init__(self, path: Path | None, meta: dict):
        self.path, self.meta = path, meta
        self.rows: list[dict] = []
        self.sections: dict[str, dict] = {}

    def add(self, section: str, name: str, status: str, note: str = '', **metrics: object) -> None:
        """Record one row (status PASS / FAIL / ok / error / skipped) and save."""
        row = {'section': section, 'name': name, 'status': status, 'note': note, 'metrics': metrics}
        self.rows.append(row)
        print(format_row(row), flush=True)
        self.save()

    def save(self) -> None:
        """Rewrite the JSON file (a killed run leaves the previous complete version)."""
        if self.path is None:
            return
        text = json.dumps({'meta': self.meta, 'sections': self.sections, 'rows': self.rows}, indent=1, default=str)
        atomic_write(self.path, lambda f: f.write(text.encode() + b'\n'))

    def table(self) -> str:
        """Every row, section by section."""
        lines = [f'{"section":<12} {"row":<46} {"status":<8} figures']
        lines += [format_row(r) for s in SECTIONS for r in self.rows if r['section'] == s]
        return '\n'.join(lines)


def format_row(row: dict) -> str:
    """One line: section, name, status, then the figures and the note."""
    figures = ', '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in row['metrics'].items())
    note = f'  [{row["note"]}]' if row['note'] else ''
    return f'{row["section"]:<12} {row["name"]:<46} {row["status"]:<8} {figures}{note}'


@dataclass
class Context:
    """What the sections share: options, plan, device, scratch folder, report, and a few caches."""
    opts: argparse.Namespace
    plan: Plan
    device: torch.device
    tmp: Path
    report: Report
    augment: bool = True
    section: str = ''
    deadline: float = math.inf
    data: dict[int, Path] = field(default_factory=dict)
    batches: dict[tuple, tuple] = field(default_factory=dict)

    def left(self) -> float:
        """Seconds left to the current section."""
        return self.deadline - time.monotonic()

    def row(self, name: str, fn: Callable[[], None], reserve: float = 0.0) -> None:
        """Run one row unless the section's time is out; an exception becomes an error row, and the run goes on."""
        if self.left() < reserve:
            self.report.add(self.section, name, 'skipped', f'section budget spent ({reserve:.0f} s needed)')
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one broken row must not lose the rest of the table
            traceback.print_exc()
            self.report.add(self.section, name, 'error', f'{type(exc).__name__}: {exc}'[:600])
        finally:
            release(self.device)


def release(device: torch.device) -> None:
    """Free what the last row left (trainers hold the loader's workers and, on CUDA, cached blocks)."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    """Start a new GPU memory peak (the CPU's peak RSS cannot be reset)."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


# ------------------------------------------------------------------------------------------------- data, trainers
def data_file(ctx: Context, classes: int) -> Path:
    """A .data file over BCCD (`--bccd`, converted) or the generated demo-small set, made once per class count."""
    if classes not in ctx.data:
        bench_train.BCCD = Path(ctx.opts.bccd)  # make_data reads this module constant
        ctx.data[classes], source = bench_train.make_data(ctx.tmp / f'data{classes}', classes)
        found = Path(ctx.opts.bccd).is_dir()
        ctx.report.meta['data'] = source if found else f'{source.split(" (")[0]}, the fallback: no --bccd folder'
    return ctx.data[classes]


@contextlib.contextmanager
def make_trainer(ctx: Context, cfg: str, size: int, batch: int, device: torch.device | None = None,
                 workers: int = 0, channels_last: bool = False, amp: str = 'off', compile: bool = False,
                 weights: Path | None = None, overrides: tuple[str, ...] = ()) -> Iterator[Trainer]:
    """A real Trainer (one mini-batch of `batch` images per update, multi-scale off, no evaluation or backups);
    its console log is kept out of the table."""
    data = data_file(ctx, parse_cfg(ROOT / cfg).region['classes'])
    args = TrainArgs(cfg=str(ROOT / cfg), data=str(data), weights=str(weights) if weights else None,
                     project=str(ctx.tmp / 'runs'), device=str(device or ctx.device), workers=workers, batch=batch,
                     subdivisions=1, max_batches=10 ** 6, img_size=size, set=['region.random=0', *overrides],
                     amp=amp, channels_last=channels_last, compile=compile, augment=ctx.augment,
                     eval_interval=10 ** 6, save_interval=0, backup='', cache_dir=str(ctx.tmp / 'cache'))
    with contextlib.redirect_stdout(io.StringIO()):
        t = Trainer(args)
    try:
        t.net.train()
        yield t
    finally:
        t.close()


def augmentation() -> tuple[bool, str]:
    """Whether Darknet's augmentation can run (albumentations travels to a GPU machine as wheels), and why not."""
    try:
        import albumentations  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a missing package or one of its dependencies that fails to load
        return False, f'off: albumentations does not import ({type(exc).__name__}: {exc})'
    return True, 'on'


def fixed_batch(ctx: Context, t: Trainer, start: int = 0) -> tuple:
    """One collated training batch of the trainer's dataset (augmented, seeded by image index), made once; in
    pinned memory for CUDA, as the trainer's loader delivers it."""
    size, n = t.cfg.net['width'], t.plan.minibatch
    key = (t.args.data, size, n, start)
    if key not in ctx.batches:
        images, targets, paths, indices = collate([t.dataset[((start + i) % len(t.dataset), size)] for i in range(n)])
        if ctx.device.type == 'cuda':
            images, targets = images.pin_memory(), targets.pin_memory()
        ctx.batches[key] = images, targets, paths, indices
    return ctx.batches[key]


def repeat(batch: tuple) -> Iterator[tuple]:
    """The same batch forever: training without data loading."""
    return iter(lambda: batch, None)


class WaitingBatches:
    """An iterator of batches that adds up the time spent waiting for each one."""

    def __init__(self, batches: Iterator):
        self.batches, self.wait = batches, 0.0

    def __iter__(self) -> WaitingBatches:
        return self

    def __next__(self) -> tuple:
        start = time.perf_counter()
        item = next(self.batches)
        self.wait += time.perf_counter() - start
        return item


# ------------------------------------------------------------------------------------------------- correctness
def compare(device_out: torch.Tensor, cpu_out: torch.Tensor, atol: float, rtol: float) -> tuple[bool, float]:
    """allclose of a device result with the CPU's, and the largest absolute difference."""
    a, b = device_out.detach().cpu().double(), cpu_out.detach().double()
    return bool(torch.allclose(a, b, atol=atol, rtol=rtol)), float((a - b).abs().max())


def verdict(ok: bool) -> str:
    """A correctness row's status."""
    return 'PASS' if ok else 'FAIL'


def needed(state: dict, *keys: str) -> list:
    """What an earlier correctness row left for this one."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise RuntimeError(f'an earlier correctness row failed: no {", ".join(missing)} to compare with')
    return [state[k] for k in keys]


def fixture_net(ctx: Context) -> tuple[Darknet, Path, str]:
    """The correctness network on the CPU with README §0's deterministic weights, their file and a provenance note."""
    cfg, size = ROOT / ctx.plan.check_cfg, ctx.plan.check_size
    seed, digest = FIXTURE_WEIGHTS.get(ctx.plan.check_cfg, (2, None))
    path = ctx.tmp / f'{cfg.stem}_seed{seed}.weights'
    fixture_weights(conv_specs(cfg), seed, path)
    note = f'README §0 rule, seed {seed}'
    if digest:
        note += ', sha256 ' + ('as README §0' if sha256(path) == digest else 'DIFFERS from README §0')
    net = Darknet(cfg, [f'net.width={size}', f'net.height={size}'])
    load_darknet_weights(net, path)
    return net.eval(), path, note


def check_input(ctx: Context) -> tuple[torch.Tensor, str]:
    """The fixture's letterboxed dog (and its mirror image, then seeded noise, up to the check batch)."""
    size, n = ctx.plan.check_size, ctx.plan.check_batch
    path = Path(ctx.opts.fixtures) / f'input_dog_letterbox_3x{size}x{size}.f32'
    g = torch.Generator().manual_seed(0)
    if path.is_file():
        dog = torch.from_numpy(np.fromfile(path, '<f4').astype(np.float32)).view(1, 3, size, size)
        what = f'fixture dog {size}x{size}'
    else:
        dog, what = torch.rand(1, 3, size, size, generator=g), f'random input: no {path.name} at --fixtures'
    x = torch.cat([dog, dog.flip(-1), torch.rand(max(0, n - 2), 3, size, size, generator=g)])[:n]
    return x, what


def section_correctness(ctx: Context) -> None:
    """Forward, loss + gradient, LRM mask and one update: the device against the CPU, TF32 off."""
    same = ctx.device.type == 'cpu'
    note = 'device is the CPU: compared with itself (checks the code path, not CUDA)' if same else ''
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        state: dict = {}
        ctx.row('forward (fixture weights)', lambda: check_forward(ctx, state, note))
        ctx.row('region loss and dLoss/dF', lambda: check_loss(ctx, state, note))
        ctx.row(f'LRM mask K={LRM_K} NMS {LRM_NMS:g} (same loss)', lambda: check_mask(ctx, state, note))
        ctx.row('one trainer update', lambda: check_update(ctx, state, note))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def check_forward(ctx: Context, state: dict, note: str) -> None:
    """The network's output F on the device against the CPU's."""
    net, state['weights'], provenance = fixture_net(ctx)
    x, what = check_input(ctx)
    with torch.no_grad():
        cpu = net(x)
        dev = copy.deepcopy(net).to(ctx.device)(x.to(ctx.device))
    state.update(net=net, F=cpu)
    ok, err = compare(dev, cpu, *FORWARD_TOL)
    ctx.report.add('correctness', 'forward (fixture weights)', verdict(ok), '; '.join(filter(None, [note, what,
                   provenance])), cfg=Path(ctx.plan.check_cfg).stem, batch=len(x), max_abs=err,
                   atol=FORWARD_TOL[0], rtol=FORWARD_TOL[1], max_value=float(cpu.abs().max()))


def region_loss(crit: RegionLoss, out: torch.Tensor, targets: torch.Tensor) -> tuple[object, torch.Tensor]:
    """The criterion's result for F (seen 0: the anchor prior included) and dLoss/dF."""
    f = out.detach().clone().requires_grad_()
    result = crit(f, targets, 0)
    result.total.backward()
    return result, f.grad


def check_loss(ctx: Context, state: dict, note: str) -> None:
    """The region loss of the CPU's F, and its gradient, on the device against the CPU."""
    net, out = needed(state, 'net', 'F')
    targets = bench_lrm.random_targets(len(out), net.num_classes, torch.Generator().manual_seed(1))
    cpu, grad_cpu = region_loss(RegionLoss(net.region, net.cfg.lrm), out, targets)
    dev, grad_dev = region_loss(RegionLoss(net.region, net.cfg.lrm), out.to(ctx.device), targets.to(ctx.device))
    state.update(targets=targets, per_prediction=cpu.per_prediction.detach())
    loss_ok, loss_err = compare(dev.total, cpu.total, 0.0, LOSS_RTOL)
    grad_ok, grad_err = compare(grad_dev, grad_cpu, *GRAD_TOL)
    ctx.report.add('correctness', 'region loss and dLoss/dF', verdict(loss_ok and grad_ok), note,
                   loss=float(cpu.total.detach()), loss_abs_err=loss_err, loss_rtol=LOSS_RTOL, grad_max_abs=grad_err,
                   grad_atol=GRAD_TOL[0], grad_rtol=GRAD_TOL[1], grad_max=float(grad_cpu.abs().max()))


def hard_example_inputs(net: Darknet, out: torch.Tensor, per_prediction: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What LRM ranks, as the criterion builds it: loss (B, N), boxes (B, N, 4), predicted classes (B, N)."""
    raw, b = split_output(out, net.num_anchors), len(out)
    boxes = grid_boxes(raw, net.anchors).reshape(b, -1, 4)
    return per_prediction.reshape(b, -1), boxes, raw[:, :, 5:].argmax(2).reshape(b, -1)


def check_mask(ctx: Context, state: dict, note: str) -> None:
    """The LRM selection of the CPU's losses on the device against the CPU's: identical, or FAIL."""
    net, out, per_prediction, targets = needed(state, 'net', 'F', 'per_prediction', 'targets')
    inputs = hard_example_inputs(net, out, per_prediction)
    cpu = select_hard_examples(*inputs, LRM_K, LRM_NMS)
    dev = select_hard_examples(*(t.to(ctx.device) for t in inputs), LRM_K, LRM_NMS).cpu()
    # the whole criterion with LRM on each device's own arithmetic: near-ties may rank differently (information)
    crit = bench_lrm.criteria(net, [LRM_K], LRM_NMS)[f'K={LRM_K} NMS {LRM_NMS:g}']
    own_cpu = crit(out, targets, 0).mask
    own_dev = copy.deepcopy(crit)(out.to(ctx.device), targets.to(ctx.device), 0).mask.cpu()
    ctx.report.add('correctness', f'LRM mask K={LRM_K} NMS {LRM_NMS:g} (same loss)', verdict(torch.equal(dev, cpu)),
                   note, kept=int(cpu.sum()), predictions=cpu.numel(), differing=int((dev != cpu).sum()),
                   criterion_masks_differing=int((own_dev != own_cpu).sum()))


def parameters(t: Trainer) -> torch.Tensor:
    """Every float of the network's state (weights and BN statistics), flattened, on the CPU."""
    return torch.cat([v.detach().float().cpu().flatten() for v in t.net.state_dict().values() if v.is_floating_point()])


def one_update(ctx: Context, device: torch.device, weights: Path) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Weights before and after one trainer update on `device` (burn-in off: a visible step), and the loss."""
    p = ctx.plan
    with make_trainer(ctx, p.check_cfg, p.check_size, p.check_batch, device=device, weights=weights,
                      overrides=('net.burn_in=0',)) as t:
        before = parameters(t)
        values, _ = t.train_update(iter([fixed_batch(ctx, t)]))
        return before, parameters(t), values['loss']


def check_update(ctx: Context, state: dict, note: str) -> None:
    """One trainer update from the same weights and batch: the device's step against the CPU's."""
    weights, = needed(state, 'weights')
    before, cpu, loss_cpu = one_update(ctx, torch.device('cpu'), weights)
    before_dev, dev, loss_dev = one_update(ctx, ctx.device, weights)
    step_cpu, step_dev = cpu - before, dev - before_dev
    rel = float((step_dev - step_cpu).norm() / step_cpu.norm().clamp_min(1e-30))
    same_start = torch.equal(before, before_dev)
    ok = same_start and rel <= UPDATE_RTOL and math.isclose(loss_dev, loss_cpu, rel_tol=1e-4)
    ctx.report.add('correctness', 'one trainer update', verdict(ok), note, cfg=Path(ctx.plan.check_cfg).stem,
                   batch=ctx.plan.check_batch, loss_cpu=loss_cpu, loss_device=loss_dev, update_rel_err=rel,
                   update_rtol=UPDATE_RTOL, weights_max_abs=float((dev - cpu).abs().max()),
                   update_max=float(step_cpu.abs().max()), same_start=same_start)


# ----------------------------------------------------------------------------------------------------------- amp
def section_amp(ctx: Context) -> None:
    """The demo cfg in fp32, then bf16 and fp16, on the same batches from the same start."""
    curves: dict[str, list[float]] = {}
    for amp in ('off', 'bf16', 'fp16'):
        ctx.row(f'demo cfg {amp}', lambda amp=amp: amp_row(ctx, amp, curves))


def loss_curve(ctx: Context, amp: str) -> tuple[list[float], str]:
    """The loss of each update of the demo cfg under `amp` (NaN from a non-finite update on), and a note."""
    p = ctx.plan
    with make_trainer(ctx, DEMO, p.amp_size, p.amp_batch, amp=amp) as t:
        batches = [fixed_batch(ctx, t, start=i * t.plan.minibatch) for i in range(p.amp_updates)]
        losses: list[float] = []
        with contextlib.suppress(NonFiniteLoss):  # the trainer stops before a non-finite step
            for batch in batches:
                losses.append(t.train_update(iter([batch]))[0]['loss'])
        note = f'--amp {amp} needs CUDA: float32 here' if amp != 'off' and t.amp_dtype is None else ''
    return losses + [math.nan] * (p.amp_updates - len(losses)), note


def amp_row(ctx: Context, amp: str, curves: dict[str, list[float]]) -> None:
    """fp32's curve (finite), or an AMP curve inside the band around it."""
    losses, note = loss_curve(ctx, amp)
    curves[amp] = losses
    finite = all(math.isfinite(v) for v in losses)
    figures = {'updates': len(losses), 'first_loss': losses[0], 'last_loss': losses[-1]}
    if amp == 'off':
        ctx.report.add('amp', f'demo cfg {amp}', verdict(finite), note, **figures)
        return
    if 'off' not in curves:
        raise RuntimeError('no fp32 curve to compare with')
    ref, tail = curves['off'], min(AMP_TAIL, len(losses))
    each = max(abs(a / r - 1) for a, r in zip(losses, ref))
    final = abs(statistics.fmean(losses[-tail:]) / statistics.fmean(ref[-tail:]) - 1)
    ok = finite and final <= AMP_BAND and each <= AMP_EACH
    band = f'band: mean of the last {tail} losses within {AMP_BAND:.0%} of fp32\'s, each within {AMP_EACH:.0%}'
    ctx.report.add('amp', f'demo cfg {amp}', verdict(ok), '; '.join(filter(None, [band, note])), **figures,
                   final_dev=final, max_dev=each)


# ----------------------------------------------------------------------------------------------------- inference
def section_inference(ctx: Context) -> None:
    """Each cfg with BN fused and channels_last, fp32 and fp16 autocast, at each batch size."""
    for cfg in ctx.plan.cfgs:
        for half in (None, 'fp16'):
            ctx.row(f'{Path(cfg).stem} {half or "fp32"}', lambda cfg=cfg, half=half: inference_rows(ctx, cfg, half))


def inference_rows(ctx: Context, cfg: str, half: str | None) -> None:
    """One Detector (random weights, BN fused, channels_last) timed at each batch size."""
    size = ctx.plan.size
    torch.manual_seed(0)  # random weights: speed does not depend on them
    net = Darknet(ROOT / cfg, [f'net.width={size}', f'net.height={size}']).to(ctx.device)
    det = Detector(net, (size, size), half=half, channels_last=True)
    note = 'fp16 autocast is CUDA-only: float32 here' if half and det.dtype is None else ''
    for batch in ctx.plan.infer_batches:
        reset_peak(ctx.device)
        # measure() calls the bare network for its network-only figure: give it the autocast the Detector uses
        with torch.autocast(ctx.device.type, dtype=det.dtype, enabled=det.dtype is not None):
            net_t, e2e_t = bench_infer.measure(det, batch, ctx.plan.infer_runs)
        ctx.report.add('inference', f'{Path(cfg).stem} {half or "fp32"} batch {batch}', 'ok', note,
                       net_img_s=1 / net_t.wall, net_ms=net_t.wall * 1e3, e2e_img_s=1 / e2e_t.wall,
                       e2e_ms=e2e_t.wall * 1e3, batch_latency_ms=e2e_t.wall * batch * 1e3,
                       peak_mb=bench_train.peak_memory_mb(ctx.device))


# ----------------------------------------------------------------------------------------------------------- lrm
def section_lrm(ctx: Context) -> None:
    """The trainer's in-memory update with LRM against the same update without it."""
    for cfg in ctx.plan.lrm_cfgs:
        ctx.row(f'{Path(cfg).stem} K={LRM_K} NMS {LRM_NMS:g}', lambda cfg=cfg: lrm_row(ctx, cfg))


def lrm_row(ctx: Context, cfg: str) -> None:
    """Interleaved updates of two trainers, with and without LRM, on the same batch."""
    p, mining = ctx.plan, (f'lrm.hard_examples={LRM_K}', f'lrm.nms={LRM_NMS}')
    with make_trainer(ctx, cfg, p.size, p.batch, overrides=TIMING_LR) as plain, \
            make_trainer(ctx, cfg, p.size, p.batch, overrides=(*TIMING_LR, *mining)) as mined:
        batch = fixed_batch(ctx, plain)
        times: dict[str, list[float]] = {'plain': [], 'mined': []}
        for rep in range(p.lrm_reps + 1):  # the first round warms up; the order alternates against drift
            for name in ('plain', 'mined') if rep % 2 else ('mined', 'plain'):
                update = (plain if name == 'plain' else mined).train_update
                seconds = bench_lrm.timed(lambda update=update: update(iter([batch])), ctx.device)
                if rep:
                    times[name].append(seconds)
    base, lrm = statistics.median(times['plain']), statistics.median(times['mined'])
    ctx.report.add('lrm', f'{Path(cfg).stem} K={LRM_K} NMS {LRM_NMS:g}', 'ok',
                   'ratio: median update with LRM / without; noise: (max/min - 1) of the updates without',
                   size=p.size, batch=p.batch, ratio=lrm / base, step_ms=base * 1e3, lrm_step_ms=lrm * 1e3,
                   noise=max(times['plain']) / min(times['plain']) - 1)


# ------------------------------------------------------------------------------------------------------ training
def section_training(ctx: Context) -> None:
    """In memory per setting, the loader per worker count with each cfg's fastest setting, torch.compile last."""
    p, fastest = ctx.plan, {}
    for cfg in p.cfgs:
        for variant in VARIANTS:
            ctx.row(f'{Path(cfg).stem} {variant[0]} in memory',
                    lambda cfg=cfg, variant=variant: memory_row(ctx, cfg, variant, fastest))
    for cfg in p.cfgs:
        ctx.row(f'{Path(cfg).stem} checkpoint save', lambda cfg=cfg: save_row(ctx, cfg, fastest))
    for cfg in p.cfgs:
        for workers in p.workers:
            ctx.row(f'{Path(cfg).stem} loader, {workers} workers',
                    lambda cfg=cfg, workers=workers: loader_row(ctx, cfg, workers, fastest))
    for cfg in p.cfgs:
        name = f'{Path(cfg).stem} compile in memory'
        if not p.compile:
            ctx.report.add('training', name, 'skipped', 'torch.compile is left out of --quick (minutes of warm-up)')
            continue
        ctx.row(name, lambda cfg=cfg: memory_row(ctx, cfg, fastest.get(cfg, VARIANTS[0])[:3], {}, compile=True),
                reserve=p.compile_reserve_s)


def memory_row(ctx: Context, cfg: str, variant: tuple, fastest: dict, compile: bool = False) -> None:
    """Updates on one batch held in memory; remembers the fastest setting per cfg."""
    (name, channels_last, amp), p = variant[:3], ctx.plan
    with make_trainer(ctx, cfg, p.size, p.batch, channels_last=channels_last, amp=amp, compile=compile,
                      overrides=TIMING_LR) as t:
        batch = fixed_batch(ctx, t)
        reset_peak(ctx.device)
        start = time.perf_counter()
        times = bench_train.timed_updates(t, repeat(batch), p.steps, ctx.device)[0]
        warmup = time.perf_counter() - start - sum(times)
        note = f'--amp {amp} needs CUDA: float32 here' if amp != 'off' and t.amp_dtype is None else ''
    rate = p.batch / statistics.median(times)
    if not compile and rate > fastest.get(cfg, (0,) * 4)[3]:
        fastest[cfg] = (name, channels_last, amp, rate)
    ctx.report.add('training', f'{Path(cfg).stem} {"compile" if compile else name} in memory', 'ok',
                   '; '.join(filter(None, [name if compile else '', note])), img_s=rate,
                   step_ms=statistics.median(times) * 1e3, warmup_s=warmup,
                   peak_mb=bench_train.peak_memory_mb(ctx.device))


def save_row(ctx: Context, cfg: str, fastest: dict) -> None:
    """What a save costs the trainer (every `--save-interval` updates, 100 by default): `last.pt` with the momentum
    buffers plus Darknet's `.backup`, both atomic with fsync; as a share of 100 updates at the fastest in-memory
    rate."""
    p = ctx.plan
    with make_trainer(ctx, cfg, p.size, p.batch, overrides=TIMING_LR) as t:
        t.train_update(iter([fixed_batch(ctx, t)]))  # the optimizer's momentum buffers exist after a step
        backup, times = ctx.tmp / 'save.backup', []
        for _ in range(3):
            start = time.perf_counter()
            t._save(final=False)  # weights/last.pt, as the loop does it
            save_darknet_weights(t.net, backup)
            times.append(time.perf_counter() - start)
        size = (t.weights_dir / 'last.pt').stat().st_size + backup.stat().st_size
    save_s = statistics.median(times)
    per_100 = 100 * p.batch / fastest[cfg][3] if cfg in fastest else math.nan
    ctx.report.add('training', f'{Path(cfg).stem} checkpoint save', 'ok', 'into a temporary folder', save_s=save_s,
                   mb=size / 2 ** 20, of_100_updates=save_s / per_100)


def loader_rate(t: Trainer, updates: int, device: torch.device) -> tuple[float, float]:
    """Images/s of `updates` updates fed by the trainer's own loader, and the share of that time spent waiting for
    a batch.  Timing starts once each worker's first batch is in: they come at about the same time."""
    batches = WaitingBatches(iter(t.loader))
    try:
        for _ in range(max(1, t.args.workers)):
            t.train_update(batches)
        synchronize(device)
        batches.wait, start = 0.0, time.perf_counter()
        for _ in range(updates):
            t.train_update(batches)
        synchronize(device)
        elapsed = time.perf_counter() - start
    finally:
        close_batches(batches.batches)
    return updates * t.plan.batch / elapsed, batches.wait / elapsed


def loader_row(ctx: Context, cfg: str, workers: int, fastest: dict) -> None:
    """The trainer fed by its own loader with `workers` processes, in the cfg's fastest in-memory setting."""
    p = ctx.plan
    name, channels_last, amp, memory_rate = fastest.get(cfg, (*VARIANTS[0], math.nan))
    with make_trainer(ctx, cfg, p.size, p.batch, workers=workers, channels_last=channels_last, amp=amp,
                      overrides=TIMING_LR) as t:
        t.train_update(iter([fixed_batch(ctx, t)]))  # kernels chosen before the loader starts
        reset_peak(ctx.device)
        rate, waiting = loader_rate(t, p.window, ctx.device)
    of_memory = rate / memory_rate
    bound = 'loader' if waiting > LOADER_BOUND else 'contention' if of_memory < CONTENTION else \
        'GPU' if ctx.device.type == 'cuda' else 'CPU step'
    ctx.report.add('training', f'{Path(cfg).stem} loader, {workers} workers', 'ok',
                   f'{name}; {ctx.report.meta.get("data", "")}; augmentation {ctx.report.meta["augmentation"]}',
                   img_s=rate, of_memory=of_memory, waiting_share=waiting, bound=bound,
                   peak_mb=bench_train.peak_memory_mb(ctx.device))


# ---------------------------------------------------------------------------------------------------------- main
RUNNERS: dict[str, Callable[[Context], None]] = {
    'correctness': section_correctness, 'amp': section_amp, 'inference': section_inference, 'lrm': section_lrm,
    'training': section_training}


def run_sections(ctx: Context, names: list[str]) -> None:
    """Each section in turn, with its share of what is left of the budget (time a section saves goes on)."""
    end = time.monotonic() + ctx.plan.budget_s
    for i, name in enumerate(names):
        start = time.monotonic()
        ctx.section = name
        ctx.deadline = start + (end - start) * SECTIONS[name] / sum(SECTIONS[n] for n in names[i:])
        ctx.report.sections[name] = {'status': 'running'}
        try:
            RUNNERS[name](ctx)
            status = 'done'
        except Exception as exc:  # noqa: BLE001 - nor one broken section
            traceback.print_exc()
            status = f'error: {type(exc).__name__}: {exc}'[:600]
            ctx.report.add(name, '(section)', 'error', status)
        finally:
            release(ctx.device)
        ctx.report.sections[name] = {'status': status, 'seconds': round(time.monotonic() - start, 1)}
        ctx.report.save()


def default_dir(shared: Path, carried: Path) -> str:
    """../shared/... beside a checkout, else the carried copy."""
    return str(shared if shared.is_dir() else carried)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='', help='cpu, cuda, cuda:N (default: CUDA when available)')
    ap.add_argument('--quick', action='store_true', help='the demo cfg at small sizes: every code path, any device')
    ap.add_argument('--json', help='write the table here (rewritten after every row)')
    ap.add_argument('--bccd', default=default_dir(SHARED / 'datasets' / 'BCCD', CARRY / 'BCCD'),
                    help='raw BCCD (VOC layout), converted on the fly; absent: the generated demo-small set')
    ap.add_argument('--fixtures', default=default_dir(SHARED / 'fixtures' / 'darknet', CARRY / 'fixtures'),
                    help='Darknet fixture folder (its input_dog_letterbox_*.f32)')
    ap.add_argument('--sections', nargs='+', choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument('--budget-s', type=float, help='seconds for all sections (default: 420, --quick 600)')
    ap.add_argument('--workers', type=int, nargs='+', help='loader worker counts (default: 4 8 16, --quick 0 1)')
    ap.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s, --quick 1)')
    return ap.parse_args(argv)


def make_plan(opts: argparse.Namespace) -> Plan:
    """The mode's plan with the command line's changes."""
    plan = QUICK if opts.quick else FULL
    changes = {'budget_s': opts.budget_s, 'workers': tuple(opts.workers) if opts.workers else None,
               'threads': opts.threads}
    return Plan(**{**asdict(plan), **{k: v for k, v in changes.items() if v is not None}})


def machine(device: torch.device, plan: Plan, opts: argparse.Namespace) -> dict:
    """What ran where: in the JSON's meta."""
    shm = Path('/dev/shm')
    return {'machine': bench_lrm.machine_info(device), 'device': str(device), 'torch': torch.__version__,
            'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), 'python': platform.python_version(),
            'cpus': os.cpu_count(), 'shm_free_gb': shutil.disk_usage(shm).free / 2 ** 30 if shm.is_dir() else None,
            'mode': 'quick' if opts.quick else 'full', 'fixtures': opts.fixtures, 'bccd': opts.bccd,
            'started': time.strftime('%Y-%m-%d %H:%M:%S'), 'plan': asdict(plan)}


def main(argv: list[str] | None = None) -> int:
    """Run the sections; exit status 1 when a row failed or broke."""
    opts = parse_args(argv)
    plan, device = make_plan(opts), pick_device(opts.device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    report = Report(Path(opts.json) if opts.json else None, machine(device, plan, opts))
    augment, report.meta['augmentation'] = augmentation()
    print(f'{report.meta["machine"]}; {report.meta["mode"]} mode, budget {plan.budget_s:.0f} s', flush=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as tmp:
        run_sections(Context(opts, plan, device, Path(tmp), report, augment), opts.sections)
    report.meta['seconds'] = round(time.monotonic() - start, 1)
    report.save()
    print(f'\n{report.table()}\n{report.meta["seconds"]:.0f} s; data: {report.meta.get("data", "-")}')
    return int(any(r['status'] in ('FAIL', 'error') for r in report.rows))


if __name__ == '__main__':
    sys.exit(main())
