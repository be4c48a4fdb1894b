"""What a run shows: the confusion matrix (hand-counted cases), the training-batch mosaics (boxes from the targets),
and the files a training run writes with and without matplotlib and tensorboard."""
import csv
import importlib.util
import itertools
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import bench_module
from test_train import data_file, demo, one_thread, run_args, tiny_cfg, write  # noqa: F401 (fixtures)
from yolo_lrm.evaluation.confusion import confusion_matrix, greedy_match
from yolo_lrm.reports.draw import palette
from yolo_lrm.reports.mosaic import batch_mosaic, target_boxes, title_bar
from yolo_lrm.train.trainer import train
from yolo_lrm.evaluation.voc import Detections, GroundTruth, load_voc_annotations, read_image_set


# ------------------------------------------------------------------------------------------ confusion matrix
def truth(rows):
    """GroundTruth from (image, class, x1, y1, x2, y2, difficult) rows."""
    a = np.array(rows, dtype=np.float64)
    return GroundTruth(['im0', 'im1'], a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2:6],
                       a[:, 6].astype(bool))


def dets(rows, classes=2):
    """Per-class Detections from (image, class, score, x1, y1, x2, y2) rows."""
    a = np.array(rows, dtype=np.float64)
    return [Detections(a[a[:, 1] == c, 0].astype(np.int64), a[a[:, 1] == c, 2], a[a[:, 1] == c, 3:7])
            for c in range(classes)]


A, B = 0, 1


def test_confusion_matrix_hand_counted():
    gt = truth([(0, A, 1, 1, 10, 10, 0),      # g0: found as A (d0)
                (0, B, 21, 1, 30, 10, 0),     # g1: found as A only (d2): a confusion B -> A
                (0, A, 41, 1, 50, 10, 1),     # g2: difficult; d3 on it counts nowhere
                (0, B, 61, 1, 70, 10, 0),     # g3: own class d5 wins over d6 of higher IoU; d4 under the threshold
                (1, B, 1, 1, 10, 10, 0),      # g4: missed
                (1, -1, 200, 200, 210, 210, 0)])  # a class outside the list: ignored, d8 on it is background
    d = dets([(0, A, .9, 1, 1, 10, 10),        # d0 -> [A, A]
              (0, B, .8, 1, 1, 10, 11),        # d1: its object is taken -> [bg, B]
              (0, A, .7, 21, 1, 30, 10),       # d2 -> [B, A]
              (0, A, .6, 41, 1, 50, 10),       # d3: difficult, not counted
              (0, B, .1, 61, 1, 70, 10),       # d4: score .1 < .25, not counted
              (0, B, .5, 61, 1, 70, 11),       # d5 -> [B, B] (IoU .91, own class first)
              (0, A, .95, 61, 1, 70, 10),      # d6: IoU 1 but the object went to d5 -> [bg, A]
              (1, A, .4, 100, 100, 120, 120),  # d7: nothing there -> [bg, A]
              (1, B, .9, 200, 200, 210, 210)])  # d8 -> [bg, B]
    expected = [[1, 0, 0],
                [1, 1, 1],
                [2, 2, 0]]
    assert confusion_matrix(gt, d).tolist() == expected
    # a lower score threshold lets d4 in: a second B on g3, whose object is taken -> background
    assert confusion_matrix(gt, d, conf=0.05)[2, B] == 3


def test_confusion_matrix_iou_threshold_is_strict_unless_inclusive():
    gt = truth([(0, A, 1, 1, 10, 10, 0)])
    half = dets([(0, A, .9, 1, 1, 10, 20)])  # IoU = 100 / 200 exactly
    assert confusion_matrix(gt, half).tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert confusion_matrix(gt, half, inclusive=True).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def sequential_greedy(det, gt, iou):
    """The plain loop: pairs by IoU (ties: detection, object), each taken if both ends are free."""
    used_d, used_g, out = set(), set(), set()
    for k in sorted(range(len(det)), key=lambda k: (-iou[k], det[k], gt[k])):
        if det[k] not in used_d and gt[k] not in used_g:
            used_d.add(det[k])
            used_g.add(gt[k])
            out.add((det[k], gt[k]))
    return out


@pytest.mark.parametrize('seed', range(20))
def test_greedy_match_equals_the_sequential_loop(seed):
    rng = np.random.default_rng(seed)
    pairs = [p for p in itertools.product(range(8), range(6)) if rng.random() < 0.5]
    det = np.array([p[0] for p in pairs], np.int64)
    gt = np.array([p[1] for p in pairs], np.int64)
    iou = rng.choice([0.55, 0.6, 0.7, 0.8, 0.9], len(pairs))  # few values: ties are frequent
    md, mg = greedy_match(det, gt, iou)
    assert set(zip(md.tolist(), mg.tolist())) == sequential_greedy(det.tolist(), gt.tolist(), iou.tolist())


# --------------------------------------------------------------------------------------------------- mosaics
def test_target_boxes_are_the_targets_in_pixels():
    t = torch.tensor([[2, .5, .5, .5, .25], [-1, 0, 0, 0, 0]])
    assert target_boxes(t, 64).tolist() == [[16, 24, 48, 40, 1, 2]]


def test_batch_mosaic_draws_the_targets_boxes():
    names = [f'c{i}' for i in range(6)]
    images = torch.full((2, 3, 64, 64), 0.5)
    targets = torch.tensor([[[2, .5, .5, .5, .25]], [[-1, 0, 0, 0, 0]]])
    mosaic = batch_mosaic(images, targets, names, 'title', side=64)
    band = title_bar(np.zeros((1, mosaic.shape[1], 3), np.uint8), 'title').shape[0] - 1
    first = mosaic[band + 2:band + 66, 2:66]   # the tiles sit 2 px apart
    second = mosaic[band + 2:band + 66, 68:132]
    color = palette(6)[2].astype(int)

    def drawn(pixels):  # class 2's colour, give or take OpenCV's anti-aliasing
        return np.abs(pixels.astype(int) - color).max() <= 16

    assert drawn(first[40, 20:45])                       # the box's bottom edge, y2 = 40
    assert drawn(first[30, 16]) and drawn(first[30, 48])  # its sides, x1 = 16, x2 = 48
    assert not drawn(first[38, 20:45]) and first[30, 30].tolist() == [128, 128, 128]  # inside: the image
    assert (second == 128).all()                        # no targets, nothing drawn


# ------------------------------------------------------------------------------------------ a training run
def objects_per_class(demo, names):
    """The demo test list's non-difficult objects per class, from its XML."""
    ids = [p.rsplit('/', 1)[-1].split('.')[0] for p in read_image_set(demo / 'test.txt')]
    gt = load_voc_annotations(demo / 'Annotations', ids, names)
    keep = ~gt.difficult
    return np.bincount(gt.cls[keep], minlength=len(names)).tolist()


def short_run(tmp_path, demo, **kw):
    cfg = write(tmp_path, 'tiny.cfg', tiny_cfg(64, batch=4, subdivisions=2, max_batches=4))
    data = data_file(tmp_path, demo, train_images=16, valid=True)
    train(run_args(tmp_path, cfg, data, eval_interval=2, **kw))
    return tmp_path / 'runs' / 'exp'


def test_a_run_writes_its_pictures(tmp_path, demo, one_thread):
    run = short_run(tmp_path, demo)
    names = (demo / 'demo.names').read_text().split()
    batches = sorted(p.name for p in run.glob('train_batch*.jpg'))
    assert batches == ['train_batch0.jpg', 'train_batch1.jpg', 'train_batch2.jpg']  # the first three updates
    assert sorted(p.name for p in run.glob('val_update*.jpg')) == ['val_update2.jpg', 'val_update4.jpg']
    assert cv2.imread(str(run / 'train_batch0.jpg')).shape[1] == 2 + 2 * (64 + 2)  # a mini-batch of 2 tiles
    rows = list(csv.reader((run / 'confusion.csv').open()))
    counts = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    assert counts.shape == (7, 7) and counts[:6].sum(1).tolist() == objects_per_class(demo, names)
    if importlib.util.find_spec('matplotlib'):
        assert {p.name for p in run.glob('*.png')} == {'results.png', 'confusion.png', *(f'pr_{n}.png' for n in names)}
    if importlib.util.find_spec('tensorboard'):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        events = EventAccumulator(str(run), size_guidance={'scalars': 0, 'images': 0})
        events.Reload()
        assert [e.step for e in events.Scalars('train/loss')] == [1, 2, 3, 4]   # every update
        assert [e.step for e in events.Scalars('results/map50')] == [2, 4]     # every evaluation
        assert {'train/lrm_share', 'results/noobj_prob'} - set(events.Tags()['scalars']) == {'train/lrm_share'}
        assert [e.step for e in events.Images('valid/predictions')] == [2, 4]
        assert events.Images('valid/predictions')[0].encoded_image_string[:2] == b'\xff\xd8'  # JPEG


def test_a_run_without_matplotlib_or_tensorboard(tmp_path, demo, one_thread, monkeypatch):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)
    run = short_run(tmp_path, demo)
    log = (run / 'train.log').read_text()
    assert 'tensorboard is not installed' in log and 'PR curves and confusion.png skipped' in log
    assert not list(run.glob('*.png')) and not list(run.glob('events.out.tfevents*'))
    assert (run / 'confusion.csv').is_file() and (run / 'train_batch0.jpg').is_file()  # OpenCV's need no extra


def test_bench_tb_curves_merges_a_resumed_runs_files(tmp_path):
    """bench/tb_curves.py: block means over a run's per-update curve, the second (resumed) file taking over the
    updates it replays."""
    pytest.importorskip('tensorboard')
    import time

    from torch.utils.tensorboard import SummaryWriter
    block_means = bench_module('tb_curves').block_means
    for steps, value in ((range(1, 8), 1.0), (range(5, 11), 3.0)):  # stopped after 7, resumed from 4
        with SummaryWriter(str(tmp_path)) as board:
            for step in steps:
                board.add_scalar('train/noobj_prob', value, step)
        time.sleep(1.1)  # the next file is named (and dated) a second later
    rows = block_means(tmp_path, ['noobj_prob', 'absent'], block=4)
    assert [(r['from'], r['to'], r['mean']) for r in rows] == [(1, 4, 1.0), (5, 8, 3.0), (9, 12, 3.0)]
