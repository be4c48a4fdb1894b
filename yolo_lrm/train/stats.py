"""The per-update training statistics: one named layout from the loss to `results.csv`.

Each mini-batch's numbers are packed into one tensor row in the order of `KEYS` (on the device, no host sync); the
trainer stacks the rows of an update, adds the stop flag after them, sums over processes (one all-reduce) and copies
the result to the host once.  `unpack` turns the summed rows into the logged values.  How a key is reduced is its
kind, given next to its name:

- `image`: a sum over the batch, logged per image (divided by the update's batch): the loss and its terms, the
  foreground/background predictions that LRM kept, and those its NMS passed over (ranked above the last kept one).
- `truth`: Darknet's region statistics, averaged over the truths of the update (each mini-batch's mean is weighted
  by its truth count, so the update's mean is over all its truths; NaN when it has none).
- `weight`: the truth count those means are weighted by (not logged).
- `batch`: a mean over the mini-batches (and processes): the no-object probability, the shares of the loss and of
  the squared gradient norm at F that LRM kept (`lrm_grad_share`: with `[lrm] probe=1` only, else 0).

Keys starting with `lrm_` are logged only when hard-example mining is on or `[lrm] probe=1` measures what it would
keep (`mining.reports_lrm`); the loss reports them only then.
"""
from __future__ import annotations

import math

import torch

from ..loss.region import TERMS, LossResult

_KINDS = {'loss': 'image', **{t: 'image' for t in TERMS},
          'iou': 'truth', 'class_prob': 'truth', 'obj_prob': 'truth', 'noobj_prob': 'batch', 'recall50': 'truth',
          'recall75': 'truth', 'count': 'weight', 'lrm_fg': 'image', 'lrm_bg': 'image', 'lrm_passed': 'image',
          'lrm_share': 'batch', 'lrm_grad_share': 'batch'}
KEYS = tuple(_KINDS)
LOGGED = tuple(k for k in KEYS if _KINDS[k] != 'weight')   # the columns results.csv holds for them
LOSS_KEYS = ('loss', *TERMS)                                # must be finite before the optimizer step
DIAGNOSTICS = ('lrm_k', 'lrm_alpha', 'lrm_beta', 'lrm_cls_share')  # reported by the mining options, not logged


def pack(result: LossResult) -> torch.Tensor:
    """One mini-batch's row in the order of `KEYS`: sums for `image` keys, truth-weighted sums for `truth` keys
    (a batch without truths adds 0), plain values for the rest; `lrm_*` are 0 when mining is off."""
    named = {'loss': result.total.detach(), **result.terms, **result.stats}
    count = named['count']
    zero = count.new_zeros(())
    row = []
    for key, kind in _KINDS.items():
        value = named.get(key, zero) if key.startswith('lrm_') else named[key]
        row.append(torch.nan_to_num(value) * count if kind == 'truth' else value.to(count.dtype))
    return torch.stack(row)


def unpack(summed: list[float], batch: int, minibatches: int, mining: bool, probe: bool = False) -> dict[str, float]:
    """The logged values of one update from its rows summed over processes (flattened, `minibatches` x `KEYS`):
    `batch` is the update's images, `minibatches` the rows of one process times the processes; `mining`: the
    `lrm_*` keys are reported, `probe`: `lrm_grad_share` too."""
    total = {k: sum(column) for k, column in zip(KEYS, zip(*split_rows(summed)))}
    count = total['count']
    values = {}
    for key in LOGGED:
        kind = _KINDS[key]
        if key.startswith('lrm_') and not mining or key == 'lrm_grad_share' and not probe:
            continue
        if kind == 'image':
            values[key] = total[key] / batch
        elif kind == 'truth':
            values[key] = total[key] / count if count else math.nan
        else:
            values[key] = total[key] / minibatches
    return values


def split_rows(numbers: list[float]) -> list[list[float]]:
    """Flattened mini-batch rows back into one list of `KEYS` values per mini-batch."""
    n = len(KEYS)
    return [numbers[i:i + n] for i in range(0, len(numbers), n)]


def row_losses(row: list[float]) -> dict[str, float]:
    """The loss and its terms in one mini-batch's row (for the message naming a non-finite mini-batch)."""
    return {k: row[KEYS.index(k)] for k in LOSS_KEYS}
