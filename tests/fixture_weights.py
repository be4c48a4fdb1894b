"""The deterministic Darknet weights of `../shared/fixtures/darknet/README.md` §0: our own generator of the files
Darknet's fixture outputs were made with (each file checked against the README's sha256).  A plain module, so that
bench/gpu_check.py uses it without pytest."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolo_lrm.cfg import parse_cfg

TINY_SHA256 = 'b3db3350b3944a9e34c9b836f17667752faad7cf390a602df1807c847042212a'
V2_SHA256 = '9947dec7d37def4f8589e668d1875dff64edbb770eb87c5a5929baa72820bedf'

def hashed_uniform(seed: int, start: int, n: int) -> np.ndarray:
    """u(k) for k in [start, start+n): lowbias32 of (k + seed*golden) in uint32 arithmetic, mapped to [-0.5, 0.5)."""
    x = np.arange(start, start + n, dtype=np.uint32) + np.uint32((seed * 0x9E3779B9) % 2 ** 32)
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x ^= x >> shift
        x *= np.uint32(mult)   # uint32 products wrap mod 2^32, as the rule wants
    x ^= x >> 16
    return (x >> 8).astype(np.float32) * np.float32(2.0 ** -24) - np.float32(0.5)


@dataclass
class ConvSpec:
    filters: int
    c_in: int
    size: int
    groups: int
    bn: bool
    activation: str


def conv_specs(cfg_path: Path) -> list[ConvSpec]:
    """The conv layers of a cfg in file order, read from the parsed sections (input channels tracked by hand)."""
    cfg = parse_cfg(cfg_path)
    channels, c = [], cfg.net['channels']
    specs = []
    for sec in cfg.layers:
        if sec.type == 'convolutional':
            specs.append(ConvSpec(sec['filters'], c, sec['size'], sec['groups'], bool(sec['batch_normalize']),
                                  sec['activation']))
            c = sec['filters']
        elif sec.type == 'route':
            c = sum(channels[i if i >= 0 else len(channels) + i] for i in sec['layers'])
        elif sec.type == 'reorg':
            c *= sec['stride'] ** 2
        channels.append(c)
    return specs


def fixture_weights(specs: list[ConvSpec], seed: int, path: Path) -> list[dict[str, np.ndarray]]:
    """Write the README §0 `.weights` file for these convs to `path`; return each layer's arrays (file order)."""
    counter = 0

    def draw(n: int) -> np.ndarray:
        nonlocal counter
        counter += n
        return hashed_uniform(seed, counter - n, n)

    f32 = np.float32
    layers = []
    with open(path, 'wb') as f:
        f.write(np.array([0, 2, 0], '<i4').tobytes() + np.array([0], '<u8').tobytes())
        for s in specs:
            fan_in = s.c_in // s.groups * s.size * s.size
            gain = 2.0 if s.activation in ('leaky', 'relu') else 1.0
            parts = {'biases': f32(0.2) * draw(s.filters)}
            if s.bn:
                parts['scales'] = f32(1) + f32(0.2) * draw(s.filters)
                parts['rolling_mean'] = f32(0.2) * draw(s.filters)
                parts['rolling_variance'] = f32(1) + f32(0.5) * draw(s.filters)
            parts['weights'] = (f32(np.sqrt(12.0 * gain / fan_in)) * draw(s.filters * fan_in)).reshape(
                s.filters, s.c_in // s.groups, s.size, s.size)
            for values in parts.values():
                f.write(values.astype('<f4').tobytes())
            layers.append(parts)
    return layers


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 24), b''):
            digest.update(chunk)
    return digest.hexdigest()
