"""The training loop behind `python train.py CFG DATA [WEIGHTS]`, Darknet's `detector train` in PyTorch.

One update = `batch` images (the cfg's `[net] batch`) run as `subdivisions` mini-batches (split further over DDP
processes); each mini-batch's summed loss is divided by the full batch and the gradients accumulate, then one SGD
step (`optim.py`) with the lr of `schedule.learning_rate(net, k)` for the k-th update.  `seen` counts images and is
incremented before each forward, as Darknet does: it drives the 0.01 anchor prior (`seen < 12800`), the update
count and therefore the schedule, and it is saved in every checkpoint and `.weights` file.

Host synchronisation: none inside the mini-batch loop; once per update all logged numbers travel in one tensor (one
all-reduce under DDP, one copy to the host), and the non-finite check runs on it before the optimizer step, so NaN
weights are never produced or saved.  `--track`'s per-image losses stay on the device until the next save.

The run directory (`runs/train/exp`, `exp2`, ...) holds the resolved cfg and data files, `args.json`, `train.log`,
the dataset scan log, `results.csv`/`results.png`, `weights/{last,best}.pt` + `weights/last.weights`, with `--track`
`track/` (`track.py`: each training image's loss at every update, a chunk written with each resumable checkpoint);
Darknet backups (`<cfg>.backup`, `<cfg>_<n>.weights`, `<cfg>_final.weights`) go to the data file's `backup=` folder, or to
`TrainArgs.backup` (`--backup`), or nowhere when that is '' (runs sharing one cfg would overwrite each other's there).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import distributed as dist_utils
from ..allocator import keep_freed_memory
from ..cfg import CfgError
from ..atomic import remove_stale_temporaries
from ..checkpoint import load_weights, model_checkpoint, rng_state, save_checkpoint, set_rng_state
from ..weights import save_darknet_weights
from . import stats
from ..loss.region import RegionLoss
from ..loss.mining import mining_on, reports_lrm
from ..model import Darknet
from .optim import build_optimizer, loss_scale, set_learning_rate
from ..data import ListDataset, MultiScaleBatchSampler, collate, hyp_from_cfg, prepare_data, scan_dataset
from ..data.datafile import parse_data
from ..data.loader import closing_batches, train_loader
from ..evaluation import evaluate as evaluation  # evaluation.evaluate_model looked up at each call: tests replace it
from ..evaluation.evaluate import EvalResult
from ..evaluation.resultfiles import unique_ids
from ..lockfile import RunLock, acquire
from ..reports.run import RunReports
from ..runfolder import increment_dir
from .runlog import Meter, ResultsCsv, RunLog, plot_results
from .runstate import RunState
from .args import TrainArgs, TrainResult, cfg_overrides  # what a run is asked to do
from .schedule import current_batch, learning_rate, schedule_warnings
from .stopping import NonFiniteLoss, SaveFailed, StopRequest, nonfinite_message, save_failure, tensor_bytes
from .setup import (BatchPlan, backup_dir, check_inputs, load_initial_weights, mixed_precision, plan_batches,
                    resolve_run, setup_determinism, wrap_model)
from .track import check_resumed_list, drop_after, write_chunk, write_images


class Trainer:
    """One training run: `Trainer(args).run()`.  See the module docstring for what it does and writes."""

    def __init__(self, args: TrainArgs):
        self._lock: RunLock | None = None  # owns the run folder from before its first write (lockfile.py)
        try:
            self._setup(args)
        except BaseException:
            self._release()
            raise

    def _setup(self, args: TrainArgs) -> None:
        """Everything `__init__` does: read and check every input, then open the run folder."""
        self.dist = dist_utils.init_distributed(args.device)
        self.device = self.dist.device
        if self.device.type == 'cpu':
            keep_freed_memory()
        self.log = RunLog(echo=self.dist.main)   # written to the run directory once it exists
        self.reports: RunReports | None = None   # pictures and TensorBoard, main process only
        self._last_eval: EvalResult | None = None
        self._last_map: float | None = None      # the last evaluation's mAP, on every process
        resolved = resolve_run(args)             # options and cfg; nothing on disk yet
        self.args, self.cfg, self.run_dir = resolved.args, resolved.cfg, resolved.run_dir
        if self.run_dir is not None and self.dist.main:  # --resume: own the folder before results.csv is cut
            self._lock = acquire(self.run_dir, self.log.info)
        self.data = parse_data(self.args.data)
        check_inputs(self.args, self.cfg, self.data, self.dist)
        setup_determinism(self.args, self.device)
        self._build_data()                       # generates a built-in set, scans train= and valid=
        self.plan: BatchPlan = plan_batches(self.args, self.cfg, self.dist.world_size, len(self.dataset),
                                            self.log.info)
        self.net = self._build_model(resolved.ckpt)  # the bare network: weights, seen, checkpoints, evaluation
        self.crit = RegionLoss(self.cfg.region, self.cfg.lrm)  # the loss from the run's cfg: [lrm] is training-only
        self.amp_dtype, self.scaler = mixed_precision(self.args, self.device, self.log.info)
        self.optimizer = build_optimizer(self.net)  # after the move to the device: its state then lives there too
        self.state = self._initial_state(resolved.ckpt)  # restores optimizer, scaler and RNG when resuming
        self.wrapped = wrap_model(self.net, self.args, self.dist)  # what the forward pass calls (DDP, compiled)
        self._check_schedule()
        if self.args.track and self.run_dir is not None:  # --resume: the kept chunks index the training list
            check_resumed_list(self.run_dir / 'track', self.dataset.paths, self.state.update)
        self._open_run_dir()                     # only now: every input has been read and checked
        self.loader = self._build_loader()
        self._stop: StopRequest | None = None
        self._skipped_valid: set[str] = set()
        # --track: (update, image indices on the host, their losses on the device) per mini-batch since the last save
        self._track: list[tuple[int, torch.Tensor, torch.Tensor]] | None = [] if self.args.track else None

    # ------------------------------------------------------------------------------------------------ setup
    def _build_data(self) -> None:
        """Generate a built-in dataset if asked, read the names, scan the train= and valid= lists."""
        if not self.data['train']:
            raise CfgError(f'{self.data.path}: no train= list')

        def scan() -> None:
            self.dataset = ListDataset(self.data.images('train'), self.data.classes, augment=self.args.augment,
                                       hyp=hyp_from_cfg(self.cfg), max_truths=self.cfg.region['max'],
                                       cache_dir=self.args.cache_dir)
            self.valid_report = scan_dataset(self.data.images('valid'), self.data.classes, self.args.cache_dir) \
                if self.data['valid'] else None

        # rank 0 first: it generates a built-in dataset and writes the scan caches that the others then read
        if self.dist.main:
            prepare_data(self.data)
            scan()
        dist_utils.barrier(self.dist)
        if not self.dist.main:
            scan()
        self.names = self.data.names()
        self.dataset.report.require_boxes()
        self._check_valid_list()
        for what, report in (('train', self.dataset.report), ('valid', self.valid_report)):
            for message in report.warnings() if report is not None else ():
                self.log.info(f'warning: {what}: {message}')

    def _check_valid_list(self) -> None:
        """The valid= list is scanned like train=: wrong class ids stop the run; unusable images are skipped."""
        report = self.valid_report
        if report is None:
            return
        report.raise_errors()
        if not report.entries:
            raise CfgError(f'{self.data.path}: valid= {self.data["valid"]}: the list is empty')
        if not report.images:
            raise CfgError(f'{self.data.path}: valid= {self.data["valid"]}: no usable images out of '
                           f'{report.entries} entries:\n' + '\n'.join(f'  {issue}' for issue in report.issues[:10]))
        unique_ids(report.images)  # now, not at the first evaluation: one id for two images would mix results

    def _build_model(self, ckpt: dict | None) -> Darknet:
        """The network with its initial (or resumed) weights, on the device."""
        net = Darknet(self.cfg)
        if ckpt is None:
            load_initial_weights(net, self.args, self.cfg, self.log.info)
        else:
            load_weights(net, ckpt, f'{self.args.resume}: weights do not fit its own cfg')
        net.to(self.device)
        if self.args.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def _initial_state(self, ckpt: dict | None) -> RunState:
        """A fresh run starts at the initial weights' `seen` (Darknet continues its schedule); a resumed run where
        its checkpoint stopped, with the optimizer, scaler and RNG states restored."""
        plan = self.plan
        if ckpt is None:
            seen = int(self.net.seen)
            state = RunState(seen=seen, update=current_batch(seen, plan.batch))
            if state.update >= plan.max_batches:
                raise ValueError(f'{self.args.weights}: seen {seen:,} images = {state.update} updates of '
                                 f'{plan.batch}, not below max_batches={plan.max_batches}; pass --clear to restart '
                                 f'the schedule')
            if state.update:
                self.log.info(f'continuing Darknet\'s schedule at update {state.update} (seen {seen:,}; --clear '
                              f'restarts it)')
            return state
        self.optimizer.load_state_dict(ckpt['optimizer'])
        if ckpt.get('scaler'):
            self.scaler.load_state_dict(ckpt['scaler'])
        state = RunState.from_checkpoint(ckpt)
        self.net.seen = state.seen
        set_rng_state(ckpt['rng'])
        if self.dist.main:
            ResultsCsv(self.run_dir / 'results.csv').truncate_after(state.update)
        self.log.info(f'resumed from {self.args.resume}: update {state.update}/{plan.max_batches}, '
                      f'seen {state.seen:,}')
        return state

    def _check_schedule(self) -> None:
        """Say what will run, and fail now rather than mid-run on impossible schedule settings."""
        n, r, lrm, plan = self.cfg.net, self.cfg.region, self.cfg.lrm, self.plan
        procs = f' x {self.dist.world_size} processes' if self.dist.enabled else ''
        mining = f'{lrm["mode"]} K={lrm["hard_examples"]} nms={lrm["nms"]:g}' if mining_on(lrm) else 'off'
        if lrm['probe']:
            mining += ', probe on' + ('' if mining_on(lrm) else f' (what K={lrm["probe_k"]} nms={lrm["probe_nms"]:g} '
                                                                f'would keep; the loss is untouched)')
        self.log.info(f'batch {plan.batch} = {plan.subdivisions} x {plan.local_minibatch} images{procs}, '
                      f'{plan.max_batches} updates ({plan.max_batches * plan.batch / len(self.dataset):.1f} epochs), '
                      f'lr {n["learning_rate"]:g} policy {n["policy"]}, burn_in {n["burn_in"]}, momentum '
                      f'{n["momentum"]:g}, decay {n["decay"]:g}; {r["loss"]}, multi-scale '
                      f'{"on" if r["random"] else "off"}, augmentation {"on" if self.args.augment else "off"}, '
                      f'hard-example mining {mining}')
        for message in schedule_warnings(n):
            self.log.info(f'warning: {message}')
        learning_rate(n, max(1, self.state.update))

    def _open_run_dir(self) -> None:
        """Create (fresh run) the run directory, then write the log so far, the scan logs and the run files."""
        if self.run_dir is None:
            name = increment_dir(Path(self.args.project) / self.args.name, self.args.exist_ok) if self.dist.main \
                else None
            if name is not None:  # before anything is written: a second run on this folder is refused
                self._lock = acquire(name, self.log.info)
            self.run_dir = Path(dist_utils.broadcast_object(str(name) if name else None, self.dist))
        self.weights_dir = self.run_dir / 'weights'
        if not self.dist.main:
            return
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.weights_dir)  # left by a kill during a save
        self.log.attach(self.run_dir / 'train.log')
        self.log.info(f'yolo_lrm train: {self.run_dir}  device {self.device}'
                      + (f' x {self.dist.world_size} processes' if self.dist.enabled else ''))
        self._write_scan_log()
        self._write_run_files()
        if self.args.track:
            self._open_track()
        self.reports = RunReports(self.run_dir, self.names, self.log.info)

    def _open_track(self) -> None:
        """track/images.txt, the dataset's order that the records index; a resumed run first drops the chunks past
        its checkpoint (it redoes those updates)."""
        folder = self.run_dir / 'track'
        dropped = drop_after(folder, self.state.update)
        if dropped:
            self.log.info(f'track: dropped {", ".join(dropped)} (past update {self.state.update}, where the run '
                          f'goes on)')
        folder.mkdir(exist_ok=True)
        write_images(folder, self.dataset.paths)

    def _write_scan_log(self) -> None:
        """dataset-scan.log: the issues of train= and valid=; later undecodable images are appended to it."""
        path = self.run_dir / 'dataset-scan.log'
        self.dataset.report.write_log(path)
        self.dataset.log_file = str(path)  # before the loader copies the dataset into its workers
        lists = [('train', self.dataset.report)]
        if self.valid_report is not None:
            self.valid_report.write_log(path, append=True)
            lists.append(('valid', self.valid_report))
        for what, report in lists:
            self.log.info(f'{what}: {len(report.images)} images from {self.data[what]} ({len(report.issues)} '
                          f'issues{", see " + path.name if report.issues else ""})')

    def _build_loader(self) -> DataLoader:
        """Batches in the order of the seeded multi-scale sampler, from the update the run starts at."""
        plan = self.plan
        sampler = MultiScaleBatchSampler(
            len(self.dataset), plan.local_minibatch, plan.subdivisions, self.args.seed, bool(self.cfg.region['random']),
            self.cfg.net['width'], plan.max_batches, self.dist.rank, self.dist.world_size,
            start_minibatch=self.state.update * plan.subdivisions)
        return train_loader(self.dataset, sampler, collate, self.args.workers, pin_memory=self.device.type == 'cuda')

    def _write_run_files(self) -> None:
        """The resolved cfg and data file, and args.json; a resumed run keeps a user's edit of the cfg copy."""
        self._write_cfg_copy(self.run_dir / Path(self.args.cfg or 'model.cfg').name)
        (self.run_dir / Path(self.data.path).name).write_text(self.data.to_text())
        info = {'args': dataclasses.asdict(self.args), 'cfg_overrides': cfg_overrides(self.args),
                'batch': self.plan.batch, 'subdivisions': self.plan.subdivisions,
                'max_batches': self.plan.max_batches,
                'world_size': self.dist.world_size, 'device': str(self.device), 'torch': torch.__version__,
                'train_images': len(self.dataset)}
        (self.run_dir / 'args.json').write_text(json.dumps(info, indent=2) + '\n')

    def _write_cfg_copy(self, path: Path) -> None:
        """The run's cfg at `path`; when resuming over a copy the user edited, the edit stays and the checkpoint's
        cfg, which the run trains with, goes beside it."""
        text = self.cfg.to_text()
        if self.args.resume is not None and path.is_file() and path.read_text() != text:
            used = path.with_name(f'{path.stem}.checkpoint{path.suffix}')
            used.write_text(text)
            self.log.info(f'--resume trains with the checkpoint\'s cfg (written to {used.name}); your edited '
                          f'{path} is kept as is and not used (start a new run with it and WEIGHTS '
                          f'{self.weights_dir / "last.pt"} to use it)')
            return
        path.write_text(text)

    # ------------------------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        """Train until max_batches, early stop or a stop signal; returns how it ended."""
        max_batches = self.plan.max_batches
        meter, reason = Meter(), None
        self.net.train()
        batches = iter(self.loader)
        bar = tqdm(total=max_batches, initial=self.state.update, disable=not self.dist.main, unit='update',
                   dynamic_ncols=True, mininterval=1.0)
        with StopRequest() as self._stop, contextlib.closing(bar), closing_batches(batches):
            while reason is None and self.state.update < max_batches:
                t0 = time.perf_counter()
                values, stop = self.train_update(batches)
                elapsed = time.perf_counter() - t0
                self.state.train_time += elapsed
                values['images_per_s'] = self.plan.batch / elapsed
                meter.add(values)
                if self.reports is not None:
                    self.reports.update(self.state.update, values)
                bar.update(1)
                bar.set_postfix_str(self._postfix(values), refresh=False)
                reason = self._evaluate_and_save(meter, stop)
        return self._finish(reason or 'finished', self._last_map)

    def _evaluate_and_save(self, meter: Meter, stop: bool) -> str | None:
        """The policy after each update: evaluate every eval_interval updates (default: a tenth of the run) and after
        the last, stopping early after `patience` evaluations without a better mAP; save last.pt and the backups at
        each evaluation, at a stop and every save_interval updates, `update_<k>.pt` every save_period.  Returns why
        the run ends here ('early-stop', 'interrupted'; None: it goes on)."""
        a, k, reason = self.args, self.state.update, None
        final = k == self.plan.max_batches
        evaluate = k % (a.eval_interval or max(1, math.ceil(self.plan.max_batches / 10))) == 0 or final
        if evaluate:
            self._last_map = self._evaluate_or_save(meter)
            meter.reset()
            if a.patience and self.state.bad_evals >= a.patience:
                reason = 'early-stop'
        if stop and reason is None:
            reason = 'interrupted'
        if reason is not None or evaluate or (a.save_interval and k % a.save_interval == 0):
            self._save(final=final)
        if a.save_period and k % a.save_period == 0:
            self._write_track()  # every process: its records go to rank 0
            if self.dist.main:
                self._save_checkpoint(self._checkpoint(), self.weights_dir / f'update_{k}.pt')
        return reason

    def train_update(self, batches: Iterator) -> tuple[dict[str, float], bool]:
        """One update: forward/backward over `subdivisions` mini-batches from `batches` (collated `(images, targets,
        paths, indices)`), one synchronised look at the numbers, then the SGD step.  Returns the logged values (named
        as in `stats.KEYS`, plus lr and size) and whether a stop was requested in any process."""
        rows, paths = self._forward_backward(batches)
        numbers, stop = self._synced_numbers(rows, paths)
        values = stats.unpack(numbers, self.plan.batch, self.plan.subdivisions * self.dist.world_size,
                              mining=reports_lrm(self.crit.lrm), probe=bool(self.cfg.lrm['probe']))
        values['lr'] = self._step()
        values['size'] = paths[-1][0]
        return values, stop

    def _forward_backward(self, batches: Iterator) -> tuple[list[torch.Tensor], list[tuple[int, list[str]]]]:
        """The update's `subdivisions` mini-batches, forward and backward, gradients accumulating; advances `seen`
        and the update count.  Returns each mini-batch's packed statistics (on the device) and (size, paths)."""
        plan, rows, paths = self.plan, [], []
        scale = loss_scale(plan.batch, self.dist.world_size)
        for s in range(plan.subdivisions):
            images, targets, batch_paths, indices = next(batches)
            paths.append((images.shape[-1], batch_paths))
            if s == 0 and self.reports is not None and self.reports.wants_batch(self.state.update):
                self.reports.training_batch(self.state.update, images, targets)
            images = images.to(self.device, non_blocking=True)
            if self.args.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(self.device, non_blocking=True)
            self.state.seen += plan.minibatch  # Darknet counts the mini-batch before its forward pass
            sync = s == plan.subdivisions - 1 or not self.dist.enabled
            with (contextlib.nullcontext() if sync else self.wrapped.no_sync()):
                with torch.autocast(self.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
                    output = self.wrapped(images)
                result = self.crit(output.float(), targets, self.state.seen)
                self.scaler.scale(result.total * scale).backward()
            rows.append(stats.pack(result))
            if self._track is not None:  # each image's own loss, before any mining mask; it stays on the device
                self._track.append((self.state.update + 1, indices, result.per_prediction.detach().sum((1, 2, 3))))
        self.net.seen = self.state.seen
        self.state.update = current_batch(self.state.seen, plan.batch)
        return rows, paths

    def _synced_numbers(self, rows: list[torch.Tensor], paths: list[tuple[int, list[str]]]) -> tuple[list[float], bool]:
        """The one host sync of the update: the statistics summed over processes, with the stop flag; raises
        NonFiniteLoss (naming the images) before any step when a loss is not finite."""
        packed = torch.stack(rows).flatten()
        flag = float(self._stop is not None and self._stop.requested)
        local = torch.cat([packed, packed.new_full((1,), flag)])  # the stop flag after the rows: a fill, no copy
        summed = dist_utils.all_reduce_sum(local.clone(), self.dist) if self.dist.enabled else local
        *numbers, stop = summed.tolist()
        if not all(math.isfinite(v) for r in stats.split_rows(numbers) for v in stats.row_losses(r).values()):
            raise NonFiniteLoss(nonfinite_message(self.state, stats.split_rows(local.tolist()[:-1]), paths,
                                                  self.dist.rank if self.dist.enabled else None,
                                                  self.weights_dir / 'last.pt'))
        return numbers, stop > 0

    def _step(self) -> float:
        """The SGD step with the k-th update's learning rate (returned), then the gradients cleared."""
        lr = learning_rate(self.cfg.net, self.state.update)
        set_learning_rate(self.optimizer, lr)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return lr

    def _postfix(self, v: dict[str, float]) -> str:
        text = (f"loss {v['loss']:.3g} (xy/wh {v['coord']:.3g} obj {v['obj']:.3g} noobj {v['noobj']:.3g} "
                f"cls {v['cls']:.3g} prior {v['prior']:.2g}) iou {v['iou']:.2f} rec {v['recall50']:.2f} "
                f"lr {v['lr']:.2g} {v['images_per_s']:.1f} img/s {int(v['size'])}px")
        if 'lrm_fg' in v:
            text += f" lrm fg {v['lrm_fg']:.1f} bg {v['lrm_bg']:.1f} share {v['lrm_share']:.2f}"
        if self.device.type == 'cuda':
            text += f' {torch.cuda.max_memory_allocated(self.device) / 2 ** 30:.1f}G'
        return text

    # ---------------------------------------------------------------------------------- evaluation and files
    def _evaluate_or_save(self, meter: Meter) -> float | None:
        """`_evaluate_and_log`; if the evaluation fails, the update it followed is saved before the error goes on."""
        try:
            return self._evaluate_and_log(meter)
        except Exception:
            if not self.dist.enabled:  # under DDP the others wait in the broadcast: no gathering of their records
                self._write_track()
            if self.dist.main:  # no barrier: the other processes wait in the broadcast of the mAP
                self._save_checkpoint(self._checkpoint(), self.weights_dir / 'last.pt')
                self.state.last_saved = self.state.update
            self.log.info(f'evaluation failed after update {self.state.update}; weights/last.pt holds that update '
                          f'(continue with: python train.py --resume {self.run_dir})')
            raise

    def _evaluate_and_log(self, meter: Meter) -> float | None:
        """Validation mAP on rank 0 (others wait), results.csv row, best.pt; returns the mAP (None: no valid=)."""
        self._last_eval = self._validation() if self.dist.main else None
        map50 = float(self._last_eval.map) if self._last_eval is not None else None
        map50 = dist_utils.broadcast_object(map50, self.dist)
        if map50 is not None:
            if self.state.best_map is None or map50 > self.state.best_map:
                self.state.best_map, self.state.bad_evals = map50, 0
                if self.dist.main:
                    self._save_checkpoint(self._checkpoint(weights_only=True), self.weights_dir / 'best.pt')
            else:
                self.state.bad_evals += 1
        if self.dist.main:
            row = {**meter.means(), 'update': self.state.update, 'epoch': round(self.state.seen / len(self.dataset), 4),
                   'images': self.state.seen, 'lr': learning_rate(self.cfg.net, self.state.update), 'map50': map50,
                   'time_s': round(self.state.train_time, 1)}
            ResultsCsv(self.run_dir / 'results.csv').append(row)
            self.reports.evaluation(self.state.update, self._last_eval, row)
            best = f' (best {self.state.best_map:.4f})' if self.state.best_map is not None else ''
            self.log.info(f'update {self.state.update}: mAP@.5 {map50:.4f}{best}' if map50 is not None else
                          f'update {self.state.update}: no valid= list in {self.data.path}, no mAP')
        return map50

    def _validation(self) -> EvalResult | None:
        """The current weights scored on valid= (None: there is no valid= list)."""
        if not self.data['valid']:
            return None
        result = evaluation.evaluate_model(self.net, self.data, metric=self.args.eval_metric, iou=0.5, names=self.names,
                                           batch_size=self.args.eval_batch, workers=self.args.workers,
                                           progress=True)  # restores train mode itself
        self._note_skipped(result.skipped)
        return result

    def _note_skipped(self, skipped: list[str]) -> None:
        """Validation images that could not be decoded: said once each, and added to the scan log."""
        new = [s for s in skipped if s not in self._skipped_valid]
        if not new:
            return
        self._skipped_valid.update(new)
        with open(self.run_dir / 'dataset-scan.log', 'a') as f:
            f.writelines(f'image_undecodable\t{s} (valid=: left out of the mAP)\n' for s in new)
        self.log.info(f'valid: {len(new)} image(s) could not be decoded and are left out of the mAP '
                      f'(see dataset-scan.log)')

    def _checkpoint(self, weights_only: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {**self.state.to_checkpoint(resumable=not weights_only),
                                 'epoch': self.state.seen / len(self.dataset)}
        if not weights_only:
            extra.update(optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(), rng=rng_state(),
                         args=dataclasses.asdict(self.args))
        return model_checkpoint(self.net, self.names, **extra)

    def _save(self, final: bool) -> None:
        """The track's chunk, last.pt and Darknet backups (rank 0), atomically."""
        self._write_track()
        if self.dist.main:
            self._save_checkpoint(self._checkpoint(), self.weights_dir / 'last.pt')
            self._darknet_backups(final)
        self.state.last_saved = self.state.update
        dist_utils.barrier(self.dist)

    def _write_track(self) -> None:
        """--track: the records since the last save as one chunk, written by rank 0 (under DDP with every process's
        records) just before the checkpoint of the same update, so that resuming from it keeps exactly its chunks."""
        if not self._track:  # no --track, or nothing new since the last save (the same on every process)
            return
        host = torch.cat([torch.stack([torch.full_like(i, k), i], 1) for k, i, _ in self._track])
        loss = torch.cat([loss for _, _, loss in self._track])
        records = torch.cat([host.to(loss.device, torch.float64), loss.double()[:, None]], 1)  # update, image, loss
        records = dist_utils.all_gather_cat(records, self.dist).cpu()  # the one copy to the host
        self._track.clear()
        if self.dist.main:
            records = records[records[:, 0].argsort(stable=True)]  # the processes' records in update order
            folder = self.run_dir / 'track'
            self._store(folder, lambda: write_chunk(folder, *records.numpy().T), lambda: records)

    def _darknet_backups(self, final: bool) -> None:
        """Darknet's files in `backup=`: `<cfg>.backup` at every save, `<cfg>_<n>.weights` at n = N, 2N, ... below
        10N and every 100N after (N = save_interval; Darknet: 100, below 1000, every 10000), `<cfg>_final.weights`;
        nothing when `--backup` is ''."""
        folder = backup_dir(self.args, self.data)
        if folder is None:
            return
        k, n = self.state.update, self.args.save_interval
        stem = Path(self.args.cfg or 'model.cfg').stem
        folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(folder / f'{stem}.backup')
        if n and k % n == 0 and (k < 10 * n or k % (100 * n) == 0):
            self._save_weights(folder / f'{stem}_{k}.weights')
        if final:
            self._save_weights(folder / f'{stem}_final.weights')

    def _save_checkpoint(self, ckpt: dict[str, Any], path: Path) -> None:
        """`save_checkpoint`, a failure to write becoming `SaveFailed` (see `_store`)."""
        self._store(path, lambda: save_checkpoint(ckpt, path), lambda: ckpt)

    def _save_weights(self, path: Path) -> None:
        """The network as a Darknet `.weights` file, a failure to write becoming `SaveFailed`."""
        self._store(path, lambda: save_darknet_weights(self.net, path), self.net.state_dict)

    def _store(self, path: Path, write: Callable[[], None], contents: Callable[[], Any]) -> None:
        """Run `write`, an atomic save of `path`; an OSError (a full disk, ...) becomes SaveFailed with one line naming
        the folder, the space needed (the tensors of `contents()`, sized only then) and the update weights/last.pt
        holds, also written to train.log."""
        try:
            write()
        except OSError as exc:
            message = save_failure(path, exc, tensor_bytes(contents()), self.state.last_saved, self.run_dir)
            with contextlib.suppress(OSError):  # the log may be on the full disk too; the console gets it anyway
                with open(self.run_dir / 'train.log', 'a') as f:
                    f.write(f'error: {message}\n')
            raise SaveFailed(message) from None

    def _finish(self, reason: str, last_map: float | None) -> TrainResult:
        if self.dist.main:
            self._save_weights(self.weights_dir / 'last.weights')
            note = plot_results(self.run_dir / 'results.csv', self.run_dir / 'results.png')  # slow: once, at the end
            if note:
                self.log.info(note)
            self.reports.final(self._last_eval)
            what = {'finished': 'finished', 'early-stop': f'early stop: no better mAP in {self.args.patience} '
                    f'evaluations', 'interrupted': 'interrupted: saved'}[reason]
            best = f', best mAP@.5 {self.state.best_map:.4f}' if self.state.best_map is not None else ''
            self.log.info(f'{what} at update {self.state.update}/{self.plan.max_batches} ({self.state.seen:,} '
                          f'images, {self.state.train_time / 60:.1f} min training{best}); results in {self.run_dir}')
            if reason == 'interrupted':
                self.log.info(f'continue with: python train.py --resume {self.run_dir}')
        dist_utils.barrier(self.dist)
        return TrainResult(self.run_dir, self.state.update, self.state.seen, self.state.best_map, last_map, reason)

    def close(self) -> None:
        """Close the TensorBoard log and release the process group."""
        if self.reports is not None:
            self.reports.close()
        self._release()
        dist_utils.cleanup(self.dist)

    def _release(self) -> None:
        """Give up the run folder (its lock file goes)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def train(args: TrainArgs) -> TrainResult:
    """Run one training job (fresh or `--resume`) and return how it ended."""
    trainer = Trainer(args)
    try:
        return trainer.run()
    finally:
        trainer.close()
