"""`.pt` checkpoints (written atomically, `atomic.py`) and loading a model from a `.pt` or a Darknet `.weights` file."""
from __future__ import annotations

import os
from typing import Any

import torch

from .atomic import atomic_write
from .cfg import CfgError, apply_overrides, parse_cfg, parse_cfg_text
from .model import Darknet


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Save a checkpoint dict atomically.  Keep it to tensors and plain Python types so that it loads with
    `torch.load(weights_only=True)`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a `.pt` checkpoint on the CPU (safe loader: tensors and plain types only)."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: checkpoint not found') from None
    except Exception as exc:  # torch raises several types for a torn or foreign file
        raise ValueError(f'{path}: not a readable yolo_lrm checkpoint ({exc.__class__.__name__}: {exc})') from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'cfg_text' not in ckpt:
        raise ValueError(f'{path}: not a yolo_lrm checkpoint (expected keys cfg_text and model)')
    return ckpt


def model_checkpoint(net: Darknet, names: list[str] | None, **extra: Any) -> dict[str, Any]:
    """The part of a checkpoint that describes the model: resolved cfg, class names, weights and `seen`."""
    return {'cfg_text': net.cfg.to_text(), 'names': names, 'model': net.state_dict(), 'seen': int(net.seen), **extra}


def load_weights(net: Darknet, ckpt: dict[str, Any], what: str) -> None:
    """Load a checkpoint's weights and `seen` into `net`; a mismatch raises ValueError(`what: <the first mismatch>`)
    in one line (torch's own message lists every tensor)."""
    try:
        net.load_state_dict(ckpt['model'])
    except RuntimeError as exc:
        raise ValueError(f'{what}: {state_mismatch(net.state_dict(), ckpt["model"]) or exc}') from None
    net.seen = int(ckpt.get('seen', 0))


def state_mismatch(own: dict[str, Any], stored: dict[str, Any]) -> str:
    """The first difference between a network's state dict and a stored one, and how many there are ('' if none)."""
    shapes = [k for k in own if k in stored and tuple(own[k].shape) != tuple(stored[k].shape)]
    missing = [k for k in own if k not in stored]
    extra = [k for k in stored if k not in own]
    found = [*(f'{k} is {tuple(stored[k].shape)} in the file, {tuple(own[k].shape)} in the network' for k in shapes),
             *(f'{k} is missing from the file' for k in missing),
             *(f'the file has {k}, which the network lacks' for k in extra)]
    if not found:
        return ''
    return found[0] + (f' (and {len(found) - 1} more differences: is it a checkpoint of another cfg?)'
                       if len(found) > 1 else '')


def checkpoint_model(ckpt: dict[str, Any], weights: str | os.PathLike, cfg: str | os.PathLike | None = None,
                     overrides: list[str] | None = None) -> Darknet:
    """Build the network of a loaded `.pt` checkpoint (its embedded cfg unless `cfg` is given) with its weights."""
    net_cfg = parse_cfg(cfg, overrides) if cfg else parse_cfg_text(ckpt['cfg_text'], f'{weights} (embedded cfg)')
    if cfg is None and overrides:
        apply_overrides(net_cfg, overrides)
    net = Darknet(net_cfg)
    load_weights(net, ckpt, f'{weights}: weights do not fit the cfg {cfg or "(embedded)"}')
    return net


def load_model(weights: str | os.PathLike, cfg: str | os.PathLike | None = None, overrides: list[str] | None = None,
               device: str | torch.device = 'cpu') -> tuple[Darknet, list[str] | None]:
    """Build and load a network from our `.pt` (carries its cfg and names; `cfg` optional) or a Darknet `.weights`
    (needs `cfg`).  Returns `(net in eval mode on device, names or None)`."""
    weights = str(weights)
    if weights.endswith('.pt'):
        ckpt = load_checkpoint(weights)
        net, names = checkpoint_model(ckpt, weights, cfg, overrides), ckpt.get('names')
    else:
        if cfg is None:
            raise CfgError(f'{weights}: a Darknet .weights file holds no cfg; name the network\'s .cfg file too')
        from .weights import load_darknet_weights
        net = Darknet(cfg, overrides)
        load_darknet_weights(net, weights)
        names = None
    return net.to(device).eval(), names


def rng_state() -> dict[str, Any]:
    """The global random generators (Python, numpy, torch CPU and CUDA) as plain types and tensors."""
    import random

    import numpy as np
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {'python': [version, list(state), gauss], 'numpy': [kind, keys.tolist(), pos, has_gauss, cached],
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA states only where this machine has as many devices)."""
    import random

    import numpy as np
    version, values, gauss = state['python']
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])
