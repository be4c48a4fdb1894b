"""The label audit (yolo_lrm.labelcheck): a generated scene with known label errors under a detector whose output is
written by hand, so that each kind of error must be found and ranked above a weaker case of the same kind; the
per-box loss terms; the command's files and its errors; the training track; held-out folds."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_lrm.box import iou_cxcywh
from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.checkpoint import model_checkpoint, save_checkpoint
from yolo_lrm.data import scan_dataset
from yolo_lrm.labelcheck.audit import audit_images, load_split
from yolo_lrm.labelcheck.cli import main
from yolo_lrm.labelcheck.folds import assign_folds
from yolo_lrm.labelcheck.issues import find_issues, rank
from yolo_lrm.model import Darknet
from yolo_lrm.train import track as tr

from conftest import bench_module

SIZE = 192        # the images are the network's size: the letterbox changes nothing
CFG = (f'[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=3\nbatch=4\nsubdivisions=1\nmax_batches=2\nlearning_rate=0.001\n'
       'policy=constant\n[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n'
       + '[maxpool]\nsize=2\nstride=2\n' * 5 +
       '[convolutional]\nsize=1\nstride=1\npad=1\nfilters=16\nactivation=linear\n'
       '[region]\nanchors=1.5,1.5,3,3\nclasses=3\nnum=2\nsoftmax=1\nobject_scale=5\nbias_match=1\n')
NAMES = ['ant', 'bee', 'cat']
SURE = (0.95, [1.0, 0.0, 0.0])   # objectness, class probabilities (rotated to the object's class)

# Per image: the objects the model sees (class, objectness, class probabilities, box) and the labels on disk.
# Image 0 holds the clear cases, image 1 weaker ones of each kind: each kind's clear case must rank first.
BOX = {'nw': (0.25, 0.25, 0.2, 0.2), 'ne': (0.75, 0.25, 0.2, 0.2), 'sw': (0.25, 0.75, 0.2, 0.2),
       'se': (0.75, 0.75, 0.2, 0.2), 'mid': (0.5, 0.5, 0.15, 0.15)}


def _shifted(box, iou=0.4):
    """The box moved right until its IoU with itself is `iou`."""
    cx, cy, w, h = box
    return cx + w * (1 - iou) / (1 + iou), cy, w, h


SCENE = [
    {'model': [(0, 0.95, None, 'nw'), (1, 0.95, None, 'ne'), (2, 0.95, None, 'sw'), (1, 0.95, None, 'se')],
     'labels': [(0, BOX['nw']),                       # right
                (0, BOX['sw']),                       # wrong class: the model is sure it is a cat
                (1, _shifted(BOX['se'])),             # bad box, IoU .4
                (2, BOX['mid'])]},                    # spurious: nothing there
    # the bee in the north-east is unlabelled (missing, score .95)
    {'model': [(0, 0.95, None, 'nw'), (0, 0.5, None, 'ne'), (1, 0.99, [0, 0.6, 0.4], 'sw'), (1, 0.5, None, 'se'),
               (2, 0.15, None, 'mid')],
     'labels': [(0, BOX['nw']),                       # right
                (2, BOX['sw']),                       # wrong class, but the model hesitates (.59 bee / .40 cat)
                (1, _shifted(BOX['se'])),             # bad box, the model less sure (.5)
                (2, BOX['mid'])]},                    # spurious, some support (.15)
    # the ant in the north-east is unlabelled, found at .5 only
]


def _raw_output(net: Darknet, objects) -> torch.Tensor:
    """The F (1, A*(5+C), g, g) of a model that sees exactly `objects` (background objectness ~0)."""
    a, c, g = net.num_anchors, net.num_classes, SIZE // 32
    raw = torch.zeros(a, 5 + c, g, g)
    raw[:, 4] = -12.0
    anchors = net.anchors
    for cls, obj, probs, key in objects:
        cx, cy, w, h = BOX[key]
        col, row = int(cx * g), int(cy * g)
        shapes = torch.cat((torch.zeros(a, 2), anchors / g), 1)
        k = int(iou_cxcywh(shapes, torch.tensor([0, 0, w, h])).argmax())
        p = torch.tensor(probs if probs is not None else np.roll(SURE[1], cls), dtype=torch.float32)
        raw[k, :, row, col] = torch.cat((torch.logit(torch.tensor([cx * g - col, cy * g - row])),
                                         torch.log(torch.tensor([w, h]) * g / anchors[k]),
                                         torch.logit(torch.tensor([obj])), torch.log(p.clamp(min=1e-9))))
    return raw.view(1, -1, g, g)


class ScriptedNet(Darknet):
    """The tiny network's shape and attributes, with outputs written by hand: image i is told by its gray level."""

    def __init__(self, outputs: list[torch.Tensor]):
        super().__init__(parse_cfg_text(CFG, 'scene.cfg'))
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        which = (x[:, 0, 0, 0] * 255 / 40).round().long() - 1
        return torch.cat([self.outputs[i] for i in which.tolist()])


def write_dataset(folder: Path, scene=SCENE) -> Path:
    """Images (a flat gray level 40·(i+1) each, for ScriptedNet; wrapped past 255), label files, list, names and
    .data; returns the .data path."""
    (folder / 'images').mkdir(parents=True)
    (folder / 'labels').mkdir()
    for i, image in enumerate(scene):
        cv2.imwrite(str(folder / 'images' / f'im{i}.png'), np.full((SIZE, SIZE, 3), 40 * (i + 1) % 256, np.uint8))
        (folder / 'labels' / f'im{i}.txt').write_text(
            ''.join(f'{c} {" ".join(f"{v:.6f}" for v in box)}\n' for c, box in image['labels']))
    (folder / 'train.txt').write_text(''.join(f'images/im{i}.png\n' for i in range(len(scene))))
    (folder / 'names').write_text('\n'.join(NAMES) + '\n')
    (folder / 'scene.data').write_text('classes=3\ntrain=train.txt\nnames=names\n')
    return folder / 'scene.data'


@pytest.fixture
def scene(tmp_path):
    data = write_dataset(tmp_path / 'ds')
    net = ScriptedNet([_raw_output(Darknet(parse_cfg_text(CFG, 'scene.cfg')), im['model']) for im in SCENE]).eval()
    split = load_split(data, 'train')
    audits, skipped = audit_images(net, split, batch_size=2)
    return split, audits, skipped


def test_each_kind_found_and_ranked_first(scene):
    split, audits, skipped = scene
    assert skipped == [] and [a.index for a in audits] == [0, 1]
    issues = rank([x for a in audits for x in find_issues(a.index, a.labels, a.dets, 0.25)])
    by_kind = {k: [x for x in issues if x.kind == k] for k in ('missing', 'wrong_class', 'bad_box', 'spurious')}
    assert {k: len(v) for k, v in by_kind.items()} == {'missing': 2, 'wrong_class': 2, 'bad_box': 2, 'spurious': 2}
    first = {k: v[0] for k, v in by_kind.items()}
    assert all(x.image == 0 for x in first.values())         # every clear case above its weaker twin
    assert all(v[1].image == 1 and v[1].score < v[0].score for v in by_kind.values())
    m = first['missing']                                     # the unlabelled bee, where the model put it
    assert m.label == -1 and m.suggested_class == 1 and np.allclose(m.suggested_box, BOX['ne'], atol=1e-4)
    assert m.score == pytest.approx(0.95, abs=1e-3)
    w = first['wrong_class']                                 # label 1 of image 0, ant -> cat
    assert (w.label, w.suggested_class) == (1, 2) and w.score == pytest.approx(0.95, abs=1e-3)
    assert by_kind['wrong_class'][1].score == pytest.approx(0.99 * (0.6 - 0.4), abs=1e-3)
    b = first['bad_box']                                     # the shifted bee, the model's box suggested
    assert (b.label, b.suggested_class) == (2, 1) and b.iou == pytest.approx(0.4, abs=1e-3)
    assert np.allclose(b.suggested_box, BOX['se'], atol=1e-4)
    s = first['spurious']
    assert s.label == 3 and s.suggested_class == -1 and s.suggested_box is None and s.score > 0.99
    assert by_kind['spurious'][1].score == pytest.approx(0.85, abs=1e-3)
    assert not any(x.label == 0 for x in issues)             # the right labels are left alone


def test_box_terms_are_the_region_loss_of_each_box(scene):
    _, audits, _ = scene
    terms = audits[0].terms                                  # (label, coord/obj/cls)
    right, wrong, shifted, spurious = terms
    assert right[0] < 1e-6 and right[2] < 1e-3              # predicted exactly: no coordinate or class loss
    assert wrong[2] > 10 * right[2] + 5                      # class term: -log p(ant) where the model says cat
    assert shifted[0] > 0.1 > right[0]                       # the coordinate term sees the shift
    assert spurious[1] > 0.5 * 5 * 0.9                       # object_scale 5: objectness ~0 where the label says 1
    assert audits[0].loss > terms.sum() - 1e-3               # the image's loss holds its boxes' terms


def test_find_issues_without_labels_or_detections():
    assert find_issues(0, np.zeros((0, 5)), np.zeros((0, 6)), 0.25) == []
    only_label = find_issues(3, np.array([[1, 0.5, 0.5, 0.2, 0.2]]), np.zeros((0, 6)), 0.25)
    assert [(x.kind, x.image, x.label, x.score) for x in only_label] == [('spurious', 3, 0, 1.0)]
    dets = np.array([[0.5, 0.5, 0.2, 0.2, 0.9, 2], [0.5, 0.5, 0.2, 0.2, 0.3, 1]])  # one object, two classes
    only_det = find_issues(0, np.zeros((0, 5)), dets, 0.25)
    assert [(x.kind, x.suggested_class, x.score) for x in only_det] == [('missing', 2, pytest.approx(0.9))]


# -------------------------------------------------------------------------------------------- the command
def _model(path: Path, names=NAMES, classes=3) -> Path:
    cfg = CFG.replace('classes=3', f'classes={classes}').replace('filters=16', f'filters={2 * (5 + classes)}')
    torch.manual_seed(0)
    save_checkpoint(model_checkpoint(Darknet(parse_cfg_text(cfg, 'm.cfg')), names), path)
    return path


def test_command_writes_every_file(tmp_path):
    data = write_dataset(tmp_path / 'ds')
    out = tmp_path / 'out'
    summary = main(['--weights', str(_model(tmp_path / 'm.pt')), '--data', str(data), '--out', str(out),
                    '--conf', '0.01', '--device', 'cpu', '--workers', '0', '--hard', '0.5'])
    assert summary['images'] == 2 and summary['boxes'] == 8 and summary['hard_images'] == 1
    assert summary['hard_images_ranked_by'].startswith('the region loss of each image under')
    with open(out / 'label_issues.csv') as f:
        rows = list(csv.DictReader(f))
    assert rows and sum(summary['issues'].values()) == len(rows)
    for kind in {r['kind'] for r in rows}:                  # ranked 1, 2, ... by score within each kind
        scores = [float(r['score']) for r in rows if r['kind'] == kind]
        assert scores == sorted(scores, reverse=True)
        assert [int(r['rank']) for r in rows if r['kind'] == kind] == list(range(1, len(scores) + 1))
    label_rows = [r for r in rows if r['kind'] != 'missing']
    assert all(r['label_file'].endswith('.txt') and r['class_name'] in NAMES for r in label_rows)
    with open(out / 'boxes.csv') as f:
        boxes = list(csv.DictReader(f))
    assert len(boxes) == 8 and all(float(b['loss']) == pytest.approx(float(b['coord']) + float(b['obj']) +
                                                                     float(b['cls']), rel=1e-4) for b in boxes)
    with open(out / 'images.csv') as f:
        images = list(csv.DictReader(f))
    losses = [float(r['loss']) for r in images]
    assert losses == sorted(losses, reverse=True)
    hard = (out / 'hard_images.txt').read_text().split()
    assert hard == [images[0]['image']]
    report = scan_dataset(out / 'hard_images.txt', 3, use_cache=False)   # a Darknet list the trainer reads
    assert report.images == hard and len(report.boxes) == 4
    picture = cv2.imread(str(out / 'issues.jpg'))
    assert picture is not None and picture.shape[0] > 100
    assert json.loads((out / 'summary.json').read_text())['issues'] == summary['issues']


@pytest.mark.parametrize('case, message', [
    ('classes', 'the model detects 4 classes, {data} has classes=3'),
    ('names', 'the model was trained on the classes x, y, z, {data} names ant, bee, cat'),
    ('no-names', 'the model file holds no class names and {data} has no names='),
    ('no-split', '{data}: no valid= list to audit'),
    ('empty-list', 'no usable images out of 2 entries'),
    ('folds-no-cfg', '--folds trains a model per fold: give the network with --cfg'),
])
def test_bad_input_is_a_clear_error(tmp_path, case, message):
    data = write_dataset(tmp_path / 'ds')
    weights = _model(tmp_path / 'm.pt', names=None if case == 'no-names' else ['x', 'y', 'z'] if case == 'names'
                     else NAMES, classes=4 if case == 'classes' else 3)
    argv = ['--weights', str(weights), '--data', str(data), '--out', str(tmp_path / 'out'), '--device', 'cpu']
    if case == 'no-names':
        data.write_text('classes=3\ntrain=train.txt\n')
    if case == 'no-split':
        argv += ['--split', 'valid']
    if case == 'empty-list':
        for label in (tmp_path / 'ds' / 'labels').iterdir():
            label.unlink()
    if case == 'folds-no-cfg':
        argv += ['--folds', '2']
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert str(exc.value).startswith('error: ') and message.format(data=data) in str(exc.value)


# ---------------------------------------------------------------------------------------------- the track
def test_track_ranks_images_that_stay_hard(tmp_path):
    folder = tmp_path / 'track'
    folder.mkdir()
    paths = [str(tmp_path / f'im{i}.png') for i in range(3)]
    tr.write_images(folder, paths)
    # image 0: hard early only (memorised); image 1: stays hard; image 2: easy; the level falls over training
    update = np.repeat(np.arange(1, 11), 3)
    image = np.tile([0, 1, 2], 10)
    level = np.repeat(np.linspace(10, 1, 10), 3)
    ratio = np.tile([3.0, 2.0, 1.0], 10)
    ratio[update > 5] = np.tile([0.5, 2.0, 1.0], 5)
    loss = level * ratio
    tr.write_chunk(folder, update[:15], image[:15], loss[:15])
    tr.write_chunk(folder, update[15:], image[15:], loss[15:])
    track = tr.read_track(folder)
    assert len(track.loss) == 30 and track.describe().endswith('30 losses of 3 images over updates 1..10')
    hard = tr.stays_hard(track, [paths[2], paths[1], paths[0], str(tmp_path / 'other.png')])
    # asked in the order 2, 1, 0: the one that stays hard first, the one memorised late last
    assert np.argsort(-hard[:3]).tolist() == [1, 0, 2] and math.isnan(hard[3])
    assert hard[1] == pytest.approx(2.0 / (3.5 / 3))         # its loss over the mean of its updates, late half
    assert tr.drop_after(folder, 5) == ['updates_00000006-00000010.npz']
    assert tr.read_track(folder).update.max() == 5


def test_track_counts_a_listed_duplicate_as_one_image(tmp_path):
    """The trainer records the dataset's index, and the scan keeps a duplicate entry: both indices' draws count."""
    paths = [str(tmp_path / 'a.png'), str(tmp_path / 'b.png'), str(tmp_path / 'a.png')]
    tr.write_images(tmp_path, paths)
    # update 2 (the later half) draws a.png under both indices: losses 3 and 2 over the update's mean 2
    tr.write_chunk(tmp_path, np.array([1, 2, 2, 2]), np.array([1, 0, 1, 2]), np.array([1.0, 3.0, 1.0, 2.0]))
    assert tr.stays_hard(tr.read_track(tmp_path), paths).tolist() == [1.25, 0.5, 1.25]


def test_track_errors_name_the_file(tmp_path):
    with pytest.raises(tr.TrackError, match='not a track folder'):
        tr.read_track(tmp_path)
    tr.write_images(tmp_path, ['a.png'])
    tr.write_chunk(tmp_path, np.array([1, 2]), np.array([0, 0]), np.array([1.0, 2.0]))
    tr.write_chunk(tmp_path, np.array([2, 3]), np.array([0, 0]), np.array([1.0, 2.0]))
    with pytest.raises(tr.TrackError, match=r'updates_00000002-00000003.npz: updates 2-3 overlap'):
        tr.read_track(tmp_path)
    (tmp_path / 'updates_00000002-00000003.npz').unlink()
    tr.write_chunk(tmp_path, np.array([4]), np.array([1]), np.array([1.0]))
    with pytest.raises(tr.TrackError, match='image index 1 outside the 1 images'):
        tr.read_track(tmp_path)


def test_a_resumed_track_refuses_a_changed_training_list(tmp_path):
    paths = [str(tmp_path / f'{n}.png') for n in 'abc']
    tr.write_images(tmp_path, paths)
    tr.write_chunk(tmp_path, np.array([1, 2]), np.array([0, 2]), np.array([1.0, 2.0]))
    tr.check_resumed_list(tmp_path, paths, 2)                  # the same list: the records still name its images
    changed = [paths[0], str(tmp_path / 'x.png'), paths[2]]
    with pytest.raises(tr.TrackError, match=r'images.txt:2: the training list changed since the track began '
                                            r'\(3 images then, 3 now\)'):
        tr.check_resumed_list(tmp_path, changed, 2)
    tr.check_resumed_list(tmp_path, changed, 0)               # resumed before the chunk: it is dropped, nothing kept
    with pytest.raises(tr.TrackError, match=r'images.txt:3: .*\(3 images then, 2 now\)'):
        tr.check_resumed_list(tmp_path, paths[:2], 2)


def test_command_ranks_hard_images_by_the_track_beside_the_weights(tmp_path):
    data = write_dataset(tmp_path / 'ds')
    run = tmp_path / 'run'
    weights = _model(run / 'weights' / 'last.pt')
    split = load_split(data, 'train')
    tr.write_images(run / 'track', split.paths)
    # image 1 stays hard over training, whatever the final model says
    tr.write_chunk(run / 'track', np.array([1, 1, 2, 2]), np.array([0, 1, 0, 1]), np.array([1.0, 5.0, 1.0, 5.0]))
    summary = main(['--weights', str(weights), '--data', str(data), '--out', str(tmp_path / 'out'),
                    '--device', 'cpu', '--workers', '0', '--hard', '0.5', '--top', '0'])
    assert summary['hard_images_ranked_by'].startswith(f'the loss over training of {run / "track"}: 4 losses')
    assert (tmp_path / 'out' / 'hard_images.txt').read_text().split() == [split.paths[1]]
    assert not (tmp_path / 'out' / 'issues.jpg').exists()


# ---------------------------------------------------------------------------------------------- the folds
def test_assign_folds_partitions_the_split():
    parts = assign_folds(11, 2, seed=3)
    assert sorted(parts[0] + parts[1]) == list(range(11)) and {len(p) for p in parts} == {5, 6}
    assert parts == assign_folds(11, 2, seed=3) != assign_folds(11, 2, seed=4)
    with pytest.raises(ValueError, match='needs at least 2'):
        assign_folds(11, 1, 0)


def test_folds_train_through_the_trainer_and_audit_held_out(tmp_path):
    scene = SCENE * 2                                       # 4 images: 2 per fold
    data = write_dataset(tmp_path / 'ds', scene)
    (tmp_path / 'tiny.cfg').write_text(CFG)
    (tmp_path / 'budget.json').write_text(json.dumps({'train': {'batch': 2, 'max_batches': 2, 'workers': 0,
                                                                'save_interval': 0}}))
    argv = ['--data', str(data), '--folds', '2', '--cfg', str(tmp_path / 'tiny.cfg'), '--budget',
            str(tmp_path / 'budget.json'), '--out', str(tmp_path / 'out'), '--device', 'cpu', '--workers', '0',
            '--conf', '0.01', '--top', '0']
    summary = main(argv)
    folds = tmp_path / 'out' / 'folds'
    runs = [json.loads((folds / f'fold{k}' / 'fold.json').read_text()) for k in (0, 1)]
    assert [r['updates'] for r in runs] == [2, 2] and all(r['reason'] == 'finished' for r in runs)
    lists = [(folds / f'fold{k}.txt').read_text().split() for k in (0, 1)]
    assert sorted(lists[0] + lists[1]) == sorted(load_split(data, 'train').paths) and not set(lists[0]) & set(lists[1])
    with open(tmp_path / 'out' / 'boxes.csv') as f:
        audited_by = {r['image']: int(r['fold']) for r in csv.DictReader(f)}
    for k in (0, 1):                                        # each image judged by the model that never trained on it
        assert all(audited_by[p] == 1 - k for p in lists[k])
    assert summary['model'] == [str(folds / f'fold{k}' / 'weights' / 'last.pt') for k in (0, 1)]
    stamp = (folds / 'fold0' / 'weights' / 'last.pt').stat().st_mtime_ns
    main(argv)                                              # again: the trained folds are reused
    assert (folds / 'fold0' / 'weights' / 'last.pt').stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match='this fold was trained with seed=0, now 1'):
        main(argv + ['--seed', '1'])


# ---------------------------------------------------------------------------------------------- the bench
def test_bench_injection_shifts_to_iou_and_keeps_kinds_apart(tmp_path):
    bench = bench_module('bench_labelcheck')
    rng = np.random.default_rng(0)
    for _ in range(20):
        box = np.concatenate((rng.uniform(0.3, 0.7, 2), rng.uniform(0.05, 0.3, 2)))
        moved = bench.shifted_box(box, rng)
        iou = float(iou_cxcywh(torch.tensor(box), torch.tensor(moved, dtype=torch.float64)))
        assert iou == pytest.approx(0.4, abs=1e-5)
        assert moved[0] - moved[2] / 2 >= 0 and moved[0] + moved[2] / 2 <= 1
    data = write_dataset(tmp_path / 'ds', SCENE * 5)        # 40 boxes: 2 of each kind at 5 %
    counts = bench.inject(str(data), 'train', tmp_path / 'bench', seed=0, rate=0.05)
    assert counts == {'boxes': 40, 'removed': 2, 'relabelled': 2, 'shifted': 2}
    copy = scan_dataset(tmp_path / 'bench' / 'train.txt', 3, use_cache=False)
    assert len(copy.images) == 10 and len(copy.boxes) == 38   # images linked in place, labels copied less 2
    with open(tmp_path / 'bench' / 'injected.csv') as f:
        rows = list(csv.DictReader(f))
    assert sorted(r['kind'] for r in rows) == ['relabelled'] * 2 + ['removed'] * 2 + ['shifted'] * 2
    assert all(r['new_class'] != r['class'] for r in rows if r['kind'] == 'relabelled')
