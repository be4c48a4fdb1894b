"""Which engine runs a trained network: the one loader of detect.py and evaluate.py.

`load_network(weights, cfg, device, engine, size)` returns the network with `model.Darknet`'s call contract
(`F = net(x)`, `anchors`, `num_classes`, `region['loss']`, `width` / `height`, `check_input_size`) and its class
names, whichever engine runs it, so the letterbox → network → decode → NMS → unletterbox code around it is one:

- `torch`: a `.pt` or a Darknet `.weights` (+ cfg) as a `Darknet`, on any device;
- `onnx`: ONNX Runtime on the CPU (`onnxrun.OnnxNetwork`): an `.onnx` export as it is (fp32 or INT8: the file
  says), or a `.pt` / `.weights` exported once to an fp32 `.onnx` in the cache (`cached_export`);
- `auto` (default): an `.onnx` with ONNX Runtime, a `.pt` / `.weights` with PyTorch.  On an idle 2-core AMD EPYC
  (AVX-512, VNNI; bench/README.md, issue #30) ORT fp32 was 1.25-1.46x PyTorch end to end at 416, batch 1, and the
  export it needs takes ~20 s (torch.export), repaid after a few hundred frames: a trained model is still converted
  only when asked (making that the default is #30's next step).  INT8 runs only from an INT8 file the user passes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .cfg import CfgError
from .checkpoint import load_model
from .distributed import pick_device
from .model import Darknet
from .onnxrun import META_VERSION, OnnxNetwork

ENGINES = ('auto', 'torch', 'onnx')


@dataclass
class Loaded:
    """A network ready for the pipeline, its class names (None: not stored) and the route taken, said in words."""
    net: Darknet | OnnxNetwork
    names: list[str] | None
    route: str


def is_onnx(weights: str | os.PathLike) -> bool:
    """Whether the weights are an ONNX export (by the file name, as the exporter names them)."""
    return str(weights).lower().endswith('.onnx')


def cache_dir() -> Path:
    """Where converted models are kept: $YOLO_LRM_CACHE, else $XDG_CACHE_HOME/yolo_lrm, else ~/.cache/yolo_lrm."""
    if os.environ.get('YOLO_LRM_CACHE'):
        return Path(os.environ['YOLO_LRM_CACHE'])
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'yolo_lrm'


def cache_key(weights: str, cfg: str | None, overrides: list[str], size: tuple[int, int]) -> str:
    """What an export depends on: the weights' and cfg's bytes, the overrides, the input size, the metadata version
    and the exporter (torch's version)."""
    h = hashlib.sha256()
    for path in filter(None, (weights, cfg)):
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):  # 1 MiB at a time: Darknet weights run to 100s of MB
                h.update(block)
        h.update(b'\0')
    h.update(repr((overrides, size, META_VERSION, torch.__version__)).encode())
    return h.hexdigest()[:16]


def cached_export(weights: str, cfg: str | None, overrides: list[str], size: tuple[int, int] | None) -> Path:
    """The fp32 ONNX export of a `.pt` / `.weights` at `size` (default: the cfg's), made once per weights, cfg,
    overrides and size in `cache_dir()/onnx`; said when it is made (the export takes seconds to a minute)."""
    from .export import check_onnx_available, export_onnx, metadata
    check_onnx_available()
    net, names = load_model(weights, cfg, overrides)
    size = size or (net.width, net.height)
    net.check_input_size(*size)
    key = cache_key(weights, cfg, overrides, size)
    out = cache_dir() / 'onnx' / f'{Path(weights).stem}-{size[0]}x{size[1]}-{key}.onnx'
    if not out.is_file():
        print(f'{weights}: exporting to ONNX once for ONNX Runtime: {out}', flush=True)
        export_onnx(net, size, out, metadata(net, names, size))
    return out


def load_network(weights: str | os.PathLike, cfg: str | os.PathLike | None = None, device: str = '',
                 engine: str = 'auto', size: tuple[int, int] | None = None,
                 overrides: list[str] | None = None) -> Loaded:
    """Load `weights` for inference with `engine` (see the module docstring) on `device` (`--device`'s spelling;
    '' = CUDA when available, except for ONNX Runtime, which runs on the CPU).  `size` (W, H): the input size the
    caller will run at, for which the export is made or against which it is checked.  Bad combinations raise
    ValueError (CfgError for a cfg) naming the file."""
    weights, cfg, overrides = str(weights), None if cfg is None else str(cfg), list(overrides or [])
    if engine not in ENGINES:
        raise ValueError(f'engine must be one of {", ".join(ENGINES)}, got {engine!r}')
    if not (is_onnx(weights) or engine == 'onnx'):
        target = pick_device(device)
        torch.backends.cudnn.benchmark = target.type == 'cuda'  # fixed input shape: autotuned kernels pay off
        net, names = load_model(weights, cfg, overrides, target)
        why = '--engine torch' if engine == 'torch' else \
            'auto; --engine onnx exports it once for ONNX Runtime fp32, ~1.3x faster end to end on a CPU'
        return Loaded(net, names, f'PyTorch on {target} ({why})')
    if device and pick_device(device).type != 'cpu':
        raise ValueError(f'{weights}: ONNX Runtime runs on the CPU here, not on --device {device}')
    if is_onnx(weights):
        check_onnx_file_options(weights, cfg, overrides, engine)
        path, why = weights, 'an ONNX export'
    else:
        path, why = cached_export(weights, cfg, overrides, size), f'--engine onnx, {weights} exported once'
    net = OnnxNetwork(path)
    if size is not None:
        net.check_input_size(*size)
    return Loaded(net, net.names, f'ONNX Runtime {net.precision} on the CPU ({why}: {path})')


def check_onnx_file_options(weights: str, cfg: str | None, overrides: list[str], engine: str) -> None:
    """An `.onnx` carries its network: refuse a cfg, cfg overrides and `--engine torch` for it, naming the file."""
    if cfg is not None:
        raise CfgError(f'{weights}: an ONNX export carries its network and takes no cfg ({cfg} given; evaluate.py '
                       f'takes - as its CFG)')
    if overrides:
        raise CfgError(f'{weights}: an ONNX export cannot take cfg overrides ({" ".join(overrides)})')
    if engine == 'torch':
        raise ValueError(f'{weights}: an ONNX export runs with ONNX Runtime; --engine torch needs the .pt or '
                         f'.weights it was exported from')
