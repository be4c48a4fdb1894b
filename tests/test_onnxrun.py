"""Running exports: OnnxNetwork (ONNX Runtime) gives the PyTorch network's F and detections, INT8 export calibrated
on real letterboxed images, and the bad inputs (no metadata, another input size, INT8 without images, no ORT)."""
from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from test_export import reference, weights  # noqa: F401  (weights: the module's fixture, a random .pt)
from yolo_lrm import checkpoint
from yolo_lrm.inference.detector import Detector
from yolo_lrm.export import main as export_main
from yolo_lrm.layers import MaxPool
from yolo_lrm.onnxrun import META_KEY, OnnxError, OnnxNetwork, check_onnxruntime, read_metadata
from yolo_lrm.quantize import calibration_paths

NEED = 'onnx, onnxscript and onnxruntime are optional: pip install "yolo_lrm[onnx]"'


def need_onnx() -> None:
    """Skip the test, with the reason, unless the exporter's packages and ONNX Runtime are installed."""
    for module in ('onnx', 'onnxscript', 'onnxruntime'):
        pytest.importorskip(module, reason=NEED)


@pytest.fixture(scope='module')
def onnx_model(weights, tmp_path_factory):  # noqa: F811
    """The fixture network exported to fp32 ONNX at 64x64."""
    need_onnx()
    out = tmp_path_factory.mktemp('onnx') / 'net.onnx'
    export_main(['--weights', str(weights), '--format', 'onnx', '--out', str(out)])
    return out


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A .data over 10 small images (blocks of colour on noise, 3 labelled classes): train= 6, valid= 4."""
    root = tmp_path_factory.mktemp('data')
    (root / 'images').mkdir()
    (root / 'labels').mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for k in range(10):
        w, h = (96, 72) if k % 2 else (80, 100)
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        c = k % 3
        x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        image[y1:y1 + h // 3, x1:x1 + w // 3] = [(250, 40, 40), (40, 250, 40), (40, 40, 250)][c]
        path = root / 'images' / f'im{k}.png'
        cv2.imwrite(str(path), image)
        (root / 'labels' / f'im{k}.txt').write_text(
            f'{c} {(x1 + w / 6) / w} {(y1 + h / 6) / h} {1 / 3} {1 / 3}\n')
        paths.append(str(path))
    (root / 'train.txt').write_text(''.join(p + '\n' for p in paths[:6]))
    (root / 'valid.txt').write_text(''.join(p + '\n' for p in paths[6:]))
    (root / 'names').write_text('a\nb\nc\n')
    (root / 'x.data').write_text('classes=3\ntrain=train.txt\nvalid=valid.txt\nnames=names\n')
    return root / 'x.data'


# ----------------------------------------------------------------------------------------------------- fp32
def test_fp32_onnx_gives_pytorchs_output_and_detections(weights, onnx_model):  # noqa: F811
    net = OnnxNetwork(onnx_model, threads=1)
    assert (net.width, net.height, net.num_classes, net.num_anchors, net.stride) == (64, 64, 3, 2, 32)
    assert net.names == ['a', 'b', 'c'] and net.region['loss'] == 'loss2' and net.precision == 'fp32'
    torch.testing.assert_close(net.anchors, torch.tensor([[1., 1.], [2., 2.]]))
    for batch in (1, 3):  # dynamic batch dimension
        x = torch.rand(batch, 3, 64, 64)
        torch.testing.assert_close(net(x), reference(weights, x), atol=1e-4, rtol=1e-4)
    # the whole detect.py pipeline (letterbox, decode, NMS, unletterbox) around either network
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48 + 16 * k, 80, 3), dtype=np.uint8) for k in range(3)]
    pytorch = Detector(checkpoint.load_model(weights)[0], conf=0.05)
    exported = Detector(net, conf=0.05, fuse=False, channels_last=False)
    for want, got in zip(pytorch(images), exported(images)):
        assert len(want) > 0 and want.shape == got.shape
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


def test_export_embeds_metadata_and_drops_the_exporters_source_paths(onnx_model):
    import onnx
    model = onnx.load(str(onnx_model))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props[META_KEY])
    assert meta == json.loads(onnx_model.with_name('net.onnx.json').read_text())
    assert meta['input']['shape'] == [-1, 3, 64, 64] and meta['precision'] == 'fp32' and meta['version'] == 1
    assert all(len(node.metadata_props) == 0 for node in model.graph.node)  # stack traces name this machine's files
    assert [n.op_type for n in model.graph.node if n.op_type == 'Pad'] == ['Pad']  # the 2/1 max-pool's edge pad
    pad = next(n for n in model.graph.node if n.op_type == 'Pad')
    assert [a.s for a in pad.attribute if a.name == 'mode'] == [b'edge']


# ----------------------------------------------------------------------------------------------------- INT8
def test_int8_export_calibrates_on_train_images_and_compares_map(weights, onnx_model, dataset, tmp_path,  # noqa: F811
                                                                 capsys):
    import onnx
    out = export_main(['--weights', str(weights), '--format', 'onnx', '--int8', '--calib', str(dataset),
                       '--calib-images', '4', '--out', str(tmp_path / 'net.int8.onnx')])
    text = capsys.readouterr().out
    assert 'calibrated on 4 images of' in text and f'mAP@.5 (VOC07) on {dataset.parent / "valid.txt"}: fp32' in text
    net = OnnxNetwork(out)
    assert net.precision == 'int8' and net.names == ['a', 'b', 'c']
    q = net.meta['quantization']
    assert q['calibration'] == {'data': 'x.data', 'images': 4, 'skipped': 0, 'method': 'minmax'}
    assert (q['fmt'], q['per_channel'], q['activations'], q['weights'], q['float_head']) == \
        ('qdq', True, 'uint8', 'uint8', True)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert 'QuantizeLinear' in ops and 'DequantizeLinear' in ops
    head = next(n for n in model.graph.node if 'F' in n.output)
    assert head.op_type == 'Conv'  # the head conv stays float: its weight is no DequantizeLinear output
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers.get(head.input[1]) != 'DequantizeLinear'
    # close to fp32 on a letterboxed-like input, and finite (a -inf pad value would have become NaN)
    x = torch.rand(2, 3, 64, 64)
    want, got = OnnxNetwork(onnx_model)(x), net(x)
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() < 0.1 * want.abs().max()


def test_calibration_images_are_spread_over_train(dataset):
    paths = calibration_paths(dataset, 3)
    listed = (dataset.parent / 'train.txt').read_text().split()
    assert paths == [listed[0], listed[2], listed[4]]
    assert calibration_paths(dataset, 100) == listed


def test_int8_bad_inputs_exit_with_a_message(weights, dataset, tmp_path):  # noqa: F811
    base = ['--weights', str(weights), '--format', 'onnx', '--out', str(tmp_path / 'q.onnx')]
    with pytest.raises(SystemExit, match='--int8 needs calibration images: --calib DATA'):
        export_main(base + ['--int8'])
    with pytest.raises(SystemExit, match='--calib calibrates --int8'):
        export_main(base + ['--calib', str(dataset)])
    with pytest.raises(SystemExit, match='--int8 is an ONNX export: use --format onnx, not torchscript'):
        export_main(['--weights', str(weights), '--format', 'torchscript', '--int8', '--calib', str(dataset)])
    with pytest.raises(SystemExit, match='need at least one calibration image'):
        export_main(base + ['--int8', '--calib', str(dataset), '--calib-images', '0'])
    no_train = tmp_path / 'valid-only.data'
    no_train.write_text(f'classes=3\nvalid={dataset.parent / "valid.txt"}\nnames={dataset.parent / "names"}\n')
    with pytest.raises(SystemExit, match=r'valid-only\.data: no train= list: INT8 calibration needs real images'):
        export_main(base + ['--int8', '--calib', str(no_train)])
    assert not (tmp_path / 'q.onnx').exists()


def test_int8_with_no_readable_calibration_image_is_an_error(weights, tmp_path):  # noqa: F811
    for module in ('onnx', 'onnxscript', 'onnxruntime'):
        pytest.importorskip(module, reason=NEED)
    (tmp_path / 'broken.jpg').write_bytes(b'not an image')
    (tmp_path / 'train.txt').write_text('broken.jpg\n')
    (tmp_path / 'x.data').write_text('classes=3\ntrain=train.txt\n')
    with pytest.raises(SystemExit, match=r'none of the 1 calibration images could be read \(.*broken\.jpg'):
        export_main(['--weights', str(weights), '--format', 'onnx', '--int8', '--calib', str(tmp_path / 'x.data'),
                     '--out', str(tmp_path / 'q.onnx')])
    assert not (tmp_path / 'q.onnx').exists()


# ------------------------------------------------------------------------------------------------ bad models
def test_onnx_without_our_metadata_is_refused(onnx_model, tmp_path):
    import onnx
    model = onnx.load(str(onnx_model))
    del model.metadata_props[:]
    bare = tmp_path / 'foreign.onnx'
    onnx.save(model, str(bare))
    with pytest.raises(OnnxError, match=r'foreign\.onnx: no yolo_lrm metadata in this ONNX file: it was not '
                                        r'written by `python -m yolo_lrm\.export`'):
        OnnxNetwork(bare)
    with pytest.raises(OnnxError, match='lacks anchors'):
        read_metadata('m.onnx', {META_KEY: json.dumps({'classes': 1})})
    with pytest.raises(OnnxError, match='not valid JSON'):
        read_metadata('m.onnx', {META_KEY: '{'})
    with pytest.raises(FileNotFoundError, match='missing.onnx: ONNX model not found'):
        OnnxNetwork(tmp_path / 'missing.onnx')


def test_another_input_size_is_refused(onnx_model):
    net = OnnxNetwork(onnx_model)
    net.check_input_size(64, 64)
    net.check_input_size(64)
    with pytest.raises(OnnxError, match=r'net\.onnx: exported for input 64x64, cannot run at 96x96: export again '
                                        r'with --img-size'):
        net.check_input_size(96, 96)
    with pytest.raises(OnnxError, match='exported for input 64x64, cannot run at 96x64'):
        net(torch.rand(1, 3, 64, 96))
    with pytest.raises(OnnxError, match=r'expected a \(B, 3, H, W\) batch, got shape \(3, 64, 64\)'):
        net(torch.rand(3, 64, 64))
    with pytest.raises(OnnxError, match='exported for input 64x64'):
        Detector(net, (96, 96), fuse=False, channels_last=False)
    with pytest.raises(OnnxError, match='run on the CPU here, not on cuda'):
        net.to('cuda')


def test_without_onnxruntime_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'onnxruntime' else real(name, *a))
    with pytest.raises(OnnxError, match=r'pip install "yolo_lrm\[onnx\]"'):
        check_onnxruntime()


# ---------------------------------------------------------------------------------------------- the max-pool
@pytest.mark.parametrize('size,stride,padding', [(2, 1, 1), (3, 1, 2), (2, 2, 1), (3, 2, 2), (5, 1, 4), (2, 2, 0)])
def test_maxpool_edge_padding_equals_darknets_minus_infinity(size, stride, padding):
    # Darknet counts taps outside the image as -inf; the layer pads edge copies instead (exportable to INT8)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 13, 11, requires_grad=True)
    layer = MaxPool(size, stride, padding)
    before = padding // 2
    after_h = max(0, (layer.out_size(13) - 1) * stride + size - before - 13)
    after_w = max(0, (layer.out_size(11) - 1) * stride + size - before - 11)
    y_ref = F.max_pool2d(F.pad(x, (before, after_w, before, after_h), value=-float('inf')), size, stride)
    g_ref, = torch.autograd.grad(y_ref.sum(), x)
    y = layer(x)
    g, = torch.autograd.grad(y.sum(), x)
    assert y.shape == (2, 3, layer.out_size(13), layer.out_size(11))
    assert torch.equal(y, y_ref) and torch.equal(g, g_ref)
