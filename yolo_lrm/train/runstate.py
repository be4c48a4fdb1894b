"""Where a training run stands: the counters and bests that a checkpoint carries and `--resume` restores."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RunState:
    """The numbers that move as a run trains (the model, optimizer and RNG states live in the checkpoint beside)."""
    seen: int = 0                    # training images seen (Darknet's `seen`: drives the schedule and the prior)
    update: int = 0                  # updates done
    best_map: float | None = None    # best validation mAP so far
    bad_evals: int = 0               # evaluations since the best one (early stopping)
    train_time: float = 0.0          # seconds spent in updates (evaluation and saving not counted)
    last_saved: int | None = None    # the update weights/last.pt holds (not stored: it is `update` on resume)

    def to_checkpoint(self, resumable: bool = True) -> dict[str, Any]:
        """The checkpoint keys of this state (`seen` travels with the model); `resumable` adds what only `--resume`
        needs."""
        out: dict[str, Any] = {'update': self.update, 'best_map': self.best_map}
        if resumable:
            out.update(bad_evals=self.bad_evals, train_time=self.train_time)
        return out

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> 'RunState':
        """The state a resumable checkpoint was saved in."""
        update = int(ckpt['update'])
        return cls(seen=int(ckpt['seen']), update=update, best_map=ckpt.get('best_map'),
                   bad_evals=int(ckpt.get('bad_evals', 0)), train_time=float(ckpt.get('train_time', 0.0)),
                   last_saved=update)
