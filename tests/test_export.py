"""Export: the TorchScript / ONNX model computes the same F as the PyTorch network (decode/NMS stay outside)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from yolo_lrm import checkpoint
from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.export import main
from yolo_lrm.head import detect
from yolo_lrm.model import Darknet

_CONV = '[convolutional]\nbatch_normalize=1\nfilters={}\nsize=3\npad=1\nactivation=leaky\n'
_POOL = '[maxpool]\nsize=2\nstride=2\n'
# every layer type of the YOLOv2 cfgs: conv+BN, maxpool 2/2 and 2/1, route, reorg, 1x1 linear head, region
CFG = ('[net]\nwidth=64\nheight=64\n' + ''.join(_CONV.format(f) + _POOL for f in (8, 16, 16, 32)) +
       _CONV.format(32) + _POOL + '[maxpool]\nsize=2\nstride=1\n' + '[route]\nlayers=8\n[reorg]\nstride=2\n'
       '[route]\nlayers=-1,-3\n[convolutional]\nfilters=16\nsize=1\nactivation=linear\n'
       '[region]\nanchors=1,1,2,2\nclasses=3\nnum=2\nsoftmax=1\n')


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A random network whose BN statistics are not the identity, so that fusing them is really tested."""
    torch.manual_seed(0)
    net = Darknet(parse_cfg_text(CFG, 'export.cfg'))
    for _, block in net.conv_layers():
        if block.bn is not None:
            block.bn.running_mean.uniform_(-0.5, 0.5)
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.weight.data.uniform_(0.5, 1.5)
            block.bn.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp('export') / 'net.pt'
    checkpoint.save_checkpoint(checkpoint.model_checkpoint(net.eval(), ['a', 'b', 'c']), path)
    return path


def reference(weights, x: torch.Tensor) -> torch.Tensor:
    net, _ = checkpoint.load_model(weights)
    with torch.no_grad():
        return net(x)


@pytest.mark.filterwarnings('ignore:`torch.jit.load` is deprecated:DeprecationWarning')
@pytest.mark.parametrize('size', [64, 96])
def test_torchscript_matches_pytorch(weights, tmp_path, size):
    out = main(['--weights', str(weights), '--format', 'torchscript', '--img-size', str(size),
                '--out', str(tmp_path / 'net.torchscript')])
    extra = {'meta.json': ''}
    model = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra['meta.json'])
    assert meta == json.loads((tmp_path / 'net.torchscript.json').read_text())
    assert meta['names'] == ['a', 'b', 'c'] and meta['input']['shape'] == [-1, 3, size, size]
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        got = model(x)
    want = reference(weights, x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    anchors = torch.tensor(meta['anchors']).view(-1, 2)
    for a, b in zip(detect(got, anchors, 0.1, 0.45, meta['loss']), detect(want, anchors, 0.1, 0.45)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)


def test_onnx_matches_pytorch(weights, tmp_path):
    for module in ('onnx', 'onnxscript', 'onnxruntime'):
        pytest.importorskip(module, reason=f'{module} not installed (optional: pip install onnx onnxscript '
                                           'onnxruntime)')
    import onnxruntime
    out = main(['--weights', str(weights), '--format', 'onnx', '--out', str(tmp_path / 'net.onnx')])
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for batch in (1, 3):  # dynamic batch dimension
        x = torch.rand(batch, 3, 64, 64)
        got = session.run(['F'], {'images': x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), reference(weights, x), atol=1e-4, rtol=1e-4)


def test_onnx_without_its_packages_says_what_to_install(weights, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'onnxscript' else real(name, *a))
    with pytest.raises(SystemExit, match='pip install onnx onnxscript'):
        main(['--weights', str(weights), '--format', 'onnx', '--out', str(tmp_path / 'x.onnx')])
    assert not (tmp_path / 'x.onnx').exists()


def test_bad_inputs_exit_with_a_message(weights, tmp_path):
    with pytest.raises(SystemExit, match='input size 70 must be a positive multiple of the network stride 32'):
        main(['--weights', str(weights), '--format', 'torchscript', '--img-size', '70'])
    with pytest.raises(SystemExit, match='give N or W H'):
        main(['--weights', str(weights), '--format', 'torchscript', '--img-size', '64', '64', '64'])
    with pytest.raises(SystemExit, match='missing.pt: checkpoint not found'):
        main(['--weights', str(tmp_path / 'missing.pt'), '--format', 'torchscript'])
