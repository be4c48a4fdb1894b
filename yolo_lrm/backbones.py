"""ImageNet-pretrained backbones as Darknet `.weights` files, for train.py's partial load (the paper starts every
detector from one).

    python -m yolo_lrm.backbones mobilenet-v1 --out weights/mobilenet_v1.conv.27 [--checkpoint PATH]

Darknet19 needs no conversion: Darknet publishes `darknet19_448.conv.23` (weights/README.md).  MobileNet-v1 comes from
PyTorch Image Models (timm): `mobilenetv1_100`, weights `timm/mobilenetv1_100.ra4_e3600_r224_in1k` on the Hugging
Face Hub, a `model.safetensors` state_dict, fetched with `huggingface_hub` unless `--checkpoint` names a local copy
(`.safetensors`, or a `torch.save`d dict, possibly under 'state_dict' or 'model').  timm itself is not needed.

Mapping.  timm's network is a stem (`conv_stem`, `bn1`: 3x3/2, 32 filters) and 13 separable pairs in 5 stages
(`blocks.S.I`: `conv_dw` 3x3 depthwise + `bn1`, `conv_pw` 1x1 + `bn2`), every conv followed by batch norm
(eps 1e-5) and ReLU6, 3x3 convs padded symmetrically by 1.  These 27 convs are layers 0-26 of
cfg/yolov2-mobilenet-voc.cfg and -kitti.cfg in the same order, each `batch_normalize=1 activation=relu6`, and a
Darknet conv record is BN beta, gamma, running mean, running variance, weights: so the file's layers are timm's
tensors, and our layers 0-26 compute timm's `forward_features` (eval mode).  The ImageNet classifier is left out.

Input.  timm's weights were trained on `(x - 0.5) / 0.5` (the pretrained cfg's Inception mean and std); our inputs
are RGB in [0, 1] without normalisation.  The converter folds the normalisation into layer 0: its weights are divided
by the std of their input channel and the constant left over moves into its rolling mean.  That is exact except at
the top and left image border: layer 0's padding is 0 of the raw image (black) here, 0 of the normalised image (grey)
in timm; `--mean` / `--std` fit a checkpoint trained with other values.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

import torch

from .cfg import parse_cfg_text
from .layers import ConvBlock
from .model import Darknet
from .weights import save_darknet_weights

HUB_REPO = 'timm/mobilenetv1_100.ra4_e3600_r224_in1k'
HUB_FILE = 'model.safetensors'
INPUT_MEAN = (0.5, 0.5, 0.5)   # timm's pretrained cfg for these weights: IMAGENET_INCEPTION_MEAN / _STD
INPUT_STD = (0.5, 0.5, 0.5)
INSTALL = 'pip install "yolo_lrm[backbones]"'
STEM_FILTERS = 32
# timm's stages (`blocks.S.I`), each pair as (pointwise filters, depthwise stride): Howard et al. 2017, Table 1
STAGES = (((64, 1),), ((128, 2), (128, 1)), ((256, 2), (256, 1)), ((512, 2),) + ((512, 1),) * 5,
          ((1024, 2), (1024, 1)))
BN_PARTS = ('weight', 'bias', 'running_mean', 'running_var')
CLASSIFIER = ('classifier.weight', 'classifier.bias')   # in the file, not in the backbone


class BackboneError(ValueError):
    """A checkpoint that is not the backbone, or that cannot be read or fetched (the message names the file)."""


@dataclass(frozen=True)
class Conv:
    """One conv layer of the backbone and the state_dict keys it is read from."""
    c_in: int
    filters: int
    size: int
    stride: int
    groups: int
    weight: str     # key of the conv weight
    bn: str         # prefix of its batch norm's keys

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The conv weight's shape (out, in / groups, k, k)."""
        return self.filters, self.c_in // self.groups, self.size, self.size


def mobilenet_v1_layers() -> list[Conv]:
    """Layers 0-26 of cfg/yolov2-mobilenet-*.cfg in order, with their timm `mobilenetv1_100` keys."""
    layers = [Conv(3, STEM_FILTERS, 3, 2, 1, 'conv_stem.weight', 'bn1')]
    c = STEM_FILTERS
    for s, stage in enumerate(STAGES):
        for i, (filters, stride) in enumerate(stage):
            block = f'blocks.{s}.{i}'
            layers += [Conv(c, c, 3, stride, c, f'{block}.conv_dw.weight', f'{block}.bn1'),
                       Conv(c, filters, 1, 1, 1, f'{block}.conv_pw.weight', f'{block}.bn2')]
            c = filters
    return layers


def _optional(module: str):
    """Import a dependency of the `backbones` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackboneError(f'{module.split(".")[0]} is not installed: {INSTALL}') from None


def download(repo: str = HUB_REPO, filename: str = HUB_FILE) -> str:
    """The local path of the published checkpoint (the Hugging Face Hub cache; fetched on first use)."""
    _optional('safetensors.torch')   # needed to read the file: fail before the download, not after
    hub = _optional('huggingface_hub')
    try:
        return hub.hf_hub_download(repo, filename)
    except Exception as exc:   # offline, proxy, moved repo: the same advice for every cause
        raise BackboneError(f'cannot fetch {filename} of https://huggingface.co/{repo} ({type(exc).__name__}: '
                            f'{exc}); offline? fetch it elsewhere and pass --checkpoint PATH') from None


def read_state_dict(path: str) -> dict:
    """A state_dict from a `.safetensors` file or a `torch.save`d dict (possibly under 'state_dict' or 'model')."""
    if not os.path.isfile(path):
        raise BackboneError(f'{path}: no such file')
    safetensors = path.endswith('.safetensors')
    reader = _optional('safetensors.torch') if safetensors else None
    try:
        obj = reader.load_file(path) if safetensors else torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:   # each format fails its own way (pickle, zip, header errors)
        kind = 'safetensors' if safetensors else 'torch.save'
        raise BackboneError(f'{path}: cannot read it as a {kind} file ({type(exc).__name__}: {exc})') from None
    for key in ('state_dict', 'model'):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise BackboneError(f'{path}: holds a {type(obj).__name__}, not a state_dict')
    return obj


def _shape_problem(key: str, value, shape: tuple[int, ...]) -> list[str]:
    if not isinstance(value, torch.Tensor):
        return [f'{key} is a {type(value).__name__}, not a tensor']
    return [] if tuple(value.shape) == shape else [f'{key} has shape {tuple(value.shape)}, expected {shape}']


def check_state_dict(state: dict, source: str, layers: list[Conv]) -> None:
    """Raise BackboneError, naming `source` and the keys, unless `state` holds exactly these layers' tensors."""
    expected = {c.weight: c.shape for c in layers}
    expected.update({f'{c.bn}.{part}': (c.filters,) for c in layers for part in BN_PARTS})
    optional = {f'{c.bn}.num_batches_tracked' for c in layers} | set(CLASSIFIER)
    problems = [f'missing key {k}' for k in expected if k not in state]
    problems += [f'unexpected key {k}' for k in state if k not in expected and k not in optional]
    problems += [p for k, shape in expected.items() if k in state for p in _shape_problem(k, state[k], shape)]
    if problems:
        more = f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''
        raise BackboneError(f'{source}: not a MobileNet-v1 (timm mobilenetv1_100) state_dict: '
                            f'{"; ".join(problems[:3])}{more}')


def _backbone_cfg(layers: list[Conv]) -> str:
    """A cfg of the backbone alone: its .weights layout is that of layers 0-26 of the MobileNet detectors."""
    convs = ''.join(f'[convolutional]\nbatch_normalize=1\nfilters={c.filters}\nsize={c.size}\nstride={c.stride}\n'
                    f'pad=1\ngroups={c.groups}\nactivation=relu6\n\n' for c in layers)
    return f'[net]\nwidth=224\nheight=224\nchannels=3\n\n{convs}'


@torch.no_grad()
def fold_input_normalisation(block: ConvBlock, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Make a first layer trained on `(x - mean) / std` take x itself (exact away from the zero padding)."""
    w = block.conv.weight
    m = torch.tensor(mean, dtype=w.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=w.dtype).view(1, -1, 1, 1)
    # conv((x - m) / s) = conv_{w / s}(x) - sum(w * m / s): batch norm subtracts the constant via its mean
    block.bn.running_mean += (w * m / s).sum(dim=(1, 2, 3))
    w /= s


@torch.no_grad()
def mobilenet_v1_darknet(state: dict, mean: tuple[float, ...] = INPUT_MEAN,
                         std: tuple[float, ...] = INPUT_STD) -> Darknet:
    """The backbone as a Darknet network holding a checked timm state_dict, the input normalisation folded in."""
    layers = mobilenet_v1_layers()
    net = Darknet(parse_cfg_text(_backbone_cfg(layers), '<MobileNet-v1 backbone>'))
    for (_, block), c in zip(net.conv_layers(), layers):
        block.conv.weight.copy_(state[c.weight])
        for tensor, part in zip((block.bn.weight, block.bn.bias, block.bn.running_mean, block.bn.running_var),
                                BN_PARTS):
            tensor.copy_(state[f'{c.bn}.{part}'])
    fold_input_normalisation(net.layers[0], mean, std)
    return net


def convert_mobilenet_v1(out: str, checkpoint: str | None = None, mean: tuple[float, ...] = INPUT_MEAN,
                         std: tuple[float, ...] = INPUT_STD) -> str:
    """Write the MobileNet-v1 backbone of `checkpoint` (default: the published weights) to `out`; a summary line."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise BackboneError(f'--mean and --std take 3 values each, std > 0 (got {mean}, {std})')
    source = checkpoint or download()
    state = read_state_dict(source)
    layers = mobilenet_v1_layers()
    check_state_dict(state, source, layers)
    save_darknet_weights(mobilenet_v1_darknet(state, mean, std), out)   # atomic: a failed write leaves no file
    return (f'{out}: MobileNet-v1 from {source}: {len(layers)} conv layers (layers 0-{len(layers) - 1} of '
            f'cfg/yolov2-mobilenet-*.cfg), input (x - {list(mean)}) / {list(std)} folded into layer 0, '
            f'{os.path.getsize(out):,} bytes')


def main(argv: list[str] | None = None) -> None:
    """`python -m yolo_lrm.backbones mobilenet-v1 --out FILE [--checkpoint PATH] [--mean R G B] [--std R G B]`."""
    ap = argparse.ArgumentParser(
        prog='python -m yolo_lrm.backbones', formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Write an ImageNet-pretrained backbone as a Darknet .weights file that train.py loads as a '
                    'partial backbone.',
        epilog='example:\n  python -m yolo_lrm.backbones mobilenet-v1 --out weights/mobilenet_v1.conv.27\n'
               '  python train.py cfg/yolov2-mobilenet-voc.cfg data/voc.data weights/mobilenet_v1.conv.27\n'
               f'default source: https://huggingface.co/{HUB_REPO} ({HUB_FILE}; needs {INSTALL})')
    ap.add_argument('backbone', choices=('mobilenet-v1',),
                    help='timm mobilenetv1_100 -> layers 0-26 of cfg/yolov2-mobilenet-*.cfg')
    ap.add_argument('--out', required=True, help='the .weights file to write (e.g. weights/mobilenet_v1.conv.27)')
    ap.add_argument('--checkpoint', help="a local state_dict instead of the download: .safetensors, or a torch.save "
                                         "file (a dict, possibly under 'state_dict' or 'model')")
    ap.add_argument('--mean', type=float, nargs=3, default=INPUT_MEAN, metavar=('R', 'G', 'B'),
                    help='input mean the checkpoint was trained with, on [0, 1] RGB (default: 0.5 0.5 0.5)')
    ap.add_argument('--std', type=float, nargs=3, default=INPUT_STD, metavar=('R', 'G', 'B'),
                    help='input std the checkpoint was trained with (default: 0.5 0.5 0.5)')
    args = ap.parse_args(argv)
    try:
        print(convert_mobilenet_v1(args.out, args.checkpoint, tuple(args.mean), tuple(args.std)))
    except (BackboneError, OSError) as exc:
        sys.exit(f'error: {exc}')


if __name__ == '__main__':
    main()
