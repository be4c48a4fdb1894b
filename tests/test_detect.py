"""detect.py end to end on a model overfitted in the fixture (two classes: a red and a green square), plus the
source, output-format and error-path pieces."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_lrm import checkpoint
from yolo_lrm.box import iou_cxcywh, xyxy_to_cxcywh
from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.data.labels import read_image
from yolo_lrm.inference.detect import main
from yolo_lrm.inference.detector import Detector
from yolo_lrm.inference.writers import darknet_label_lines
from yolo_lrm.distributed import pick_device
from yolo_lrm.runfolder import increment_dir
from yolo_lrm.reports.draw import clip_boxes, palette
from yolo_lrm.letterbox import letterbox, letterbox_size
from yolo_lrm.loss.region import RegionLoss
from yolo_lrm.model import Darknet
from yolo_lrm.inference.sources import SourceError, resolve_source

NAMES = ['red', 'green']
TWO_SQUARES = [(0, 16, 56, 52), (1, 116, 16, 52)]  # (class, x, y, side) in a 192x128 image
HIT = 0.4  # IoU that counts as 'found in the right place' (the fixture model's boxes are within ~5 px)
STEPS = 320  # 200 left one video frame at IoU .39 on an Intel Xeon (0.72 or more at 320)
BATCH = 8
COLORS_RGB = np.array([[255, 40, 40], [40, 255, 40]], np.uint8)
_CONV = '[convolutional]\nbatch_normalize=1\nfilters={}\nsize=3\npad=1\nactivation=leaky\n[maxpool]\nsize=2\nstride=2\n'
NET = 128  # network input: a 4x4 grid
TINY_CFG = (f'[net]\nwidth={NET}\nheight={NET}\n' + ''.join(_CONV.format(f) for f in (4, 8, 16, 32, 64)) +
            '[convolutional]\nfilters=14\nsize=1\nactivation=linear\n'
            '[region]\nanchors=1,1,1.6,1.6\nclasses=2\nnum=2\nsoftmax=1\nobject_scale=5\n')


def scene(w: int, h: int, squares: list[tuple[int, int, int, int]], seed: int = 0) -> np.ndarray:
    """RGB image: dark noise with filled squares (class, x, y, side)."""
    img = np.random.default_rng(seed).integers(0, 50, (h, w, 3)).astype(np.uint8)
    for c, x, y, s in squares:
        img[y:y + s, x:x + s] = COLORS_RGB[c]
    return img


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread: the machine's cores are shared, and oversubscribed OpenMP is 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TRAIN_SIZES = [(128, 128), (192, 128), (128, 176), (160, 120)]


def random_squares(w: int, h: int, k: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Up to k non-overlapping squares (class, x, y, side) of random class, size and place."""
    squares: list[tuple[int, int, int, int]] = []
    for _ in range(k):
        s = int(rng.integers(36, 64))
        x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
        if all(x + s <= x2 or x2 + s2 <= x or y + s <= y2 or y2 + s2 <= y for _, x2, y2, s2 in squares):
            squares.append((int(rng.integers(0, 2)), x, y, s))
    return squares


def training_set(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n letterboxed scenes of assorted aspect ratios with one or two squares each, and their (n, 2, 5) targets."""
    images, targets = [], torch.full((n, 2, 5), -1.0)
    for i in range(n):
        w, h = TRAIN_SIZES[i % len(TRAIN_SIZES)]
        squares = random_squares(w, h, 1 + i % 2, rng)
        images.append(letterbox(scene(w, h, squares, seed=i + 1), NET, NET))
        nw, nh = letterbox_size(w, h, NET, NET)
        ox, oy = (NET - nw) // 2, (NET - nh) // 2
        for j, (c, x, y, s) in enumerate(squares):  # targets in letterboxed network coordinates
            targets[i, j] = torch.tensor([c, (ox + (x + s / 2) * nw / w) / NET, (oy + (y + s / 2) * nh / h) / NET,
                                          s * nw / w / NET, s * nh / h / NET])
    return torch.from_numpy(np.stack(images)), targets


@pytest.fixture(scope='module')
def weights(tmp_path_factory, one_thread) -> Path:
    """A tiny 128 px detector overfitted for STEPS SGD steps to one coloured square per image (~10 s of CPU)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x_all, targets = training_set(64, rng)
    net = Darknet(parse_cfg_text(TINY_CFG, 'tiny.cfg'))
    crit = RegionLoss(net.region, net.cfg.lrm)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    net.train()
    for step in range(STEPS):
        idx = torch.from_numpy(rng.choice(len(x_all), BATCH, replace=False))
        for g in opt.param_groups:
            g['lr'] = 0.02 * min(1.0, (step + 1) / 30)  # burn-in, as Darknet's burn_in does
        loss = crit(net(x_all[idx]), targets[idx], step * BATCH).total / BATCH
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        opt.step()
    # Darknet's BN momentum (.01) has not converged after so few steps: recompute the running statistics exactly
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net(x_all)
    path = tmp_path_factory.mktemp('weights') / 'tiny.pt'
    checkpoint.save_checkpoint(checkpoint.model_checkpoint(net.eval(), NAMES), path)
    return path


def run_detect(weights: Path, source, out: Path, *extra: str):
    """detect.py on PyTorch, whose boxes these tests compare with evaluation's bit for bit (auto on a CPU would
    export to ONNX Runtime: that route's tests are test_onnx_routes.py)."""
    return main(['--weights', str(weights), '--source', str(source), '--project', str(out), '--name', 'run',
                 '--quiet', '--engine', 'torch', *extra])


def best_match(dets: list[dict], cls: int, box_xyxy: list[float]) -> float:
    """Best IoU of a detection of class `cls` with a pixel box."""
    truth = xyxy_to_cxcywh(torch.tensor(box_xyxy, dtype=torch.float32))
    ious = [iou_cxcywh(xyxy_to_cxcywh(torch.tensor(d['box'])), truth).item() for d in dets if d['class'] == cls]
    return max(ious, default=0.0)


# ------------------------------------------------------------------------------------------------ end to end
def test_image_outputs_and_boxes(weights, tmp_path):
    # 192x128: the letterbox shrinks it to 128x85 and pads, so unletterbox is exercised
    img = scene(192, 128, TWO_SQUARES, seed=99)
    src = write_rgb(tmp_path / 'two.png', img)
    summary = run_detect(weights, src, tmp_path / 'runs', '--save-txt', '--save-conf', '--save-kitti', '--save-json')
    out = summary.save_dir
    assert summary.frames == 1 and summary.fps > 0 and summary.net_fps > 0
    dets = json.loads((out / 'detections.json').read_text())['images'][0]['detections']
    assert best_match(dets, 0, [16, 56, 68, 108]) > HIT
    assert best_match(dets, 1, [116, 16, 168, 68]) > HIT
    drawn = cv2.imread(str(out / 'two.png'))
    assert drawn.shape == (128, 192, 3) and not np.array_equal(drawn, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    rows = [ln.split() for ln in (out / 'labels' / 'two.txt').read_text().splitlines()]
    assert len(rows) == len(dets) and all(len(r) == 6 for r in rows)
    top = rows[0]  # best first: class cx cy w h score, normalised
    assert 0 <= float(top[1]) <= 1 and float(top[5]) == pytest.approx(dets[0]['score'], abs=1e-5)
    kitti = [ln.split() for ln in (out / 'kitti' / 'two.txt').read_text().splitlines()]
    assert all(len(r) == 16 and r[3] == '-10' for r in kitti) and {r[0] for r in kitti} <= set(NAMES)


def test_video_with_batches(weights, tmp_path):
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (160, 120))
    truths = [(10 + 15 * i, 30 + 5 * i) for i in range(6)]
    for i, (x, y) in enumerate(truths):
        writer.write(cv2.cvtColor(scene(160, 120, [(1, x, y, 48)], seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    summary = run_detect(weights, video, tmp_path / 'runs', '--batch', '4', '--save-json', '--save-txt')
    assert summary.frames == 6
    records = json.loads((summary.save_dir / 'detections.json').read_text())['images']
    assert [r['frame'] for r in records] == list(range(6))
    for r, (x, y) in zip(records, truths):
        assert best_match(r['detections'], 1, [x, y, x + 48, y + 48]) > HIT
    assert len(list((summary.save_dir / 'labels').glob('clip_*.txt'))) == 6
    cap = cv2.VideoCapture(str(summary.save_dir / 'clip.avi'))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def write_video(path: Path, fourcc: str, frames: int) -> list[tuple[int, int]]:
    """A 160x120 clip of one moving green square; returns its (x, y) per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (160, 120))
    if not writer.isOpened():
        pytest.skip(f'this OpenCV build cannot write {path.suffix} ({fourcc})')
    truths = [(10 + 15 * i, 30 + 5 * i) for i in range(frames)]
    for i, (x, y) in enumerate(truths):
        writer.write(cv2.cvtColor(scene(160, 120, [(1, x, y, 48)], seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    return truths


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n


def test_mp4_video_is_written_as_mp4(weights, tmp_path, monkeypatch, capsys):
    video = tmp_path / 'clip.mp4'
    write_video(video, 'mp4v', 5)
    summary = run_detect(weights, video, tmp_path / 'runs', '--batch', '2')
    assert summary.frames == 5 and sorted(p.name for p in summary.save_dir.iterdir()) == ['clip.mp4']
    assert frame_count(summary.save_dir / 'clip.mp4') == 5
    # a build that cannot write mp4 falls back to MJPG in .avi, and says so
    real = cv2.VideoWriter
    monkeypatch.setattr(cv2, 'VideoWriter', lambda path, *a: real('', *a) if path.endswith('.mp4') else real(path, *a))
    capsys.readouterr()
    summary = run_detect(weights, video, tmp_path / 'runs', '--exist-ok')
    assert frame_count(summary.save_dir / 'clip.avi') == 5
    assert "cannot write .mp4" in capsys.readouterr().out


def test_names_file_with_a_utf8_bom_reads_clean(tmp_path):
    import argparse
    from yolo_lrm.inference.detect import resolve_names
    (tmp_path / 'names').write_bytes('\ufeffred\ngreen\n'.encode())
    args = argparse.Namespace(names=str(tmp_path / 'names'), data=None, weights='w.pt')
    assert resolve_names(args, None, 2) == ['red', 'green']


def test_folder_skips_corrupt_and_batching_is_exact(weights, tmp_path, capsys):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for i in range(3):
        write_rgb(folder / f'im{i}.jpg', scene(150, 110, [(i % 2, 10 + 20 * i, 20, 48)], seed=i))
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    (folder / 'notes.md').write_text('ignored: not an image')
    one = run_detect(weights, folder, tmp_path / 'runs', '--save-json', '--nosave')
    assert 'skip:' in capsys.readouterr().out and one.skipped == [str(folder / 'broken.jpg')]
    four = run_detect(weights, folder, tmp_path / 'runs', '--save-json', '--nosave', '--batch', '4')
    assert one.frames == four.frames == 3 and four.save_dir.name == 'run2'  # auto-increment
    a, b = (json.loads((s.save_dir / 'detections.json').read_text())['images'] for s in (one, four))
    assert [[d['box'] for d in r['detections']] for r in a] == [[d['box'] for d in r['detections']] for r in b]


def test_class_filter_and_max_det(weights, tmp_path):
    src = write_rgb(tmp_path / 'two.jpg', scene(192, 128, TWO_SQUARES, seed=5))

    def detections(*extra):
        s = run_detect(weights, src, tmp_path / 'runs', '--save-json', '--nosave', '--conf', '0.05', *extra)
        return json.loads((s.save_dir / 'detections.json').read_text())['images'][0]['detections']

    every = detections()
    assert {d['class'] for d in every} == {0, 1} and len(every) > 2
    assert {d['class'] for d in detections('--classes', '1')} == {1}
    assert {d['class'] for d in detections('--classes', 'red')} == {0}
    top = detections('--max-det', '1')
    assert len(top) == 1 and top[0] == every[0]


def test_view_without_gui_is_a_message(weights, tmp_path, capsys):
    src = write_rgb(tmp_path / 'a.jpg', scene(128, 128, [(0, 30, 30, 40)]))
    assert run_detect(weights, src, tmp_path / 'runs', '--view', '--nosave').frames == 1
    assert '--view:' in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ error paths
@pytest.mark.parametrize('make, message', [
    (lambda d: d / 'missing.jpg', 'missing.jpg: no such file'),
    (lambda d: (d / 'bad.jpg').write_bytes(b'junk') and d / 'bad.jpg', 'bad.jpg: cannot decode image'),
    (lambda d: (d / 'bad.avi').write_bytes(b'junk' * 100) and d / 'bad.avi', 'bad.avi: cannot open video'),
    (lambda d: d / 'empty', 'empty: folder has no images'),
    (lambda d: d / 'nomatch*.png', 'matches no image files'),
    (lambda d: '97', 'camera 97: not available'),
    (lambda d: 'rtsp://127.0.0.1:9/none', 'rtsp://127.0.0.1:9/none: cannot open stream'),
])
def test_bad_sources_exit_with_a_message(weights, tmp_path, make, message):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SystemExit) as exc:
        run_detect(weights, make(tmp_path), tmp_path / 'runs')
    assert message in str(exc.value) and str(exc.value).startswith('error: ')


def test_bad_options_exit_with_a_message(weights, tmp_path):
    src = write_rgb(tmp_path / 'a.jpg', scene(64, 64, []))
    for extra, message in [(['--img-size', '100'], 'multiple of the network stride 32'),
                           (['--classes', 'blue'], "'blue' is neither"),
                           (['--device', 'cuda:0'] if not torch.cuda.is_available() else ['--device', 'tpu'], '')]:
        with pytest.raises(SystemExit) as exc:
            run_detect(weights, src, tmp_path / 'runs', *extra)
        assert str(exc.value).startswith('error: ') and message in str(exc.value)
    with pytest.raises(SystemExit, match='needs its cfg: pass --cfg CFG'):
        run_detect(src, src, tmp_path / 'runs')  # not a .pt: taken as Darknet .weights, which need --cfg
    corrupt = tmp_path / 'corrupt.pt'
    corrupt.write_bytes(b'\x00' * 64)
    with pytest.raises(SystemExit, match='corrupt.pt'):
        run_detect(corrupt, src, tmp_path / 'runs')


# ------------------------------------------------------------------------------------------------ pieces
def test_resolve_source_kinds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ('b.jpg', 'a.png'):
        write_rgb(tmp_path / name, scene(32, 32, []))
    (tmp_path / 'list.txt').write_text('a.png\nb.jpg\n\n')  # relative to the list's folder
    assert resolve_source('list.txt').items == [str(tmp_path / 'a.png'), str(tmp_path / 'b.jpg')]
    assert resolve_source(str(tmp_path)).items == [str(tmp_path / 'a.png'), str(tmp_path / 'b.jpg')]
    assert resolve_source('*.jpg').items == ['b.jpg']
    assert resolve_source('0').kind == 'stream' and resolve_source('rtsp://cam/1').live
    assert resolve_source('http://host/v.mp4?x=1').kind == 'video'
    with pytest.raises(SourceError, match='empty.txt: list file is empty'):
        (tmp_path / 'empty.txt').write_text('\n')
        resolve_source('empty.txt')
    assert increment_dir(tmp_path / 'r').name == 'r' and increment_dir(tmp_path / 'r').name == 'r2'


def test_pick_device_spellings(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # the CPU-only machine, also on a GPU runner
    assert pick_device('') == pick_device(None) == torch.device('cpu')
    assert pick_device('cpu') == pick_device(' CPU ') == torch.device('cpu')
    for spec in ('0', 'cuda', 'cuda:1'):
        with pytest.raises(ValueError, match=f'--device {spec}: CUDA is not available'):
            pick_device(spec)
    with pytest.raises(ValueError, match='--device tpu: not a device'):
        pick_device('tpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # a 2-GPU machine, without touching CUDA
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    assert pick_device('1') == pick_device('cuda:1') == torch.device('cuda', 1)
    assert pick_device('cuda', local_rank=1) == torch.device('cuda', 1)
    for spec in ('2', 'cuda:2'):
        with pytest.raises(ValueError, match=f'--device {spec}: CUDA device 2 asked for, but this machine has 2 '
                                             r'\(indices 0-1\)'):
            pick_device(spec)
    with pytest.raises(ValueError, match='--device cuda: CUDA device 2 asked for'):  # torchrun's LOCAL_RANK 2
        pick_device('cuda', local_rank=2)


def test_result_line_formats():
    dets = np.array([[10, 20, 50, 80, 0.9, 1]], np.float32)
    assert darknet_label_lines(dets, 100, 200, False) == ['1 0.300000 0.250000 0.400000 0.300000']
    assert darknet_label_lines(dets, 100, 200, True)[0].endswith(' 0.900000')


def test_palette_is_darknets():
    colors = palette(20)
    assert colors[0].tolist() == [255, 0, 255]  # class 0: offset 0 -> Darknet's first colour, magenta
    assert len({tuple(c) for c in colors.tolist()}) == 20


def test_detector_api_matches_cli_boxes(weights, tmp_path):
    img = scene(192, 128, TWO_SQUARES[:1], seed=7)
    net, _ = checkpoint.load_model(weights)
    dets = Detector(net, conf=0.25)([img])[0]
    s = run_detect(weights, write_rgb(tmp_path / 'x.png', img), tmp_path / 'runs', '--save-json', '--nosave')
    cli = json.loads((s.save_dir / 'detections.json').read_text())['images'][0]['detections']
    assert len(cli) == len(dets)
    assert cli[0]['box'] == pytest.approx(dets[0, :4].clamp(min=0).tolist(), abs=0.01)


def test_same_boxes_as_evaluation(weights, tmp_path):
    from yolo_lrm.evaluation.evaluate import predict_list
    paths = [str(write_rgb(tmp_path / f'im{i}.png', scene(160 + 32 * i, 120, TWO_SQUARES, seed=i))) for i in range(2)]
    expected = predict_list(checkpoint.load_model(weights)[0], paths, conf=0.05, batch_size=1, progress=False)
    # unfused, NCHW: the very same computation, so bit-identical boxes and scores
    exact = Detector(checkpoint.load_model(weights)[0], conf=0.05, max_det=10 ** 6, fuse=False, channels_last=False)
    for path, want in zip(paths, expected):
        np.testing.assert_array_equal(exact([read_image(path)])[0].numpy(), want)
    # the CLI's fast path (fused BN) agrees within float rounding
    s = run_detect(weights, tmp_path / 'im*.png', tmp_path / 'runs', '--save-json', '--nosave', '--conf', '0.05')
    records = json.loads((s.save_dir / 'detections.json').read_text())['images']
    for r, want in zip(records, expected):
        got = np.array([d['box'] + [d['score'], d['class']] for d in r['detections']])
        want = clip_boxes(want, r['width'], r['height'])  # files hold boxes clipped to the image
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=0.01, rtol=0)
