"""Darknet's learning-rate schedule (`get_current_rate` in `src/network.c`, pjreddie HEAD), as one pure function.

Counting: Darknet's batch number is `seen / (minibatch * subdivisions)`, taken after the images of the update have
been added to `seen`, so the k-th update (k = 1, 2, ...) runs with `batch_num = k`
(Darknet's `get_current_batch`).

HEAD keeps `batch_num` in a `size_t` and compares or subtracts the cfg's `int` values in unsigned arithmetic.  We
reproduce what that computes, because shipped cfgs depend on it:
- `steps`: a negative step compares as a huge number, so the walk stops there and the rate accumulated so far is
  used for the rest of the run.  yolov2-tiny-voc.cfg (`steps=-1,100,20000,30000`) therefore trains at the base lr
  throughout, while the 2016 code (`int batch_num`) gave the intended 1e-4 / 1e-3 / 1e-4 / 1e-5 warm-up schedule.
- `step` with a negative `step`: the quotient is 0, so the base lr.
- `sigmoid`: `batch_num - step` wraps to about 2^64 before `step`, so the rate there is 0 (gamma > 0).
`schedule_warnings` names each of these so the trainer can say so once at start-up.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

_WRAP = 2.0 ** 64  # size_t arithmetic: a negative int converted to size_t becomes 2^64 + value


class _Settings(Protocol):
    def __getitem__(self, key: str) -> Any: ...


def _unsigned(value: int) -> float:
    """The value a C `int` takes when converted to `size_t` (as a float: only comparisons and quotients use it)."""
    return float(value) if value >= 0 else _WRAP + value


def current_batch(seen: int, batch: int) -> int:
    """Darknet's `get_current_batch`: updates done = images seen // images per update (the cfg's full `batch`)."""
    return seen // batch


def learning_rate(net: _Settings | Mapping[str, Any], batch_num: int) -> float:
    """Darknet's `get_current_rate` for `[net]` settings `net` at update number `batch_num` (1 for the first update).

    `net` is the cfg's `[net]` Section (or any mapping with learning_rate, burn_in, power, policy, steps, scales,
    step, scale, gamma, max_batches).
    """
    if batch_num < 0:
        raise ValueError(f'batch_num must be >= 0, got {batch_num}')
    lr, burn_in, power, policy = net['learning_rate'], net['burn_in'], net['power'], net['policy']
    if burn_in < 0:
        raise ValueError(f'burn_in must be >= 0, got {burn_in}')
    if batch_num < burn_in:
        return lr * math.pow(batch_num / burn_in, power)
    if policy == 'constant':
        return lr
    if policy == 'steps':
        steps, scales = net['steps'], net['scales']
        if len(scales) < len(steps):
            raise ValueError(f'policy=steps needs a scale per step: steps={steps}, scales={scales}')
        rate = lr
        for step, scale in zip(steps, scales):
            if _unsigned(step) > batch_num:
                return rate
            rate *= scale
        return rate
    if policy == 'step':
        step = net['step']
        if step == 0:
            raise ValueError('policy=step needs step != 0')
        return lr * net['scale'] ** int(batch_num // _unsigned(step))
    if policy == 'exp':
        return lr * net['gamma'] ** batch_num
    if policy == 'poly':
        if net['max_batches'] <= 0:
            raise ValueError('policy=poly needs max_batches > 0')
        return lr * math.pow(1 - batch_num / net['max_batches'], power)
    if policy == 'sigmoid':
        return lr / (1 + _exp(net['gamma'] * _unsigned(batch_num - net['step'])))
    raise ValueError(f'unknown lr policy {policy!r}')


def _exp(x: float) -> float:
    """`exp` that saturates to inf like C's instead of raising OverflowError."""
    return math.exp(x) if x < 709.0 else math.inf


def schedule_warnings(net: _Settings | Mapping[str, Any]) -> list[str]:
    """Messages about settings where Darknet HEAD's unsigned arithmetic changes the schedule (see module docstring)."""
    policy, out = net['policy'], []
    if policy == 'steps':
        negative = [i for i, s in enumerate(net['steps']) if s < 0]
        if negative:
            i = negative[0]
            out.append(f'policy=steps: steps[{i}]={net["steps"][i]} is negative; Darknet HEAD compares it as a huge '
                       f'unsigned number, so the schedule stops there and steps {net["steps"][i:]} never apply '
                       f'(reproduced here; the 2016 code applied them)')
    if policy == 'step' and net['step'] < 0:
        out.append(f'policy=step: step={net["step"]} is negative; Darknet HEAD divides by it as unsigned, so the '
                   f'lr stays at the base value (reproduced here)')
    if policy == 'sigmoid' and net['step'] > 0:
        out.append(f'policy=sigmoid: before update step={net["step"]} Darknet HEAD computes batch_num - step in '
                   f'unsigned arithmetic, so the rate there is lr/(1+exp(gamma*~2^64)) (reproduced here)')
    return out
