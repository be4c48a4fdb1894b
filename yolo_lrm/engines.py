"""Which engine runs a trained network: the one loader of detect.py and evaluate.py.

`load_network(weights, cfg, device, engine, size)` returns the network with `model.Darknet`'s call contract
(`F = net(x)`, `anchors`, `num_classes`, `region['loss']`, `width` / `height`, `check_input_size`) and its class
names, whichever engine runs it, so the letterbox → network → decode → NMS → unletterbox code around it is one:

- `torch`: a `.pt` or a Darknet `.weights` (+ cfg) as a `Darknet`, on any device;
- `onnx`: ONNX Runtime on the CPU (`onnxrun.OnnxNetwork`): an `.onnx` export as it is (fp32 or INT8: the file
  says), or a `.pt` / `.weights` exported once to an fp32 `.onnx` in the cache (`cached_export`);
- `auto` (default): an `.onnx` with ONNX Runtime; a `.pt` / `.weights` with PyTorch on a GPU, and on the CPU with
  what the caller's `auto_cpu` says: detect.py takes the fastest route, ONNX Runtime fp32 through the cached export
  (on an idle 2-core AMD EPYC with AVX-512 and VNNI it was 1.25-1.46x PyTorch end to end at 416, batch 1:
  bench/README.md, issue #30; the ~20 s export is made once per weights and size), falling back to PyTorch, with
  the reason in the route, when onnxruntime or the exporter's packages are missing or the export fails; evaluate.py
  keeps PyTorch, so that its scores are those of the network training validates.  INT8 runs only from an INT8
  file the user passes.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cfg import CfgError
from .checkpoint import load_model
from .distributed import pick_device
from .export import ExportError, check_onnx_available, export_onnx, metadata
from .model import Darknet
from .onnxrun import META_VERSION, OnnxError, OnnxNetwork, check_onnxruntime

ENGINES = ('auto', 'torch', 'onnx')
AUTO_CPU = ('onnx', 'torch')  # what `auto` runs a .pt / .weights with on the CPU (load_network's auto_cpu)
ORT_GAIN = 'ONNX Runtime fp32, ~1.3x faster end to end on a CPU'  # bench/README.md, idle 2-core EPYC


@dataclass
class Loaded:
    """A network ready for the pipeline, its class names (None: not stored) and the route taken, said in words."""
    net: Darknet | OnnxNetwork
    names: list[str] | None
    route: str


@dataclass
class Export:
    """A `.pt` / `.weights` exported to fp32 ONNX in the cache, and the seconds the export took (None: reused)."""
    path: Path
    seconds: float | None

    def said(self) -> str:
        """The export in the route's words: which file, made now (how long it took) or reused."""
        return f'cached export {self.path}, ' + ('reused' if self.seconds is None else
                                                f'exported now in {self.seconds:.1f} s')


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


def cached_export(weights: str, cfg: str | None, overrides: list[str], size: tuple[int, int] | None) -> Export:
    """The fp32 ONNX export of a `.pt` / `.weights` at `size` (default: the cfg's), made once per weights, cfg,
    overrides and size in `cache_dir()/onnx`; said on stderr before it is made (it takes seconds to a minute).
    ExportError (the exporter's packages, a failed export, a cache that cannot be written) is never the model's
    fault; a bad cfg, weights file or size raises as loading them does."""
    check_onnx_available()
    net, names = load_model(weights, cfg, overrides)
    size = size or (net.width, net.height)
    net.check_input_size(*size)
    key = cache_key(weights, cfg, overrides, size)
    out = cache_dir() / 'onnx' / f'{Path(weights).stem}-{size[0]}x{size[1]}-{key}.onnx'
    if out.is_file():
        return Export(out, None)
    try:  # before the export's seconds are spent
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f'{out.parent}: cannot create the ONNX export cache ({exc.strerror}): set YOLO_LRM_CACHE '
                          f'to a writable folder') from None
    print(f'{weights}: exporting to ONNX once for ONNX Runtime (--engine torch skips it): {out}', file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    try:
        export_onnx(net, size, out, metadata(net, names, size))
    except OSError as exc:  # a full disk, a read-only cache
        raise ExportError(f'{out}: cannot write the ONNX export ({exc})') from None
    return Export(out, time.perf_counter() - start)


def load_network(weights: str | os.PathLike, cfg: str | os.PathLike | None = None, device: str = '',
                 engine: str = 'auto', size: tuple[int, int] | None = None,
                 overrides: list[str] | None = None, auto_cpu: str = 'onnx') -> Loaded:
    """Load `weights` for inference with `engine` (see the module docstring) on `device` (`--device`'s spelling;
    '' = CUDA when available, except for ONNX Runtime, which runs on the CPU).  `size` (W, H): the input size the
    caller will run at, for which the export is made or against which it is checked.  `auto_cpu`: what `auto` runs
    a `.pt` / `.weights` with on the CPU, 'onnx' (the fastest, falling back to PyTorch with the reason) or 'torch'.
    Bad combinations raise ValueError (CfgError for a cfg) naming the file."""
    weights, cfg, overrides = str(weights), None if cfg is None else str(cfg), list(overrides or [])
    if engine not in ENGINES:
        raise ValueError(f'engine must be one of {", ".join(ENGINES)}, got {engine!r}')
    if auto_cpu not in AUTO_CPU:
        raise ValueError(f'auto_cpu must be one of {", ".join(AUTO_CPU)}, got {auto_cpu!r}')
    if is_onnx(weights) or engine == 'onnx':
        if device and pick_device(device).type != 'cpu':
            raise ValueError(f'{weights}: ONNX Runtime runs on the CPU here, not on --device {device}')
        if is_onnx(weights):
            return load_onnx_file(weights, cfg, overrides, engine, size)
        return load_export(weights, cfg, overrides, size, '--engine onnx')
    target = pick_device(device)
    if engine == 'torch':
        why = '--engine torch'
    elif target.type != 'cpu':
        why = 'auto: PyTorch on a GPU, ONNX Runtime on a CPU'
    elif auto_cpu == 'torch':
        why = f'auto; --engine onnx exports it once for {ORT_GAIN}'
    else:
        try:
            return load_export(weights, cfg, overrides, size, 'auto: the fastest route on a CPU')
        except (ExportError, OnnxError) as exc:  # a missing package or a failed export: not the user's to fix here
            why = f'auto: {ORT_GAIN}, but {str(exc).splitlines()[0]}'
    return load_torch(weights, cfg, overrides, target, why)


def load_torch(weights: str, cfg: str | None, overrides: list[str], target: torch.device, why: str) -> Loaded:
    """A `.pt` / `.weights` as a `Darknet` on `target`; `why`: the reason the route gives."""
    torch.backends.cudnn.benchmark = target.type == 'cuda'  # fixed input shape: autotuned kernels pay off
    net, names = load_model(weights, cfg, overrides, target)
    return Loaded(net, names, f'PyTorch on {target} ({why})')


def load_export(weights: str, cfg: str | None, overrides: list[str], size: tuple[int, int] | None,
                why: str) -> Loaded:
    """A `.pt` / `.weights` run by ONNX Runtime through its cached export (made now if absent); `why`: the reason
    the route gives, before the export's file and age."""
    check_onnxruntime()  # before the export's seconds are spent
    export = cached_export(weights, cfg, overrides, size)
    net = OnnxNetwork(export.path)
    return Loaded(net, net.names, f'ONNX Runtime {net.precision} on the CPU ({why}; {export.said()})')


def load_onnx_file(weights: str, cfg: str | None, overrides: list[str], engine: str,
                   size: tuple[int, int] | None) -> Loaded:
    """An `.onnx` export as the user passed it (its own network, input size and precision)."""
    check_onnx_file_options(weights, cfg, overrides, engine)
    net = OnnxNetwork(weights)
    if size is not None:
        net.check_input_size(*size)
    return Loaded(net, net.names, f'ONNX Runtime {net.precision} on the CPU (an ONNX export: {weights})')


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
