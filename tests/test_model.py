"""The model zoo and forward parity with Darknet.

The deterministic weights of `../shared/fixtures/darknet/README.md` §0 are regenerated here (`fixture_weights.py`,
checked by the README's sha256), loaded with our `.weights` reader and run through `Darknet`.
"""
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, need_fixtures
from fixture_weights import TINY_SHA256, V2_SHA256, conv_specs, fixture_weights, sha256
from yolo_lrm.cfg import parse_cfg
from yolo_lrm.layers import ConvBlock
from yolo_lrm.model import Darknet, main as model_main
from yolo_lrm.weights import load_darknet_weights, save_darknet_weights

CFG = ROOT / 'cfg'
# the detector cfgs; cfg/darknet19_448.cfg is a classifier, there to cut its backbone from (tests/test_readme.py)
ZOO = sorted(p for p in CFG.glob('*.cfg') if '[region]' in p.read_text())


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp('tiny') / 'tiny_seed1.weights'
    fixture_weights(conv_specs(CFG / 'yolov2-tiny-voc.cfg'), 1, path)
    net = Darknet(CFG / 'yolov2-tiny-voc.cfg').eval()
    return path, net, load_darknet_weights(net, path)


@pytest.fixture(scope='module')
def v2(tmp_path_factory):
    path = tmp_path_factory.mktemp('v2') / 'v2_seed2.weights'
    arrays = fixture_weights(conv_specs(CFG / 'yolov2-voc.cfg'), 2, path)
    net = Darknet(CFG / 'yolov2-voc.cfg').eval()
    return path, net, load_darknet_weights(net, path), arrays


# ------------------------------------------------------------------------------------------ tiny vs Darknet
def test_tiny_weights_file_is_the_readme_one(tiny, tmp_path):
    path, net, loaded = tiny
    assert sha256(path) == TINY_SHA256          # our generator + the cfg's conv shapes = Darknet's file
    assert loaded == 9 and net.seen == 0 and net.version == (0, 2, 0)
    save_darknet_weights(net, tmp_path / 'again.weights')
    assert sha256(tmp_path / 'again.weights') == TINY_SHA256


def _dog416() -> torch.Tensor:
    raw = np.fromfile(need_fixtures() / 'input_dog_letterbox_3x416x416.f32', '<f4')
    return torch.from_numpy(raw.astype(np.float32)).view(1, 3, 416, 416)


def _darknet_tiny_output() -> torch.Tensor:
    raw = np.fromfile(need_fixtures() / 'fwd_tiny' / 'layer14_convolutional_125x13x13.f32', '<f4')
    return torch.from_numpy(raw.astype(np.float32)).view(1, 125, 13, 13)


@pytest.mark.parametrize('darknet_bn, atol', [(True, 1e-4), (False, 5e-4)])
def test_tiny_forward_matches_darknet(tiny, darknet_bn, atol):
    _, net, _ = tiny
    x, expected = _dog416(), _darknet_tiny_output()
    with torch.no_grad():
        out = net.set_darknet_bn(darknet_bn)(x)
    net.set_darknet_bn(False)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=atol, rtol=1e-4)


def test_fused_tiny_still_matches_darknet(tiny):
    _, net, _ = tiny
    x, expected = _dog416(), _darknet_tiny_output()
    fused = Darknet(CFG / 'yolov2-tiny-voc.cfg').eval()
    fused.load_state_dict(net.state_dict())
    with torch.no_grad():
        out = fused.set_darknet_bn(True).fuse()(x)
    assert not any(isinstance(m, ConvBlock) and m.bn is not None for m in fused.layers)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_reorg_matches_darknet_permutation():
    fixtures = need_fixtures()
    net = Darknet(fixtures / 'cfg' / 'reorg_test.cfg')
    x = torch.arange(64 * 26 * 26, dtype=torch.float64).view(1, 64, 26, 26)
    perm = np.fromfile(fixtures / 'reorg' / 'reorg_perm_int32_256x13x13.bin', '<i4').reshape(1, 256, 13, 13)
    assert np.array_equal(net(x).numpy().astype(np.int64), perm)
    assert np.array_equal(reorg_by_index(x).numpy().astype(np.int64), perm)   # the reference below is right too


# ------------------------------------------------------------------------- yolov2-voc: no Darknet output held
def reorg_by_index(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """Darknet's reorg from its definition: out[k, j, i] = in'[k % C', j*s + (k // C') // s, i*s + (k // C') % s],
    with in' the input buffer read as (C/s², H*s, W*s) and the output buffer, of the input's shape, read as
    (C*s², H/s, W/s)."""
    b, c, h, w = x.shape
    c_small = c // (s * s)
    k = torch.arange(c).view(c, 1, 1)
    j = torch.arange(h).view(1, h, 1)
    i = torch.arange(w).view(1, 1, w)
    offset = k // c_small
    source = ((k % c_small) * (h * s) + j * s + offset // s) * (w * s) + i * s + offset % s
    return x.reshape(b, -1)[:, source.reshape(-1)].reshape(b, c * s * s, h // s, w // s)


def reference_yolov2(x: torch.Tensor, convs: list[dict[str, np.ndarray]]) -> torch.Tensor:
    """yolov2-voc written out by hand: plain conv/pool calls, Darknet's CPU batch norm, route order reorg-first."""
    params = iter(convs)

    def conv(x: torch.Tensor) -> torch.Tensor:
        p = {k: torch.from_numpy(v) for k, v in next(params).items()}
        x = F.conv2d(x, p['weights'], padding=p['weights'].shape[-1] // 2)
        if 'scales' not in p:  # the final linear 1x1 conv
            return x + p['biases'].view(1, -1, 1, 1)
        std = p['rolling_variance'].sqrt() + 1e-6
        x = (x - p['rolling_mean'].view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return F.leaky_relu(x * p['scales'].view(1, -1, 1, 1) + p['biases'].view(1, -1, 1, 1), 0.1)

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2, 2)

    x = pool(conv(x))                                        # 0-1
    x = pool(conv(x))                                        # 2-3
    x = pool(conv(conv(conv(x))))                            # 4-7
    x = pool(conv(conv(conv(x))))                            # 8-11
    passthrough = conv(conv(conv(conv(conv(x)))))            # 12-16
    x = pool(passthrough)                                    # 17
    for _ in range(7):                                       # 18-24
        x = conv(x)
    x = torch.cat([reorg_by_index(conv(passthrough)), x], 1)  # 25-28: route 16, conv 64, reorg, route 27,24
    return conv(conv(x))                                     # 29-30


def test_v2_weights_round_trip_byte_identical(v2, tmp_path):
    path, net, loaded, _ = v2
    assert sha256(path) == V2_SHA256
    assert loaded == 23
    save_darknet_weights(net, tmp_path / 'again.weights')
    assert sha256(tmp_path / 'again.weights') == V2_SHA256


def test_v2_forward_matches_reference_and_bn_variants(v2):
    _, net, _, arrays = v2
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))  # any multiple of 32
    with torch.no_grad():
        darknet_bn = net.set_darknet_bn(True)(x)
        standard_bn = net.set_darknet_bn(False)(x)
        expected = reference_yolov2(x, arrays)
    assert darknet_bn.shape == (1, 125, 10, 10)
    torch.testing.assert_close(darknet_bn, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(standard_bn, darknet_bn, atol=5e-4, rtol=1e-4)
    assert (standard_bn - darknet_bn).abs().max() > 0   # the two formulas do differ: the switch is live


# ------------------------------------------------------------------------------------------------ the zoo
def test_zoo_is_complete():
    names = {p.name for p in ZOO}
    for arch in ('yolov2', 'yolov2-tiny', 'yolov2-mobilenet'):
        assert {f'{arch}-voc.cfg', f'{arch}-kitti.cfg'} <= names


@pytest.mark.parametrize('cfg', ZOO, ids=[p.stem for p in ZOO])
def test_zoo_cfg_builds_and_runs(cfg):
    net = Darknet(cfg).eval()
    channels = net.num_anchors * (5 + net.num_classes)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 320, 320))
    assert out.shape == (1, channels, 10, 10) and torch.isfinite(out).all()
    with torch.device('meta'):   # shapes only at the larger sizes: no compute
        meta = Darknet(cfg).eval()
    for size in (416, 608):
        assert meta(torch.empty(1, 3, size, size, device='meta')).shape == (1, channels, size // 32, size // 32)


def test_check_input_size_wants_a_positive_multiple_of_the_stride():
    with torch.device('meta'):   # the check needs shapes only
        net = Darknet(CFG / 'yolov2-tiny-voc.cfg')
    net.check_input_size(320)
    for size in (100, 0, -32):
        with pytest.raises(ValueError, match=f'input size {size} must be a positive multiple of the network stride 32'):
            net.check_input_size(size)


@pytest.mark.parametrize('name, bflops', [('yolov2-tiny-voc', 6.97), ('yolov2-voc', 29.36),
                                          ('yolov2-mobilenet-voc', 5.17)])
def test_summary_bflops(name, bflops):
    with torch.device('meta'):   # the table needs shapes only
        assert round(Darknet(CFG / f'{name}.cfg').summary(416, file=io.StringIO()), 2) == bflops


def test_model_cli_prints_the_table(capsys):
    model_main([str(CFG / 'yolov2-voc.cfg')])
    out = capsys.readouterr().out
    assert '27 reorg' in out and '28 route   27 24' in out and 'Total BFLOPs 29.360' in out


def test_kitti_cfgs_have_six_classes_and_kitti_anchors():
    for arch in ('yolov2', 'yolov2-tiny', 'yolov2-mobilenet'):
        voc, kitti = parse_cfg(CFG / f'{arch}-voc.cfg'), parse_cfg(CFG / f'{arch}-kitti.cfg')
        assert kitti.region['classes'] == 6 and kitti.layers[-2]['filters'] == 55
        assert len(kitti.region['anchors']) == 10 and kitti.region['anchors'] != voc.region['anchors']
        assert [s.type for s in kitti.layers] == [s.type for s in voc.layers]


# ----------------------------------------------------------------------------------- inference helpers
def _randomised(cfg: Path) -> Darknet:
    """A net whose batch norms have non-trivial statistics, so that fusing them is a real test."""
    torch.manual_seed(0)
    net = Darknet(cfg).eval()
    with torch.no_grad():
        for _, block in net.conv_layers():
            if block.bn is not None:
                block.bn.weight.uniform_(0.5, 1.5)
                block.bn.bias.uniform_(-0.2, 0.2)
                block.bn.running_mean.uniform_(-0.2, 0.2)
                block.bn.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize('name', ['yolov2-tiny-voc', 'yolov2-mobilenet-voc'])
@pytest.mark.parametrize('darknet_bn', [False, True])
def test_fuse_keeps_outputs(name, darknet_bn):
    net = _randomised(CFG / f'{name}.cfg').set_darknet_bn(darknet_bn)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before = net(x)
        after = net.fuse()(x)
    assert all(block.bn is None for _, block in net.conv_layers())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', ['yolov2-tiny-voc', 'yolov2-mobilenet-voc'])
def test_channels_last_gives_same_output(name):
    net = _randomised(CFG / f'{name}.cfg')
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        expected = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.contiguous(memory_format=torch.channels_last))
    assert net.layers[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
