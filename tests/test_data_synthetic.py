"""Demo dataset generator: determinism, sane labels, generation on first use through the .data file."""
import os
from pathlib import Path

import numpy as np
import pytest

from yolo_lrm.cfg import CfgError
from yolo_lrm.data.datafile import parse_data
from yolo_lrm.data import ListDataset, prepare_data, scan_dataset
from yolo_lrm.data import synthetic
from yolo_lrm.data.synthetic import CLASSES, DemoSpec, generate, render_image

TINY = DemoSpec(train=12, test=4, width=(96, 128), height=(64, 96), max_objects=5, min_size=8, max_size=0.5,
                max_clutter=4, background_images=0.2, seed=5)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate(tmp_path / 'a', TINY)
    generate(tmp_path / 'b', TINY, workers=1)
    a, b = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert a == b and len(a) == 12 + 4 + 12 + 4 + 4 + 5      # images, labels, test XML, lists/names/data/stamp
    generate(tmp_path / 'c', TINY, seed=6)
    c = _files(tmp_path / 'c')
    assert c.keys() == a.keys()
    assert a['images/train/train000000.jpg'] != c['images/train/train000000.jpg']


def test_images_and_labels_are_sane():
    spec = DemoSpec(train=0, test=0, width=(160, 224), height=(128, 160), max_objects=8, min_size=8, max_size=0.5,
                    max_clutter=6, background_images=0.1)
    sizes, classes, empty = [], [], 0
    for i in range(30):
        img, boxes = render_image(spec, 0, i)
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and 160 <= w <= 224 and 128 <= h <= 160
        empty += not boxes
        for c, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 >= 3 and y1 - y0 >= 3
            # an object is drawn where its box is: the box region differs from a flat patch
            assert img[y0:y1, x0:x1].std() > 3
            sizes.append(max(x1 - x0, y1 - y0))
            classes.append(c)
    assert 1 <= empty <= 15
    assert set(classes) == set(range(len(CLASSES)))
    assert np.median(sizes) < 40 and min(sizes) < 16 and max(sizes) > 50   # many small, some large


def test_render_is_a_pure_function_of_seed_split_index():
    a, ba = render_image(TINY, 1, 3)
    b, bb = render_image(TINY, 1, 3)
    c, _ = render_image(TINY, 0, 3)
    assert np.array_equal(a, b) and ba == bb and not np.array_equal(a, c)


def _data_file(folder: Path, preset: str, sub: str = 'demo') -> Path:
    path = folder / 'demo.data'
    path.write_text(f'classes=6\ntrain={sub}/train.txt\nvalid={sub}/test.txt\nnames={sub}/demo.names\n'
                    f'annotations={sub}/Annotations\ngenerate={preset}\n')
    return path


def test_prepare_data_generates_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(synthetic.PRESETS, 'tiny', TINY)
    data = prepare_data(_data_file(tmp_path, 'tiny'))
    assert 'generating the tiny dataset' in capsys.readouterr().err
    train = Path(data['train'])
    assert train.is_file() and not (train.parent / '.generate.lock').exists()
    stamp = train.stat().st_mtime_ns
    prepare_data(parse_data(_data_file(tmp_path, 'tiny')))
    assert train.stat().st_mtime_ns == stamp and capsys.readouterr().err == ''
    monkeypatch.setitem(synthetic.PRESETS, 'tiny', DemoSpec(**{**TINY.__dict__, 'train': 10}))
    prepare_data(_data_file(tmp_path, 'tiny'))                 # other settings: generated again
    assert 'the generator changed' in capsys.readouterr().err
    ds = ListDataset(data['train'], data.classes, augment=True)
    assert len(ds) == 10 and ds.report.issues == []
    assert data.names() == list(CLASSES)
    assert scan_dataset(data['valid'], 6).entries == 4


def test_prepare_data_errors_and_stale_lock(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic.PRESETS, 'tiny', TINY)
    with pytest.raises(CfgError, match='generate=nope'):
        prepare_data(_data_file(tmp_path, 'nope'))
    bad = tmp_path / 'bad.data'
    bad.write_text('classes=6\ntrain=x/train.txt\nvalid=x/valid.txt\ngenerate=tiny\n')
    with pytest.raises(CfgError, match='valid.txt'):
        prepare_data(bad)
    lock = tmp_path / 'demo' / '.generate.lock'
    lock.parent.mkdir()
    lock.write_text('999999999')                              # a process that no longer exists
    prepare_data(_data_file(tmp_path, 'tiny'))
    assert not lock.exists() and (tmp_path / 'demo' / 'train.txt').is_file()


def test_committed_demo_data_files_parse():
    root = Path(__file__).resolve().parents[1]
    for name, preset in (('demo.data', 'demo'), ('demo-small.data', 'demo-small')):
        data = parse_data(root / 'data' / name)
        assert data['generate'] == preset and preset in synthetic.PRESETS
        assert data.classes == len(CLASSES)
        assert Path(data['train']).parent == root / 'data' / preset
        assert os.path.basename(data['names']) == 'demo.names'
