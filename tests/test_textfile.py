"""Text files saved by Windows editors (a UTF-8 byte-order mark first) read as without it, everywhere a user's file
is read; unreadable or non-UTF-8 files give an error naming the file and what it was read as."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_lrm.data.anchors import LabelError, read_darknet_labels
from yolo_lrm.cfg import CfgError, parse_cfg
from yolo_lrm.data.datafile import parse_data
from yolo_lrm.data.kitti import parse_kitti_label
from yolo_lrm.data.scan import scan_dataset
from yolo_lrm.experiments.grids import ExperimentError, load_budget
from yolo_lrm.textfile import read_lines, read_names, read_text
from yolo_lrm.evaluation.voc import read_image_set

BOM = '\ufeff'
ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str, bom: bool = True) -> Path:
    path.write_bytes((BOM + text if bom else text).encode('utf-8'))
    return path


def test_read_text_drops_only_a_leading_bom(tmp_path):
    p = write(tmp_path / 'a.txt', 'x\ufeffy\n')
    assert read_text(p, 'thing') == 'x\ufeffy\n'
    assert read_lines(write(tmp_path / 'b.txt', ' a \n\n b\n'), 'thing') == ['a', 'b']


def test_errors_name_the_file_and_what_it_is(tmp_path):
    bad = tmp_path / 'latin1.cfg'
    bad.write_bytes(b'[net]\nwidth=416 # caf\xe9\n')
    with pytest.raises(CfgError, match=r'latin1\.cfg: cannot read cfg file \(not UTF-8 text: .* at byte offset 21\)'):
        parse_cfg(bad)
    with pytest.raises(CfgError, match=r'nothere\.data: cannot read data file \(No such file'):
        parse_data(tmp_path / 'nothere.data')
    data = write(tmp_path / 'x.data', 'classes=2\nnames=missing.names\n')
    with pytest.raises(CfgError, match=r'missing\.names: cannot read the names file of .*x\.data \(No such file'):
        parse_data(data).names()


def test_cfg_data_and_names_with_a_bom(tmp_path):
    cfg_text = (ROOT / 'cfg' / 'demo.cfg').read_text()
    assert parse_cfg(write(tmp_path / 'bom.cfg', cfg_text)).to_text() == parse_cfg(ROOT / 'cfg' / 'demo.cfg').to_text()
    write(tmp_path / 'a.names', 'cat\ndog\n')
    data = parse_data(write(tmp_path / 'a.data', 'classes=2\nnames=a.names\n'))
    assert data.classes == 2 and data.names() == ['cat', 'dog']
    assert read_names(tmp_path / 'a.names') == ['cat', 'dog']
    assert read_image_set(write(tmp_path / 'set.txt', '000001\n000002\n')) == ['000001', '000002']
    budget = write(tmp_path / 'b.json', json.dumps({'train': {'batch': 4}}))
    assert load_budget(str(budget)).train['batch'] == 4
    (tmp_path / 'b2.json').write_bytes(b'{"train": {}} \xff')
    with pytest.raises(ExperimentError, match=r'b2\.json: cannot read budget file \(not UTF-8'):
        load_budget(str(tmp_path / 'b2.json'))


def test_training_scan_and_anchors_read_labels_with_a_bom(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.jpg'), np.zeros((40, 60, 3), np.uint8))
    write(tmp_path / 'a.txt', '1 0.5 0.5 0.2 0.4\n')
    listing = write(tmp_path / 'train.txt', f'{tmp_path / "a.jpg"}\n')
    report = scan_dataset(listing, 2, use_cache=False)
    assert report.issues == [] and np.allclose(report.boxes, [[1, 0.5, 0.5, 0.2, 0.4]])
    classes, wh = read_darknet_labels(listing)
    assert classes.tolist() == [1] and np.allclose(wh, [[0.2, 0.4]])
    (tmp_path / 'b.txt').write_bytes(b'\xff\xfe1 0.5 0.5 0.2 0.4\n')  # UTF-16: not a label file
    with pytest.raises(LabelError, match=r'b\.txt: cannot read label file \(listed in .*\) \(not UTF-8'):
        read_darknet_labels(write(tmp_path / 'list2.txt', str(tmp_path / 'b.txt') + '\n', bom=False))


def test_kitti_label_with_a_bom(tmp_path):
    line = 'Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n'
    objects = parse_kitti_label(str(write(tmp_path / '000001.txt', line)))
    assert [(o.type, o.x1, o.y2, o.line) for o in objects] == [('car', 587.01, 200.12, 1)]
