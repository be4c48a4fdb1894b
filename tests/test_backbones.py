"""Pretrained backbones: timm's MobileNet-v1 state_dict -> Darknet .weights -> layers 0-26 of the MobileNet cfgs,
checked against a plain-torch forward of the state_dict; the checkpoint formats, bad checkpoints, the download path
(faked: no network), the atomic write and the CLI."""
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import yolo_lrm.weights as weights_module
from conftest import ROOT
from yolo_lrm.backbones import HUB_FILE, HUB_REPO, main as backbones_main, mobilenet_v1_darknet
from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.layers import activate
from yolo_lrm.model import Darknet
from yolo_lrm.weights import load_darknet_weights, read_header

CFGS = [ROOT / 'cfg' / 'yolov2-mobilenet-voc.cfg', ROOT / 'cfg' / 'yolov2-mobilenet-kitti.cfg']
BACKBONE = 27           # layers 0-26
# timm's arch_def for mobilenetv1_100, written out here independently of yolo_lrm/backbones.py:
# stage s has REPEATS[s] separable blocks with CHANNELS[s] pointwise filters; its first block has stride 2 (not s=0)
REPEATS = (1, 2, 2, 6, 2)
CHANNELS = (64, 128, 256, 512, 1024)


def timm_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random mobilenetv1_100 state_dict with timm's keys and shapes, BN statistics far from 0/1, the classifier
    included (as in the published file)."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(key: str, shape: tuple[int, ...]) -> None:
        fan_in = shape[1] * shape[2] * shape[3]
        state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5

    def bn(prefix: str, n: int) -> None:
        # gammas below ~1: float rounding does not grow through 27 layers (as in a trained net); wide betas: some
        # features pass ReLU6's cap
        state[f'{prefix}.weight'] = 0.4 + 0.8 * torch.rand(n, generator=g)
        state[f'{prefix}.bias'] = 0.5 + 2 * torch.randn(n, generator=g)
        state[f'{prefix}.running_mean'] = 0.3 * torch.randn(n, generator=g)
        state[f'{prefix}.running_var'] = 0.5 + torch.rand(n, generator=g)
        state[f'{prefix}.num_batches_tracked'] = torch.tensor(12345)

    conv('conv_stem.weight', (32, 3, 3, 3))
    bn('bn1', 32)
    c = 32
    for s, (repeats, filters) in enumerate(zip(REPEATS, CHANNELS)):
        for i in range(repeats):
            conv(f'blocks.{s}.{i}.conv_dw.weight', (c, 1, 3, 3))
            bn(f'blocks.{s}.{i}.bn1', c)
            conv(f'blocks.{s}.{i}.conv_pw.weight', (filters, c, 1, 1))
            bn(f'blocks.{s}.{i}.bn2', filters)
            c = filters
    state['classifier.weight'] = 0.01 * torch.randn(1000, 1024, generator=g)
    state['classifier.bias'] = torch.zeros(1000)
    return state


def plain_forward(state: dict[str, torch.Tensor], image: torch.Tensor, black_border: bool = False,
                  act=F.relu6) -> torch.Tensor:
    """timm's `forward_features` (eval) straight from the dict: conv -> BN (eps 1e-5) -> ReLU6, 3x3 padding 1, on
    the image normalised as the published weights expect, (x - 0.5) / 0.5.  `black_border`: the stem's padding is
    0 of the raw image instead of 0 of the normalised one (what a Darknet layer 0 with the normalisation folded in
    sees)."""
    def block(x: torch.Tensor, weight: str, bn: str, stride: int, padding: int) -> torch.Tensor:
        w = state[weight]
        x = F.conv2d(x, w, stride=stride, padding=padding, groups=x.shape[1] // w.shape[1])
        x = F.batch_norm(x, state[f'{bn}.running_mean'], state[f'{bn}.running_var'], state[f'{bn}.weight'],
                         state[f'{bn}.bias'], training=False, eps=1e-5)
        return act(x)

    x = (F.pad(image, (1, 1, 1, 1)) - 0.5) / 0.5 if black_border else F.pad((image - 0.5) / 0.5, (1, 1, 1, 1))
    x = block(x, 'conv_stem.weight', 'bn1', 2, 0)   # padded above
    for s, repeats in enumerate(REPEATS):
        for i in range(repeats):
            stride = 2 if i == 0 and s > 0 else 1
            x = block(x, f'blocks.{s}.{i}.conv_dw.weight', f'blocks.{s}.{i}.bn1', stride, 1)
            x = block(x, f'blocks.{s}.{i}.conv_pw.weight', f'blocks.{s}.{i}.bn2', 1, 0)
    return x


def backbone_features(net: Darknet, image: torch.Tensor) -> torch.Tensor:
    """Layers 0-26 of a MobileNet detector (all plain convs: no route reads them out of order)."""
    x = image
    for layer in net.layers[:BACKBONE]:
        x = layer(x)
    return x


def convert(folder, state, name: str = 'ckpt.pt', save=torch.save, out=None):
    """Save `state` as checkpoint `name` in `folder` and convert it with the CLI; the written file's path."""
    folder.mkdir(exist_ok=True)
    out = out or folder / 'mobilenet_v1.conv.27'
    save(state, str(folder / name))
    backbones_main(['mobilenet-v1', '--checkpoint', str(folder / name), '--out', str(out)])
    return out


@pytest.fixture(scope='module')
def state():
    return timm_state_dict()


# ------------------------------------------------------------------------------------------------- the features
def test_converted_backbone_computes_timms_features(tmp_path, state, capsys):
    out = convert(tmp_path, state)
    assert 'ckpt.pt: 27 conv layers (layers 0-26' in capsys.readouterr().out
    header = read_header(out)
    assert header.seen == 0 and header.version == (0, 2, 0)
    net = Darknet(CFGS[0]).eval()
    assert load_darknet_weights(net, out, partial=True) == BACKBONE
    image = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = backbone_features(net, image)
        converter_net = mobilenet_v1_darknet(state).eval()(image)   # the network the file was written from
        exact = plain_forward(state, image, black_border=True)
        timm_padded = plain_forward(state, image)
        plain_relu = plain_forward(state, image, black_border=True, act=F.relu)
    assert ours.shape == (1, 1024, 10, 10)
    scale = exact.abs().max()
    assert (exact == 6).float().mean() > 0.01   # the ReLU6 cap is in play
    torch.testing.assert_close(ours, exact, atol=1e-4 * scale, rtol=1e-4)
    torch.testing.assert_close(converter_net, exact, atol=1e-4 * scale, rtol=1e-4)
    # with timm's own padding of the normalised image only the maps near the top/left border differ
    torch.testing.assert_close(ours[..., 5:, 5:], timm_padded[..., 5:, 5:], atol=1e-4 * scale, rtol=1e-4)
    assert not torch.allclose(ours, plain_relu, atol=1e-2)   # so relu instead of relu6 would fail this test


@pytest.mark.parametrize('cfg', CFGS, ids=[p.stem for p in CFGS])
def test_mobilenet_cfgs_load_the_file_as_their_backbone(tmp_path, state, cfg):
    out = convert(tmp_path, state)
    net = Darknet(cfg)
    head = {k: v.clone() for k, v in net.state_dict().items() if int(k.split('.')[1]) >= BACKBONE}
    assert load_darknet_weights(net, out, partial=True) == BACKBONE
    assert all(torch.equal(net.state_dict()[k], v) for k, v in head.items())   # the head keeps its initialisation
    assert torch.equal(net.layers[26].conv.weight, state['blocks.4.1.conv_pw.weight'])
    assert torch.equal(net.layers[13].bn.running_var, state['blocks.3.1.bn1.running_var'])
    activations = [sec['activation'] for sec in net.cfg.layers if sec.type == 'convolutional']
    assert activations[:BACKBONE] == ['relu6'] * BACKBONE
    assert activations[BACKBONE:] == ['leaky'] * 7 + ['linear']   # the head: leaky, the last conv linear


def test_relu6_activation():
    x = torch.tensor([-3.0, 0.5, 6.0, 9.0])
    assert torch.equal(activate(x, 'relu6'), torch.tensor([0.0, 0.5, 6.0, 6.0]))
    cfg = parse_cfg_text('[net]\n[convolutional]\nfilters=2\nactivation=relu6\n')
    assert cfg.layers[0]['activation'] == 'relu6'


# ------------------------------------------------------------------------------------------- checkpoint formats
@pytest.mark.parametrize('wrap', ['plain', 'state_dict', 'model'])
def test_torch_save_checkpoints_nested_or_not(tmp_path, state, wrap):
    reference = convert(tmp_path / 'a', state)
    wrapped = state if wrap == 'plain' else {wrap: state, 'epoch': 600}
    out = convert(tmp_path / 'b', wrapped)
    assert out.read_bytes() == reference.read_bytes()


def test_safetensors_checkpoint(tmp_path, state):
    st = pytest.importorskip('safetensors.torch', reason='safetensors not installed (optional: pip install '
                                                         '"yolo_lrm[backbones]")')
    reference = convert(tmp_path / 'a', state)
    out = convert(tmp_path / 'b', state, 'model.safetensors', st.save_file)
    assert out.read_bytes() == reference.read_bytes()


def test_default_source_is_the_hub_file(tmp_path, state, monkeypatch, capsys):
    st = pytest.importorskip('safetensors.torch', reason='safetensors not installed')
    st.save_file(state, str(tmp_path / HUB_FILE))
    asked = []

    def fake_download(repo, filename):
        asked.append((repo, filename))
        return str(tmp_path / HUB_FILE)

    monkeypatch.setitem(sys.modules, 'huggingface_hub', types.SimpleNamespace(hf_hub_download=fake_download))
    backbones_main(['mobilenet-v1', '--out', str(tmp_path / 'out.weights')])
    assert asked == [('timm/mobilenetv1_100.ra4_e3600_r224_in1k', 'model.safetensors')] == [(HUB_REPO, HUB_FILE)]
    assert 'out.weights: MobileNet-v1 from' in capsys.readouterr().out


def test_missing_hub_package_and_offline_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)   # None in sys.modules: the import fails
    with pytest.raises(SystemExit, match=r'(huggingface_hub|safetensors) is not installed: pip install '
                                         r'"yolo_lrm\[backbones\]"'):
        backbones_main(['mobilenet-v1', '--out', str(tmp_path / 'out.weights')])
    pytest.importorskip('safetensors.torch', reason='safetensors not installed')

    def offline(repo, filename):
        raise ConnectionError('Failed to resolve huggingface.co')

    monkeypatch.setitem(sys.modules, 'huggingface_hub', types.SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(SystemExit) as err:
        backbones_main(['mobilenet-v1', '--out', str(tmp_path / 'out.weights')])
    msg = str(err.value)
    assert f'cannot fetch model.safetensors of https://huggingface.co/{HUB_REPO}' in msg
    assert 'ConnectionError: Failed to resolve' in msg and '--checkpoint PATH' in msg
    assert not (tmp_path / 'out.weights').exists()


# -------------------------------------------------------------------------------------------- bad checkpoints
def _bad(state, drop=(), replace=None):
    bad = {k: v for k, v in state.items() if k not in drop}
    bad.update(replace or {})
    return bad


@pytest.mark.parametrize('change, message', [
    ({'drop': ['blocks.3.2.conv_pw.weight']}, 'missing key blocks.3.2.conv_pw.weight'),
    ({'replace': {'blocks.4.1.bn2.running_var': torch.ones(1000)}},
     r'blocks.4.1.bn2.running_var has shape \(1000,\), expected \(1024,\)'),
    ({'replace': {'conv_head.weight': torch.ones(1280, 1024, 1, 1)}}, 'unexpected key conv_head.weight'),
    ({'drop': ['conv_stem.weight', 'bn1.weight', 'bn1.bias', 'bn1.running_mean']},
     r'missing key conv_stem.weight; missing key bn1.weight; missing key bn1.bias \(and 1 more\)'),
], ids=['missing', 'shape', 'unexpected', 'many'])
def test_bad_checkpoint_names_the_file_and_key_and_writes_nothing(tmp_path, state, change, message):
    out = tmp_path / 'out.weights'
    out.write_bytes(b'old')
    with pytest.raises(SystemExit, match=r'bad\.pt: not a MobileNet-v1 \(timm mobilenetv1_100\) state_dict: '
                                         + message):
        convert(tmp_path, _bad(state, **change), 'bad.pt', out=out)
    assert out.read_bytes() == b'old' and sorted(p.name for p in tmp_path.iterdir()) == ['bad.pt', 'out.weights']


@pytest.mark.parametrize('content, message', [
    (b'not a checkpoint', r'bad\.pt: cannot read it as a torch\.save file \(UnpicklingError'),
    (torch.zeros(3), r'bad\.pt: holds a Tensor, not a state_dict'),
    (None, r'bad\.pt: no such file'),
], ids=['garbage', 'tensor', 'absent'])
def test_unreadable_checkpoints(tmp_path, content, message):
    if isinstance(content, bytes):
        (tmp_path / 'bad.pt').write_bytes(content)
    elif content is not None:
        torch.save(content, tmp_path / 'bad.pt')
    with pytest.raises(SystemExit, match=message):
        backbones_main(['mobilenet-v1', '--checkpoint', str(tmp_path / 'bad.pt'), '--out', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------------------------------------- the writing
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, state, monkeypatch):
    torch.save(state, tmp_path / 'ckpt.pt')
    out = tmp_path / 'out' / 'mobilenet_v1.conv.27'
    out.parent.mkdir()
    out.write_bytes(b'old')

    def disk_full(*_):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(weights_module, 'header_bytes', disk_full)   # fails inside the temporary file's write
    with pytest.raises(SystemExit, match='No space left on device'):
        backbones_main(['mobilenet-v1', '--checkpoint', str(tmp_path / 'ckpt.pt'), '--out', str(out)])
    assert out.read_bytes() == b'old' and [p.name for p in out.parent.iterdir()] == ['mobilenet_v1.conv.27']


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as err:
        backbones_main(['--help'])
    assert err.value.code == 0 and 'mobilenet-v1' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='std > 0'):
        backbones_main(['mobilenet-v1', '--out', 'x.weights', '--std', '0.5', '0', '0.5'])
