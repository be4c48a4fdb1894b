"""Export a network (BN fused, eval mode) to TorchScript or ONNX.

The exported model maps a (B, 3, H, W) batch of letterboxed RGB images in [0, 1] (`letterbox.letterbox`) to the raw
region output F (B, A*(5+C), H/32, W/32), channel n*(5+C)+e = entry e (x, y, w, h, obj, classes...) of anchor n.
Decoding and NMS are not part of the graph: the reference is `yolo_lrm.head.detect(F, anchors, conf, nms, loss)`
followed by `yolo_lrm.letterbox.unletterbox`, and everything they need (anchors, classes, names, loss variant, input
size) is written beside the model as `<out>.json` (and inside the TorchScript file as `meta.json`).

`python -m yolo_lrm.export --weights W [--cfg CFG] --format onnx|torchscript [--img-size N] [--out F]`
ONNX needs the optional packages `onnx` and `onnxscript` (`pip install onnx onnxscript`, or the `onnx` extra):
torch >= 2.9 exports through `torch.export`, which builds the graph with onnxscript.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path

import torch

from .cfg import CfgError
from .checkpoint import load_model
from .model import Darknet

FORMATS = {'torchscript': '.torchscript', 'onnx': '.onnx'}


class ExportError(RuntimeError):
    """Export cannot run here (a missing optional package, an exporter failure)."""


def metadata(net: Darknet, names: list[str] | None, size: tuple[int, int]) -> dict:
    """What a consumer needs to decode F outside this package."""
    return {'input': {'shape': [-1, 3, size[1], size[0]], 'format': 'RGB float [0,1], Darknet letterbox on 0.5 gray'},
            'output': 'F (B, A*(5+C), H/32, W/32); channel n*(5+C)+e = entry e of anchor n',
            'anchors': net.region['anchors'], 'num_anchors': net.num_anchors, 'classes': net.num_classes,
            'names': names or [f'class{i}' for i in range(net.num_classes)], 'loss': net.region['loss'],
            'decode': 'yolo_lrm.head.detect(F, anchors.view(-1, 2), conf, nms, loss) then '
                      'yolo_lrm.letterbox.unletterbox(boxes, im_w, im_h, net_w, net_h)'}


def prepare(net: Darknet) -> Darknet:
    """The inference form of the network: eval mode, batch norm folded into the convolutions."""
    return net.eval().fuse()


def example_input(size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """A letterbox-like example batch (0.5 gray) of the export size."""
    return torch.full((batch, 3, size[1], size[0]), 0.5)


def export_torchscript(net: Darknet, size: tuple[int, int], out: Path, meta: dict) -> Path:
    """Trace the network at `size` and save it with `meta.json` embedded; load with `torch.jit.load`.  The trace
    is specialised to that input size (maxpool padding is computed from it): export once per size."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)  # torch 2.13 marks torch.jit deprecated; it still works
        warnings.simplefilter('ignore', torch.jit.TracerWarning)  # the size specialisation documented above
        with torch.no_grad():
            traced = torch.jit.trace(prepare(net), example_input(size), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={'meta.json': json.dumps(meta)})
    return out


def check_onnx_available() -> None:
    """Raise a clear ExportError when the ONNX exporter's packages are missing."""
    missing = [m for m in ('onnx', 'onnxscript') if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f'ONNX export needs {" and ".join(missing)}: pip install onnx onnxscript '
                          f'(torch {torch.__version__} exports ONNX through torch.export + onnxscript)')


def export_onnx(net: Darknet, size: tuple[int, int], out: Path, dynamic_batch: bool = True,
                opset: int | None = None) -> Path:
    """Export to ONNX (input `images`, output `F`), with a dynamic batch dimension unless told otherwise."""
    check_onnx_available()
    x = example_input(size, 2 if dynamic_batch else 1)
    shapes = {'x': {0: torch.export.Dim('batch', min=1, max=1024)}} if dynamic_batch else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the exporter is chatty about internals we do not control
            torch.onnx.export(prepare(net), (x,), str(out), input_names=['images'], output_names=['F'],
                              dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False)
    except Exception as exc:  # the exporter raises many types; the message is what matters to the user
        raise ExportError(f'{out}: ONNX export failed ({exc.__class__.__name__}: {exc})') from None
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The export command line."""
    ap = argparse.ArgumentParser(description='Export a network (raw output F; decode/NMS outside) to '
                                 'TorchScript or ONNX.')
    ap.add_argument('--weights', required=True, help='.pt checkpoint or Darknet .weights')
    ap.add_argument('--cfg', help='network cfg (needed for .weights)')
    ap.add_argument('--format', required=True, choices=sorted(FORMATS))
    ap.add_argument('--img-size', type=int, nargs='+', metavar='N', help='N or W H (default: the cfg size)')
    ap.add_argument('--out', help='output file (default: the weights path with .torchscript / .onnx)')
    ap.add_argument('--static-batch', action='store_true', help='ONNX: fixed batch 1 instead of a dynamic batch')
    ap.add_argument('--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Run the export; user errors exit with a one-line message."""
    args = parse_args(argv)
    try:
        net, names = load_model(args.weights, args.cfg)
        size = (net.width, net.height) if not args.img_size else (args.img_size[0], args.img_size[-1])
        if len(args.img_size or []) > 2:
            raise ValueError(f'--img-size {args.img_size}: give N or W H')
        net.check_input_size(*size)
        out = Path(args.out or Path(args.weights).with_suffix(FORMATS[args.format]))
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = metadata(net, names, size)
        if args.format == 'onnx':
            export_onnx(net, size, out, not args.static_batch, args.opset)
        else:
            export_torchscript(net, size, out, meta)
        meta_path = out.with_name(out.name + '.json')
        meta_path.write_text(json.dumps(meta, indent=1))
    except (CfgError, ValueError, FileNotFoundError, ExportError) as exc:
        raise SystemExit(f'error: {exc}') from None
    print(f'{out}: {args.format} model, input {size[0]}x{size[1]} -> raw F; decoding metadata in {meta_path}')
    return out


if __name__ == '__main__':
    main()
