"""An exported ONNX model (fp32 or INT8) run by ONNX Runtime on the CPU, with the PyTorch network's call contract.

`net = OnnxNetwork('best.onnx')` reads what decoding needs from the metadata that `python -m yolo_lrm.export`
writes into the file (`META_KEY`); then `F = net(x)` maps a float32 (B, 3, H, W) batch of letterboxed RGB images in
[0, 1] to the raw region output F as `Darknet(x)` does, and `net.anchors`, `net.num_classes`, `net.num_anchors`,
`net.region['loss']`, `net.names`, `net.width` / `net.height` (the export's input size, the only one it runs) feed
`head.detect` and `letterbox.unletterbox` unchanged.  ONNX Runtime is optional: `pip install "yolo_lrm[onnx]"`.
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

META_KEY = 'yolo_lrm'      # the model-level metadata entry (JSON) of our exports
META_VERSION = 1
INPUT, OUTPUT = 'images', 'F'


class OnnxError(ValueError):
    """An ONNX model this package cannot run: missing metadata, wrong input, no onnxruntime."""


def check_onnxruntime() -> None:
    """Raise OnnxError with the install command when onnxruntime is missing."""
    if importlib.util.find_spec('onnxruntime') is None:
        raise OnnxError('onnxruntime is not installed: pip install "yolo_lrm[onnx]" (or pip install onnxruntime)')


def read_metadata(path: str | os.PathLike, props: dict[str, str]) -> dict[str, Any]:
    """Our metadata from a model's metadata properties; OnnxError naming the file when it is absent or broken."""
    if META_KEY not in props:
        raise OnnxError(f'{path}: no {META_KEY} metadata in this ONNX file: it was not written by '
                        f'`python -m yolo_lrm.export` (or by an older version); export it again from the .pt or '
                        f'.weights with `python -m yolo_lrm.export --weights W --format onnx`')
    try:
        meta = json.loads(props[META_KEY])
        missing = [k for k in ('anchors', 'num_anchors', 'classes', 'names', 'loss', 'input') if k not in meta]
    except (json.JSONDecodeError, TypeError) as exc:
        raise OnnxError(f'{path}: the {META_KEY} metadata is not valid JSON ({exc})') from None
    if missing:
        raise OnnxError(f'{path}: the {META_KEY} metadata lacks {", ".join(missing)}: export the model again')
    if len(meta['anchors']) != 2 * meta['num_anchors'] or len(meta['names']) != meta['classes']:
        raise OnnxError(f'{path}: the {META_KEY} metadata is inconsistent ({meta["num_anchors"]} anchors for '
                        f'{len(meta["anchors"])} values, {meta["classes"]} classes for {len(meta["names"])} names)')
    return meta


def session_options(threads: int | None = None):
    """ORT session options: `threads` intra-op threads (default: ORT's, one per physical core); the pool's
    spin-waiting follows OMP_WAIT_POLICY as PyTorch's does (PASSIVE, which detect.py sets, turns it off: spinning
    threads collapse throughput when other processes want the cores)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if os.environ.get('OMP_WAIT_POLICY', '').upper() == 'PASSIVE':
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return opts


Runner = Callable[[np.ndarray], np.ndarray]   # a float32 (B, 3, H, W) batch -> F
Opener = Callable[[str, Optional[int]], Tuple[Runner, Dict[str, str]]]   # (path, threads) -> (run, metadata props)


def open_onnxruntime(path: str, threads: int | None) -> tuple[Runner, dict[str, str]]:
    """An ORT CPU session over the model: (run(batch) -> F, the model's metadata properties)."""
    check_onnxruntime()
    import onnxruntime as ort
    try:
        session = ort.InferenceSession(path, session_options(threads), providers=['CPUExecutionProvider'])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types; the message is what matters
        raise OnnxError(f'{path}: ONNX Runtime cannot load it ({exc.__class__.__name__}: {exc})') from None
    check_signature(path, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    return (lambda batch: session.run([OUTPUT], {INPUT: batch})[0]), session.get_modelmeta().custom_metadata_map


def check_signature(path: str, inputs: list[str], outputs: list[str]) -> None:
    """OnnxError unless the model has our input and output names."""
    if inputs != [INPUT] or OUTPUT not in outputs:
        raise OnnxError(f'{path}: expected input {INPUT!r} and output {OUTPUT!r}, got {inputs} -> {outputs}')


class OnnxNetwork:
    """An exported model as a network: `F = net(x)`, plus the head facts of `model.Darknet` (from the metadata).
    `threads`: the runtime's intra-op threads (default: its own choice); `runtime` opens the model (default ONNX
    Runtime's CPU session; bench/bench_engines.py passes OpenVINO's)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, runtime: Opener = open_onnxruntime):
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f'{self.path}: ONNX model not found')
        self.runtime = runtime.__name__.removeprefix('open_')
        self._run, props = runtime(self.path, threads)
        self.meta = read_metadata(self.path, props)
        _, _, self.height, self.width = self.meta['input']['shape']
        self.names: list[str] = list(self.meta['names'])
        self.num_classes: int = self.meta['classes']
        self.num_anchors: int = self.meta['num_anchors']
        self.anchors = torch.tensor(self.meta['anchors'], dtype=torch.float32).view(-1, 2)
        self.region = {'loss': self.meta['loss'], 'classes': self.num_classes, 'num': self.num_anchors,
                       'anchors': list(self.meta['anchors'])}
        self.stride: int = self.meta.get('stride', 32)
        self.precision: str = self.meta.get('precision', 'fp32')
        self.training = False

    def __repr__(self) -> str:
        return f'OnnxNetwork({self.path!r}, {self.runtime}, {self.precision}, {self.width}x{self.height})'

    def check_input_size(self, *sizes: int) -> None:
        """Raise ValueError unless the sizes are the export's: (W, H), or one size for a square export."""
        if tuple(sizes) in ((self.width, self.height), (self.width,) if self.width == self.height else ()):
            return
        raise OnnxError(f'{self.path}: exported for input {self.width}x{self.height}, cannot run at '
                        f'{"x".join(map(str, sizes))}: export again with --img-size, or leave the size unset')

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw output F (B, A*(5+C), H/32, W/32), float32 on the CPU, for a float32 (B, 3, H, W) batch."""
        batch = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise OnnxError(f'{self.path}: expected a (B, 3, H, W) batch, got shape {tuple(batch.shape)}')
        self.check_input_size(batch.shape[3], batch.shape[2])
        return torch.from_numpy(self._run(np.ascontiguousarray(batch, dtype=np.float32)))

    # the rest of `evaluate.run_list`'s view of a network: ONNX Runtime runs on the host and has no training mode
    def eval(self) -> 'OnnxNetwork':
        """No-op (an exported model is always in inference mode)."""
        return self

    def train(self, mode: bool = True) -> 'OnnxNetwork':
        """Refuses training mode; `train(False)` is a no-op."""
        if mode:
            raise OnnxError(f'{self.path}: an exported model cannot train')
        return self

    def to(self, device: str | torch.device) -> 'OnnxNetwork':
        """Stays on the CPU (the CPU execution provider); any other device is an error."""
        if torch.device(device).type != 'cpu':
            raise OnnxError(f'{self.path}: ONNX models run on the CPU here, not on {device}')
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """One empty CPU tensor: callers read the device as `next(net.parameters()).device`."""
        yield torch.empty(0)
