"""k-means anchors (1 - IoU) and the label readers."""
import numpy as np
import pytest

from yolo_lrm.data.anchors import (LabelError, calc_anchors, iou_wh, letterboxed, main as anchors_main, mean_iou,
                              read_darknet_labels, read_kitti)


def test_iou_of_corner_aligned_boxes_by_hand():
    boxes = np.array([[2.0, 1.0], [1.0, 1.0]])
    anchors = np.array([[1.0, 2.0], [2.0, 1.0]])
    # (2x1 vs 1x2): overlap 1x1 = 1, union 2 + 2 - 1 = 3; identical boxes: 1; (1x1 inside 1x2): 1/2
    np.testing.assert_allclose(iou_wh(boxes, anchors), [[1 / 3, 1.0], [0.5, 0.5]])
    assert mean_iou(boxes, anchors) == pytest.approx((1.0 + 0.5) / 2)


def test_kmeans_recovers_known_shapes():
    rng = np.random.default_rng(1)
    shapes = np.array([[0.05, 0.1], [0.2, 0.15], [0.1, 0.4], [0.5, 0.3], [0.8, 0.8]])
    boxes = np.concatenate([s * rng.uniform(0.95, 1.05, size=(300, 2)) for s in shapes])
    anchors, iou = calc_anchors(boxes, 5, size=416, seed=3)
    np.testing.assert_allclose(anchors, shapes * 13, rtol=0.02)   # sorted by area, in 13x13 grid cells
    assert iou > 0.93
    again, iou_again = calc_anchors(boxes, 5, size=416, seed=3)
    assert np.array_equal(anchors, again) and iou == iou_again      # deterministic for a seed
    small, _ = calc_anchors(boxes, 5, size=320, seed=3)
    np.testing.assert_allclose(small, anchors * 10 / 13)             # grid units follow the input size


def test_mean_iou_reported_is_that_of_the_anchors():
    boxes = np.random.default_rng(0).uniform(0.02, 0.6, size=(500, 2))
    anchors, iou = calc_anchors(boxes, 3, size=416)
    assert iou == pytest.approx(mean_iou(boxes, anchors / 13))
    assert calc_anchors(boxes, 6, size=416)[1] > iou                 # more anchors fit better


def test_bad_boxes_are_rejected():
    with pytest.raises(ValueError, match='1 boxes have a non-positive'):
        calc_anchors(np.array([[0.1, 0.2], [0.0, 0.3], [0.2, 0.2]]), 2)
    with pytest.raises(ValueError, match='2 boxes cannot make 5 anchors'):
        calc_anchors(np.array([[0.1, 0.2], [0.2, 0.3]]), 5)


def test_letterboxed_shapes():
    # a 1242x375 frame into 416x416 keeps widths and shrinks heights by 375/1242
    np.testing.assert_allclose(letterboxed(np.array([[0.5, 0.5]]), 1242, 375), [[0.5, 0.5 * 375 / 1242]])
    np.testing.assert_allclose(letterboxed(np.array([[0.5, 0.5]]), 300, 600), [[0.25, 0.5]])


KITTI_LINES = """Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57
Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01
DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10
Misc 0.00 1 -1.5 100.0 150.0 140.0 190.0 1.0 1.0 1.0 1.0 1.0 20.0 -1.5
Person_sitting 0.00 0 0.1 500.0 160.0 530.0 220.0 1.2 0.5 0.8 1.0 1.5 9.0 0.2
Cyclist 0.00 3 -1.65 676.60 163.95 688.98 193.93 1.86 0.60 2.02 4.59 1.32 45.84 -1.55
Tram 0.00 0 0.0 0.0 120.0 621.0 270.0 3.5 2.6 15.0 -5.0 1.5 30.0 0.0
"""


def test_kitti_reader(tmp_path):
    (tmp_path / '000000.txt').write_text(KITTI_LINES)
    (tmp_path / '000001.txt').write_text('Van 0.00 0 0.0 10.0 20.0 134.2 95.0 1 1 1 1 1 1 0\n')
    classes, wh, empty = read_kitti(tmp_path)
    assert classes.tolist() == [0, 4, 5, 3, 1] and empty == []   # car, pedestrian, cyclist, tram, van (files sorted)
    np.testing.assert_allclose(wh[0], [(423.81 - 387.63) / 1242, (203.12 - 181.54) / 375])
    np.testing.assert_allclose(wh[3], [0.5, 0.4])
    np.testing.assert_allclose(wh[4], [124.2 / 1242, 0.2])


@pytest.mark.parametrize('line, message', [
    ('Bus 0 0 0 1 2 3 4 1 1 1 1 1 1 0', "unknown KITTI type 'Bus'"),
    ('Car 0 0 0 1 2 3', 'has 15 fields'),
    ('Car 0 0 0 1 2 x 4 1 1 1 1 1 1 0', 'must be numbers'),
])
def test_kitti_reader_errors_name_file_and_line(tmp_path, line, message):
    (tmp_path / '000007.txt').write_text(KITTI_LINES + line + '\n')
    with pytest.raises(ValueError, match=rf'000007.txt:8: .*{message}'):
        read_kitti(tmp_path)


def test_kitti_empty_boxes_are_dropped_and_reported(tmp_path, capsys):
    """As the KITTI converter does: a zero-width box is dropped, not an error, and the CLI lists it."""
    (tmp_path / '000007.txt').write_text('Car 0 0 0 5 2 5 40 1 1 1 1 1 1 0\nVan 0 0 0 10 20 134.2 95 1 1 1 1 1 1 0\n')
    classes, wh, empty = read_kitti(tmp_path)
    assert classes.tolist() == [1] and empty == [f'{tmp_path / "000007.txt"}:1: car 5 2 5 40']
    np.testing.assert_allclose(wh, [[124.2 / 1242, 0.2]])
    anchors_main(['--kitti', str(tmp_path), '-k', '1'])
    out = capsys.readouterr().out
    assert '1 boxes (van: 1); 1 empty boxes dropped' in out and f'empty box dropped: {empty[0]}' in out


def test_darknet_label_folder_and_list(tmp_path):
    labels = tmp_path / 'VOC' / 'labels'
    labels.mkdir(parents=True)
    (labels / 'a.txt').write_text('0 0.5 0.5 0.2 0.4\n3 0.1 0.1 0.05 0.1\n')
    (labels / 'b.txt').write_text('1 0.5 0.5 1.0 0.5\n')
    classes, wh = read_darknet_labels(labels)
    assert classes.tolist() == [0, 3, 1]
    np.testing.assert_allclose(wh, [[0.2, 0.4], [0.05, 0.1], [1.0, 0.5]], rtol=1e-6)
    # a train list of image paths: labels found by Darknet's rule (JPEGImages -> labels, .jpg -> .txt)
    (tmp_path / 'train.txt').write_text(f'{tmp_path}/VOC/JPEGImages/b.jpg\n{tmp_path}/VOC/JPEGImages/a.jpg\n')
    classes, _ = read_darknet_labels(tmp_path / 'train.txt')
    assert classes.tolist() == [1, 0, 3]
    (labels / 'b.txt').write_text('1 0.5 0.5 0 0.5\n')
    with pytest.raises(LabelError, match=r'b.txt:1: w, h must be in \(0, 1\]'):
        read_darknet_labels(labels)
    (tmp_path / 'missing.txt').write_text(f'{tmp_path}/VOC/JPEGImages/c.jpg\n')
    with pytest.raises(LabelError, match=r'labels/c.txt: cannot read label file .*listed in .*missing.txt'):
        read_darknet_labels(tmp_path / 'missing.txt')


def test_cli(tmp_path, capsys):
    (tmp_path / '000000.txt').write_text(KITTI_LINES * 3)
    anchors_main(['--kitti', str(tmp_path), '-k', '2', '--size', '416', '--letterbox'])
    out = capsys.readouterr().out
    assert '12 boxes (car: 3, tram: 3, pedestrian: 3, cyclist: 3)' in out
    assert 'anchors at 416 (13x13 cells), mean IoU' in out and out.strip().splitlines()[-1].startswith('anchors=')
    with pytest.raises(SystemExit):
        anchors_main(['--labels', str(tmp_path), '--letterbox'])
    assert '--letterbox needs --image-size' in capsys.readouterr().err


def test_list_entries_resolved_from_the_list_folder(tmp_path, monkeypatch, capsys):
    """Relative list entries are taken from the list file's folder (as the training dataset does), not the cwd."""
    ds = tmp_path / 'set'
    (ds / 'VOC' / 'labels').mkdir(parents=True)
    (ds / 'VOC' / 'labels' / 'a.txt').write_text('0 0.5 0.5 0.2 0.4\n1 0.3 0.3 0.1 0.1\n')
    (ds / 'VOC' / 'labels' / 'b.txt').write_text('1 0.5 0.5 0.6 0.3\n0 0.5 0.5 0.05 0.3\n')
    (ds / 'VOC' / 'labels' / 'c.txt').write_text('2 0.5 0.5 0.7 0.8\n')
    (ds / 'train.txt').write_text('VOC/JPEGImages/a.jpg\n./VOC/JPEGImages/b.jpg\nVOC/labels/c.txt\n')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(ds)
    classes, wh = read_darknet_labels('train.txt')
    anchors_main(['--labels', 'train.txt', '-k', '2'])
    here = capsys.readouterr().out
    assert classes.tolist() == [0, 1, 1, 0, 2] and '5 boxes (0: 2, 1: 2, 2: 1)' in here
    monkeypatch.chdir(elsewhere)
    for source in (ds / 'train.txt', '../set/train.txt'):
        again_classes, again_wh = read_darknet_labels(source)
        assert again_classes.tolist() == classes.tolist() and np.array_equal(again_wh, wh)
        anchors_main(['--labels', str(source), '-k', '2'])
        assert capsys.readouterr().out == here                        # the same anchors from any cwd
    # Darknet's label rule applies to the entry as written (as scan_dataset does), not to the list's own folder
    # path: here 'raw_images' must not become 'raw_labels' or 'labels_images'
    odd = tmp_path / 'raw_images'
    (odd / 'labels').mkdir(parents=True)
    (odd / 'labels' / 'x.txt').write_text('3 0.5 0.5 0.25 0.5\n')
    (odd / 'list.txt').write_text('images/x.jpg\n')
    classes, wh = read_darknet_labels(odd / 'list.txt')
    assert classes.tolist() == [3] and wh.tolist() == [[0.25, 0.5]]
    with pytest.raises(LabelError, match=r'nothere.txt: cannot read the image list'):
        read_darknet_labels(tmp_path / 'nothere.txt')


def test_data_split_letterboxes_each_image_by_its_own_size(tmp_path, capsys):
    """--data: the split as the trainer scans it (a box outside the image is clipped, a zero-size one dropped), and
    --letterbox with each image's own size: a portrait and a landscape image in one set."""
    import cv2
    images = tmp_path / 'images'
    images.mkdir()
    (tmp_path / 'labels').mkdir()
    for name, (h, w), rows in (('tall', (200, 100), '0 0.5 0.5 0.4 0.2\n1 0.5 0.5 0.0 0.1\n'),
                               ('wide', (100, 300), '1 0.5 0.5 0.3 0.6\n0 0.95 0.5 0.2 0.2\n')):
        cv2.imwrite(str(images / f'{name}.png'), np.zeros((h, w, 3), np.uint8))
        (tmp_path / 'labels' / f'{name}.txt').write_text(rows)
    (tmp_path / 'train.txt').write_text('images/tall.png\nimages/wide.png\n')
    (tmp_path / 'd.names').write_text('a\nb\n')
    (tmp_path / 'd.data').write_text('classes=2\ntrain=train.txt\nnames=d.names\n')
    anchors_main(['--data', str(tmp_path / 'd.data'), '-k', '3', '--size', '64', '--letterbox'])
    out = capsys.readouterr().out
    assert out.startswith('3 boxes (a: 2, b: 1)')   # the zero-width box is dropped, the one past the edge clipped
    # by hand: tall 100x200 into 64x64 keeps 32x64 of it (w x .5); wide 300x100 keeps 64x21.33 (h x 1/3)
    wh = np.array([[0.4 * 0.5, 0.2], [0.3, 0.6 / 3], [0.15, 0.2 / 3]])   # 0.95 +- 0.1 clipped at 1: w 0.15
    expected, _ = calc_anchors(wh, 3, 64)
    assert out.splitlines()[-1] == 'anchors=' + ', '.join(f'{w:.4g},{h:.4g}' for w, h in expected)
