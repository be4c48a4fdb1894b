"""Darknet `.weights` files: read and write them byte for byte (Darknet's `load_weights_upto` / `save_weights_upto`).

Layout: int32 major, minor, revision; `seen` as uint64 when `major*10 + minor >= 2` (and both < 1000), else int32;
then, for every convolutional layer in cfg order, float32 little-endian `biases[n]` (the BN beta when
batch-normalised), `scales[n]`, `rolling_mean[n]`, `rolling_variance[n]` (batch-normalised layers only) and the
weights `[n][c/groups][k][k]` (= PyTorch OIHW).  No per-layer header, so the cfg alone defines the layout.

Darknet's per-layer switches are honoured as Darknet's own loader does: `dontload=1` skips the layer (its bytes are
not in the file), `numload=m` reads only the first m filters, `dontloadscales=1` skips the BN triple; `dontsave=1`
leaves the layer out when saving.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .cfg import CfgError, Section
from .atomic import atomic_write
from .layers import ConvBlock

FLOAT = np.dtype('<f4')


class WeightsError(ValueError):
    """A `.weights` file that does not fit its network (the message names the file and the layer)."""


@dataclass
class Header:
    """The header of a `.weights` file."""
    major: int
    minor: int
    revision: int
    seen: int
    size: int   # header bytes: 20 (uint64 seen) or 16 (int32 seen)

    @property
    def version(self) -> tuple[int, int, int]:
        return self.major, self.minor, self.revision


@dataclass
class Record:
    """Where one conv layer's numbers sit in the file: its parts in file order and their float counts."""
    index: int                      # cfg layer index
    block: ConvBlock
    section: Section
    parts: list[tuple[str, int]]    # (name, floats): biases, scales, rolling_mean, rolling_variance, weights

    @property
    def floats(self) -> int:
        return sum(n for _, n in self.parts)

    def describe(self) -> str:
        """`layer 12 (convolutional 1024x512x3x3, batch_normalize)` for messages."""
        w = self.block.conv.weight
        bn = ', batch_normalize' if self.section['batch_normalize'] else ''
        return f'layer {self.index} (convolutional {"x".join(str(s) for s in w.shape)}{bn})'


def seen_is_64bit(major: int, minor: int) -> bool:
    """Darknet's rule for the width of `seen` in the header."""
    return major * 10 + minor >= 2 and major < 1000 and minor < 1000


def read_header(path: str | os.PathLike) -> Header:
    """Parse the header of a `.weights` file."""
    with open(path, 'rb') as f:
        head = f.read(20)
    if len(head) < 16:
        raise WeightsError(f'{path}: {len(head)} bytes is too short for a Darknet .weights header (16 or 20 bytes)')
    major, minor, revision = (int(v) for v in np.frombuffer(head[:12], '<i4'))
    if seen_is_64bit(major, minor):
        if len(head) < 20:
            raise WeightsError(f'{path}: version {major}.{minor}.{revision} needs a 20-byte header, file has '
                               f'{len(head)} bytes')
        return Header(major, minor, revision, int(np.frombuffer(head[12:20], '<u8')[0]), 20)
    return Header(major, minor, revision, int(np.frombuffer(head[12:16], '<i4')[0]), 16)


def header_bytes(version: tuple[int, int, int], seen: int) -> bytes:
    """The header Darknet writes for this version and `seen`."""
    major, minor, revision = version
    wide = seen_is_64bit(major, minor)
    if seen < 0 or seen >= 2 ** (64 if wide else 31):
        raise ValueError(f'seen={seen} does not fit the header of version {major}.{minor}.{revision}')
    return np.array(version, '<i4').tobytes() + np.array([seen], '<u8' if wide else '<i4').tobytes()


def _check_supported(idx: int, sec: Section, block: ConvBlock) -> None:
    if sec['batch_normalize'] and block.bn is None:
        raise WeightsError(f'{sec.where()}: layer {idx} was fused (net.fuse()); Darknet weights need the batch '
                           f'norm parameters: load/save before fusing')
    if sec['flipped']:
        raise sec.error('flipped=1 (transposed weights) is not supported by the .weights reader', 'flipped')


def layout(net, loading: bool) -> list[Record]:
    """The conv layers in file order, with their part sizes (`loading` applies dontload/numload/dontloadscales,
    otherwise dontsave)."""
    records = []
    for idx, block in net.conv_layers():
        sec = net.cfg.layers[idx]
        _check_supported(idx, sec, block)
        if sec['dontload' if loading else 'dontsave']:
            continue
        n = block.conv.out_channels
        if loading and sec['numload']:
            if not 0 < sec['numload'] <= n:
                raise sec.error(f'numload={sec["numload"]} must be in 1..filters={n}', 'numload')
            n = sec['numload']
        per_filter = block.conv.weight[0].numel()
        parts = [('biases', n)]
        if sec['batch_normalize'] and not (loading and sec['dontloadscales']):
            parts += [('scales', n), ('rolling_mean', n), ('rolling_variance', n)]
        records.append(Record(idx, block, sec, parts + [('weights', n * per_filter)]))
    return records


def _tensor(block: ConvBlock, part: str) -> torch.Tensor:
    """The parameter/buffer of `block` that a file part maps to."""
    if part == 'biases':
        return block.bn.bias if block.bn is not None else block.conv.bias
    if part == 'weights':
        return block.conv.weight
    return {'scales': block.bn.weight, 'rolling_mean': block.bn.running_mean,
            'rolling_variance': block.bn.running_var}[part]


def _size_error(path: str, records: list[Record], header: Header, available: int, partial: bool) -> WeightsError:
    expected = header.size + 4 * sum(r.floats for r in records)
    actual = header.size + available
    msg = f'{path}: expected {expected:,} bytes for this cfg, file has {actual:,} bytes'
    if available > expected - header.size:
        return WeightsError(f'{msg}: {actual - expected:,} bytes left after the last conv layer '
                            f'({records[-1].describe() if records else "none"}); wrong cfg?')
    offset = 0
    for r in records:
        if offset + 4 * r.floats > available:
            have = available - offset
            hint = ('the file does not end on a layer boundary' if partial
                    else 'a backbone file such as darknet19_448.conv.23: give it to train.py as WEIGHTS, which loads the layers '
                    'that fit')
            return WeightsError(f'{msg}: {r.describe()} needs {4 * r.floats:,} bytes at offset '
                                f'{header.size + offset:,} but only {have:,} remain ({hint})')
        offset += 4 * r.floats
    return WeightsError(msg)


def _fitting(records: list[Record], available: int) -> int:
    """How many whole records fit in `available` bytes (and whether they end exactly there)."""
    offset = 0
    for count, r in enumerate(records):
        if offset == available:
            return count
        offset += 4 * r.floats
        if offset > available:
            return -1
    return len(records) if offset == available else -1


@torch.no_grad()
def load_darknet_weights(net, path: str | os.PathLike, partial: bool = False) -> int:
    """Load a Darknet `.weights` file into `net` (a `Darknet`); return the number of conv layers loaded.

    Sets `net.seen` and `net.version` from the header.  The file must match the cfg exactly, unless
    `partial=True`: then a shorter file that ends on a layer boundary loads its first layers and leaves the rest as
    they are (Darknet's pretrained backbones such as `darknet19_448.conv.23`).
    """
    path = str(path)
    header = read_header(path)
    records = layout(net, loading=True)
    available = os.path.getsize(path) - header.size
    count = _fitting(records, available)
    if count < 0 or (count < len(records) and not partial):
        raise _size_error(path, records, header, available, partial)
    with open(path, 'rb') as f:
        f.seek(header.size)
        for r in records[:count]:
            for part, n in r.parts:
                target = _tensor(r.block, part)
                values = torch.from_numpy(np.frombuffer(f.read(4 * n), FLOAT).astype(np.float32))
                # numload=m fills the first m filters only
                target[:n // target[0].numel()].copy_(values.view(-1, *target.shape[1:]))
    net.seen, net.version = header.seen, header.version
    return count


def save_darknet_weights(net, path: str | os.PathLike, cutoff: int | None = None) -> None:
    """Write `net`'s conv layers with cfg index < `cutoff` (all by default) as a Darknet `.weights` file.

    The header carries `net.version` and `net.seen`; the file is written to a temporary name and renamed, so a
    crash never leaves a truncated file behind.
    """
    records = [r for r in layout(net, loading=False) if cutoff is None or r.index < cutoff]

    def write(f) -> None:
        f.write(header_bytes(tuple(net.version), int(net.seen)))
        for r in records:
            for part, _ in r.parts:
                f.write(_tensor(r.block, part).detach().to('cpu', torch.float32).numpy().astype(FLOAT).tobytes())

    atomic_write(path, write)


# ------------------------------------------------------------------------------------------------------------ CLI
def _partial(cfg: str, weights: str, out: str, n: int) -> None:
    """Darknet's `partial`: keep the layers before cfg index `n`, with `seen` reset to 0."""
    from .model import Darknet
    net = Darknet(cfg)
    if not 0 < n <= len(net.layers):
        raise WeightsError(f'N={n} must be in 1..{len(net.layers)} (the number of layers of {cfg})')
    loaded = load_darknet_weights(net, weights, partial=True)
    needed = sum(1 for r in layout(net, loading=True) if r.index < n)
    if loaded < needed:
        raise WeightsError(f'{weights}: holds {loaded} conv layers, but the layers before {n} need {needed}')
    net.seen = 0
    save_darknet_weights(net, out, cutoff=n)
    print(f'{out}: layers 0..{n - 1} ({needed} conv layers), seen=0, version '
          f'{".".join(map(str, net.version))}, {os.path.getsize(out):,} bytes')


def _info(weights: str, cfg: str | None) -> None:
    """Print the header, and with a cfg, how the file maps onto its conv layers."""
    header = read_header(weights)
    size = os.path.getsize(weights)
    print(f'{weights}: version {header.major}.{header.minor}.{header.revision}, seen {header.seen:,}, '
          f'header {header.size} bytes, {(size - header.size) / 4:,.0f} floats')
    if cfg is None:
        return
    from .model import Darknet
    net = Darknet(cfg)
    records = layout(net, loading=True)
    available = size - header.size
    offset = 0
    for r in records:
        fits = offset + 4 * r.floats <= available
        print(f'  {r.describe():<56s} {r.floats:>11,} floats at byte {header.size + offset:>12,}'
              f'{"" if fits else "  MISSING"}')
        offset += 4 * r.floats
    count = _fitting(records, available)
    if count == len(records):
        print(f'matches {cfg}: all {count} conv layers')
    elif count >= 0:
        print(f'partial file: the first {count} of {len(records)} conv layers (train.py loads it as WEIGHTS)')
    else:
        print(f'does NOT match {cfg}: {_size_error(weights, records, header, available, True)}')


def main(argv: list[str] | None = None) -> None:
    """`python -m yolo_lrm.weights partial CFG WEIGHTS OUT N` | `info WEIGHTS [CFG]`."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.weights', description='Darknet .weights tools.')
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('partial', help="Darknet's partial: keep layers [0, N) of a weights file, seen reset to 0")
    p.add_argument('cfg')
    p.add_argument('weights')
    p.add_argument('out')
    p.add_argument('n', type=int, help='number of cfg layers to keep (e.g. 23 for the Darknet19 backbone)')
    i = sub.add_parser('info', help='print the header and, with a cfg, the per-layer layout')
    i.add_argument('weights')
    i.add_argument('cfg', nargs='?')
    args = ap.parse_args(argv)
    try:
        if args.cmd == 'partial':
            _partial(args.cfg, args.weights, args.out, args.n)
        else:
            _info(args.weights, args.cfg)
    except (CfgError, WeightsError, OSError) as exc:
        sys.exit(f'error: {exc}')


if __name__ == '__main__':
    main()
