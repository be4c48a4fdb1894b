"""Darknet's weight update as PyTorch SGD (Darknet's `update_convolutional_layer`).

Darknet, per update over a batch of B images (`update_convolutional_layer`):
    W_upd += -decay·B·W;  W += (lr/B)·W_upd;  W_upd *= momentum        (conv weights)
    b_upd accumulated;    b += (lr/B)·b_upd;  b_upd *= momentum        (biases, BN scales: no decay)
where `*_upd` starts as the negative gradient summed over the B images.  That is exactly
`torch.optim.SGD(lr, momentum, dampening=0, weight_decay=decay)` on the mean over the B images of the per-image
summed loss, with weight decay on conv weights only and each layer's cfg `learning_rate` multiplying lr.
With gradient accumulation every mini-batch's summed loss is divided by B (the whole batch), not by its own size.
"""
from __future__ import annotations

import torch

from ..model import Darknet


def param_groups(net: Darknet, decay: float) -> list[dict]:
    """SGD parameter groups: (per-layer lr multiplier, decay) pairs; decay only on conv weights."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    covered = 0
    for idx, block in net.conv_layers():
        mult = float(net.cfg.layers[idx]['learning_rate'])
        params = [(block.conv.weight, decay), (block.conv.bias, 0.0)]
        if block.bn is not None:
            params += [(block.bn.weight, 0.0), (block.bn.bias, 0.0)]
        for p, d in params:
            if p is not None:
                groups.setdefault((mult, d), []).append(p)
                covered += 1
    total = sum(1 for _ in net.parameters())
    if covered != total:  # a layer type with parameters that this function does not know about
        raise ValueError(f'{net.cfg.path}: {total - covered} parameters are outside convolutional layers; '
                         f'the optimizer would not update them')
    return [{'params': ps, 'lr_mult': mult, 'weight_decay': d} for (mult, d), ps in groups.items()]


def build_optimizer(net: Darknet) -> torch.optim.SGD:
    """SGD with the cfg's momentum and decay, as Darknet updates (see the module docstring)."""
    sec = net.cfg.net
    if sec['adam']:
        raise sec.error('adam=1 is not supported: Darknet-style training uses SGD with momentum', 'adam')
    return torch.optim.SGD(param_groups(net, sec['decay']), lr=sec['learning_rate'], momentum=sec['momentum'],
                           dampening=0.0, weight_decay=0.0)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to `lr` times its layer's multiplier."""
    for group in optimizer.param_groups:
        group['lr'] = lr * group.get('lr_mult', 1.0)


def loss_scale(batch: int, world_size: int) -> float:
    """Factor on a process's summed mini-batch loss so that the averaged gradient is Darknet's: the sum over every
    image of the update divided by the full `batch` (DDP averages gradients over processes, hence × world_size)."""
    return world_size / batch
