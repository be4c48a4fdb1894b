"""The cfg/.data parser: Darknet's syntax, strict errors with file:line, `--set` overrides, `to_text` round trip."""
import re
from pathlib import Path

import pytest

from conftest import ROOT
from yolo_lrm.cfg import CfgError, apply_overrides, parse_cfg, parse_cfg_text
from yolo_lrm.data.datafile import parse_data
from yolo_lrm.model import Darknet

# A valid 2-class detector: conv (0), maxpool (1), conv (2), route (3), conv 1x1 (4), region (5).
GOOD = """[net]
width=64
height=64

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
pad=1
activation=leaky

[route]
layers=-1

[convolutional]
filters=21
size=1
activation=linear

[region]
anchors=1,1, 2,2, 3,3
classes=2
num=3
softmax=1
"""


def write(tmp_path: Path, text: str, name: str = 'net.cfg') -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line containing `needle`."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln]
    return hits[occurrence - 1]


def build_error(tmp_path: Path, text: str) -> str:
    """The CfgError message of parsing and building `text` as a file."""
    with pytest.raises(CfgError) as err:
        Darknet(write(tmp_path, text))
    return str(err.value)


def test_good_cfg_builds(tmp_path):
    net = Darknet(write(tmp_path, GOOD))
    assert net.num_classes == 2 and net.num_anchors == 3 and net.anchors.tolist() == [[1, 1], [2, 2], [3, 3]]


# ------------------------------------------------------------------------------------------ Darknet syntax
def test_darknet_syntax():
    text = """
; a comment
[network]
  bat ch = 8     # not a comment: Darknet only skips lines that start with # or ;
"""
    with pytest.raises(CfgError, match=r"<memory>:4: \[net\] key 'batch': cannot parse '8#notacomment"):
        parse_cfg_text(text)
    text = """# comment
[network]
 bat ch = 8
batch=16
steps = 100 , 200,
scales=.1,.1
[conv]
filters=4
size=3
"""
    cfg = parse_cfg_text(text)
    assert cfg.net['batch'] == 8                       # spaces stripped inside the key; first occurrence wins
    assert cfg.net['steps'] == [100, 200] and cfg.net['scales'] == [0.1, 0.1]
    assert cfg.layers[0].type == 'convolutional' and cfg.layers[0]['filters'] == 4
    assert cfg.layers[0]['activation'] == 'logistic'   # Darknet's default
    assert cfg.lrm['hard_examples'] == 0               # [lrm] absent: LRM off


# ------------------------------------------------------------------------------------ errors name file:line
# case: (edit of GOOD, text of the line the error must name, what follows "file:line: ", what the message says later)
CFG_ERRORS = {
    'unknown key, with a suggestion': (('filters=21', 'filter=21'), 'filter=21', '[convolutional] unknown key',
                                       "did you mean 'filters'?"),
    'misspelled section': (('[maxpool]', '[maxpoool]'), '[maxpoool]', 'unknown section [maxpoool]',
                           "did you mean 'maxpool'?"),
    'route to a missing layer': (('layers=-1', 'layers=-7'), 'layers=-7', "[route] key 'layers'",
                                 'refers to layer -7 (absolute -4), which does not exist before layer 3'),
    'filters must match the region': (('filters=21', 'filters=20'), 'classes=2', '',
                                      'outputs 20 channels but num=3, classes=2 need (5+classes)*num = 21 filters'),
    'malformed value': (('size=3', 'size=3x3'), 'size=3x3', "[convolutional] key 'size'",
                        "cannot parse '3x3' as int"),
    'missing required key': (('layers=-1\n', ''), '[route]', "[route] missing required key 'layers'", ''),
    'anchor count must match num': (('anchors=1,1, 2,2, 3,3', 'anchors=1,1, 2,2, 3'), 'anchors=',
                                    "[region] key 'anchors'", 'num=3 needs 6 anchor values, got 5'),
}


@pytest.mark.parametrize('case', CFG_ERRORS)
def test_errors_name_file_and_line(tmp_path, case):
    (old, new), line_text, head, later = CFG_ERRORS[case]
    text = GOOD.replace(old, new, 1)
    msg = build_error(tmp_path, text)
    assert msg.startswith(f'{tmp_path / "net.cfg"}:{line_of(text, line_text)}: {head}'), msg
    assert later in msg, msg


def test_key_before_any_section_and_missing_net(tmp_path):
    with pytest.raises(CfgError, match=r'net.cfg:1: .*before any \[section\]'):
        parse_cfg(write(tmp_path, 'batch=1\n' + GOOD))
    with pytest.raises(CfgError, match=r'no \[net\] section'):
        parse_cfg(write(tmp_path, GOOD.replace('[net]\nwidth=64\nheight=64\n', '')))


# ------------------------------------------------------------------------------------------------ --set
def test_overrides(tmp_path):
    cfg = parse_cfg(write(tmp_path, GOOD), ['lrm.hard_examples=128', 'region.loss=loss1', '0.filters=16',
                                            'net.steps=1, 2'])
    assert cfg.lrm['hard_examples'] == 128 and cfg.region['loss'] == 'loss1'
    assert cfg.layers[0]['filters'] == 16 and cfg.net['steps'] == [1, 2]
    assert Darknet(cfg).layers[2].conv.in_channels == 16   # the override reaches the built network


@pytest.mark.parametrize('item, message', [
    ('lrm.hard_example=128', r"\[lrm\] has no key 'hard_example'"),
    ('9.filters=4', r'no layer 9 \(the cfg has 6 layers\)'),
    ('convolutional.filters=4', r'3 \[convolutional\] sections; address a layer by index'),
    ('region.loss=loss3', r"cannot parse 'loss3'"),
    ('hard_examples=128', r'expected section.key=value'),
])
def test_bad_overrides(item, message):
    cfg = parse_cfg_text(GOOD)
    with pytest.raises(CfgError, match=message):
        apply_overrides(cfg, [item])


# ----------------------------------------------------------------------------------------- to_text round trip
@pytest.mark.parametrize('name', ['yolov2-voc.cfg', 'yolov2-tiny-voc.cfg', 'yolov2-mobilenet-kitti.cfg'])
def test_to_text_round_trip(name):
    cfg = parse_cfg(ROOT / 'cfg' / name, ['lrm.hard_examples=64', 'region.loss=loss1'])
    again = parse_cfg_text(cfg.to_text())
    assert len(again.layers) == len(cfg.layers)
    for a, b in zip([cfg.net, *cfg.layers, cfg.lrm], [again.net, *again.layers, again.lrm]):
        assert (a.type, a.options) == (b.type, b.options)
    assert again.lrm['hard_examples'] == 64 and again.region['loss'] == 'loss1'
    assert parse_cfg_text(again.to_text()).to_text() == again.to_text()


# ------------------------------------------------------------------------------------------------------ .data
def test_data_paths_resolve_from_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / 'sets').mkdir()
    (tmp_path / 'sets' / 'two.names').write_text('cat\ndog\n')
    data = write(tmp_path / 'sets', '# my set\nclasses = 2\ntrain = lists/train.txt\nnames=two.names\n'
                 'eval=kitti\n', 'my.data')
    monkeypatch.chdir(tmp_path)
    d = parse_data(data)
    assert d.classes == 2 and d['eval'] == 'kitti'
    assert Path(d['train']) == (tmp_path / 'sets' / 'lists' / 'train.txt').resolve()
    assert Path(d['backup']) == (tmp_path / 'sets' / 'backup').resolve()   # the default, relative too
    assert d.names() == ['cat', 'dog']


def test_data_errors(tmp_path):
    bad = write(tmp_path, 'classes=2\ntrian=x.txt\n', 'a.data')
    with pytest.raises(CfgError, match=re.escape(f"{bad}:2: unknown key 'trian'")):
        parse_data(bad)
    with pytest.raises(CfgError, match="missing required key 'classes'"):
        parse_data(write(tmp_path, 'train=x.txt\n', 'b.data'))
    (tmp_path / 'three.names').write_text('a\nb\nc\n')
    with pytest.raises(CfgError, match=r'classes=2 but .*three.names lists 3 names'):
        parse_data(write(tmp_path, 'classes=2\nnames=three.names\n', 'c.data')).names()


@pytest.mark.parametrize('name, classes, first, last', [('voc', 20, 'aeroplane', 'tvmonitor'),
                                                         ('kitti', 6, 'car', 'cyclist')])
def test_shipped_data_templates(name, classes, first, last):
    d = parse_data(ROOT / 'data' / f'{name}.data')
    names = d.names()
    assert d.classes == classes and names[0] == first and names[-1] == last and d['eval'] == name
    assert Path(d['names']).parent == (ROOT / 'data').resolve()
