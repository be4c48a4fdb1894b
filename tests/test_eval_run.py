"""Running a model over a list (Darknet's `detector valid`), the result-file writers, validation ground truth from
label files, `evaluate_model` end to end and the model form of the command line."""
import csv
import importlib.util
import json
import math
import sys

import cv2
import numpy as np
import pytest
import torch

from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.checkpoint import model_checkpoint, save_checkpoint
from yolo_lrm.data import read_image
from yolo_lrm.data import scan_dataset
from yolo_lrm.evaluation.evaluate import EvalResult, evaluate_model, predict_list, run_list, scan_ground_truth
from yolo_lrm.evaluation.resultfiles import image_id, kitti_lines, write_kitti_results, write_voc_results
from yolo_lrm.evaluate_cli import main as eval_main
from yolo_lrm.reports.plots import plot_pr
from yolo_lrm.head import detect
from yolo_lrm.evaluation.kitti import read_results
from yolo_lrm.letterbox import letterbox, unletterbox
from yolo_lrm.model import Darknet
from yolo_lrm.evaluation.voc import read_detections

TINY_CFG = '[net]\nwidth=64\nheight=64\nchannels=3\n' + \
    '[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n' + \
    '[maxpool]\nsize=2\nstride=2\n' * 5 + \
    '[convolutional]\nsize=1\nstride=1\npad=1\nfilters=16\nactivation=linear\n' + \
    '[region]\nanchors=1.5,1.5,2,2\nclasses=3\nnum=2\nsoftmax=1\n'
NAMES = ['Car', 'Pedestrian', 'Cyclist']


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Darknet(parse_cfg_text(TINY_CFG))


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'images'
    folder.mkdir()
    paths = []
    for k, (w, h) in enumerate([(200, 150), (120, 160), (160, 160)]):
        path = folder / f'im{k}.png'
        cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------------------------------ writers
DETS = np.array([[-3.2, 5.5, 50.25, 90.0, 0.5, 1], [10, 20, 30, 40, .25, 0]], np.float32)


def test_voc_result_lines_are_darknets(tmp_path):
    template = write_voc_results(tmp_path, ['some/dir/img.001.jpg'], [DETS], [(48, 80)], ['a', 'b', 'c'])
    assert template.endswith('comp4_det_test_{}.txt')
    # 1-based, clamped: xmin -2.2 -> 1, xmax 51.25 -> W = 48, ymax 91 -> H = 80; id cut at the first '.'
    assert (tmp_path / 'comp4_det_test_b.txt').read_text() == 'img 0.500000 1.000000 6.500000 48.000000 80.000000\n'
    assert (tmp_path / 'comp4_det_test_a.txt').read_text() == 'img 0.250000 11.000000 21.000000 31.000000 41.000000\n'
    assert (tmp_path / 'comp4_det_test_c.txt').read_text() == ''  # every class gets a file
    back = read_detections(tmp_path / 'comp4_det_test_b.txt', {'img': 0})
    assert back.boxes.tolist() == [[1, 6.5, 48, 80]] and back.score.tolist() == [0.5]
    with pytest.raises(ValueError, match='same id'):
        write_voc_results(tmp_path, ['a/x.jpg', 'b/x.png'], [DETS, DETS], [(48, 80)] * 2, ['a', 'b', 'c'])


def test_kitti_result_lines(tmp_path):
    lines = kitti_lines(DETS, 48, 80, ['car', 'pedestrian', 'cyclist']).splitlines()
    assert lines[0] == 'pedestrian -1 -1 -10 0.000000 5.500000 47.000000 79.000000 ' \
                       '-1 -1 -1 -1000 -1000 -1000 -10 0.500000'
    assert all(len(ln.split()) == 16 for ln in lines)
    write_kitti_results(tmp_path, ['x/000007.png', 'x/000008.png'], [DETS, DETS[:0]], [(48, 80)] * 2, NAMES)
    assert (tmp_path / '000008.txt').read_text() == ''
    back = read_results(tmp_path, ['000007', '000008'])
    assert back.type.tolist() == ['pedestrian', 'car'] and back.score.tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match='KITTI type'):
        write_kitti_results(tmp_path, ['x/1.png'], [DETS], [(48, 80)], ['a car', 'b', 'c'])


def test_image_id_is_darknets_basecfg():
    assert image_id('/data/VOC2007/JPEGImages/000005.jpg') == '000005' and image_id('a/b.c.d.png') == 'b'


# ------------------------------------------------------------------------------------------------ running a model
def test_predict_list_is_detector_valid(net, images):
    net.train()
    run = run_list(net, images, batch_size=2, progress=False)
    dets = run.dets
    assert net.training  # the trainer's mode is restored
    assert run.sizes == [(200, 150), (120, 160), (160, 160)] and run.paths == images and run.index == [0, 1, 2]
    assert run.skipped == []
    net.eval()
    for path, got in zip(images, dets):
        im = read_image(path)
        with torch.no_grad():
            out = net(torch.from_numpy(letterbox(im, 64, 64))[None])
        ref = detect(out, net.anchors, 0.005, 0.45, 'loss2', max_det=10 ** 6)[0]
        ref = torch.cat((unletterbox(ref[:, :4], im.shape[1], im.shape[0], 64, 64), ref[:, 4:]), 1).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
        assert len(got) > 0 and (got[:, 4] > 0.005).all() and (np.diff(got[:, 4]) <= 0).all()
    one = predict_list(net, images, batch_size=1, progress=False)
    for a, b in zip(one, dets):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match='multiple of the network stride'):
        predict_list(net, images, size=70, progress=False)


# -------------------------------------------------------------------------------------------- validation dataset
def write_dataset(tmp_path, images, boxes_per_image, annotations=False, kitti=False):
    """A .data over `images` whose only GT per image is the given 0-based box (class, x1, y1, x2, y2)."""
    (tmp_path / 'labels').mkdir(exist_ok=True)
    for path, (c, x1, y1, x2, y2) in zip(images, boxes_per_image):
        h, w = read_image(path).shape[:2]
        stem = image_id(path)
        (tmp_path / 'labels' / f'{stem}.txt').write_text(
            f'{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n')
        if annotations:
            (tmp_path / 'Annotations').mkdir(exist_ok=True)
            xb = [int(round(v)) + 1 for v in (x1, y1, x2, y2)]
            (tmp_path / 'Annotations' / f'{stem}.xml').write_text(
                f'<annotation><object><name>{NAMES[c]}</name><difficult>0</difficult><bndbox><xmin>{xb[0]}</xmin>'
                f'<ymin>{xb[1]}</ymin><xmax>{xb[2]}</xmax><ymax>{xb[3]}</ymax></bndbox></object></annotation>')
        if kitti:
            (tmp_path / 'label_2').mkdir(exist_ok=True)
            (tmp_path / 'label_2' / f'{stem}.txt').write_text(
                f'{NAMES[c]} 0.00 0 0 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} 1.5 1.6 3.9 1 1.7 20 0\n')
    (tmp_path / 'valid.txt').write_text(''.join(p + '\n' for p in images))
    (tmp_path / 'names').write_text('\n'.join(NAMES) + '\n')
    extra = ('annotations=Annotations\n' if annotations else '') + ('kitti_labels=label_2\n' if kitti else '')
    (tmp_path / 'x.data').write_text(f'classes=3\nvalid=valid.txt\nnames=names\n{extra}')
    return str(tmp_path / 'x.data')


def top_box(net, path):
    """The best detection of an image, clipped to its pixels: (class, x1, y1, x2, y2)."""
    d = predict_list(net, [path], progress=False)[0][0]
    h, w = read_image(path).shape[:2]
    return int(d[5]), max(d[0], 0.), max(d[1], 0.), min(d[2], w - 1.), min(d[3], h - 1.)


def test_scan_ground_truth_inverts_voc_label(tmp_path, images):
    # voc_label.py on the XML box (21, 11, 60, 50) of a 200x150 image: x = (21+60)/2 - 1, w = 39, /W ...
    (tmp_path / 'labels').mkdir()
    (tmp_path / 'labels' / 'im0.txt').write_text(f'2 {39.5 / 200} {29.5 / 150} {39 / 200} {39 / 150}\n')
    (tmp_path / 'valid.txt').write_text(images[0] + '\n')
    gt = scan_ground_truth(scan_dataset(str(tmp_path / 'valid.txt'), 3, use_cache=False), [0], [(200, 150)])
    assert gt.ids == ['im0'] and gt.cls.tolist() == [2] and gt.boxes.tolist() == [[21, 11, 60, 50]]
    assert not gt.difficult.any()


@pytest.mark.parametrize('annotations', [False, True])
def test_evaluate_model_scores_its_own_best_box_as_perfect(tmp_path, net, images, annotations):
    # the GT of the single image is the model's own best detection: rank 1 of its class is a TP -> AP 1
    box = top_box(net, images[0])
    data = write_dataset(tmp_path, images[:1], [box], annotations=annotations)
    res = evaluate_model(net, data, 'kitti-voc', progress=False, out=str(tmp_path / 'res'))
    name = NAMES[box[0]]
    assert res.per_class[name] == pytest.approx(1.0) and res.also[0].per_class[name] == pytest.approx(1.0)
    assert all(math.isnan(v) for n, v in res.per_class.items() if n != name)  # no GT: left out of the mean
    assert res.map == pytest.approx(1.0) and [r.label for r in res.rows()] == ['voc07@0.5', 'area@0.5']
    assert (tmp_path / 'res' / f'comp4_det_test_{name}.txt').read_text().startswith('im0 ')


def test_evaluate_model_kitti_protocol(tmp_path, net, images):
    box = top_box(net, images[0])
    assert box[4] - box[2] > 40  # tall enough for every level
    data = write_dataset(tmp_path, images[:1], [box], kitti=True)
    res = evaluate_model(net, data, 'kitti', progress=False, out=str(tmp_path / 'res'))
    assert [p.name for p in (tmp_path / 'res' / 'data').iterdir()] == ['im0.txt']
    assert res.metric == 'kitti-r40-moderate' and res.iou == {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}
    assert res.scored.truth.cls.tolist() == [box[0]]  # the list's label files: the confusion matrix's ground truth
    # the only GT is the frame's best box: one threshold, precision [1, 0, ...] -> R11 1/11, R40 0
    rows = {r.metric: r for r in res.rows()}
    for level in ('easy', 'moderate', 'hard'):
        assert rows[f'kitti-r11-{level}'].per_class[NAMES[box[0]]] == pytest.approx(1 / 11)
        assert rows[f'kitti-r40-{level}'].per_class[NAMES[box[0]]] == 0


def test_cli_model_form(tmp_path, net, images, capsys):
    data = write_dataset(tmp_path, images, [top_box(net, p) for p in images])
    weights = tmp_path / 'm.pt'
    save_checkpoint(model_checkpoint(net, NAMES), weights)
    out = tmp_path / 'out'
    eval_main(['-', data, str(weights), '--out', str(out), '--device', 'cpu', '--workers', '0', '--batch', '2',
               '--metric', 'area', '--iou', '0.5', '0.75'])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ['mAP', *NAMES] and [t.split()[0] for t in table[1:]] == ['area@0.5', 'area@0.75']
    doc = json.loads((out / 'eval.json').read_text())
    assert doc['metric'] == 'area' and doc['also'][0]['iou'] == 0.75
    assert (out / 'eval.csv').read_text().splitlines()[0] == 'row,mAP,Car,Pedestrian,Cyclist'
    assert {p.name for p in out.glob('comp4_det_test_*.txt')} == {f'comp4_det_test_{n}.txt' for n in NAMES}
    # the confusion matrix beside them: one ground-truth object per image, found or missed
    rows = list(csv.reader((out / 'confusion.csv').open()))
    assert rows[0] == ['true \\ predicted', *NAMES, 'background'] and [r[0] for r in rows[1:]] == [*NAMES, 'background']
    assert sum(int(v) for r in rows[1:-1] for v in r[1:]) == len(images)
    if importlib.util.find_spec('matplotlib'):
        assert {p.name for p in out.glob('*.png')} == {'confusion.png', *(f'pr_{n}.png' for n in NAMES)}
    with pytest.raises(SystemExit, match='kitti_labels'):
        eval_main(['-', data, str(weights), '--metric', 'kitti', '--device', 'cpu', '--workers', '0'])


def test_pr_plot(tmp_path, monkeypatch):
    res = EvalResult('voc07', 0.5, {'a': 0.5}, {'a': (np.array([.5, 1.]), np.array([1., .5]))})
    pytest.importorskip('matplotlib')
    assert [p.endswith('pr_a.png') for p in plot_pr(res, tmp_path)] == [True]
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    with pytest.raises(RuntimeError, match='PR plots need matplotlib'):
        plot_pr(res, tmp_path)


# ---------------------------------------------------------------------------------------- unreadable images
def add_broken_image(tmp_path, cls, annotations=False, kitti=False):
    """A .jpg of garbage bytes whose label, XML and KITTI label each hold one object of class `cls`: scored, that
    object would be a miss (and give class `cls` ground truth)."""
    broken = tmp_path / 'images' / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 this is not a jpeg' * 4)
    (tmp_path / 'labels' / 'broken.txt').write_text(f'{cls} 0.5 0.5 0.4 0.4\n')
    if annotations:
        (tmp_path / 'Annotations' / 'broken.xml').write_text(
            f'<annotation><object><name>{NAMES[cls]}</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>60</xmax>'
            '<ymax>60</ymax></bndbox></object></annotation>')
    if kitti:
        (tmp_path / 'label_2' / 'broken.txt').write_text(
            f'{NAMES[cls]} 0.00 0 0 10.00 10.00 60.00 60.00 1.5 1.6 3.9 1 1.7 20 0\n')
    return str(broken)


def dataset_with_broken_image(tmp_path, net, images, gt):
    """(.data whose valid list has a corrupt image between good ones, the same .data without it, its path, the class
    only the corrupt image has)."""
    boxes = [top_box(net, p) for p in images]
    absent = next(c for c in range(len(NAMES)) if c not in {b[0] for b in boxes})
    clean = write_dataset(tmp_path, images, boxes, annotations=gt == 'annotations', kitti=gt == 'kitti')
    broken = add_broken_image(tmp_path, absent, annotations=gt == 'annotations', kitti=gt == 'kitti')
    (tmp_path / 'with_broken.txt').write_text('\n'.join([images[0], broken, *images[1:]]) + '\n')
    text = (tmp_path / 'x.data').read_text()
    (tmp_path / 'broken.data').write_text(text.replace('valid=valid.txt', 'valid=with_broken.txt'))
    return str(tmp_path / 'broken.data'), clean, broken, NAMES[absent]


@pytest.mark.parametrize('gt, workers', [('labels', 0), ('labels', 2), ('annotations', 0), ('kitti', 0)])
def test_unreadable_image_is_skipped_reported_and_not_scored(tmp_path, net, images, gt, workers):
    data, clean, broken, absent = dataset_with_broken_image(tmp_path, net, images, gt)
    metric = 'kitti' if gt == 'kitti' else ['voc07', 'area']
    res = evaluate_model(net, data, metric, workers=workers, progress=False, out=str(tmp_path / 'res'))
    want = evaluate_model(net, clean, metric, progress=False, out=str(tmp_path / 'want'))
    assert res.skipped == [f'{broken}: not a readable image (bad or truncated header)']  # the scan's skip
    assert want.skipped == [] and 'skipped' not in want.to_json()
    assert res.to_json()['skipped'] == res.skipped
    for got, ref in zip(res.rows(), want.rows()):  # the corrupt image's object is not a miss
        assert got.label == ref.label and got.map == pytest.approx(ref.map, nan_ok=True)
        assert got.per_class == pytest.approx(ref.per_class, nan_ok=True)
    if gt != 'kitti':  # its class has no ground truth left: left out of the mean
        assert math.isnan(res.per_class[absent])
        assert not any('broken' in p.read_text() for p in (tmp_path / 'res').glob('comp4_det_test_*.txt'))
    else:
        assert not (tmp_path / 'res' / 'data' / 'broken.txt').exists()


def test_predict_list_keeps_one_array_per_image(net, images, tmp_path, caplog):
    broken = tmp_path / 'bad.jpg'
    broken.write_bytes(b'garbage')
    dets = predict_list(net, [images[0], str(broken), images[1]], progress=False, workers=2, batch_size=2)
    assert [d.shape[1] for d in dets] == [6, 6, 6] and len(dets[0]) and len(dets[2]) and dets[1].shape == (0, 6)
    assert f'{broken}: cannot decode image' in caplog.text
    run = run_list(net, [images[0], str(broken), images[1]], progress=False)
    assert run.paths == [images[0], images[1]] and run.index == [0, 2] and len(run.dets) == len(run.sizes) == 2
    assert run.skipped == [f'{broken}: cannot decode image (7 bytes)']


def test_every_image_unreadable_is_an_error_naming_the_list(tmp_path, net, images):
    data, _, broken, _ = dataset_with_broken_image(tmp_path, net, images[:1], 'labels')
    (tmp_path / 'with_broken.txt').write_text(broken + '\n')
    with pytest.raises(ValueError, match=r'with_broken\.txt: none of the 1 images could be read'):
        evaluate_model(net, data, progress=False, out=str(tmp_path / 'res'))


def test_cli_warns_about_unreadable_images_and_succeeds(tmp_path, net, images, capsys):
    data, _, broken, _ = dataset_with_broken_image(tmp_path, net, images, 'labels')
    weights = tmp_path / 'm.pt'
    save_checkpoint(model_checkpoint(net, NAMES), weights)
    eval_main(['-', data, str(weights), '--out', str(tmp_path / 'out'), '--device', 'cpu', '--workers', '2'])
    out, err = capsys.readouterr()
    assert f'warning: skipped unreadable image {broken}: not a readable image' in err
    assert 'warning: 1 of 4 images in' in err and 'with_broken.txt could not be read' in err
    assert out.splitlines()[1].split()[0] == 'voc07@0.5'
    assert json.loads((tmp_path / 'out' / 'eval.json').read_text())['skipped'][0].startswith(broken)


# --------------------------------------------------------------------------------------- metrics and messages
def test_cli_model_form_takes_several_voc_metrics(tmp_path, net, images, capsys):
    data = write_dataset(tmp_path, images, [top_box(net, p) for p in images])
    weights = tmp_path / 'm.pt'
    save_checkpoint(model_checkpoint(net, NAMES), weights)
    eval_main(['-', data, str(weights), '--out', str(tmp_path / 'out'), '--device', 'cpu', '--workers', '0',
               '--metric', 'voc07', 'area', '--iou', '0.5', '0.7'])
    table = capsys.readouterr().out.splitlines()
    assert [t.split()[0] for t in table[1:]] == ['voc07@0.5', 'area@0.5', 'voc07@0.7', 'area@0.7']
    for alone in (['kitti', 'voc07'], ['area', 'kitti-voc']):
        with pytest.raises(SystemExit) as exc:
            eval_main(['-', data, str(weights), '--metric', *alone])
        assert exc.value.code == 2
        assert 'kitti and kitti-voc cannot be combined with other metrics' in capsys.readouterr().err
    res = evaluate_model(net, data, ('area', 'voc07'), iou=[0.5], progress=False)
    assert [r.label for r in res.rows()] == ['area@0.5', 'voc07@0.5']
    with pytest.raises(ValueError, match='kitti-voc cannot be combined'):
        evaluate_model(net, data, ['voc07', 'kitti-voc'], progress=False)


def test_cli_model_form_darknet_weights_without_cfg_names_the_cfg_argument(tmp_path, net, images):
    data = write_dataset(tmp_path, images[:1], [top_box(net, images[0])])
    (tmp_path / 'm.weights').write_bytes(b'\0' * 64)
    with pytest.raises(SystemExit) as exc:
        eval_main(['-', data, str(tmp_path / 'm.weights'), '--device', 'cpu'])
    message = str(exc.value)
    assert 'm.weights' in message and 'first argument' in message and '--cfg' not in message


# ------------------------------------------------------------------------------ scoring what the scan kept (#29)
def perfect_run(monkeypatch, boxes_by_image):
    """Replace the network pass by a perfect detector: per image path, (class, x1, y1, x2, y2) 0-based boxes."""
    import yolo_lrm.evaluation.evaluate as ev

    def run(net, paths, size=None, **kw):
        dets = [np.array([[x1, y1, x2, y2, 0.9, c] for c, x1, y1, x2, y2 in boxes_by_image[p]], np.float32)
                .reshape(-1, 6) for p in paths]
        sizes = [read_image(p).shape[1::-1] for p in paths]
        return ev.ListRun(list(paths), list(range(len(paths))), dets, [tuple(s) for s in sizes], [])

    monkeypatch.setattr(ev, 'run_list', run)


def test_a_perfect_detector_on_the_scans_boxes_scores_one(tmp_path, net, images, monkeypatch):
    """R4: zero-size and wholly outside boxes are dropped by the scan, a box over the edge is clipped: a detector
    that finds exactly the boxes training sees scores 1.0 (0.85 when the evaluation re-read the raw labels)."""
    (tmp_path / 'labels').mkdir()
    (tmp_path / 'labels' / 'im0.txt').write_text('0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.3\n2 1.5 0.5 0.2 0.2\n')
    (tmp_path / 'labels' / 'im1.txt').write_text('1 0.9 0.5 0.4 0.2\n0 0.3 0.3 0.2 0.2\n')  # 1: clipped at x = 1
    (tmp_path / 'valid.txt').write_text(''.join(p + '\n' for p in images[:2]))
    (tmp_path / 'names').write_text('\n'.join(NAMES) + '\n')
    data = write_text(tmp_path / 'x.data', 'classes=3\nvalid=valid.txt\nnames=names\n')
    # 0-based pixel boxes of what the scan kept: im0 200x150, im1 120x160
    perfect_run(monkeypatch, {images[0]: [(0, 80, 60, 120, 90)],
                              images[1]: [(1, 84, 64, 119, 96), (0, 24, 32, 48, 64)]})
    res = evaluate_model(net, data, ['voc07', 'area'], progress=False)
    assert res.map == pytest.approx(1.0) and res.also[0].map == pytest.approx(1.0)
    assert math.isnan(res.per_class['Cyclist'])  # its only box lay outside the image: no ground truth


def test_spaces_and_non_ascii_ids_round_trip_the_result_files(tmp_path, net, images):
    """R1: an image id with spaces and non-ASCII letters scores (it died at the first evaluation), and its result
    lines keep six fields, the id percent-encoded only where it has whitespace."""
    import shutil
    from yolo_lrm.evaluation.evaluate import score_voc_files
    odd = str(tmp_path / 'images' / 'ünï cødé 画像 1.png')
    shutil.copy(images[0], odd)
    data = write_dataset(tmp_path, [odd, images[1]], [top_box(net, odd), top_box(net, images[1])],
                         annotations=True)
    res = evaluate_model(net, data, 'voc07', progress=False, out=str(tmp_path / 'res'))
    lines = [ln for p in (tmp_path / 'res').glob('comp4_det_test_*.txt') for ln in p.read_text().splitlines()]
    assert all(len(ln.split()) == 6 for ln in lines) and any(ln.startswith('ünï%20cødé%20画像%201 ') for ln in lines)
    assert any(ln.startswith('im1 ') for ln in lines)  # ordinary ids as Darknet writes them
    ids = ['ünï cødé 画像 1', 'im1']
    again = score_voc_files(str(tmp_path / 'Annotations'), ids, NAMES, str(tmp_path / 'res' / 'comp4_det_test_{}.txt'))
    assert again.per_class == pytest.approx(res.per_class, nan_ok=True)  # the files give the same numbers


def test_what_the_scan_skips_in_valid_is_skipped_by_the_evaluation(tmp_path, net, images):
    """R2: a missing label file, a 6-column line and a class written 2.0 are skipped as the scan says (the
    evaluation re-read them strictly and stopped the run at its first evaluation)."""
    data = write_dataset(tmp_path, images, [top_box(net, p) for p in images])
    (tmp_path / 'labels' / 'im1.txt').unlink()
    (tmp_path / 'labels' / 'im2.txt').write_text((tmp_path / 'labels' / 'im2.txt').read_text()
                                                 + '0 0.5 0.5 0.1 0.1 0.9\n2.0 0.5 0.5 0.1 0.1\n')
    res = evaluate_model(net, data, 'voc07', progress=False, out=str(tmp_path / 'res'))
    assert res.skipped == [f'{tmp_path / "labels" / "im1.txt"}: no label file']
    assert res.scored.truth.ids == ['im0', 'im2'] and len(res.scored.truth.cls) == 2
    assert not any(ln.startswith('im1 ') for p in (tmp_path / 'res').glob('comp4_*') for ln in p.read_text().split('\n'))


def write_text(path, text):
    path.write_text(text)
    return str(path)
