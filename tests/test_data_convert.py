"""VOC and KITTI converters on small hand-made fixtures; label values checked by hand."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_lrm.data.datafile import parse_data
from yolo_lrm.data import ConvertError, convert_kitti, convert_voc, scan_dataset
from yolo_lrm.data.convert import main as convert_main
from yolo_lrm.data.voc import VOC_CLASSES


def _xml(objects, w=100, h=80, size=True):
    objs = ''
    for name, box, difficult in objects:
        diff = '' if difficult is None else f'<difficult>{difficult}</difficult>'
        objs += (f'<object><name>{name}</name>{diff}<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>'
                 f'<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>')
    dims = f'<size><width>{w}</width><height>{h}</height><depth>3</depth></size>' if size else ''
    return f'<annotation><filename>x.jpg</filename>{dims}{objs}</annotation>'


def _voc_dataset(ds: Path, items: dict[str, str], sets: dict[str, list[str]], w=100, h=80):
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    for image_id, xml in items.items():
        (ds / 'Annotations' / f'{image_id}.xml').write_text(xml)
        cv2.imwrite(str(ds / 'JPEGImages' / f'{image_id}.jpg'), np.zeros((h, w, 3), np.uint8))
    for name, ids in sets.items():
        (ds / 'ImageSets' / 'Main' / f'{name}.txt').write_text(''.join(f'{i}\n' for i in ids))


def _lines(path):
    return [[float(v) for v in ln.split()] for ln in Path(path).read_text().splitlines()]


@pytest.fixture
def devkit(tmp_path):
    root = tmp_path / 'VOCdevkit'
    _voc_dataset(root / 'VOC2007', {
        'a': _xml([('dog', (11, 21, 60, 70), 0), ('cat', (1, 1, 100, 80), 1), ('person', (5, 6, 7, 8), None)]),
        'b': _xml([('car', (50, 40, 90, 60), 0)]),
        'c': _xml([]),
        'd': '<annotation><size>',                                    # broken XML: reported, skipped
    }, {'train': ['a'], 'val': ['b'], 'test': ['c', 'd']})
    _voc_dataset(root / 'VOC2012', {'e': _xml([('bus', (10, 10, 20, 20), 0)], size=False)},
                 {'train': ['e'], 'val': []}, w=64, h=48)
    return root


def test_voc_year_layout_like_voc_label(devkit, tmp_path):
    out = tmp_path / 'out'
    r = convert_voc(devkit, out)
    assert r.classes == list(VOC_CLASSES)
    assert r.difficult_dropped == 1 and r.images == 4 and r.boxes == 4
    assert len(r.errors) == 1 and 'd.xml' in r.errors[0]
    # dog (class 11): x = ((11 + 60) / 2 - 1) / 100, y = ((21 + 70) / 2 - 1) / 80, w = 49 / 100, h = 49 / 80
    np.testing.assert_allclose(_lines(out / 'VOC2007' / 'labels' / 'a.txt'),
                               [[11, 0.345, 0.55625, 0.49, 0.6125], [14, 0.05, 0.075, 0.02, 0.025]], rtol=1e-12)
    # voc_label.py computes ((xmin + xmax) / 2.0 - 1) * (1. / w) and writes str(float)
    assert (out / 'VOC2007' / 'labels' / 'a.txt').read_text().startswith('11 0.34500000000000003 0.55625 0.49 ')
    assert (out / 'VOC2007' / 'labels' / 'c.txt').read_text() == ''
    # no <size> in the XML: read from the 64x48 image
    np.testing.assert_allclose(_lines(out / 'VOC2012' / 'labels' / 'e.txt'), [[5, 14 / 64, 14 / 48, 10 / 64, 10 / 48]])
    lists = {n: (out / n).read_text().split() for n in ('2007_train.txt', '2007_val.txt', '2007_test.txt',
                                                        '2012_train.txt', 'train.txt', 'train.all.txt')}
    assert [Path(p).stem for p in lists['train.txt']] == ['a', 'b', 'e']
    assert [Path(p).stem for p in lists['2007_test.txt']] == ['c']
    assert [Path(p).stem for p in lists['train.all.txt']] == ['a', 'b', 'e', 'c']
    data = parse_data(r.data_file)
    assert data.classes == 20 and data['train'] == str(out / 'train.txt')
    assert data['valid'] == str(out / '2007_test.txt')
    assert data['annotations'] == str(devkit / 'VOC2007' / 'Annotations')
    report = scan_dataset(data['train'], 20)                        # Darknet's label rule finds the new labels
    assert len(report.images) == 3 and not report.issues


def test_voc_in_place_and_keep_difficult(devkit):
    r = convert_voc(devkit.parent, keep_difficult=True)             # the parent of VOCdevkit, as voc_label.py
    assert r.difficult_dropped == 0
    assert [ln[0] for ln in _lines(devkit / 'VOC2007' / 'labels' / 'a.txt')] == [11, 7, 14]
    assert (devkit.parent / 'train.txt').is_file()


def test_voc_plain_layout_discovers_classes(tmp_path):
    ds = tmp_path / 'BCCD'
    _voc_dataset(ds, {'x1': _xml([('WBC', (1, 1, 41, 21), 0), ('RBC', (10, 10, 20, 20), 0)]),
                      'x2': _xml([('Platelets', (3, 3, 5, 5), 0), ('RBC', (30, 30, 50, 50), 0)])},
                 {'trainval': ['x1'], 'test': ['x2']})
    r = convert_voc(ds, tmp_path / 'out')
    assert r.classes == ['Platelets', 'RBC', 'WBC']
    assert _lines(tmp_path / 'out' / 'BCCD' / 'labels' / 'x1.txt')[0] == pytest.approx([2, 0.2, 0.125, 0.4, 0.25])
    data = parse_data(r.data_file)
    assert Path(data['train']).name == 'trainval.txt' and Path(data['valid']).name == 'test.txt'
    assert Path(data['names']).read_text().split() == ['Platelets', 'RBC', 'WBC']
    names = tmp_path / 'two.names'
    names.write_text('RBC\nWBC\n')
    r = convert_voc(ds, tmp_path / 'out2', names=['RBC', 'WBC'])
    assert r.unknown == {'Platelets': 1}
    assert [ln[0] for ln in _lines(tmp_path / 'out2' / 'BCCD' / 'labels' / 'x1.txt')] == [1, 0]


def test_voc_output_where_darknet_would_not_find_labels(devkit, tmp_path):
    with pytest.raises(ConvertError, match='label rule'):
        convert_voc(devkit, tmp_path / 'images' / 'out')


KITTI_LINES = {
    '000000': 'Car 0.00 0 -1.5 10.40 5.60 30.50 15.50 1.5 1.6 3.7 1 1 10 0.1\n'
              'DontCare -1 -1 -10 0.00 0.00 5.00 5.00 -1 -1 -1 -1000 -1000 -1000 -10\n'
              'Person_sitting 0.00 1 0.1 60.00 10.00 70.00 30.00 1 1 1 1 1 5 0.1\n',
    '000001': 'Pedestrian 0.50 2 0.1 1.00 2.00 11.00 32.00 1.8 0.5 0.9 1 1 8 0.1\n'
              'Misc 0.00 0 0.1 40.00 10.00 50.00 20.00 1 1 1 1 1 5 0.1\n',
    **{f'{i:06d}': f'Cyclist 0.00 0 0.1 {i}.00 1.00 {i + 20}.00 21.00 1 1 1 1 1 5 0.1\n' for i in range(2, 10)},
}


@pytest.fixture
def kitti(tmp_path):
    base = tmp_path / 'kitti' / 'training'
    (base / 'image_2').mkdir(parents=True)
    (base / 'label_2').mkdir()
    for frame, text in KITTI_LINES.items():
        w = 120 if frame == '000001' else 124                         # frame sizes vary in KITTI
        cv2.imwrite(str(base / 'image_2' / f'{frame}.png'), np.zeros((37, w, 3), np.uint8))
        (base / 'label_2' / f'{frame}.txt').write_text(text)
    return tmp_path / 'kitti'


def test_kitti_conversion(kitti, tmp_path):
    out = tmp_path / 'kout'
    r = convert_kitti(kitti, out, seed=0)
    assert (r.train, r.test) == (9, 1)
    assert r.dropped == {'dontcare': 1, 'misc': 1, 'person_sitting': 1}
    car = _lines(out / 'labels' / '000000.txt')
    assert car == [[0, (10.4 + 30.5) / 2 / 124, (5.6 + 15.5) / 2 / 37, (30.5 - 10.4) / 124, (15.5 - 5.6) / 37]]
    assert _lines(out / 'labels' / '000001.txt') == [[4, 6 / 120, 17 / 37, 10 / 120, 30 / 37]]
    assert (out / 'test_ids.txt').read_text() == '000004\n'             # the seed-0 split of these 10 frames
    xml = (out / 'Annotations' / '000004.xml').read_text()
    assert '<name>cyclist</name>' in xml and '<xmin>5</xmin><ymin>2</ymin><xmax>25</xmax><ymax>22</ymax>' in xml
    assert '<width>124</width><height>37</height>' in xml
    assert (out / 'label_2_test' / '000004.txt').read_bytes() == \
        (kitti / 'training' / 'label_2' / '000004.txt').read_bytes()
    assert sorted(p.name for p in (out / 'label_2_test').iterdir()) == ['000004.txt']
    data = parse_data(r.data_file)
    assert data.classes == 6 and data.names() == ['car', 'van', 'truck', 'tram', 'pedestrian', 'cyclist']
    assert data['kitti_labels'] == str(out / 'label_2_test')
    train = scan_dataset(data['train'], 6)
    assert len(train.images) == 9 and not train.issues
    assert convert_kitti(kitti, tmp_path / 'again', seed=0).test == 1
    assert (tmp_path / 'again' / 'test_ids.txt').read_text() == (out / 'test_ids.txt').read_text()


def test_kitti_voc_xml_rounding_and_person_sitting(kitti, tmp_path):
    out = tmp_path / 'k2'
    convert_kitti(kitti, out, seed=1, test_fraction=0.5, person_sitting='pedestrian')
    assert [ln[0] for ln in _lines(out / 'labels' / '000000.txt')] == [0, 4]
    xml = (out / 'Annotations' / '000000.xml').read_text()              # frame 0 is a test frame for seed 1
    # int(round(v)) + 1: 10.40 -> 11, 5.60 -> 7, 30.50 -> 30 (half to even) -> 31, 15.50 -> 16 -> 17
    assert '<name>car</name>' in xml and '<xmin>11</xmin><ymin>7</ymin><xmax>31</xmax><ymax>17</ymax>' in xml
    assert xml.count('<name>pedestrian</name>') == 1 and 'dontcare' not in xml.lower()


def test_kitti_bad_label_line_skips_the_frame(kitti, tmp_path):
    (kitti / 'training' / 'label_2' / '000003.txt').write_text('Car 0 0 0 1 2 3\n')
    r = convert_kitti(kitti, tmp_path / 'k3')
    assert any('000003.txt:1' in e for e in r.errors)
    assert r.train + r.test == 9


def test_cli(devkit, tmp_path, capsys):
    convert_main(['voc', str(devkit), '--out', str(tmp_path / 'cli'), '--workers', '1'])
    assert 'boxes' in capsys.readouterr().out
    with pytest.raises(SystemExit, match='no training/image_2'):
        convert_main(['kitti', str(tmp_path), '--out', str(tmp_path / 'k')])


def test_voc_empty_boxes_dropped_and_outside_boxes_reported(tmp_path, capsys):
    """xmin == xmax (BCCD's BloodImage_00338), negative or no-overlap boxes are dropped and reported with the XML;
    a box partly outside the image is written as voc_label.py writes it (unclipped) and reported."""
    ds = tmp_path / 'cells'
    _voc_dataset(ds, {
        'p': _xml([('RBC', (50, 40, 50, 40), 0),          # a point: xmin == xmax and ymin == ymax -> dropped
                   ('RBC', (10, 10, 30, 20), 0),          # fine
                   ('WBC', (20, 5, 20, 40), 0),           # zero width -> dropped
                   ('WBC', (0, 70, 50, 90), 0),           # partly outside (xmin < 1, ymax > H + 1) -> written
                   ('RBC', (150, 10, 170, 20), 0),        # right of the 100-wide image -> dropped
                   ('RBC', (60, 1, 101, 81), 0)]),        # edges exactly at the image border: fine
        'q': _xml([('RBC', (30, 30, 20, 50), 0),          # negative width -> dropped
                   ('WBC', (5, 5, 5, 15), 1)]),           # difficult: dropped as difficult, not checked
    }, {})
    r = convert_voc(ds, tmp_path / 'out')
    assert r.boxes == 3 and r.difficult_dropped == 1 and not r.errors
    assert len(r.empty) == 4 and len(r.outside) == 1
    assert [e.split(':')[0].rsplit('/', 1)[-1] for e in r.empty] == ['p.xml', 'p.xml', 'p.xml', 'q.xml']
    assert 'RBC xmin 50 ymin 40 xmax 50 ymax 40 in a 100x80 image' in r.empty[0]
    assert r.outside[0].endswith('p.xml: WBC xmin 0 ymin 70 xmax 50 ymax 90 in a 100x80 image')
    # RBC = 0, WBC = 1; the outside box keeps voc_label.py's numbers: x = (25 - 1) / 100, y = (80 - 1) / 80
    np.testing.assert_allclose(_lines(tmp_path / 'out' / 'cells' / 'labels' / 'p.txt'),
                               [[0, 0.19, 0.175, 0.2, 0.125], [1, 0.24, 79 / 80, 0.5, 0.25],
                                [0, 0.795, 0.5, 0.41, 1.0]], rtol=1e-12)
    assert (tmp_path / 'out' / 'cells' / 'labels' / 'q.txt').read_text() == ''
    summary = r.summary()
    assert 'empty boxes dropped (zero size or outside the image): 4' in summary
    assert 'boxes partly outside the image' in summary and summary.count('p.xml') == 4
    # what the converter reports as outside is exactly what the training scan clips; nothing degenerate is left
    report = scan_dataset(parse_data(r.data_file)['train'], 2)
    assert [i.kind for i in report.issues] == ['box_clipped']
    convert_main(['voc', str(ds), '--out', str(tmp_path / 'cli'), '--workers', '1'])
    out = capsys.readouterr().out
    assert out.count('empty box dropped: ') == 4 and f'empty box dropped: {ds / "Annotations" / "q.xml"}' in out


def test_kitti_empty_boxes_dropped_and_outside_boxes_reported(kitti, tmp_path):
    label = kitti / 'training' / 'label_2' / '000004.txt'               # the seed-0 test frame (124x37)
    label.write_text(KITTI_LINES['000004']
                     + 'Car 0.00 0 0.1 50.00 10.00 50.00 20.00 1 1 1 1 1 5 0.1\n'       # zero width -> dropped
                     + 'Van 0.00 0 0.1 -2.00 3.00 40.00 36.00 1 1 1 1 1 5 0.1\n'        # partly outside -> kept
                     + 'Truck 0.00 0 0.1 200.00 5.00 220.00 15.00 1 1 1 1 1 5 0.1\n'    # right of the image
                     + 'Tram 0.00 0 0.1 30.00 20.00 10.00 30.00 1 1 1 1 1 5 0.1\n'      # negative width
                     + 'DontCare -1 -1 -10 7.00 7.00 7.00 7.00 -1 -1 -1 -1000 -1000 -1000 -10\n')  # dropped by type
    out = tmp_path / 'k4'
    r = convert_kitti(kitti, out, seed=0)
    assert r.dropped == {'dontcare': 2, 'misc': 1, 'person_sitting': 1}
    assert r.empty == [f'{label}:2: car 50 10 50 20 in a 124x37 image',
                       f'{label}:4: truck 200 5 220 15 in a 124x37 image',
                       f'{label}:5: tram 30 20 10 30 in a 124x37 image']
    assert r.outside == [f'{label}:3: van -2 3 40 36 in a 124x37 image']
    assert r.boxes['car'] == 1 and r.boxes['van'] == 1 and r.boxes['truck'] == r.boxes['tram'] == 0
    assert [ln[0] for ln in _lines(out / 'labels' / '000004.txt')] == [5, 1]
    xml = (out / 'Annotations' / '000004.xml').read_text()              # the test ground truth drops them too
    assert xml.count('<object>') == 2 and '<name>van</name>' in xml and '<name>car</name>' not in xml
    assert (out / 'label_2_test' / '000004.txt').read_bytes() == label.read_bytes()    # the original, untouched
    assert 'empty boxes dropped (zero size or outside the image): 3' in r.summary()
    assert f'empty box dropped: {label}:2: car' in r.summary()
    report = scan_dataset(parse_data(r.data_file)['valid'], 6)
    assert [i.kind for i in report.issues] == ['box_clipped']


def test_a_missing_dataset_names_its_files_and_the_data_files_recipe(tmp_path):
    """Training on a .data whose lists were never made: one error with every missing file and the commands that
    the .data file's comments give; without such comments, a generic pointer to the converter."""
    from yolo_lrm.cfg import CfgError
    from yolo_lrm.data.prepare import prepare_data
    data = tmp_path / 'set.data'
    data.write_text('# my set\n# make it once:\n#   python -m yolo_lrm.data.convert voc SRC --out sets/x\n'
                    'classes=2\ntrain=sets/x/train.txt\nvalid=sets/x/val.txt\n')
    with pytest.raises(CfgError) as info:
        prepare_data(str(data))
    text = str(info.value)
    assert 'train=' in text and 'val.txt' in text and 'not found' in text
    assert text.endswith('the file says to make it with:\n    python -m yolo_lrm.data.convert voc SRC --out sets/x')
    from yolo_lrm.evaluation.evaluate import evaluate_model  # evaluation says the same about its valid= list
    from yolo_lrm.model import Darknet
    with pytest.raises(CfgError, match=r'valid=.*val\.txt not found; the file says to make it with:\n    python -m'):
        evaluate_model(Darknet(str(Path(__file__).resolve().parents[1] / 'cfg' / 'demo.cfg')), str(data))
    data.write_text('classes=2\ntrain=sets/x/train.txt\n')
    with pytest.raises(CfgError, match=r'train=.*train\.txt not found \(make the dataset first'):
        prepare_data(str(data))
    (tmp_path / 'sets' / 'x').mkdir(parents=True)
    (tmp_path / 'sets' / 'x' / 'train.txt').write_text('a.jpg\n')
    assert prepare_data(str(data)).classes == 2
