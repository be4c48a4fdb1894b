"""Build a YOLOv2 `nn.Module` from a Darknet `.cfg`: `Darknet(cfg)(x)` returns the raw feature map F."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn

from .cfg import Cfg, CfgError, Section, apply_overrides, check_region, parse_cfg
from .layers import ConvBlock, GlobalAvgPool, MaxPool, Region, Reorg, Route, Shortcut


@dataclass
class LayerInfo:
    """Static facts about one built layer, for the summary and for weights I/O."""
    index: int
    type: str
    in_shape: tuple[int, int, int]   # C, H, W at the cfg's input size
    out_shape: tuple[int, int, int]
    flops: float                     # Darknet's count: 2*n*k*k*c/groups*out_h*out_w (conv only)
    detail: str


class Darknet(nn.Module):
    """A Darknet network.  `forward(x)` returns the last conv's raw output (B, A*(5+C), H/32, W/32) in any mode.

    `cfg` is a path or a parsed `Cfg`; `overrides` are `section.key=value` strings (see `cfg.apply_overrides`).
    Inputs are RGB in [0, 1]; any size that is a multiple of the network stride (32) works.
    """

    def __init__(self, cfg: str | os.PathLike | Cfg, overrides: list[str] | None = None):
        super().__init__()
        if isinstance(cfg, Cfg):
            self.cfg = copy.deepcopy(cfg) if overrides else cfg  # never change the caller's Cfg
            apply_overrides(self.cfg, overrides or [])
        else:
            self.cfg = parse_cfg(cfg, overrides)
        net = self.cfg.net
        self.width, self.height, self.channels = net['width'], net['height'], net['channels']
        self.layers = nn.ModuleList()
        self.info: list[LayerInfo] = []
        self._build()
        self.seen = 0                    # images seen in training (Darknet's `seen`, kept in .weights headers)
        self.version = (0, 2, 0)         # .weights header major, minor, revision
        self._validate_head()

    # ----------------------------------------------------------------------------------------------- building
    def _build(self) -> None:
        shape = (self.channels, self.height, self.width)
        shapes: list[tuple[int, int, int]] = []
        for idx, sec in enumerate(self.cfg.layers):
            module, out, flops, detail = self._make_layer(idx, sec, shape, shapes)
            if out[0] <= 0 or out[1] <= 0 or out[2] <= 0:
                raise sec.error(f'layer {idx} would produce an empty output {out} from input {shape}')
            self.layers.append(module)
            self.info.append(LayerInfo(idx, sec.type, shape, out, flops, detail))
            shapes.append(out)
            shape = out
        if not self.cfg.layers:
            raise CfgError(f'{self.cfg.path}: the cfg has no layers')
        # outputs that a later route/shortcut reads must be kept during forward
        self._keep = {s for m in self.layers for s in getattr(m, 'sources', [getattr(m, 'source', -1)]) if s >= 0}
        self._stop_backward = [bool(sec['stopbackward']) for sec in self.cfg.layers]

    def _make_layer(self, idx: int, sec: Section, shape: tuple[int, int, int],
                    shapes: list[tuple[int, int, int]]) -> tuple[nn.Module, tuple[int, int, int], float, str]:
        c, h, w = shape
        t = sec.type
        if t == 'convolutional':
            for key in ('binary', 'xnor'):
                if sec[key]:
                    raise sec.error('XNOR/binary convolutions are not supported', key)
            size, stride, groups, n = sec['size'], sec['stride'], sec['groups'], sec['filters']
            pad = size // 2 if sec['pad'] else sec['padding']
            if c % groups or n % groups:
                raise sec.error(f'groups={groups} must divide input channels {c} and filters {n}', 'groups')
            oh, ow = (h + 2 * pad - size) // stride + 1, (w + 2 * pad - size) // stride + 1
            module = ConvBlock(c, n, size, stride, pad, groups, bool(sec['batch_normalize']), sec['activation'])
            flops = 2.0 * n * size * size * (c // groups) * oh * ow
            detail = f'{n:5d}  {size} x {size} / {stride}' + (f' g{groups}' if groups > 1 else '')
            return module, (n, oh, ow), flops, detail
        if t == 'maxpool':
            stride = sec['stride']
            size = sec['size'] if sec['size'] is not None else stride
            padding = sec['padding'] if sec['padding'] is not None else size - 1
            module = MaxPool(size, stride, padding)
            return module, (c, module.out_size(h), module.out_size(w)), 0.0, f'       {size} x {size} / {stride}'
        if t == 'avgpool':
            return GlobalAvgPool(), (c, 1, 1), 0.0, ''
        if t == 'route':
            sources = [self._absolute(idx, sec, i, 'layers') for i in sec['layers']]
            parts = [shapes[s] for s in sources]
            if any(p[1:] != parts[0][1:] for p in parts):
                raise sec.error(f'routed layers {sources} have different sizes {[p[1:] for p in parts]}', 'layers')
            detail = '  ' + ' '.join(str(s) for s in sources)
            return Route(sources), (sum(p[0] for p in parts), *parts[0][1:]), 0.0, detail
        if t == 'reorg':
            for key in ('reverse', 'flatten', 'extra'):
                if sec[key]:
                    raise sec.error(f'reorg {key}=1 is not supported', key)
            s = sec['stride']
            if h % s or w % s or c % (s * s):
                raise sec.error(f'input {c}x{h}x{w} does not divide by stride {s} (channels by {s * s})', 'stride')
            return Reorg(s), (c * s * s, h // s, w // s), 0.0, f'             / {s}'
        if t == 'shortcut':
            src = self._absolute(idx, sec, sec['from'], 'from')
            if shapes[src] != shape:
                raise sec.error(f'shortcut from layer {src} {shapes[src]} does not match the previous output {shape}',
                                'from')
            return Shortcut(src, sec['activation'], sec['alpha'], sec['beta']), shape, 0.0, f'  {src}'
        if t == 'region':
            return Region(), shape, 0.0, ''
        raise sec.error(f'[{t}] cannot be a layer here')

    def _absolute(self, idx: int, sec: Section, i: int, key: str) -> int:
        src = idx + i if i < 0 else i
        if not 0 <= src < idx:
            raise sec.error(f'refers to layer {i} (absolute {src}), which does not exist before layer {idx}', key)
        return src

    def _validate_head(self) -> None:
        regions = [i for i, s in enumerate(self.cfg.layers) if s.type == 'region']
        if not regions:
            return  # a backbone-only cfg (e.g. for `partial`) is legal
        if regions != [len(self.cfg.layers) - 1]:
            raise self.cfg.layers[regions[0]].error('[region] must be the last layer, and only one is allowed')
        r = self.cfg.region
        check_region(r)
        expected = r['num'] * (5 + r['classes'])
        got = self.info[-1].out_shape[0]
        if got != expected:
            raise r.error(f'the layer before [region] outputs {got} channels but num={r["num"]}, '
                          f'classes={r["classes"]} need (5+classes)*num = {expected} filters', 'classes')

    # -------------------------------------------------------------------------------------------- head facts
    @property
    def region(self) -> Section:
        """The `[region]` settings (anchors, classes, scales, thresh, loss variant, ...)."""
        return self.cfg.region

    @property
    def num_classes(self) -> int:
        return self.region['classes']

    @property
    def num_anchors(self) -> int:
        return self.region['num']

    @property
    def anchors(self) -> torch.Tensor:
        """Anchors (A, 2) as (w, h) in grid cells."""
        return torch.tensor(self.region['anchors'], dtype=torch.float32).view(-1, 2)

    @property
    def stride(self) -> int:
        """Input pixels per output cell (32 for every YOLOv2 cfg)."""
        return self.height // self.info[-1].out_shape[1]

    def check_input_size(self, *sizes: int) -> None:
        """Raise ValueError unless every size (an input width or height) is a positive multiple of the stride."""
        for size in sizes:
            if size <= 0 or size % self.stride:
                raise ValueError(f'input size {size} must be a positive multiple of the network stride {self.stride}')

    # --------------------------------------------------------------------------------------------- running
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor | None] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Route):
                x = layer(outputs)
            elif isinstance(layer, Shortcut):
                x = layer(x, outputs)
            else:
                x = layer(x)
            if self._stop_backward[i]:
                x = x.detach()
            outputs.append(x if i in self._keep else None)
        return x

    def fuse(self) -> 'Darknet':
        """Fold batch norm into the convolutions for inference (call after loading weights, in eval mode)."""
        for layer in self.layers:
            if isinstance(layer, ConvBlock):
                layer.fuse()
        return self

    def set_darknet_bn(self, enabled: bool = True) -> 'Darknet':
        """Use Darknet's CPU inference batch-norm formula `sqrt(var) + 1e-6` (for bit-level parity checks)."""
        for layer in self.layers:
            if isinstance(layer, ConvBlock):
                layer.darknet_bn = enabled
        return self

    def conv_layers(self) -> list[tuple[int, ConvBlock]]:
        """(cfg index, block) of every convolutional layer, in cfg order (the `.weights` file order)."""
        return [(i, m) for i, m in enumerate(self.layers) if isinstance(m, ConvBlock)]

    # --------------------------------------------------------------------------------------------- summary
    def summary(self, size: int | None = None, file=None) -> float:
        """Print Darknet's layer table at `size` (default: the cfg's) and return the total BFLOPs."""
        if size is None:
            info = self.info
        else:
            with torch.device('meta'):  # shapes only: skip allocating and initialising weights
                info = Darknet(self._resized_cfg(size)).info
        lines = ['layer     filters    size              input                output']
        total = 0.0
        for li in info:
            (ci, hi, wi), (co, ho, wo) = li.in_shape, li.out_shape
            name = {'convolutional': 'conv', 'maxpool': 'max', 'avgpool': 'avg'}.get(li.type, li.type)
            text = f'{li.index:5d} {name:<6s}{li.detail:<22s}'
            if li.type in ('convolutional', 'maxpool', 'reorg', 'avgpool'):
                text += f'{wi:4d} x{hi:4d} x{ci:5d}   ->  {wo:4d} x{ho:4d} x{co:5d}'
                if li.flops:
                    text += f'  {li.flops / 1e9:.3f} BFLOPs'
            elif li.type == 'route':
                text = f'{li.index:5d} route {li.detail}'
            else:
                text += f'{wo:4d} x{ho:4d} x{co:5d}'
            lines.append(text)
            total += li.flops
        lines.append(f'Total BFLOPs {total / 1e9:.3f}   parameters {sum(p.numel() for p in self.parameters()):,}')
        print('\n'.join(lines), file=file)
        return total / 1e9

    def _resized_cfg(self, size: int) -> Cfg:
        cfg = copy.deepcopy(self.cfg)
        cfg.net.options['width'] = cfg.net.options['height'] = size
        return cfg


def main(argv: list[str] | None = None) -> None:
    """`python -m yolo_lrm.model CFG [--size N]`: print the layer table."""
    import argparse
    ap = argparse.ArgumentParser(description='Print the Darknet-style layer table of a cfg.')
    ap.add_argument('cfg')
    ap.add_argument('--size', type=int, default=None, help='input size (default: the cfg width/height)')
    args = ap.parse_args(argv)
    try:
        Darknet(args.cfg).summary(args.size)
    except CfgError as exc:
        raise SystemExit(f'error: {exc}') from None


if __name__ == '__main__':
    main()
