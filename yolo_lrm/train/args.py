"""What a training run is asked to do: its arguments (recorded in `args.json` and in every checkpoint), the cfg
overrides they make, where `--resume` finds its checkpoint, and how a run ended."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cfg import CfgError
from ..data.loader import default_workers

RESUME_KEEP = ('device', 'workers')  # options a resumed run may change; everything else comes from the checkpoint


@dataclass
class TrainArgs:
    """Everything a run depends on (recorded in `args.json` and in every checkpoint)."""
    cfg: str | None = None
    data: str | None = None
    weights: str | None = None
    set: list[str] = field(default_factory=list)       # section.key=value cfg overrides
    batch: int | None = None
    subdivisions: int | None = None
    max_batches: int | None = None
    epochs: float | None = None
    lr: float | None = None
    img_size: int | None = None
    project: str = 'runs/train'
    name: str = 'exp'
    exist_ok: bool = False
    resume: str | None = None
    clear: bool = False
    device: str = ''
    workers: int = field(default_factory=default_workers)
    seed: int = 0
    deterministic: bool = False
    amp: str = 'off'                                   # off | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    augment: bool = True
    eval_interval: int = 0                             # 0: about ten evaluations per run
    eval_metric: str = 'voc07'                         # a metric of evaluate.evaluate_model
    eval_batch: int = 8
    patience: int = 0                                  # stop after this many evaluations without a better mAP
    save_interval: int = 100                           # last.pt and Darknet backups every N updates
    backup: str | None = None                          # Darknet backups folder; None: the data's backup=, '': none
    save_period: int = 0                               # also keep weights/update_<n>.pt every N updates
    cache_dir: str | None = None
    track: bool = False                                # RUN/track/: each training image's loss per update (track.py)


@dataclass
class TrainResult:
    """How a run ended."""
    run_dir: Path
    updates: int
    seen: int
    best_map: float | None
    last_map: float | None
    reason: str                                        # finished | early-stop | interrupted


def cfg_overrides(args: TrainArgs) -> list[str]:
    """The cfg overrides a run applies: the shortcut options first, then `--set` (so `--set` wins)."""
    out = []
    for key, value in (('batch', args.batch), ('subdivisions', args.subdivisions),
                       ('max_batches', args.max_batches), ('learning_rate', args.lr)):
        if value is not None:
            out.append(f'net.{key}={value}')
    if args.img_size is not None:
        if args.img_size <= 0 or args.img_size % 32:
            raise CfgError(f'--img-size {args.img_size}: must be a positive multiple of 32')
        out += [f'net.width={args.img_size}', f'net.height={args.img_size}']
    return out + list(args.set)


def find_resume_checkpoint(spec: str, project: str) -> Path:
    """`--resume` target: a `.pt` file, a run directory, or '' for the newest `last.pt` under `project`."""
    if spec:
        path = Path(spec)
        path = path / 'weights' / 'last.pt' if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f'--resume {spec}: no checkpoint at {path}')
        return path
    found = sorted(Path(project).glob('*/weights/last.pt'), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f'--resume: no run with weights/last.pt under {project}')
    return found[-1]
