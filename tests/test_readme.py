"""Every documented command line runs: README.md's fenced shell blocks and train.py's `--help` examples.

The README is parsed when the tests are collected, so a new or edited command is run without touching this file.
Each command runs as a subprocess in a scratch folder laid out like the repository: `cfg/`, `yolo_lrm/` and the
entry scripts are links to this checkout, and every input path the README names (`data/voc.data`,
`weights/yolov2-voc.weights`, `VOCdevkit`, `video.mp4`, ...) is a tiny stand-in made by INPUTS.  A rule in RULES,
matched on the command's leading words, adds the options that shrink the run (64 px, one update of 2 images, CPU,
no loader processes) and checks what the command must have written.  A command that no rule knows fails, with a
message saying to add one: a documented command cannot land unguarded.  Commands that cannot run in a test (the CI
scripts, torchrun, a camera) are in SKIPPED with the reason; they still get a cheaper check, and then show as
skipped with that reason.
"""
from __future__ import annotations

import ast
import csv
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np
import pytest
import torch

from yolo_lrm.data.datafile import parse_data
from yolo_lrm.data.synthetic import DemoSpec, generate
from yolo_lrm.data.voc import VOC_CLASSES, convert_voc
from yolo_lrm.model import Darknet
from yolo_lrm.weights import layout, read_header, save_darknet_weights

if TYPE_CHECKING:
    from yolo_lrm.train.args import TrainArgs

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ('python', 'python3', 'bash', 'sh', 'torchrun', 'pip', 'pip3')
SHELL_FENCES = ('bash', 'sh', 'shell', 'console')
TIMEOUT_S = 300
# one update of 2 images at 64 px on the CPU, loading in the main process: the cheapest run that still trains,
# validates, and writes every checkpoint
TRAIN_SMALL = ('--img-size', '64', '--batch', '2', '--subdivisions', '1', '--max-batches', '1', '--workers', '0',
               '--device', 'cpu')
TINY_BUDGET = 'tiny-budget.json'
TIMM_STAND_IN = 'mobilenetv1_100-random.pt'   # for `python -m yolo_lrm.backbones` (no download in tests)


# --------------------------------------------------------------------------------------------- the commands
@dataclass(frozen=True)
class Command:
    """One documented command line: where it is written and its words (comments and line continuations gone)."""
    where: str
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return shlex.join(self.argv)


def fenced_shell_commands(path: Path) -> list[Command]:
    """The command lines of a Markdown file's ```bash (sh, shell, console) blocks."""
    commands, fence, pending, start = [], None, '', 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith('```'):
            fence = None if fence is not None else line.strip()[3:].strip().lower()
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending:
            start = number
        # a trailing backslash continues the command on the next line, as in a shell
        if line.rstrip().endswith('\\'):
            pending += line.rstrip()[:-1] + ' '
            continue
        words = shlex.split(pending + line, comments=True)
        pending = ''
        if words:
            commands.append(Command(f'{path.name}:{start}', tuple(words)))
    return commands


def unfenced_command_lines(path: Path) -> list[str]:
    """`file:line` of command lines inside fenced blocks that are not marked as shell (they would not be run)."""
    found, fence = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith('```'):
            fence = None if fence is not None else line.strip()[3:].strip().lower()
        elif fence is not None and fence not in SHELL_FENCES and line.split()[:1] and line.split()[0] in PROGRAMS:
            found.append(f'{path.name}:{number}')
    return found


def epilog_commands(script: Path, constant: str = 'EXAMPLES') -> list[Command]:
    """The command lines of a script's `--help` examples (a module-level string constant), read without importing."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == constant for t in node.targets):
            first = node.value.lineno
            return [Command(f'{script.name}:{first + i}', tuple(shlex.split(line, comments=True)))
                    for i, line in enumerate(node.value.value.splitlines())
                    if line.split()[:1] and line.split()[0] in PROGRAMS]
    return []


def documented_commands() -> list[Command]:
    """README commands first, then the `--help` examples that the README does not already show."""
    seen, out = set(), []
    for command in fenced_shell_commands(ROOT / 'README.md') + epilog_commands(ROOT / 'train.py'):
        if command.argv not in seen:
            seen.add(command.argv)
            out.append(command)
    return out


# ------------------------------------------------------------------------------------ tiny inputs (INPUTS)
def _noise_image(w: int, h: int, seed: int) -> np.ndarray:
    """A BGR image of coloured noise."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _draw(img: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Solid rectangles at 0-based inclusive corners (something for a detector to look at)."""
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cv2.rectangle(img, (x0, y0), (x1, y1), (40 * i % 256, 200, 255 - 30 * i % 256), -1)
    return img


def _voc_xml(objects: list[tuple[str, tuple[int, int, int, int]]], w: int, h: int) -> str:
    """A VOC annotation with 1-based pixel boxes."""
    body = ''.join(f'<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>'
                   f'<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>' for name, (x0, y0, x1, y1) in objects)
    return (f'<annotation><filename>x.jpg</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>'
            f'</size>{body}</annotation>')


# image id -> objects (VOC class, 1-based box), in a 96 x 72 image
VOC_IMAGES = {
    '000001': [('dog', (10, 12, 50, 60)), ('person', (55, 5, 90, 70))],
    '000002': [('car', (5, 30, 60, 65))],
    '000003': [('cat', (20, 10, 80, 50)), ('dog', (2, 40, 30, 70))],
    '000004': [('bird', (30, 20, 70, 60))],
    '2008_000005': [('bus', (8, 8, 88, 64))],
}
VOC_SETS = {'VOC2007': {'train': ['000001'], 'val': ['000002'], 'trainval': ['000001', '000002'],
                        'test': ['000003', '000004']},
            'VOC2012': {'train': ['2008_000005'], 'val': [], 'trainval': ['2008_000005']}}


def write_voc_folder(folder: Path, ids: dict[str, list[str]], classes_of: Callable[[str], str] = str) -> None:
    """A VOC-layout folder (Annotations, JPEGImages, ImageSets/Main) holding `ids`' images of VOC_IMAGES."""
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for image_id in dict.fromkeys(i for names in ids.values() for i in names):
        objects = [(classes_of(name), box) for name, box in VOC_IMAGES[image_id]]
        (folder / 'Annotations' / f'{image_id}.xml').write_text(_voc_xml(objects, 96, 72))
        img = _draw(_noise_image(96, 72, len(image_id)), [(x0 - 1, y0 - 1, x1 - 1, y1 - 1) for _, (x0, y0, x1, y1)
                                                          in objects])
        cv2.imwrite(str(folder / 'JPEGImages' / f'{image_id}.jpg'), img)
    for name, members in ids.items():
        (folder / 'ImageSets' / 'Main' / f'{name}.txt').write_text(''.join(f'{i}\n' for i in members))


def make_devkit(devkit: Path) -> None:
    """A VOCdevkit with VOC2007 (train, val, test) and VOC2012 (train, val)."""
    for year, sets in VOC_SETS.items():
        write_voc_folder(devkit / year, sets)


# frame -> KITTI label lines (type, truncated, occluded, alpha, box x0 y0 x1 y1, 3-D size/place/rotation); 41
# objects per class, because the devkit samples at most one score threshold per object, and a class with fewer than
# 41 objects cannot reach AP|R40 100 even when every box is found
KITTI_FRAMES = {f'{i:06d}': [
    f'Car 0.00 0 -1.5 {10 + 5 * k}.00 20.00 {70 + 7 * k}.00 {70 + 2 * k}.00 1.5 1.6 3.7 1 1 10 0.1',
    f'Pedestrian 0.00 0 0.1 {120 + 3 * k}.00 10.00 {140 + 3 * k}.00 {60 + 4 * k}.00 1.8 0.5 0.9 1 1 8 0.1',
    f'Cyclist 0.00 0 0.1 {150 + k}.00 30.00 {180 + 2 * k}.00 {90 + k}.00 1.7 0.6 1.8 1 1 9 0.1',
] for i, k in ((i, i % 7) for i in range(41))}


def make_kitti(base: Path) -> None:
    """KITTI object training data: `training/image_2` (200 x 100 PNG) and `training/label_2`."""
    (base / 'training' / 'image_2').mkdir(parents=True)
    (base / 'training' / 'label_2').mkdir()
    for frame, lines in KITTI_FRAMES.items():
        cv2.imwrite(str(base / 'training' / 'image_2' / f'{frame}.png'), _noise_image(200, 100, int(frame)))
        (base / 'training' / 'label_2' / f'{frame}.txt').write_text(''.join(f'{ln}\n' for ln in lines))


class Work:
    """The scratch repository: its folder, and which INPUTS have been made in it."""

    def __init__(self, path: Path):
        self.path = path
        self.made: set[Callable[[Work], None]] = set()

    def make(self, key: str) -> None:
        """Make the stand-in for the README path `key` (each builder once: some make several paths)."""
        builder = INPUTS[key]
        if builder not in self.made:
            self.made.add(builder)
            builder(self)

    def make_inputs_of(self, argv: list[str], outputs: list[str] = ()) -> None:
        """Make the stand-ins of every README path among `argv` (an argument equal to a key or below it), except the
        command's `outputs`."""
        for word in argv:
            if word in outputs:
                continue
            for key in INPUTS:
                if word == key or word.startswith(key.rstrip('/') + '/'):
                    self.make(key)


def _demo_data(work: Work) -> None:
    """data/demo.data over a tiny demo set (8 train, 4 test images) in data/demo/, not generated on first use."""
    spec = DemoSpec(train=8, test=4, width=(96, 128), height=(80, 112), max_objects=3, min_size=12, max_size=0.55,
                    max_clutter=1, background_images=0.0)
    generate(work.path / 'data' / 'demo', spec, workers=1)
    (work.path / 'data' / 'demo.data').write_text(
        'classes=6\ntrain=demo/train.txt\nvalid=demo/test.txt\nnames=demo/demo.names\neval=voc\n'
        'annotations=demo/Annotations\nbackup=../backup\nresults=../results\n')


def _voc_data(work: Work) -> None:
    """The repository's data/voc.data template as it is, with a tiny converted VOCdevkit where it points."""
    work.make('data/voc.names')
    shutil.copy(ROOT / 'data' / 'voc.data', work.path / 'data' / 'voc.data')
    voc = parse_data(work.path / 'data' / 'voc.data')
    devkit = Path(voc['annotations']).parents[1]
    make_devkit(devkit)
    convert_voc(devkit, devkit.parent, workers=1)
    assert Path(voc['train']).is_file() and Path(voc['valid']).is_file(), 'the converter no longer fits voc.data'


def _names(work: Work) -> None:
    """The repository's class-name files."""
    for names in ROOT.glob('data/*.names'):
        shutil.copy(names, work.path / 'data' / names.name)


def _run_exp(work: Work) -> None:
    """runs/train/exp: the demo cfg trained for 2 updates, then set back to its checkpoint after update 1 (a run
    stopped half-way, for --resume); its best.pt also stands in for README's `best.pt`."""
    work.make('data/demo.data')
    argv = [sys.executable, 'train.py', 'cfg/demo.cfg', 'data/demo.data', *TRAIN_SMALL, '--max-batches', '2',
            '--eval-interval', '1', '--save-period', '1', '--backup', 'none']
    proc = subprocess.run(argv, cwd=work.path, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, f'making runs/train/exp failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}'
    weights = work.path / 'runs' / 'train' / 'exp' / 'weights'
    shutil.copy(weights / 'update_1.pt', weights / 'last.pt')
    shutil.copy(weights / 'best.pt', work.path / 'best.pt')


def _best_onnx(work: Work) -> None:
    """README's `best.onnx`: `best.pt` exported at 64 px.  Without the onnx extra, an empty placeholder: the commands
    naming it stop at the missing package before reading it, and SKIPPED checks that they say so."""
    work.make('best.pt')
    if _onnx_extra_missing():
        (work.path / 'best.onnx').write_bytes(b'')
        return
    argv = [sys.executable, '-m', 'yolo_lrm.export', '--weights', 'best.pt', '--format', 'onnx', '--img-size', '64',
            '--out', 'best.onnx']
    proc = subprocess.run(argv, cwd=work.path, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    assert proc.returncode == 0, f'making best.onnx failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}'


def _voc_weights(work: Work) -> None:
    """weights/yolov2-voc.weights (random, seeded, from cfg/yolov2-voc.cfg) and its first 23 layers as
    weights/darknet19_448.conv.23 (the layers Darknet's pretrained backbone file holds)."""
    torch.manual_seed(0)
    net = Darknet(ROOT / 'cfg' / 'yolov2-voc.cfg')
    (work.path / 'weights').mkdir(exist_ok=True)
    save_darknet_weights(net, work.path / 'weights' / 'yolov2-voc.weights')
    save_darknet_weights(net, work.path / 'weights' / 'darknet19_448.conv.23', cutoff=23)


def _darknet19_weights(work: Work) -> None:
    """weights/darknet19_448.weights (random, seeded) from cfg/darknet19_448.cfg; without that cfg nothing is made,
    so that the command fails on the missing cfg, as it would for a user."""
    cfg = ROOT / 'cfg' / 'darknet19_448.cfg'
    if cfg.is_file():
        torch.manual_seed(0)
        (work.path / 'weights').mkdir(exist_ok=True)
        save_darknet_weights(Darknet(cfg), work.path / 'weights' / 'darknet19_448.weights')


def _video(work: Work) -> None:
    """video.mp4: 3 frames of 96 x 64."""
    writer = cv2.VideoWriter(str(work.path / 'video.mp4'), cv2.VideoWriter_fourcc(*'mp4v'), 5, (96, 64))
    for i in range(3):
        writer.write(_draw(_noise_image(96, 64, i), [(10 + 10 * i, 10, 40 + 10 * i, 50)]))
    writer.release()


def _voc2007(work: Work) -> None:
    """VOC2007/ (annotations and test set) and Darknet result files results/comp4_det_test_<class>.txt that
    repeat the ground truth, so every class with objects scores AP 100."""
    write_voc_folder(work.path / 'VOC2007', {'test': ['000001', '000002', '000003']})
    rows = {name: [] for name in VOC_CLASSES}
    for image_id in ('000001', '000002', '000003'):
        for name, (x0, y0, x1, y1) in VOC_IMAGES[image_id]:
            rows[name].append(f'{image_id} 0.900000 {x0}.0 {y0}.0 {x1}.0 {y1}.0\n')
    (work.path / 'results').mkdir(exist_ok=True)
    for name, lines in rows.items():
        (work.path / 'results' / f'comp4_det_test_{name}.txt').write_text(''.join(lines))


def _kitti(work: Work) -> None:
    """kitti/training/{image_2,label_2}."""
    make_kitti(work.path / 'kitti')


def _kitti_results(work: Work) -> None:
    """results/kitti/data: KITTI result files that repeat the labels (score .9), so every level scores AP 100."""
    work.make('kitti')
    out = work.path / 'results' / 'kitti' / 'data'
    out.mkdir(parents=True)
    for frame, lines in KITTI_FRAMES.items():
        (out / f'{frame}.txt').write_text(''.join(f'{ln} 0.9\n' for ln in lines))


def _bccd(work: Work) -> None:
    """../shared/datasets/BCCD: a plain VOC folder (no year) with classes that are not VOC's."""
    cells = {'dog': 'WBC', 'person': 'RBC', 'car': 'RBC', 'cat': 'Platelets', 'bird': 'WBC', 'bus': 'RBC'}
    write_voc_folder(work.path.parent / 'shared' / 'datasets' / 'BCCD',
                     {'train': ['000001', '000002'], 'val': ['000003'], 'trainval': ['000001', '000002', '000003'],
                      'test': ['000004']}, cells.get)


def _bccd_data(work: Work) -> None:
    """data/bccd.data and data/bccd-test.data as they are, over the stand-in BCCD converted into data/bccd/."""
    work.make('../shared/datasets/BCCD')
    convert_voc(work.path.parent / 'shared' / 'datasets' / 'BCCD', work.path / 'data' / 'bccd', workers=1)
    for name in ('bccd.data', 'bccd-test.data'):
        shutil.copy(ROOT / 'data' / name, work.path / 'data' / name)


AQUARIUM_NAMES = ('fish', 'jellyfish', 'penguin', 'puffin', 'shark', 'starfish', 'stingray')


def _yolo_lines(boxes: list[tuple[int, int, int, int]], w: int, h: int, first_class: int) -> str:
    """Label lines (`class cx cy w h`, normalised) of 0-based inclusive pixel boxes, classes counting up."""
    return ''.join(f'{(first_class + i) % 7} {(x0 + x1 + 1) / 2 / w:.6f} {(y0 + y1 + 1) / 2 / h:.6f} '
                   f'{(x1 - x0 + 1) / w:.6f} {(y1 - y0 + 1) / h:.6f}\n' for i, (x0, y0, x1, y1) in enumerate(boxes))


def _aquarium(work: Work) -> None:
    """../shared/datasets/aquarium: a Roboflow YOLO export as downloaded (data.yaml with `../train/images` entries and
    no test: key; {train,valid,test}/{images,labels}; 7 classes)."""
    root = work.path.parent / 'shared' / 'datasets' / 'aquarium'
    for split, count in (('train', 4), ('valid', 2), ('test', 2)):
        (root / split / 'images').mkdir(parents=True)
        (root / split / 'labels').mkdir()
        for i in range(count):
            boxes = [(8 + 6 * i, 10, 40 + 6 * i, 50), (50, 20 + 3 * i, 90, 60)]
            cv2.imwrite(str(root / split / 'images' / f'{split}{i}_jpg.rf.{i}.jpg'),
                        _draw(_noise_image(96, 72, 10 * i + len(split)), boxes))
            (root / split / 'labels' / f'{split}{i}_jpg.rf.{i}.txt').write_text(_yolo_lines(boxes, 96, 72, i))
    (root / 'data.yaml').write_text(f'train: ../train/images\nval: ../valid/images\n\nnc: 7\n'
                                    f'names: {list(AQUARIUM_NAMES)}\n')


def _coco(work: Work) -> None:
    """coco/: instances_{train,val}2017.json (COCO's 80 category ids are sparse: 1, 3, 18 here) and the images in
    coco/train2017 and coco/val2017."""
    categories = [{'id': 1, 'name': 'person', 'supercategory': 'person'}, {'id': 3, 'name': 'car',
                  'supercategory': 'vehicle'}, {'id': 18, 'name': 'dog', 'supercategory': 'animal'}]
    for split, count in (('train2017', 3), ('val2017', 2)):
        (work.path / 'coco' / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            boxes = [(6 + 5 * i, 8, 44, 60), (50, 12, 88 - 4 * i, 50)]
            name = f'{100 * (i + 1):012d}.jpg'
            cv2.imwrite(str(work.path / 'coco' / split / name), _draw(_noise_image(96, 72, i), boxes))
            images.append({'id': i + 1, 'file_name': name, 'width': 96, 'height': 72})
            annotations += [{'id': 10 * i + k, 'image_id': i + 1, 'category_id': categories[(i + k) % 3]['id'],
                             'iscrowd': 0, 'bbox': [x0, y0, x1 - x0 + 1, y1 - y0 + 1]}
                            for k, (x0, y0, x1, y1) in enumerate(boxes)]
        (work.path / 'coco' / 'annotations').mkdir(exist_ok=True)
        (work.path / 'coco' / 'annotations' / f'instances_{split}.json').write_text(
            json.dumps({'images': images, 'annotations': annotations, 'categories': categories}))


def _timm_checkpoint(work: Work) -> None:
    """A random state_dict with the keys and shapes of timm's mobilenetv1_100 (what the download would give)."""
    from test_backbones import timm_state_dict
    torch.save(timm_state_dict(), work.path / TIMM_STAND_IN)


def _mobilenet_backbone(work: Work) -> None:
    """weights/mobilenet_v1.conv.27, converted from the random timm stand-in."""
    from yolo_lrm.backbones import convert_mobilenet_v1
    work.make(TIMM_STAND_IN)
    (work.path / 'weights').mkdir(exist_ok=True)
    convert_mobilenet_v1(str(work.path / 'weights' / 'mobilenet_v1.conv.27'), str(work.path / TIMM_STAND_IN))


def _tiny_budget(work: Work) -> None:
    """A budget for `python -m yolo_lrm.experiments`: every grid run is one update of 2 images at 64 px."""
    train = {'batch': 2, 'subdivisions': 1, 'max_batches': 1, 'img_size': 64, 'workers': 0, 'eval_interval': 1,
             'save_interval': 0}
    (work.path / TINY_BUDGET).write_text(json.dumps({'train': train, 'metric': 'voc07'}))


# README path -> how its tiny stand-in is made in the scratch repository (an argument below a key counts too)
INPUTS: dict[str, Callable[[Work], None]] = {
    'data/demo.data': _demo_data,
    'data/demo': _demo_data,
    'data/voc.data': _voc_data,
    'data/voc.names': _names,
    'runs/train/exp': _run_exp,
    'best.pt': _run_exp,
    'best.onnx': _best_onnx,
    'weights/yolov2-voc.weights': _voc_weights,
    'weights/darknet19_448.conv.23': _voc_weights,
    'weights/darknet19_448.weights': _darknet19_weights,
    'video.mp4': _video,
    'VOCdevkit': lambda work: make_devkit(work.path / 'VOCdevkit'),
    'VOC2007': _voc2007,
    'results/comp4_det_test_{}.txt': _voc2007,
    'kitti': _kitti,
    'results/kitti/data': _kitti_results,
    '../shared/datasets/BCCD': _bccd,
    'data/bccd.data': _bccd_data,
    'data/bccd-test.data': _bccd_data,
    '../shared/datasets/aquarium': _aquarium,
    'coco': _coco,
    TINY_BUDGET: _tiny_budget,
    TIMM_STAND_IN: _timm_checkpoint,
    'weights/mobilenet_v1.conv.27': _mobilenet_backbone,
}


def child_env(work: Work | None = None, hide: tuple[str, ...] = ()) -> dict[str, str]:
    """The commands' environment: one thread each (the machine is shared and the nets are tiny), no windows, and
    the optional packages in `hide` made unimportable (a stub package that raises ImportError)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg',
           'PYTHONDONTWRITEBYTECODE': '1'}
    if hide:
        stubs = work.path.parent / 'hidden-packages'
        for name in hide:
            (stubs / name).mkdir(parents=True, exist_ok=True)
            (stubs / name / '__init__.py').write_text(f'raise ImportError("{name} hidden by tests/test_readme.py")\n')
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(stubs), env.get('PYTHONPATH')]))
    return env


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Work:
    """The scratch repository `<tmp>/main`: links to this checkout's code and cfgs, data/ and weights/ empty (the
    stand-ins are made on demand); `<tmp>/datasets` and `<tmp>/shared` sit beside it as ../ paths expect."""
    path = tmp_path_factory.mktemp('readme') / 'main'
    path.mkdir()
    for name in ('cfg', 'yolo_lrm', 'train.py', 'evaluate.py', 'detect.py'):
        (path / name).symlink_to(ROOT / name)
    (path / 'data').mkdir()
    work = Work(path)
    # now, before any command: the README's first training command would otherwise take the name runs/train/exp
    work.make('runs/train/exp')
    return work


# ------------------------------------------------------------------------------------------- what ran
@dataclass
class Outcome:
    """A finished command: the words it ran with, its output, and what existed under runs/ before it."""
    work: Path
    argv: list[str]
    stdout: str
    started: float
    runs_before: set[Path] = field(default_factory=set)

    def option(self, name: str, default: str | None = None) -> str | None:
        """The value after `name` (the last one, as argparse takes it)."""
        values = self.values(name)
        return values[-1] if values else default

    def values(self, name: str) -> list[str]:
        """The words after the last `name` up to the next option."""
        if name not in self.argv:
            return []
        i = len(self.argv) - 1 - self.argv[::-1].index(name)
        rest = self.argv[i + 1:]
        end = next((j for j, w in enumerate(rest) if w.startswith('--') or re.fullmatch(r'-[a-zA-Z]', w)), len(rest))
        return rest[:end]

    def positionals(self) -> list[str]:
        """The script's leading arguments, before its first option."""
        start = 3 if self.argv[1] == '-m' else 2
        words = self.argv[start:]
        return words[:next((i for i, w in enumerate(words) if w.startswith('-') and w != '-'), len(words))]

    def new_runs(self, kind: str) -> list[Path]:
        """Folders runs/<kind>/* that this command created."""
        return sorted(p for p in (self.work / 'runs' / kind).glob('*') if p not in self.runs_before)

    def fresh(self, path: Path) -> bool:
        """Whether `path` exists and was written by this command."""
        return path.exists() and path.stat().st_mtime >= self.started - 0.05  # file times are coarser


def runs_snapshot(work: Path) -> set[Path]:
    """Every runs/<kind>/<name> folder."""
    return set((work / 'runs').glob('*/*'))


def results_csv_updates(run_dir: Path) -> list[int]:
    """The update numbers in a run's results.csv."""
    with open(run_dir / 'results.csv', newline='') as f:
        return [int(row['update']) for row in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------------ checks
def check_trained(o: Outcome) -> None:
    """A new run folder with its checkpoints, validated once at its single update."""
    runs = o.new_runs('train')
    name = o.option('--name')
    assert len(runs) == 1 and (name is None or runs[0].name == name), runs
    parts = ['weights/last.pt', 'weights/best.pt', 'weights/last.weights', 'args.json', 'train.log']
    if importlib.util.find_spec('matplotlib'):  # the `plots` extra
        parts.append('results.png')
    for part in parts:
        assert (runs[0] / part).is_file(), part
    assert results_csv_updates(runs[0]) == [1]
    if len(o.positionals()) == 3:  # CFG DATA WEIGHTS: the log says how many layers the weights filled
        assert 'conv layers loaded' in (runs[0] / 'train.log').read_text()


def check_resumed(o: Outcome) -> None:
    """The half-way fixture run continued from update 1 and finished update 2."""
    run_dir = o.work / Path(o.option('--resume'))
    assert 'resumed from' in (run_dir / 'train.log').read_text()
    assert results_csv_updates(run_dir) == [1, 2]


def _metrics_asked(o: Outcome, default: str) -> list[str]:
    """The --metric values of the command, or the default metric."""
    return o.values('--metric') or [default]


def check_evaluated(o: Outcome) -> None:
    """eval.json / eval.csv in the .data's results= folder, one table row per metric and IoU asked for."""
    data = parse_data(o.work / o.positionals()[1])
    out = Path(o.option('--out') or data['results'])
    assert o.fresh(out / 'eval.json') and o.fresh(out / 'eval.csv')
    json.loads((out / 'eval.json').read_text())
    with open(out / 'eval.csv', newline='') as f:
        rows = [row['row'] for row in csv.DictReader(f)]
    metrics, ious = _metrics_asked(o, 'voc07'), o.values('--iou') or ['0.5']
    assert len(rows) == len(metrics) * len(ious), rows
    assert all(any(m in row for row in rows) for m in metrics), rows


def table_rows(stdout: str) -> list[list[str]]:
    """The rows of evaluate.py's printed table (label first, then mAP and one column per class)."""
    lines = [ln.split() for ln in stdout.splitlines() if ln.strip()]
    header = next(i for i, ln in enumerate(lines) if ln[:1] == ['mAP'])
    return lines[header + 1:]


def check_voc_files(o: Outcome) -> None:
    """Result files equal to the ground truth score mAP 100 in every row (metric x IoU)."""
    rows = table_rows(o.stdout)
    assert len(rows) == len(_metrics_asked(o, 'voc07')) * len(o.values('--iou') or ['0.5']), rows
    assert all(float(row[1]) == 100.0 for row in rows), rows


def check_kitti_files(o: Outcome) -> None:
    """Result files equal to the labels score AP 100 wherever a number is printed."""
    numbers = [float(v) for row in table_rows(o.stdout) for v in row[1:] if re.fullmatch(r'[\d.]+', v)]
    assert numbers and all(v == 100.0 for v in numbers), o.stdout


def check_detected(o: Outcome) -> None:
    """A new runs/detect folder with the files the options ask for, one record per frame."""
    runs = o.new_runs('detect')
    assert len(runs) == 1, runs
    frames = int(re.search(r'^(\d+) frames in', o.stdout, re.MULTILINE).group(1))
    source = o.work / o.option('--source')
    if source.is_dir():
        expected = sum(1 for p in source.iterdir() if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))
    else:
        cap = cv2.VideoCapture(str(source))
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
    assert frames == expected > 0
    if '--save-json' in o.argv:
        assert len(json.loads((runs[0] / 'detections.json').read_text())['images']) == frames
    if '--save-txt' in o.argv:
        assert (runs[0] / 'labels').is_dir()
    if '--nosave' not in o.argv:
        assert any(p.stem.startswith(source.stem) for p in runs[0].iterdir() if p.is_file())


def check_exported(o: Outcome) -> None:
    """The exported file loads and maps an image batch to the network's raw output F (an INT8 export: its fp32 vs
    INT8 mAP line printed, and the model marked INT8)."""
    fmt = o.option('--format')
    suffix = '.int8.onnx' if '--int8' in o.argv else f'.{fmt}'
    out = Path(o.option('--out') or o.work / Path(o.option('--weights')).with_suffix(suffix))
    assert o.fresh(out)
    if fmt == 'torchscript':
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, which is the format documented here
            warnings.simplefilter('ignore', DeprecationWarning)
            f = torch.jit.load(str(out))(torch.rand(1, 3, 64, 64))
        assert f.shape[0] == 1 and f.shape[2:] == (2, 2)
    else:
        from yolo_lrm.onnxrun import OnnxNetwork
        net = OnnxNetwork(out)
        f = net(torch.rand(1, 3, net.height, net.width))
        assert f.shape == (1, net.num_anchors * (5 + net.num_classes), net.height // 32, net.width // 32)
        if '--int8' in o.argv:
            assert net.precision == 'int8' and re.search(r'^mAP@\.5 \(VOC07\) on .*: fp32 [\d.]+, INT8 [\d.]+',
                                                         o.stdout, re.MULTILINE), o.stdout


def _onnx_extra_missing() -> bool:
    """Whether a package of the `onnx` extra (onnx, onnxscript, onnxruntime) is not installed."""
    return any(importlib.util.find_spec(m) is None for m in ('onnx', 'onnxscript', 'onnxruntime'))


def _without_onnx(command: Command) -> bool:
    """An ONNX export, or a command running an .onnx model, where the `onnx` extra is not installed."""
    return ('onnx' in command.argv or any(w.endswith('.onnx') for w in command.argv)) and _onnx_extra_missing()


def check_onnx_extra_named(work: Work, command: Command) -> None:
    """Without the extra, the command stops with the install command instead of a traceback."""
    argv = list(command.argv)
    work.make_inputs_of(argv)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=work.path, env=child_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 1 and 'pip install' in proc.stderr, proc.stderr[-2000:]


def check_converted(o: Outcome) -> None:
    """A .data file whose train list finds every image's label file by Darknet's rule."""
    from yolo_lrm.data import scan_dataset
    data_file = re.search(r'^data file: (.+)$', o.stdout, re.MULTILINE).group(1).strip()
    data = parse_data(o.work / data_file)
    report = scan_dataset(data['train'], data.classes)
    assert len(report.images) > 0 and not report.issues, report.issues


def check_anchors(o: Outcome) -> None:
    """`anchors=` with k (w, h) pairs."""
    line = re.search(r'^anchors=(.+)$', o.stdout, re.MULTILINE).group(1)
    assert len(line.split(',')) == 2 * int(o.option('-k', '5'))


def check_layer_table(o: Outcome) -> None:
    """Darknet's layer table, ending with the BFLOPs total."""
    assert re.search(r'^Total BFLOPs \d+\.\d+', o.stdout, re.MULTILINE), o.stdout


def check_partial(o: Outcome) -> None:
    """The cut file holds exactly the conv layers before N of the cfg, with seen reset to 0."""
    cfg, _, out, n = o.argv[4:8]
    with torch.device('meta'):  # shapes only
        records = [r for r in layout(Darknet(o.work / cfg), loading=True) if r.index < int(n)]
    header = read_header(o.work / out)
    assert header.seen == 0 and o.fresh(o.work / out)
    assert (o.work / out).stat().st_size == header.size + 4 * sum(r.floats for r in records)


def check_backbone(o: Outcome) -> None:
    """A Darknet file (seen 0) holding exactly the 27 backbone convs of the MobileNet cfgs."""
    out = o.work / o.option('--out')
    with torch.device('meta'):  # shapes only
        records = [r for r in layout(Darknet(ROOT / 'cfg' / 'yolov2-mobilenet-voc.cfg'), loading=True)
                   if r.index < 27]
    header = read_header(out)
    assert header.seen == 0 and o.fresh(out) and len(records) == 27
    assert out.stat().st_size == header.size + 4 * sum(r.floats for r in records)


def check_grid(o: Outcome) -> None:
    """The grid's table and JSON, with a finished run for every row."""
    cfg, data, grid = Path(o.option('--cfg')), Path(o.option('--data')), o.option('--grid', 'lrm')
    out = o.work / (o.option('--out') or f'runs/experiments/{cfg.stem}-{data.stem}')
    assert o.fresh(out / f'{grid}.md') and o.fresh(out / f'{grid}.json')
    summary = json.loads((out / f'{grid}.json').read_text())
    assert summary['complete'] and len(summary['runs']) == len(summary['variants']) * len(summary['seeds'])
    assert len(summary['variants']) >= 2
    assert all(run['updates'] == 1 for run in summary['runs'])  # the tiny budget's single update each
    if o.option('--test-data'):  # every run scored on the test split too
        assert all(run['test']['data'] == Path(o.option('--test-data')).name for run in summary['runs'])


def check_labelchecked(o: Outcome) -> None:
    """The audit's files, every image of the split audited, the hard list a Darknet list of those images; with
    --folds, a finished run per fold."""
    data = parse_data(o.work / o.option('--data'))
    split = o.option('--split', 'train')
    out = o.work / (o.option('--out') or f'runs/labelcheck/{Path(o.option("--data")).stem}-{split}')
    for name in ('label_issues.csv', 'boxes.csv', 'images.csv', 'hard_images.txt', 'summary.json'):
        assert o.fresh(out / name), name
    summary = json.loads((out / 'summary.json').read_text())
    images = len(Path(data[split]).read_text().split())
    assert summary['images'] == images and set(summary['issues']) == {'missing', 'wrong_class', 'bad_box', 'spurious'}
    hard = (out / 'hard_images.txt').read_text().split()
    assert len(hard) == max(1, math.ceil(float(o.option('--hard', '0.1')) * images)) and all(Path(p).is_file()
                                                                                          for p in hard)
    for k in range(int(o.option('--folds', '0'))):
        assert json.loads((out / 'folds' / f'fold{k}' / 'fold.json').read_text())['reason'] == 'finished'


# ------------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """How one kind of command runs here: what changes (and why), and what it must have written."""
    prefix: tuple[str, ...]
    why: str
    check: Callable[[Outcome], None]
    append: tuple[str, ...] = ()
    replace: tuple[tuple[str, str], ...] = ()       # (option, value used here)
    cfg_set: tuple[str, ...] = ()                   # cfg overrides put first in the command's own `--set` list
    hide: tuple[str, ...] = ()                      # optional packages the command must run without
    outputs: Callable[[list[str]], list[str]] = lambda argv: []     # files it writes: removed first, never made
    when: Callable[[Command], bool] = lambda c: True

    def matches(self, command: Command) -> bool:
        """Whether the command starts with this rule's words (python3 counts as python) and `when` holds."""
        words = tuple('python' if w == 'python3' else w for w in command.argv[:len(self.prefix)])
        return words == self.prefix and self.when(command)

    def rewrite(self, argv: tuple[str, ...]) -> list[str]:
        """The command as run here: replaced option values, the cfg overrides, then the appended options."""
        out = list(argv)
        for option, value in self.replace:
            if option in out:
                out[out.index(option) + 1] = value
        if self.cfg_set:
            # into the command's own --set list (a second --set would replace it), before its values so they win
            at = out.index('--set') + 1 if '--set' in out else len(out)
            out[at:at] = list(self.cfg_set) if '--set' in out else ['--set', *self.cfg_set]
        return out + list(self.append)


@dataclass(frozen=True)
class Skip:
    """A command that cannot run in a test, why, and the cheaper check made instead."""
    prefix: tuple[str, ...]
    reason: str
    check: Callable[[Work, Command], None]
    when: Callable[[Command], bool] = lambda c: True
    matches = Rule.matches


def _is_camera(command: Command) -> bool:
    """Whether the command reads a camera (`--source` is a device index)."""
    argv = list(command.argv)
    return '--source' in argv and argv[argv.index('--source') + 1].isdigit()


def check_script_wired_into_ci(work: Work, command: Command) -> None:
    """The script is valid bash, and .ci/run runs it (CI is where it is guarded)."""
    script = ROOT / command.argv[1]
    assert subprocess.run(['bash', '-n', str(script)], check=False).returncode == 0
    ci = (ROOT / '.ci' / 'run').read_text()
    assert re.search(rf'^\s*(exec\s+)?bash {re.escape(command.argv[1])}\b', ci, re.MULTILINE), \
        f'.ci/run does not run `bash {command.argv[1]}`'


def parse_train_args(argv: list[str]) -> TrainArgs:
    """train.py's own parsing of `argv` (its words after `train.py`), without training."""
    spec = importlib.util.spec_from_file_location('train_cli', ROOT / 'train.py')
    train_cli = importlib.util.module_from_spec(spec)
    env = dict(os.environ)
    try:
        spec.loader.exec_module(train_cli)
        return train_cli.parse_args(argv)
    finally:  # train.py sets OMP_WAIT_POLICY for its own process; keep this one's environment as it was
        os.environ.clear()
        os.environ.update(env)


def check_torchrun_parses(work: Work, command: Command) -> None:
    """torchrun takes its options, and train.py takes the rest, naming files of the repository."""
    from torch.distributed.run import get_args_parser
    args = get_args_parser().parse_args(list(command.argv[1:]))
    assert args.training_script == 'train.py'
    parsed = parse_train_args(list(args.training_script_args))
    assert (ROOT / parsed.cfg).is_file() and (ROOT / parsed.data).is_file()


def check_train_example_parses(work: Work, command: Command) -> None:
    """train.py takes the options, and the cfg and data named are files of the repository."""
    parsed = parse_train_args(list(command.argv[2:]))
    assert (ROOT / parsed.cfg).is_file() and (ROOT / parsed.data).is_file()


def check_camera_options(work: Work, command: Command) -> None:
    """Everything up to opening the camera: with a camera index that no machine has, the command loads the
    weights and stops with the camera message (an option error would exit 2 with argparse's usage)."""
    argv = list(command.argv)
    argv[argv.index('--source') + 1] = '97'
    work.make_inputs_of(argv)
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=work.path, env=child_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 1 and 'camera 97: not available' in proc.stderr, proc.stderr[-2000:]


RULES: list[Rule] = [
    Rule(('python', 'train.py', '--resume'), 'resumes runs/train/exp, stopped after update 1 of 2 (only --device '
         'and --workers may be given with --resume)', check_resumed, append=('--workers', '0', '--device', 'cpu')),
    Rule(('python', 'train.py'), 'one update of 2 images at 64 px (random=0: multi-scale would pick 320-608 px)',
         check_trained, append=TRAIN_SMALL, cfg_set=('region.random=0',)),
    Rule(('python', 'evaluate.py', 'voc'), 'result files of 3 images', check_voc_files),
    Rule(('python', 'evaluate.py', 'kitti'), 'result files of 41 frames', check_kitti_files),
    Rule(('python', 'evaluate.py'), 'a few images at 64 px', check_evaluated,
         append=('--size', '64', '--workers', '0', '--device', 'cpu')),
    Rule(('python', 'detect.py'), 'a few images or frames at 64 px', check_detected,
         append=('--img-size', '64', '--device', 'cpu')),
    Rule(('python', '-m', 'yolo_lrm.export'), 'the 64 px fixture model', check_exported),
    Rule(('python', '-m', 'yolo_lrm.data.convert'), 'a few images', check_converted, append=('--workers', '1')),
    Rule(('python', '-m', 'yolo_lrm.data.convert', 'yolo'), 'a few images (it reads headers in one process)',
         check_converted),
    Rule(('python', '-m', 'yolo_lrm.data.anchors'), 'the stand-in BCCD\'s 3 train boxes: 3 anchors', check_anchors,
         replace=(('-k', '3'),), when=lambda c: '--data' in c.argv),
    Rule(('python', '-m', 'yolo_lrm.data.anchors'), '123 boxes', check_anchors),
    Rule(('python', '-m', 'yolo_lrm.model'), 'as written', check_layer_table),
    Rule(('python', '-m', 'yolo_lrm.weights', 'partial'), 'random weights', check_partial,
         outputs=lambda argv: argv[6:7]),
    Rule(('python', '-m', 'yolo_lrm.backbones'), 'a random state_dict with timm\'s keys instead of the download',
         check_backbone, append=('--checkpoint', TIMM_STAND_IN),
         outputs=lambda argv: [argv[argv.index('--out') + 1]]),
    # matplotlib hidden: each grid run draws its results.png (1.5 s of CPU here, most of a tiny run); the train.py
    # commands above still draw theirs
    Rule(('python', '-m', 'yolo_lrm.experiments'), 'every grid run one update of 2 images at 64 px: the --budget '
         'preset is replaced by a tiny budget file (a preset fixes the run length); no plots', check_grid,
         append=('--workers', '0', '--device', 'cpu'), replace=(('--budget', TINY_BUDGET),), hide=('matplotlib',)),
    Rule(('python', '-m', 'yolo_lrm.labelcheck'), 'the 64 px runs/train/exp on the tiny demo set; --folds: the tiny '
         'budget file (one update of 2 images per fold)', check_labelchecked,
         append=('--workers', '0', '--device', 'cpu'), replace=(('--budget', TINY_BUDGET),), hide=('matplotlib',)),
]

SKIPPED: list[Skip] = [
    Skip(('bash', 'scripts/demo.sh'), 'installs and trains for minutes: .ci/run runs it in a short form on the fresh '
         'clone', check_script_wired_into_ci),
    Skip(('bash', 'scripts/test.sh'), 'runs this very test suite: .ci/run runs it', check_script_wired_into_ci),
    Skip(('python',), 'the onnx extra is not installed (pip install "yolo_lrm[onnx]"); '
         'checked: the command says so', check_onnx_extra_named, when=_without_onnx),
    Skip(('torchrun',), 'starts several training processes (multi-GPU); checked: the options parse and name files '
         'of the repository', check_torchrun_parses),
    Skip(('python', 'detect.py'), 'needs a camera and a window; checked: runs up to opening the camera',
         check_camera_options, when=_is_camera),
    # the README shows the same kinds of run, and each yolov2-voc run costs ~9 s of CPU here
    Skip(('python', 'train.py'), 'a train.py --help example that the README does not show; checked: the options '
         'parse and name files of the repository', check_train_example_parses,
         when=lambda c: c.where.startswith('train.py:')),
]

COMMANDS = documented_commands()


def rule_for(command: Command) -> Rule | Skip | None:
    """The skip entry or rule for a command (skips first, then the longest matching prefix)."""
    for entry in SKIPPED:
        if entry.matches(command):
            return entry
    matching = [r for r in RULES if r.matches(command)]
    return max(matching, key=lambda r: len(r.prefix)) if matching else None


# ------------------------------------------------------------------------------------------------- tests
def test_readme_commands_are_found():
    """The parser sees the README's commands (a renamed fence would otherwise silently drop them all)."""
    readme = [c for c in COMMANDS if c.where.startswith('README.md')]
    assert len(readme) >= 20
    # .ci/run runs the README's first command (in a short form): keep the two in step
    assert readme[0].argv == ('bash', 'scripts/demo.sh'), 'the README starts with another command: update .ci/run'
    assert not unfenced_command_lines(ROOT / 'README.md'), 'command lines outside ```bash blocks are not run'


@pytest.mark.parametrize('command', COMMANDS, ids=lambda c: f'{c.where} {c}'[:100])
def test_documented_command_runs(command: Command, work: Work):
    """The command exits 0 on tiny inputs and writes what it should."""
    entry = rule_for(command)
    if entry is None:
        pytest.fail(f'{command.where}: no rule runs `{command}`. Add a Rule (and any new input path to INPUTS) in '
                    f'tests/test_readme.py, or a Skip with the reason if it cannot run in a test.')
    if isinstance(entry, Skip):
        entry.check(work, command)
        pytest.skip(f'{command.where} `{command}`: not run: {entry.reason}')
    argv = entry.rewrite(command.argv)
    outputs = entry.outputs(argv)
    for out in outputs:  # so that the checks see what this command wrote
        (work.path / out).unlink(missing_ok=True)
    work.make_inputs_of(argv, outputs)
    before, started = runs_snapshot(work.path), time.time()
    run_argv = [sys.executable if argv[0] in ('python', 'python3') else argv[0], *argv[1:]]
    proc = subprocess.run(run_argv, cwd=work.path, env=child_env(work, entry.hide), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 0, (
        f'{command.where}: `{command}` failed (exit {proc.returncode}); run here as `{shlex.join(argv)}` '
        f'({entry.why}).\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}\n'
        f'If the README now names a new input file, add a stand-in for it to INPUTS in tests/test_readme.py.')
    entry.check(Outcome(work.path, argv, proc.stdout, started, before))


def test_darknet19_cut_fills_the_yolov2_voc_backbone(tmp_path, monkeypatch):
    """The README's `partial` command on a random cfg/darknet19_448.cfg file keeps the 18 convs of layers 0-22, and
    they load into cfg/yolov2-voc.cfg as exactly its first 18 convs, number for number; the rest stay untouched."""
    from yolo_lrm.weights import load_darknet_weights
    from yolo_lrm.weights import main as weights_main
    command = next(c for c in COMMANDS if c.argv[:4] == ('python', '-m', 'yolo_lrm.weights', 'partial'))
    cfg, source, out, n = command.argv[4:8]
    torch.manual_seed(1)
    darknet19 = Darknet(ROOT / cfg)
    with torch.no_grad():  # every stored number distinct from a fresh network's (BN scales 1, means 0, ...)
        for _, block in darknet19.conv_layers():
            for t in filter(None, (block.bn, block.conv)):
                for p in (*t.parameters(), *(b for b in t.buffers() if b.dtype.is_floating_point)):
                    p.uniform_(0.5, 1.5)
    darknet19.seen = 123456
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'cfg').symlink_to(ROOT / 'cfg')
    for path in (source, out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_darknet_weights(darknet19, source)
    weights_main(list(command.argv[3:]))

    torch.manual_seed(2)
    voc = Darknet(ROOT / 'cfg' / 'yolov2-voc.cfg')
    before = {k: v.clone() for k, v in voc.state_dict().items()}
    assert load_darknet_weights(voc, out, partial=True) == 18 and voc.seen == 0
    cut = dict(darknet19.conv_layers())
    for index, block in voc.conv_layers():
        for name, value in block.state_dict().items():
            if index < int(n):
                assert cut[index].state_dict()[name].equal(value), (index, name)
            else:
                assert before[f'layers.{index}.{name}'].equal(value), (index, name)
    assert sum(1 for i, _ in voc.conv_layers() if i < int(n)) == 18
