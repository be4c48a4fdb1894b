"""Export a network (BN fused, eval mode) to TorchScript or ONNX.

The exported model maps a (B, 3, H, W) batch of letterboxed RGB images in [0, 1] (`letterbox.letterbox`) to the raw
region output F (B, A*(5+C), H/32, W/32), channel n*(5+C)+e = entry e (x, y, w, h, obj, classes...) of anchor n.
Decoding and NMS are not part of the graph: the reference is `yolo_lrm.head.detect(F, anchors, conf, nms, loss)`
followed by `yolo_lrm.letterbox.unletterbox`, and everything they need (anchors, classes, names, loss variant, input
size) is written beside the model as `<out>.json` and inside it: the ONNX model's metadata entry `yolo_lrm`
(which `onnxrun.OnnxNetwork` reads), the TorchScript file's `meta.json`.

`python -m yolo_lrm.export --weights W [--cfg CFG] --format onnx|torchscript [--img-size N] [--out F]`
`python -m yolo_lrm.export --weights W --format onnx --int8 --calib DATA [--calib-images N]`: static INT8 (see
`quantize.py`), calibrated on N letterboxed images of DATA's train= list; prints fp32 vs INT8 mAP on its valid=.
ONNX needs the optional packages `onnx` and `onnxscript`, INT8 and running the models `onnxruntime`
(`pip install "yolo_lrm[onnx]"`): torch >= 2.9 exports through `torch.export`, which builds the graph with onnxscript.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from .atomic import atomic_write
from .cfg import CfgError
from .data.datafile import DataCfg, parse_data
from .checkpoint import load_model
from .model import Darknet
from .onnxrun import INPUT, META_KEY, META_VERSION, OUTPUT, OnnxNetwork
from .quantize import DEFAULT, DEFAULT_CALIB_IMAGES, calibration_paths, quantize_int8, settings_meta

FORMATS = {'torchscript': '.torchscript', 'onnx': '.onnx'}


class ExportError(RuntimeError):
    """Export cannot run here (a missing optional package, an exporter failure)."""


def metadata(net: Darknet, names: list[str] | None, size: tuple[int, int]) -> dict:
    """What a consumer needs to decode F outside this package."""
    return {'version': META_VERSION, 'precision': 'fp32', 'stride': net.stride,
            'input': {'shape': [-1, 3, size[1], size[0]], 'format': 'RGB float [0,1], Darknet letterbox on 0.5 gray'},
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


def export_onnx(net: Darknet, size: tuple[int, int], out: Path, meta: dict, dynamic_batch: bool = True,
                opset: int | None = None) -> Path:
    """Export to ONNX (input `images`, output `F`) with `meta` embedded, a dynamic batch dimension unless told
    otherwise; the file is written atomically."""
    check_onnx_available()
    import onnx
    x = example_input(size, 2 if dynamic_batch else 1)
    shapes = {'x': {0: torch.export.Dim('batch', min=1, max=1024)}} if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix='yolo_lrm_export_') as tmp:
        raw = Path(tmp) / 'raw.onnx'
        # the exporter logs a warning per torchvision operator it cannot register (torchvision is not ours to need)
        logging.getLogger('torch.onnx._internal.exporter._registration').setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')  # the exporter is chatty about internals we do not control
                torch.onnx.export(prepare(net), (x,), str(raw), input_names=[INPUT], output_names=[OUTPUT],
                                  dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False,
                                  verbose=False)
        except Exception as exc:  # the exporter raises many types; the message is what matters to the user
            raise ExportError(f'{out}: ONNX export failed ({exc.__class__.__name__}: {exc})') from None
        save_onnx(onnx.load(str(raw)), out, meta)
    return out


def save_onnx(model, out: str | Path, meta: dict) -> None:
    """Write an ONNX model atomically with `meta` as its `yolo_lrm` metadata entry.  The exporter's per-node
    metadata (source stack traces naming the exporting machine's paths) is dropped: it is for debugging the exporter."""
    for node in model.graph.node:
        del node.metadata_props[:]
    props = {p.key: p.value for p in model.metadata_props if p.key != META_KEY}
    del model.metadata_props[:]
    for key, value in {**props, META_KEY: json.dumps(meta)}.items():
        model.metadata_props.add(key=key, value=value)
    atomic_write(out, lambda f: f.write(model.SerializeToString()))


def export_int8(net: Darknet, size: tuple[int, int], out: Path, meta: dict, calib: str, paths: list[str],
                opset: int | None = None) -> dict:
    """Export fp32, quantize it (`quantize.DEFAULT`, calibrated on `paths`) into `out`, and return the INT8 model's
    metadata; with a valid= list in `calib`, print the fp32 and INT8 mAP on it."""
    import onnx
    with tempfile.TemporaryDirectory(prefix='yolo_lrm_int8_') as tmp:
        fp32, int8 = Path(tmp) / 'fp32.onnx', Path(tmp) / 'int8.onnx'
        export_onnx(net, size, fp32, meta, opset=opset)
        reader = quantize_int8(fp32, int8, paths, *size)
        meta = {**meta, 'precision': 'int8', 'quantization': settings_meta(DEFAULT, reader, calib)}
        save_onnx(onnx.load(str(int8)), out, meta)
        print(f'{out}: INT8 ({DEFAULT.label()}), calibrated on {len(reader.used)} images of {calib} train='
              + (f' ({len(reader.skipped)} unreadable, skipped)' if reader.skipped else ''))
        data = parse_data(calib)
        if not data.has('valid'):
            print(f'no mAP comparison: {calib} has no valid= list')
        elif size[0] != size[1]:
            print(f'no mAP comparison: evaluation runs square inputs, the export is {size[0]}x{size[1]}')
        else:
            try:
                compare_map(fp32, out, data)
            except (CfgError, ValueError) as exc:  # the INT8 model is written and sound; say why there is no figure
                print(f'no mAP comparison: {exc}')
    return meta


def compare_map(fp32: Path, int8: Path, data: DataCfg) -> tuple[float, float]:
    """VOC07 mAP@.5 of the fp32 and the INT8 model on the data's valid= list, printed; returns both (percent)."""
    from .evaluation.evaluate import evaluate_model
    maps = [100 * evaluate_model(OnnxNetwork(p), data, progress=False).map for p in (fp32, int8)]
    print(f'mAP@.5 (VOC07) on {data["valid"]}: fp32 {maps[0]:.2f}, INT8 {maps[1]:.2f} ({maps[1] - maps[0]:+.2f})')
    return maps[0], maps[1]


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
    ap.add_argument('--int8', action='store_true', help='ONNX: static INT8 quantization (needs --calib)')
    ap.add_argument('--calib', metavar='DATA', help='.data whose train= images calibrate --int8 (its valid= list, '
                    'if any, compares fp32 and INT8 mAP)')
    ap.add_argument('--calib-images', type=int, default=DEFAULT_CALIB_IMAGES, metavar='N',
                    help=f'calibration images, evenly spaced over train= (default {DEFAULT_CALIB_IMAGES})')
    return ap.parse_args(argv)


def check_int8_args(args: argparse.Namespace) -> list[str]:
    """The calibration images for --int8 ([] without it); the flags' combinations checked before any export."""
    if not args.int8:
        if args.calib:
            raise ValueError('--calib calibrates --int8: add --int8 (or drop --calib)')
        return []
    if args.format != 'onnx':
        raise ValueError(f'--int8 is an ONNX export: use --format onnx, not {args.format}')
    if not args.calib:
        raise ValueError('--int8 needs calibration images: --calib DATA (a .data whose train= list holds real '
                         'images of the kind the model will see)')
    return calibration_paths(args.calib, args.calib_images)


def main(argv: list[str] | None = None) -> Path:
    """Run the export; user errors exit with a one-line message."""
    args = parse_args(argv)
    try:
        calib = check_int8_args(args)
        net, names = load_model(args.weights, args.cfg)
        size = (net.width, net.height) if not args.img_size else (args.img_size[0], args.img_size[-1])
        if len(args.img_size or []) > 2:
            raise ValueError(f'--img-size {args.img_size}: give N or W H')
        net.check_input_size(*size)
        suffix = '.int8.onnx' if args.int8 else FORMATS[args.format]
        out = Path(args.out or Path(args.weights).with_suffix(suffix))
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = metadata(net, names, size)
        if args.int8:
            meta = export_int8(net, size, out, meta, args.calib, calib, args.opset)
        elif args.format == 'onnx':
            export_onnx(net, size, out, meta, not args.static_batch, args.opset)
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
