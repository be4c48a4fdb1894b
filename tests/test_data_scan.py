"""Dataset scan: every kind of bad input is counted and logged, training data stays usable, the cache works."""
import os

import cv2
import numpy as np
import pytest
import torch

from yolo_lrm.data import DatasetError, ListDataset, collate, resolve_list, scan_dataset
from yolo_lrm.data.imagelist import read_list


def _image(path, w=40, h=30, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def _label(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def messy(tmp_path, monkeypatch):
    """A list with one example of every problem; paths relative to the list file."""
    root = tmp_path / 'set'
    img, lab = root / 'images', root / 'labels'
    _image(img / 'good.jpg'); _label(lab / 'good.txt', '0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n')
    _image(img / 'background.png'); _label(lab / 'background.txt', '')
    _image(img / 'nolabel.jpg')
    (img / 'corrupt.jpg').write_bytes(b'\xff\xd8 garbage'); _label(lab / 'corrupt.txt', '0 .5 .5 .1 .1\n')
    (img / 'folder.jpg').mkdir(); _label(lab / 'folder.txt', '0 .5 .5 .1 .1\n')    # cannot be opened
    _image(img / 'malformed.jpg'); _label(lab / 'malformed.txt', '0 .5 .5 .1 .1\n0 .5 .5\n1 .2 .2 .1 .1\n')
    _image(img / 'range.jpg')
    _label(lab / 'range.txt', '0 0.95 0.5 0.2 0.2\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.2\n0 .5 .5 .5 .5\n')
    _image(img / 'dup.jpg'); _label(lab / 'dup.txt', '2 .5 .5 .1 .1\n2 .5 .5 .1 .1\n2 .6 .5 .1 .1\n')
    entries = ['images/good.jpg', 'images/background.png', 'images/missing.jpg', 'images/nolabel.jpg',
               'images/corrupt.jpg', 'images/folder.jpg', 'images/malformed.jpg', 'images/range.jpg',
               'images/dup.jpg', 'images/good.jpg', '']
    (root / 'train.txt').write_text('\n'.join(entries) + '\n')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)     # relative paths must not depend on the working directory
    return root


def test_scan_counts_every_problem(messy):
    r = scan_dataset(messy / 'train.txt', 3)
    counts = {k: r.count(k) for k in ('image_missing', 'image_corrupt', 'image_unreadable', 'label_missing',
                                      'line_malformed', 'box_clipped', 'box_dropped', 'box_duplicate',
                                      'image_duplicate', 'class_out_of_range')}
    assert counts == {'image_missing': 1, 'image_corrupt': 1, 'image_unreadable': 1, 'label_missing': 1,
                      'line_malformed': 1, 'box_clipped': 1, 'box_dropped': 2, 'box_duplicate': 1,
                      'image_duplicate': 1, 'class_out_of_range': 0}
    assert r.entries == 10 and r.labels_empty == 1
    names = [os.path.basename(p) for p in r.images]
    assert names == ['good.jpg', 'background.png', 'malformed.jpg', 'range.jpg', 'dup.jpg', 'good.jpg']
    mal = next(i for i in r.issues if i.kind == 'line_malformed')
    assert mal.path.endswith('malformed.txt') and mal.line == 2
    # the clipped box keeps its inside part: edges 0.85..1.0
    np.testing.assert_allclose(r.labels(3)[0], [0, 0.925, 0.5, 0.15, 0.2], atol=1e-6)
    assert len(r.labels(3)) == 2 and len(r.labels(4)) == 2
    assert r.per_class.tolist() == [2 * 1 + 1 + 2, 2 * 1 + 1, 2]
    table = r.table(['a', 'b', 'c'])
    assert 'missing 1' in table and 'malformed lines 1' in table


def test_dataset_keeps_going_and_logs_every_skip(messy, tmp_path):
    log = tmp_path / 'scan.log'
    ds = ListDataset(messy / 'train.txt', 3, augment=True, log_file=log)
    assert len(ds) == 6
    text = log.read_text()
    for name in ('missing.jpg', 'corrupt.jpg', 'folder.jpg', 'nolabel.txt', 'malformed.txt:2', 'range.txt:2',
                 'range.txt:3', 'range.txt:1', 'dup.txt:2'):
        assert name in text, name
    items = [ds[(i, 64)] for i in range(len(ds))]
    images, targets, paths, indices = collate(items)
    assert images.shape == (6, 3, 64, 64) and targets.shape == (6, 2, 5)
    assert (targets[1, :, 0] == -1).all()                   # the background image: padding only
    assert paths[0].endswith('good.jpg') and indices.tolist() == list(range(6))
    val = ListDataset(messy / 'train.txt', 3, augment=False)
    image, t, _, _ = val[(0, 64)]
    assert image.shape == (3, 64, 64) and t.shape == (2, 5)


def test_class_id_out_of_range_is_an_error_naming_the_line(tmp_path):
    _image(tmp_path / 'images' / 'a.jpg')
    _label(tmp_path / 'labels' / 'a.txt', '0 .5 .5 .1 .1\n3 .5 .5 .2 .2\n')
    (tmp_path / 'list.txt').write_text('images/a.jpg\n')
    assert scan_dataset(tmp_path / 'list.txt', 3).count('class_out_of_range') == 1
    with pytest.raises(DatasetError, match=r'a\.txt:2: class 3') as err:
        ListDataset(tmp_path / 'list.txt', 3, augment=True)
    assert 'classes=3' in str(err.value)


def test_cache_is_reused_and_invalidated(tmp_path):
    for i in range(3):
        _image(tmp_path / 'images' / f'{i}.jpg')
        _label(tmp_path / 'labels' / f'{i}.txt', f'{i} .5 .5 .1 .1\n')
    (tmp_path / 'list.txt').write_text(''.join(f'images/{i}.jpg\n' for i in range(3)))
    cache = tmp_path / 'cache'
    first = scan_dataset(tmp_path / 'list.txt', 3, cache_dir=cache)
    assert first.from_cache == 0 and len(os.listdir(cache)) == 1
    second = scan_dataset(tmp_path / 'list.txt', 3, cache_dir=cache)
    assert second.from_cache == 3
    np.testing.assert_array_equal(first.boxes, second.boxes)
    _label(tmp_path / 'labels' / '1.txt', '1 .5 .5 .1 .1\n2 .25 .25 .125 .125\n')
    third = scan_dataset(tmp_path / 'list.txt', 3, cache_dir=cache)
    assert third.from_cache == 2 and len(third.labels(1)) == 2


def test_undecodable_image_is_replaced_and_logged(tmp_path):
    _image(tmp_path / 'images' / 'a.png')
    _image(tmp_path / 'images' / 'b.png', value=200)
    data = bytearray((tmp_path / 'images' / 'a.png').read_bytes())
    data[40:] = bytes(len(data) - 40)                        # header intact, pixel data destroyed
    (tmp_path / 'images' / 'a.png').write_bytes(bytes(data))
    for n in 'ab':
        _label(tmp_path / 'labels' / f'{n}.txt', '0 .5 .5 .5 .5\n')
    (tmp_path / 'list.txt').write_text('images/a.png\nimages/b.png\n')
    log = tmp_path / 'scan.log'
    ds = ListDataset(tmp_path / 'list.txt', 1, augment=False, log_file=log)
    image, _, path, index = ds[(0, 32)]
    assert path.endswith('b.png') and index == 1 and torch.isclose(image[:, 16, 16], torch.tensor(200 / 255)).all()
    assert 'a.png' in log.read_text()


def test_list_file_with_a_utf8_bom_gives_clean_paths(tmp_path):
    _image(tmp_path / 'images' / 'a.jpg')
    _label(tmp_path / 'labels' / 'a.txt', '0 .5 .5 .1 .1\n')
    (tmp_path / 'list.txt').write_bytes('\ufeffimages/a.jpg\nimages/a.jpg\n'.encode())
    assert read_list(str(tmp_path / 'list.txt')) == ['images/a.jpg', 'images/a.jpg']
    assert resolve_list(tmp_path / 'list.txt')[0] == str(tmp_path / 'images' / 'a.jpg')
    assert scan_dataset(tmp_path / 'list.txt', 1).count('image_missing') == 0


# ------------------------------------------------------------------------------------------ issue 29's messages
def _exif_jpeg(path, orientation):
    """A JPEG whose APP1 Exif segment holds an orientation tag (big-endian TIFF, one IFD entry)."""
    ok, data = cv2.imencode('.jpg', np.full((30, 40, 3), 90, np.uint8))
    tiff = b'MM\0*' + (8).to_bytes(4, 'big') + (1).to_bytes(2, 'big') + \
        bytes.fromhex('0112 0003 00000001') + orientation.to_bytes(2, 'big') + b'\0\0' + b'\0\0\0\0'
    app1 = b'Exif\0\0' + tiff
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:2].tobytes() + b'\xff\xe1' + (len(app1) + 2).to_bytes(2, 'big') + app1
                     + data[2:].tobytes())


def test_exif_rotated_images_are_counted_and_said_once(tmp_path):
    root = tmp_path / 'set'
    _exif_jpeg(root / 'images' / 'rot.jpg', 6)
    _exif_jpeg(root / 'images' / 'upright.jpg', 1)
    _image(root / 'images' / 'plain.jpg')
    for name in ('rot', 'upright', 'plain'):
        _label(root / 'labels' / f'{name}.txt', '0 .5 .5 .2 .2\n')
    (root / 'train.txt').write_text('images/rot.jpg\nimages/upright.jpg\nimages/plain.jpg\n')
    for _ in range(2):  # the second scan reads the orientation from the cache
        report = scan_dataset(str(root / 'train.txt'), 2)
        assert len(report.images) == 3 and report.count('image_rotated') == 1
        warnings = report.warnings()
        assert len(warnings) == 1 and warnings[0].startswith('1 images carry an EXIF orientation other than 1 '
                                                             f'(the first: {root / "images" / "rot.jpg"})')
        assert 'EXIF-rotated 1' in report.table()


def test_malformed_lines_are_shown_whole_and_a_majority_is_said(tmp_path):
    root = tmp_path / 'set'
    _image(root / 'images' / 'a.jpg')
    _label(root / 'labels' / 'a.txt', '0 0.123456789 0.123456789 0.123456789 0.123456789 0.987654321\n'
                                      '2.0 .5 .5 .1 .1\n0 .5 .5 .1 .1\n')
    (root / 'train.txt').write_text('images/a.jpg\n')
    report = scan_dataset(str(root / 'train.txt'), 3, use_cache=False)
    details = [i.detail for i in report.issues if i.kind == 'line_malformed']
    assert details == ["6 fields, expected 5 (class cx cy w h): "
                       "'0 0.123456789 0.123456789 0.123456789 0.123456789 0.987654321'",
                       "class '2.0' is not an integer: '2.0 .5 .5 .1 .1'"]
    assert report.warnings() == [f'2 of 3 label lines are malformed and skipped (the first: '
                                 f'{root / "labels" / "a.txt"}:1: {details[0]})']
    report.require_boxes()  # one box is left
    _label(root / 'labels' / 'a.txt', '0 .5 .5 .1 .1 .9\n')
    with pytest.raises(DatasetError, match=r'no usable box in its 1 usable images \(1 malformed label lines'):
        scan_dataset(str(root / 'train.txt'), 3, use_cache=False).require_boxes()
