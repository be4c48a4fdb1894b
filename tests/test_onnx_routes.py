"""detect.py and evaluate.py on an ONNX export (`--weights m.onnx`, `evaluate.py - DATA m.onnx`, `--engine onnx` on a
.pt through the cache) give the PyTorch route's detections and mAP, through the one loader
(`engines.load_network`); and the bad inputs stop with one line naming the file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_onnxrun import NEED, dataset, onnx_model, weights  # noqa: F401  (module fixtures: .pt, its export, a .data)
from yolo_lrm.inference.detect import main as detect_main
from yolo_lrm.engines import cache_dir, load_network
from yolo_lrm.evaluate_cli import main as eval_main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A cache folder of the test's own: conversions never touch the user's ~/.cache."""
    monkeypatch.setenv('YOLO_LRM_CACHE', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Three noise images of different shapes (the letterbox pads each differently)."""
    folder = tmp_path_factory.mktemp('set') / 'images'  # labels/ beside it: Darknet's rule finds the label files
    folder.mkdir()
    rng = np.random.default_rng(3)
    for k, (h, w) in enumerate([(48, 80), (90, 60), (64, 64)]):
        cv2.imwrite(str(folder / f'im{k}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def detections(weights_path, images, out, capsys, *extra: str) -> tuple[list[np.ndarray], str]:  # noqa: F811
    """detect.py's JSON detections per image (x1 y1 x2 y2 score class) and its printed engine line."""
    summary = detect_main(['--weights', str(weights_path), '--source', str(images), '--project', str(out),
                           '--name', 'run', '--quiet', '--nosave', '--save-json', '--conf', '0.05', *extra])
    route = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('engine: '))
    records = json.loads((summary.save_dir / 'detections.json').read_text())['images']
    return [np.array([d['box'] + [d['score'], d['class']] for d in r['detections']]) for r in records], route


def assert_same_detections(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Equal within float rounding (ONNX Runtime's kernels against PyTorch's), image by image."""
    assert len(got) == len(want) and sum(map(len, want)) > 0
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=0.02, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- the routes
def test_detect_on_an_export_gives_pytorchs_detections(weights, onnx_model, images, tmp_path, capsys):  # noqa: F811
    want, route = detections(weights, images, tmp_path / 'pt', capsys, '--device', 'cpu')
    assert route.startswith('engine: PyTorch on cpu (auto; --engine onnx exports it')
    got, route = detections(onnx_model, images, tmp_path / 'onnx', capsys)
    assert route == f'engine: ONNX Runtime fp32 on the CPU (an ONNX export: {onnx_model})'
    assert_same_detections(got, want)


def test_engine_onnx_exports_a_pt_once_into_the_cache(weights, onnx_model, images, tmp_path, capsys,  # noqa: F811
                                                      cache):
    want, _ = detections(onnx_model, images, tmp_path / 'onnx', capsys)
    got, route = detections(weights, images, tmp_path / 'first', capsys, '--engine', 'onnx')
    cached = sorted((cache / 'onnx').glob('*.onnx'))
    assert len(cached) == 1 and re.fullmatch(r'net-64x64-[0-9a-f]{16}\.onnx', cached[0].name)
    assert cache_dir() == cache
    assert route == f'engine: ONNX Runtime fp32 on the CPU (--engine onnx, {weights} exported once: {cached[0]})'
    assert_same_detections(got, want)
    stamp = cached[0].stat().st_mtime_ns
    detections(weights, images, tmp_path / 'again', capsys, '--engine', 'onnx')
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not exported again
    # another input size is another export
    load_network(weights, engine='onnx', size=(96, 96))
    assert len(list((cache / 'onnx').glob('*-96x96-*.onnx'))) == 1


@pytest.fixture(scope='module')
def scored_data(weights, images):  # noqa: F811
    """A .data over `images` whose labels are the PyTorch network's own best detection per image, so that its mAP
    is high (not the 0 of random weights against unrelated boxes) and sensitive to every score and box."""
    from yolo_lrm import checkpoint
    from yolo_lrm.evaluation.evaluate import predict_list
    paths = sorted(str(p) for p in images.glob('*.png'))
    labels = images.parent / 'labels'
    labels.mkdir(exist_ok=True)
    for path, dets in zip(paths, predict_list(checkpoint.load_model(weights)[0], paths, progress=False)):
        h, w = cv2.imread(path).shape[:2]
        x1, y1, x2, y2 = np.clip(dets[0, :4], 0, [w, h, w, h])
        (labels / (Path(path).stem + '.txt')).write_text(
            f'{int(dets[0, 5])} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n')
    (images.parent / 'valid.txt').write_text(''.join(p + '\n' for p in paths))
    (images.parent / 'names').write_text('a\nb\nc\n')
    (images.parent / 'own.data').write_text('classes=3\nvalid=valid.txt\nnames=names\n')
    return images.parent / 'own.data'


def test_evaluate_on_an_export_gives_pytorchs_map(weights, onnx_model, scored_data, tmp_path, capsys):  # noqa: F811
    maps = {}
    for name, model in (('pt', weights), ('onnx', onnx_model)):
        out = tmp_path / name
        eval_main(['-', str(scored_data), str(model), '--out', str(out), '--workers', '0', '--batch', '2',
                   '--device', 'cpu'])
        maps[name] = json.loads((out / 'eval.json').read_text())
        assert 'engine: ' + ('PyTorch' if name == 'pt' else 'ONNX Runtime fp32') in capsys.readouterr().err
    assert maps['pt']['map'] > 0.5
    assert maps['onnx']['map'] == pytest.approx(maps['pt']['map'], abs=1e-6)
    assert maps['onnx']['per_class'] == pytest.approx(maps['pt']['per_class'], abs=1e-6)


# ---------------------------------------------------------------------------------------------- bad inputs
def exit_message(call, argv: list[str]) -> str:
    """The one-line message a CLI exits with (never a traceback)."""
    with pytest.raises(SystemExit) as info:
        call(argv)
    message = str(info.value)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def test_an_onnx_without_our_metadata_is_refused(onnx_model, images, dataset, tmp_path):  # noqa: F811
    import onnx
    model = onnx.load(str(onnx_model))
    del model.metadata_props[:]
    bare = tmp_path / 'foreign.onnx'
    onnx.save(model, str(bare))
    for call, argv in ((detect_main, ['--weights', str(bare), '--source', str(images), '--project', str(tmp_path)]),
                       (eval_main, ['-', str(dataset), str(bare)])):
        assert f'{bare}: no yolo_lrm metadata in this ONNX file' in exit_message(call, argv)


def test_another_input_size_than_the_exports_is_refused(onnx_model, images, dataset, tmp_path):  # noqa: F811
    message = exit_message(detect_main, ['--weights', str(onnx_model), '--source', str(images), '--img-size', '96',
                                         '--project', str(tmp_path)])
    assert message == (f'error: {onnx_model}: exported for input 64x64, cannot run at 96x96: export again with '
                       f'--img-size, or leave the size unset')
    assert 'exported for input 64x64, cannot run at 96x96' in exit_message(
        eval_main, ['-', str(dataset), str(onnx_model), '--size', '96'])
    assert not (tmp_path / 'exp').exists()  # stopped before any output


def test_an_export_refuses_a_cfg_overrides_the_torch_engine_and_a_gpu(onnx_model, images, dataset,  # noqa: F811
                                                                         tmp_path):
    detect = ['--weights', str(onnx_model), '--source', str(images), '--project', str(tmp_path)]
    assert f'{onnx_model}: an ONNX export carries its network and takes no cfg (x.cfg given' in exit_message(
        eval_main, ['x.cfg', str(dataset), str(onnx_model)])
    assert f'{onnx_model}: an ONNX export carries its network and takes no cfg' in exit_message(
        detect_main, [*detect, '--cfg', 'x.cfg'])
    assert 'cannot take cfg overrides (net.width=96)' in exit_message(
        eval_main, ['-', str(dataset), str(onnx_model), '--set', 'net.width=96'])
    assert f'{onnx_model}: an ONNX export runs with ONNX Runtime; --engine torch needs the .pt' in exit_message(
        detect_main, [*detect, '--engine', 'torch'])
    assert '--device cuda' in exit_message(detect_main, [*detect, '--device', 'cuda'])


def test_a_dash_cfg_needs_a_file_that_carries_its_network(dataset, tmp_path):  # noqa: F811
    (tmp_path / 'm.weights').write_bytes(b'\0' * 64)
    message = exit_message(eval_main, ['-', str(dataset), str(tmp_path / 'm.weights')])
    assert f'{tmp_path / "m.weights"}: a Darknet .weights file needs its cfg' in message


def test_without_onnxruntime_an_export_says_what_to_install(onnx_model, images, tmp_path, monkeypatch):  # noqa: F811
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'onnxruntime' else real(name, *a))
    message = exit_message(detect_main, ['--weights', str(onnx_model), '--source', str(images),
                                         '--project', str(tmp_path)])
    assert 'pip install "yolo_lrm[onnx]"' in message
