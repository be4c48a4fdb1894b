"""Datasets as labelling tools export them: Ultralytics / Roboflow data.yaml folders read directly and converted,
COCO JSON converted; the same boxes from VOC, YOLO and COCO give the same labels; every bad input has its message.

All exports are generated here (no network, no ../shared).  Test names avoid 'images' and 'raw': pytest puts the
name into tmp_path, where Darknet's label rule would see it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolo_lrm.cfg import CfgError, parse_cfg
from yolo_lrm.data import ConvertError, DatasetError, convert_voc, scan_dataset
from yolo_lrm.data.coco import convert_coco
from yolo_lrm.data.convert import main as convert_main
from yolo_lrm.data.datafile import parse_data
from yolo_lrm.data.layout import label_line
from yolo_lrm.data.voc import voc_box
from yolo_lrm.data.yolo import convert_yolo
from yolo_lrm.inference.detect import resolve_names

ROOT = Path(__file__).resolve().parents[1]
NAMES = ['fish', 'shark', 'ray']
W, H = 64, 48
# image stem -> objects (class, 1-based VOC corners xmin, ymin, xmax, ymax), all inside the W x H image
BOXES = {
    'a': [(0, 5, 7, 30, 25), (2, 33, 9, 60, 44)],
    'b': [(1, 1, 1, 64, 48)],
    'c': [],                                        # a negative
    'd': [(0, 10, 12, 21, 40), (1, 40, 3, 52, 17), (2, 2, 30, 9, 47)],
}


def _image(path: Path, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _yolo_text(stem: str) -> str:
    return ''.join(label_line(c, *voc_box(W, H, *box)) for c, *box in BOXES[stem])


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return path


def roboflow_export(root: Path, splits=(('train', 'ab'), ('valid', 'c'), ('test', 'd'))) -> Path:
    """A Roboflow YOLO export as downloaded: data.yaml with `../train/images` entries, no test: key."""
    for split, stems in splits:
        for stem in stems:
            _image(root / split / 'images' / f'{stem}.jpg')
            _write(root / split / 'labels' / f'{stem}.txt', _yolo_text(stem))
    return _write(root / 'data.yaml', 'train: ../train/images\nval: ../valid/images\n\nnc: 3\n'
                                      f"names: {NAMES}\n\nroboflow:\n  workspace: me\n  version: 2\n")


def ultralytics_export(root: Path) -> None:
    """Ultralytics' own layout: images/<split>/ and labels/<split>/."""
    for split, stems in (('train', 'ab'), ('val', 'cd')):
        for stem in stems:
            _image(root / 'images' / split / f'{stem}.jpg')
            _write(root / 'labels' / split / f'{stem}.txt', _yolo_text(stem))


# ------------------------------------------------------------------------------------------- data.yaml read directly
def test_roboflow_yaml_reads_like_ultralytics(tmp_path, caplog):
    data_yaml = roboflow_export(tmp_path / 'aqua')
    with caplog.at_level(logging.WARNING, logger='yolo_lrm.data'):
        data = parse_data(data_yaml)
    assert data.classes == 3 and data.names() == NAMES and data.named
    train = data.images('train')
    assert [Path(p).name for p in train.paths()] == ['a.jpg', 'b.jpg']
    assert train.label_paths()[0] == str(tmp_path / 'aqua' / 'train' / 'labels' / 'a.txt')
    assert data['valid'] == str(tmp_path / 'aqua' / 'valid' / 'images')
    assert [Path(p).name for p in data.images('test').paths()] == ['d.jpg']   # the export's test/images
    # the ../train/images fallback says what was asked and what was taken
    assert f"{data_yaml}:1: train: ../train/images not found ({tmp_path / 'train' / 'images'}); using " \
           f"{tmp_path / 'aqua' / 'train' / 'images'}" in caplog.text
    # nothing is written beside the export: no backup=, results= in the working directory
    assert data['backup'] == '' and data['results'] == os.path.abspath('results')
    report = scan_dataset(train, 3)
    assert len(report.images) == 2 and len(report.boxes) == 3 and not report.issues


def test_ultralytics_layout_foreign_path_dict_names_and_lists(tmp_path, caplog):
    root = tmp_path / 'set'
    ultralytics_export(root)
    # a list file of the val images, one relative to the list's folder and one absolute
    _write(root / 'lists' / 'extra.txt', f'../images/val/c.jpg\n{root / "images" / "val" / "d.jpg"}\n')
    foreign = 'D:\\exports\\set\\images\\val'                            # a Windows export's: its tail is found
    data_yaml = _write(root / 'set.yaml', yaml.safe_dump({
        'path': '/content/datasets/set',                                 # the exporting machine's
        'train': ['images/train', foreign],
        'val': 'lists/extra.txt',
        'names': {2: 'ray', 0: 'fish', 1: 'shark'}}))
    with caplog.at_level(logging.WARNING, logger='yolo_lrm.data'):
        data = parse_data(data_yaml)
    assert data.names() == NAMES
    assert f"path: /content/datasets/set not found (/content/datasets/set); relative entries are taken from the " \
           f"YAML's folder {root} instead" in caplog.text
    assert f"train: {foreign} not found ({root / foreign}); using {root / 'images' / 'val'}" in caplog.text
    train = data.images('train')
    assert [os.path.relpath(p, root) for p in train.paths()] == [
        'images/train/a.jpg', 'images/train/b.jpg', 'images/val/c.jpg', 'images/val/d.jpg']
    assert [os.path.relpath(p, root) for p in train.label_paths()][-1] == 'labels/val/d.txt'
    valid = data.images('valid')
    assert [os.path.relpath(p, root) for p in valid.paths()] == ['images/val/c.jpg', 'images/val/d.jpg']
    assert 'test' not in data.splits


def test_yaml_to_text_reads_back(tmp_path):
    """The run folder's copy of a data.yaml has absolute folders: read from anywhere, it gives the same splits."""
    data = parse_data(roboflow_export(tmp_path / 'aqua'))
    copy = _write(tmp_path / 'run' / 'data.yaml', data.to_text())
    again = parse_data(copy)
    assert again.names() == data.names()
    assert {k: v.paths() for k, v in again.splits.items()} == {k: v.paths() for k, v in data.splits.items()}


@pytest.mark.parametrize('text, message', [
    (b'train: a\nnames: [caf\xe9]\n', r'cannot read data file \(not UTF-8 text'),
    (b'train: [a, b\nnames: [x]\n', r'data\.yaml:2: not valid YAML \(expected .,. or .\]., but got .:.\)'),
    (b'- a\n- b\n', 'expected keys such as train:'),
    (b'train: t\nnc: 2\nnames: [a, b, c]\n', r'data\.yaml:2: nc: 2 but names lists 3 classes'),
    (b'train: t\nnames: {0: a, 2: b}\n', r'data\.yaml:2: names: the ids of an \{id: name\} mapping must be 0\.\.1'),
    (b'train: t\n', 'no names: and no nc:'),
    (b'val: t\nnc: 1\n', 'no train: entry'),
    (b'train: nowhere/images\nnc: 1\n', r'data\.yaml:1: train: nowhere/images not found'),
    (b'train: empty\nnc: 1\n', r'data\.yaml:1: train: .*empty holds no images'),
    (b'nc: 1\ntrain: [t, none.txt]\n', r'data\.yaml:2: train: .*none\.txt holds no images'),
])
def test_yaml_errors_name_the_file_and_line(tmp_path, text, message):
    (tmp_path / 't').mkdir()
    _image(tmp_path / 't' / 'x.jpg')
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'none.txt').write_text('\n')
    with pytest.raises(CfgError, match=message):
        parse_data(_write(tmp_path / 'data.yaml', text))


# --------------------------------------------------------------------------------------------------- yolo converter
def test_convert_roboflow_export_in_place(tmp_path, capsys):
    data_yaml = roboflow_export(tmp_path / 'aqua')
    convert_main(['yolo', str(data_yaml), '--out', str(tmp_path / 'out')])
    printed = capsys.readouterr().out
    out = tmp_path / 'out'
    # the lists point at the images where they are; Darknet's rule finds their labels there
    assert (out / 'train.txt').read_text().split() == [str(tmp_path / 'aqua' / 'train' / 'images' / f'{s}.jpg')
                                                       for s in 'ab']
    assert (out / 'aqua.names').read_text().split() == NAMES
    data, test = parse_data(out / 'aqua.data'), parse_data(out / 'aqua-test.data')
    assert (data['train'], data['valid'], test['valid']) == tuple(str(out / f'{s}.txt') for s in ('train', 'valid',
                                                                                                     'test'))
    assert not (out / 'train').exists()                               # nothing mirrored
    rows = {line.split()[0]: line.split()[1:] for line in printed.splitlines() if line.split()[:1] in
            [[n] for n in NAMES + ['boxes', 'images']]}
    assert rows == {'fish': ['1', '0', '1', '2'], 'shark': ['1', '0', '1', '2'], 'ray': ['1', '0', '1', '2'],
                    'boxes': ['3', '0', '3', '6'], 'images': ['2', '1', '1', '4']}
    assert 'no test: entry; the test split is' in printed
    assert f'data file: {out / "aqua.data"}' in printed


def test_tracked_aquarium_data_files_fit_the_converter(tmp_path):
    """data/aquarium.data and data/aquarium-test.data read what their recipe writes (here from a stand-in export);
    before it ran, they say how to make it."""
    aquarium = ['fish', 'jellyfish', 'penguin', 'puffin', 'shark', 'starfish', 'stingray']
    export = tmp_path / 'aquarium'
    roboflow_export(export)
    _write(export / 'data.yaml', f'train: ../train/images\nval: ../valid/images\n\nnc: 7\nnames: {aquarium}\n')
    (tmp_path / 'data').mkdir()
    for name in ('aquarium.data', 'aquarium-test.data'):
        shutil.copy(ROOT / 'data' / name, tmp_path / 'data' / name)
    with pytest.raises(CfgError, match='make it with:\n    python -m yolo_lrm.data.convert yolo '
                                       '../shared/datasets/aquarium/data.yaml --out data/aquarium'):
        parse_data(tmp_path / 'data' / 'aquarium.data').require('train', 'valid', 'names')
    convert_yolo(export / 'data.yaml', tmp_path / 'data' / 'aquarium')
    for name, valid in (('aquarium.data', 'valid'), ('aquarium-test.data', 'test')):
        data = parse_data(tmp_path / 'data' / name)
        data.require('train', 'valid', 'names')
        assert data.classes == 7 and data.names() == aquarium and Path(data['valid']).name == f'{valid}.txt'
    # detect.py --data takes the data.yaml's names
    args = argparse.Namespace(names=None, data=str(export / 'data.yaml'))
    assert resolve_names(args, None, 7) == aquarium


def test_convert_mirrors_labels_darknet_would_miss(tmp_path):
    """An `images` folder above the export: Darknet's rule (first occurrence) would look elsewhere, so the split is
    linked under --out with its labels beside; an image without a label file stays listed and is skipped as in
    place; class ids, malformed lines and boxes outside are reported."""
    root = tmp_path / 'images' / 'set'
    ultralytics_export(root)
    (root / 'labels' / 'train' / 'b.txt').unlink()
    _write(root / 'labels' / 'val' / 'c.txt', '0 0.5 0.5 0.2\n1 0.95 0.5 0.2 0.2\n')
    data_yaml = _write(root / 'data.yaml', f'path: .\ntrain: images/train\nval: images/val\nnames: {NAMES}\n')
    out = tmp_path / 'out'
    r = convert_yolo(data_yaml, out)
    listed = (out / 'train.txt').read_text().split()
    assert listed == [str(out / 'train' / 'images' / f'{s}.jpg') for s in 'ab']
    assert os.path.realpath(listed[0]) == str(root / 'images' / 'train' / 'a.jpg')
    assert (out / 'train' / 'labels' / 'a.txt').read_text() == _yolo_text('a')
    assert r.splits['train'].mirrored and r.splits['train'].report.count('label_missing') == 1
    val = r.splits['valid'].report
    assert (val.count('line_malformed'), val.count('box_clipped')) == (1, 1)
    text = r.summary()
    assert 'valid: line_malformed (at training: line skipped): 1' in text and 'every one listed in' in text
    assert 'c.txt:1' in (out / 'convert.log').read_text()
    # what training reads from the written list equals what it reads from the data.yaml
    direct = scan_dataset(parse_data(data_yaml).images('train'), 3)
    assert np.array_equal(direct.boxes, scan_dataset(out / 'train.txt', 3).boxes)
    _write(root / 'labels' / 'train' / 'a.txt', '0 .5 .5 .1 .1\n3 .5 .5 .1 .1\n')
    with pytest.raises(DatasetError, match=r'a\.txt:2: class 3'):
        convert_yolo(data_yaml, out)


def test_convert_yolo_refuses_shared_label_files(tmp_path):
    root = tmp_path / 'set'
    roboflow_export(root)
    _image(root / 'train' / 'images' / 'a.png')
    with pytest.raises(ConvertError, match=r'a\.jpg and .*a\.png share the label file'):
        convert_yolo(root / 'data.yaml', tmp_path / 'out')


# --------------------------------------------------------------------------------------------------- coco converter
def coco_doc(stems: str, extra_images=(), extra_annotations=(), categories=None) -> dict:
    """A COCO file of BOXES' images: bbox [x, y, w, h] from the 1-based VOC corners."""
    images = [{'id': i + 1, 'file_name': f'{s}.jpg', 'width': W, 'height': H} for i, s in enumerate(stems)]
    annotations = [{'id': 100 * (i + 1) + k, 'image_id': i + 1, 'category_id': c + 1, 'iscrowd': 0,
                    'bbox': [x1 - 1, y1 - 1, x2 - x1, y2 - y1], 'area': (x2 - x1) * (y2 - y1)}
                   for i, s in enumerate(stems) for k, (c, x1, y1, x2, y2) in enumerate(BOXES[s])]
    categories = categories or [{'id': 0, 'name': 'sea', 'supercategory': 'none'},      # Roboflow's dataset category
                                *({'id': k + 1, 'name': n, 'supercategory': 'sea'} for k, n in enumerate(NAMES))]
    return {'images': images + list(extra_images), 'annotations': annotations + list(extra_annotations),
            'categories': categories}


def roboflow_coco(root: Path, **extra) -> list[Path]:
    """Roboflow's COCO export: <split>/_annotations.coco.json with the images beside it."""
    files = []
    for split, stems in (('train', 'ab'), ('valid', 'c'), ('test', 'd')):
        for s in stems:
            _image(root / split / f'{s}.jpg')
        files.append(_write(root / split / '_annotations.coco.json', json.dumps(coco_doc(stems, **extra.get(split,
                                                                                                                {})))))
    return files


def test_convert_roboflow_coco(tmp_path, capsys):
    files = roboflow_coco(tmp_path / 'export')
    out = tmp_path / 'fishes'
    convert_main(['coco', *map(str, files), '--out', str(out), '--workers', '1'])
    printed = capsys.readouterr().out
    assert "left out (a supercategory of the others, without annotations): category 0 'sea'" in printed
    assert (out / 'fishes.names').read_text().split() == NAMES
    data, test = parse_data(out / 'fishes.data'), parse_data(out / 'fishes-test.data')
    assert (Path(data['train']).name, Path(data['valid']).name, Path(test['valid']).name) == \
        ('train.txt', 'valid.txt', 'test.txt')                        # split names from the folders
    assert (out / 'train' / 'images').resolve() == (tmp_path / 'export' / 'train').resolve()
    assert (out / 'valid' / 'labels' / 'c.txt').read_text() == ''     # a negative keeps its empty label
    report = scan_dataset(data['train'], 3)
    assert len(report.images) == 2 and not report.issues


def test_same_boxes_from_voc_yolo_and_coco_give_identical_labels(tmp_path):
    stems = 'abcd'
    voc = tmp_path / 'VOCSET'
    for s in stems:
        _image(voc / 'JPEGImages' / f'{s}.jpg')
        objects = ''.join(f'<object><name>{NAMES[c]}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>'
                          f'<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>'
                          for c, x1, y1, x2, y2 in BOXES[s])
        _write(voc / 'Annotations' / f'{s}.xml', f'<annotation><size><width>{W}</width><height>{H}</height>'
                                                 f'</size>{objects}</annotation>')
    _write(voc / 'ImageSets' / 'Main' / 'train.txt', ''.join(f'{s}\n' for s in stems))
    from_voc = scan_dataset(parse_data(convert_voc(voc, tmp_path / 'v', names=NAMES, workers=1).data_file)['train'], 3)

    root = tmp_path / 'yolo'
    for s in stems:
        _image(root / 'train' / 'images' / f'{s}.jpg')
        _write(root / 'train' / 'labels' / f'{s}.txt', _yolo_text(s))
    _write(root / 'data.yaml', f'train: train/images\nval: train/images\nnames: {NAMES}\n')
    from_yaml = scan_dataset(parse_data(root / 'data.yaml').images('train'), 3)
    convert_yolo(root / 'data.yaml', tmp_path / 'y')
    from_yolo = scan_dataset(tmp_path / 'y' / 'train.txt', 3)

    _write(tmp_path / 'coco' / 'train.json', json.dumps(coco_doc(stems)))
    convert_coco([tmp_path / 'coco' / 'train.json'], tmp_path / 'c', images=[str(root / 'train' / 'images')])
    from_coco = scan_dataset(tmp_path / 'c' / 'train.txt', 3)

    assert len(from_voc.boxes) == sum(map(len, BOXES.values())) == 6
    for other in (from_yaml, from_yolo, from_coco):
        assert np.array_equal(other.boxes, from_voc.boxes) and np.array_equal(other.offsets, from_voc.offsets)
        assert [Path(p).name for p in other.images] == [Path(p).name for p in from_voc.images]


def test_coco_counted_skips(tmp_path):
    """iscrowd, zero area, partly outside, unknown image or category, malformed bbox, a missing or resized image:
    each counted and listed (file and annotation id); the rest converts."""
    bad_annotations = [
        {'id': 901, 'image_id': 1, 'category_id': 1, 'iscrowd': 1, 'bbox': [1, 1, 5, 5]},
        {'id': 902, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 0, 5]},
        {'id': 903, 'image_id': 1, 'category_id': 2, 'bbox': [50, 40, 30, 20]},           # clipped to 14 x 8
        {'id': 904, 'image_id': 77, 'category_id': 1, 'bbox': [1, 1, 5, 5]},
        {'id': 905, 'image_id': 1, 'category_id': 9, 'bbox': [1, 1, 5, 5]},
        {'id': 906, 'image_id': 1, 'category_id': 1, 'bbox': [1, 1, 5]},
    ]
    extra_images = [{'id': 5, 'file_name': 'sub/gone.jpg', 'width': W, 'height': H},
                    {'id': 6, 'file_name': 'sub/big.jpg', 'width': W, 'height': H}]
    _image(tmp_path / 'pics' / 'sub' / 'big.jpg', 2 * W, H)
    for s in 'ab':
        _image(tmp_path / 'pics' / f'{s}.jpg')
    src = _write(tmp_path / 'ann' / 'instances_train.json',
                 json.dumps(coco_doc('ab', extra_images, bad_annotations)))
    r = convert_coco([src], tmp_path / 'out', images=[str(tmp_path / 'pics')])
    counts = {k: len(v) for k, v in r.skips.items()}
    assert counts == {'iscrowd boxes left out': 1, 'annotations of unknown images': 1,
                      'annotations of unknown categories': 1, 'annotations with a malformed bbox': 1,
                      'images skipped': 2, 'boxes without area dropped': 1, 'boxes clipped to the image': 1}
    assert f'{src}: annotation 904: image_id 77 is not an image of the file' in r.skips['annotations of unknown '
                                                                                       'images']
    assert any('gone.jpg: no such file' in s for s in r.skips['images skipped'])
    assert any('big.jpg is 128x48, the file says 64x48' in s for s in r.skips['images skipped'])
    assert r.counts['instances_train'][0] == 2
    lines = (tmp_path / 'out' / 'instances_train' / 'labels' / 'a.txt').read_text().splitlines()
    # annotation 903 clipped to the image's corner: x 50..64, y 40..48
    dw, dh = 1 / W, 1 / H
    assert lines[-1] == label_line(1, (50 + 64) / 2 * dw, (40 + 48) / 2 * dh, 14 * dw, 8 * dh).strip()
    assert 'every one listed in' in r.summary() and '903' in (tmp_path / 'out' / 'convert.log').read_text()


@pytest.mark.parametrize('doc, message', [
    (b'{"images": [], \n "categories": [}', r'train\.json:2:17: not valid JSON'),
    (b'{"images": [], "categories": [{"id": 1, "name": "caf\xe9"}]}', 'not UTF-8 text'),
    (json.dumps({'images': [{'id': 1, 'file_name': 'a.jpg'}, {'id': 1, 'file_name': 'b.jpg'}],
                 'categories': [{'id': 1, 'name': 'x'}]}).encode(), r'image id 1 appears twice \(a\.jpg, b\.jpg\)'),
    (json.dumps({'images': [{'id': 1, 'file_name': 'a.jpg'}, {'id': 2, 'file_name': 'a.jpg'}],
                 'categories': [{'id': 1, 'name': 'x'}]}).encode(), 'image ids 1 and 2 both name a.jpg'),
    (json.dumps({'images': [], 'categories': [{'id': 1, 'name': 'x'}, {'id': 1, 'name': 'y'}]}).encode(),
     r'category id 1 appears twice'),
    (json.dumps({'images': [{'id': 1, 'file_name': '/abs/a.jpg'}], 'categories': [{'id': 1, 'name': 'x'}]}).encode(),
     'must be relative to the image folder'),
    (json.dumps({'annotations': []}).encode(), 'not a COCO annotation file'),
])
def test_coco_errors_name_the_file(tmp_path, doc, message):
    (tmp_path / 'pics').mkdir()
    with pytest.raises(ConvertError, match=message):
        convert_coco([_write(tmp_path / 'train.json', doc)], tmp_path / 'out', images=[str(tmp_path / 'pics')])


def test_coco_files_must_share_categories(tmp_path):
    files = roboflow_coco(tmp_path / 'export')
    doc = json.loads(files[1].read_text())
    doc['categories'][1]['name'] = 'cod'
    files[1].write_text(json.dumps(doc))
    with pytest.raises(ConvertError, match='its categories differ from those of'):
        convert_coco(files, tmp_path / 'out')
    with pytest.raises(ConvertError, match='--split: 2 names for 3 files'):
        convert_coco(files, tmp_path / 'out', splits=['a', 'b'])


# ------------------------------------------------------------------------------------------------ training from YAML
def test_class_count_mismatch_names_the_set_that_fixes_it(tmp_path):
    assert parse_cfg(ROOT / 'cfg' / 'demo.cfg').classes_overrides(7) == ['region.classes=7', '17.filters=60']
    from test_train import run_args, tiny_cfg
    from yolo_lrm.train.trainer import train
    cfg = _write(tmp_path / 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=2))
    data_yaml = roboflow_export(tmp_path / 'aqua')
    with pytest.raises(CfgError, match=r'tiny\.cfg:\d+: \[region\] key .classes.: 6 classes, but .*data\.yaml has 3; '
                                       r'train with --set region\.classes=3 11\.filters=24'):
        train(run_args(tmp_path, cfg, data_yaml))
    assert not (tmp_path / 'runs').exists()


def test_train_runs_from_a_data_yaml(tmp_path):
    """A few updates straight from a Roboflow export, validated on its val split; nothing written beside it."""
    from test_train import run_args, tiny_cfg
    from yolo_lrm.train.trainer import train
    cfg = _write(tmp_path / 'tiny.cfg', tiny_cfg(64, batch=2, subdivisions=1, max_batches=3))
    data_yaml = roboflow_export(tmp_path / 'aqua', splits=(('train', 'abd'), ('valid', 'ad')))
    before = sorted(p for p in (tmp_path / 'aqua').rglob('*'))
    result = train(run_args(tmp_path, cfg, data_yaml, set=['region.classes=3', '11.filters=24'], eval_interval=3))
    assert result.updates == 3 and result.best_map is not None
    assert sorted(p for p in (tmp_path / 'aqua').rglob('*')) == before
    kept = yaml.safe_load((result.run_dir / 'data.yaml').read_text())
    assert kept['names'] == NAMES and kept['train'] == str(tmp_path / 'aqua' / 'train' / 'images')
    assert not (tmp_path / 'backup').exists() and (result.run_dir / 'weights' / 'last.weights').is_file()
