"""Process-group plumbing for `torchrun --nproc_per_node N train.py ...` (NCCL on CUDA, gloo on CPU)."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Rank 0 evaluates and writes checkpoints while the others wait in a barrier: allow long evaluations.
_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, and its device."""
    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """True on the process that logs and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    """`--device`: 'cpu', 'cuda', 'cuda:1', '0' (a CUDA index), or None/'' for CUDA when available."""
    spec = (name or '').strip().lower()  # ' CPU' from a shell variable or a config file means cpu
    if not spec:
        return torch.device(f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(f'cuda:{spec}' if spec.isdigit() else spec)
    except RuntimeError:  # torch's parse error is a RuntimeError that the CLIs would not report as a user error
        raise ValueError(f'--device {spec}: not a device (cpu, cuda, cuda:N or N)') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'--device {spec}: CUDA is not available in this PyTorch build ({torch.__version__}) '
                             f'or machine')
        if device.index is None:
            device = torch.device('cuda', local_rank)
        count = torch.cuda.device_count()
        if device.index >= count:  # torch itself fails only at the first tensor moved ('invalid device ordinal')
            raise ValueError(f'--device {spec}: CUDA device {device.index} asked for, but this machine has {count} '
                             f'(indices 0-{count - 1})')
    return device


def init_distributed(device_name: str | None) -> DistInfo:
    """Join the process group that torchrun describes in the environment (WORLD_SIZE > 1), or run alone."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank, local = int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0'))
    device = pick_device(device_name, local)
    if world > 1 and not dist.is_initialized():
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', timeout=_TIMEOUT)
    return DistInfo(rank, world, device)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `t` over processes in place (no-op alone)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """`t` of every process (the same shape in each), concatenated in rank order along dimension 0 (`t` alone)."""
    if not info.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op alone)."""
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
