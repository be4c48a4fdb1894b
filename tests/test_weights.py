"""Darknet `.weights` I/O: the exact byte layout, both header versions, partial files, size errors, the CLI."""
import numpy as np
import pytest
import torch

from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.model import Darknet
from yolo_lrm.weights import (WeightsError, load_darknet_weights, main as weights_main, read_header,
                              save_darknet_weights, seen_is_64bit)

# conv BN 3x3 (0), maxpool (1), grouped conv BN 3x3 (2), conv 1x1 linear with bias (3): every kind of record
CFG = """
[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=6
size=3
pad=1
groups=2
activation=leaky

[convolutional]
filters=5
size=1
activation=linear
"""
# floats per conv record in file order: biases, [scales, mean, var], weights
LAYOUT = [[4, 4, 4, 4, 4 * 3 * 9], [6, 6, 6, 6, 6 * 2 * 9], [5, 5 * 6]]


def make_net(text: str = CFG, tmp_path=None) -> Darknet:
    path = '<memory>'
    if tmp_path is not None:
        (tmp_path / 'net.cfg').write_text(text)
        path = str(tmp_path / 'net.cfg')
    return Darknet(parse_cfg_text(text, path))


def header(version=(0, 2, 0), seen=0) -> bytes:
    wide = seen_is_64bit(*version[:2])
    return np.array(version, '<i4').tobytes() + np.array([seen], '<u8' if wide else '<i4').tobytes()


def records(layout=LAYOUT) -> list[list[np.ndarray]]:
    """Distinct values for every float (index/1000 + 10*record + part), so a misplaced float shows."""
    return [[np.arange(n, dtype=np.float32) / 1000 + 10 * r + p for p, n in enumerate(parts)]
            for r, parts in enumerate(layout)]


def write(path, head: bytes, recs) -> bytes:
    data = head + b''.join(a.astype('<f4').tobytes() for rec in recs for a in rec)
    path.write_bytes(data)
    return data


def test_layout_is_darknets(tmp_path):
    recs = records()
    data = write(tmp_path / 'a.weights', header(seen=123456789012), recs)
    net = make_net()
    assert load_darknet_weights(net, tmp_path / 'a.weights') == 3
    assert net.seen == 123456789012 and net.version == (0, 2, 0)
    first, grouped, last = (net.layers[i] for i in (0, 2, 3))
    for block, rec in ((first, recs[0]), (grouped, recs[1])):
        # biases are the BN beta; then scales, rolling mean, rolling variance; then OIHW weights
        for tensor, values in zip((block.bn.bias, block.bn.weight, block.bn.running_mean, block.bn.running_var),
                                  rec[:4]):
            assert torch.equal(tensor, torch.from_numpy(values))
        assert torch.equal(block.conv.weight.flatten(), torch.from_numpy(rec[4]))
    assert grouped.conv.weight.shape == (6, 2, 3, 3)
    assert torch.equal(last.conv.bias, torch.from_numpy(recs[2][0]))
    assert torch.equal(last.conv.weight.flatten(), torch.from_numpy(recs[2][1]))
    save_darknet_weights(net, tmp_path / 'b.weights')
    assert (tmp_path / 'b.weights').read_bytes() == data


def test_round_trip_of_a_trained_net_is_byte_identical(tmp_path):
    torch.manual_seed(0)
    net = make_net()
    with torch.no_grad():
        for p in [*net.parameters(), *net.buffers()]:
            if p.is_floating_point():
                p.uniform_(-1, 1)
    net.seen = 64 * 1000
    save_darknet_weights(net, tmp_path / 'a.weights')
    other = make_net()
    load_darknet_weights(other, tmp_path / 'a.weights')
    for (name, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    save_darknet_weights(other, tmp_path / 'b.weights')
    assert (tmp_path / 'a.weights').read_bytes() == (tmp_path / 'b.weights').read_bytes()
    assert not list(tmp_path.glob('*.tmp'))   # the temporary file was renamed away


@pytest.mark.parametrize('version, header_size', [((0, 1, 0), 16), ((0, 2, 0), 20), ((1, 0, 0), 20)])
def test_header_versions(tmp_path, version, header_size):
    data = write(tmp_path / 'a.weights', header(version, seen=12800), records())
    assert read_header(tmp_path / 'a.weights').size == header_size
    net = make_net()
    assert load_darknet_weights(net, tmp_path / 'a.weights') == 3
    assert net.seen == 12800 and net.version == version
    save_darknet_weights(net, tmp_path / 'b.weights')    # written back in the file's own version
    assert (tmp_path / 'b.weights').read_bytes() == data


def test_seen_width_rule():
    assert not seen_is_64bit(0, 1) and seen_is_64bit(0, 2) and seen_is_64bit(1, 0)
    assert not seen_is_64bit(1000, 2) and not seen_is_64bit(0, 1000)


def test_partial_file_loads_the_first_layers_only(tmp_path):
    recs = records()
    write(tmp_path / 'a.weights', header(), recs[:2])
    net = make_net()
    untouched = net.layers[3].conv.weight.clone()
    with pytest.raises(WeightsError) as err:
        load_darknet_weights(net, tmp_path / 'a.weights')
    msg = str(err.value)
    assert 'a.weights' in msg and 'expected 1,184 bytes' in msg and 'file has 1,044 bytes' in msg
    assert 'layer 3 (convolutional 5x6x1x1)' in msg and 'give it to train.py as WEIGHTS' in msg  # no Python argument
    assert load_darknet_weights(net, tmp_path / 'a.weights', partial=True) == 2
    assert torch.equal(net.layers[2].conv.weight.flatten(), torch.from_numpy(recs[1][4]))
    assert torch.equal(net.layers[3].conv.weight, untouched)


def test_truncated_inside_a_layer_is_an_error_even_when_partial(tmp_path):
    data = write(tmp_path / 'a.weights', header(), records())
    (tmp_path / 'a.weights').write_bytes(data[:20 + 4 * (16 + 108 + 10)])
    for partial in (False, True):
        with pytest.raises(WeightsError) as err:
            load_darknet_weights(make_net(), tmp_path / 'a.weights', partial=partial)
        msg = str(err.value)
        assert 'layer 2 (convolutional 6x2x3x3, batch_normalize) needs 528 bytes at offset 516' in msg
        assert 'only 40 remain' in msg
    assert 'layer boundary' in msg


def test_oversized_file_is_an_error(tmp_path):
    data = write(tmp_path / 'a.weights', header(), records())
    (tmp_path / 'a.weights').write_bytes(data + bytes(8))
    for partial in (False, True):
        with pytest.raises(WeightsError, match=r'expected 1,184 bytes .* file has 1,192 bytes: 8 bytes left after '
                                               r'the last conv layer \(layer 3 '):
            load_darknet_weights(make_net(), tmp_path / 'a.weights', partial=partial)


def test_short_header_and_fused_net_are_errors(tmp_path):
    (tmp_path / 'short.weights').write_bytes(bytes(10))
    with pytest.raises(WeightsError, match='short.weights: 10 bytes is too short'):
        load_darknet_weights(make_net(), tmp_path / 'short.weights')
    net = make_net(tmp_path=tmp_path).eval().fuse()
    with pytest.raises(WeightsError, match=r'net.cfg:\d+: layer 0 was fused'):
        save_darknet_weights(net, tmp_path / 'a.weights')


def test_dontload_numload_dontloadscales(tmp_path):
    text = CFG.replace('filters=4\n', 'filters=4\ndontloadscales=1\n', 1)
    text = text.replace('groups=2\n', 'groups=2\nnumload=2\n').replace('filters=5\n', 'filters=5\ndontload=1\n')
    # layer 0 without its BN triple, layer 2 with only its first 2 filters, layer 3 absent
    recs = records([[4, 4 * 3 * 9], [2, 2, 2, 2, 2 * 2 * 9]])
    write(tmp_path / 'a.weights', header(), recs)
    net = make_net(text)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_darknet_weights(net, tmp_path / 'a.weights') == 2
    state = net.state_dict()
    assert torch.equal(state['layers.0.bn.bias'], torch.from_numpy(recs[0][0]))
    assert torch.equal(state['layers.0.bn.running_var'], before['layers.0.bn.running_var'])
    assert torch.equal(state['layers.0.conv.weight'].flatten(), torch.from_numpy(recs[0][1]))
    assert torch.equal(state['layers.2.bn.running_mean'][:2], torch.from_numpy(recs[1][2]))
    assert torch.equal(state['layers.2.bn.running_mean'][2:], before['layers.2.bn.running_mean'][2:])
    assert torch.equal(state['layers.2.conv.weight'][:2].flatten(), torch.from_numpy(recs[1][4]))
    assert torch.equal(state['layers.2.conv.weight'][2:], before['layers.2.conv.weight'][2:])
    assert torch.equal(state['layers.3.conv.weight'], before['layers.3.conv.weight'])


def test_dontsave_and_cutoff(tmp_path):
    net = make_net(CFG.replace('groups=2\n', 'groups=2\ndontsave=1\n'))
    save_darknet_weights(net, tmp_path / 'a.weights')
    assert (tmp_path / 'a.weights').stat().st_size == 20 + 4 * (sum(LAYOUT[0]) + sum(LAYOUT[2]))
    save_darknet_weights(make_net(), tmp_path / 'b.weights', cutoff=2)
    assert (tmp_path / 'b.weights').stat().st_size == 20 + 4 * sum(LAYOUT[0])


def test_partial_cli(tmp_path, capsys):
    (tmp_path / 'net.cfg').write_text(CFG)
    recs = records()
    write(tmp_path / 'full.weights', header(seen=5000), recs)
    weights_main(['partial', str(tmp_path / 'net.cfg'), str(tmp_path / 'full.weights'), str(tmp_path / 'p.weights'),
                  '3'])
    assert 'layers 0..2 (2 conv layers), seen=0' in capsys.readouterr().out
    expected = header(seen=0) + b''.join(a.astype('<f4').tobytes() for rec in recs[:2] for a in rec)
    assert (tmp_path / 'p.weights').read_bytes() == expected
    net = make_net()
    assert load_darknet_weights(net, tmp_path / 'p.weights', partial=True) == 2
    assert net.seen == 0
    weights_main(['info', str(tmp_path / 'p.weights'), str(tmp_path / 'net.cfg')])
    out = capsys.readouterr().out
    assert 'version 0.2.0, seen 0, header 20 bytes, 256 floats' in out
    assert 'the first 2 of 3 conv layers' in out and 'MISSING' in out
    with pytest.raises(SystemExit, match='holds 2 conv layers, but the layers before 4 need 3'):
        weights_main(['partial', str(tmp_path / 'net.cfg'), str(tmp_path / 'p.weights'), str(tmp_path / 'q.weights'),
                      '4'])
