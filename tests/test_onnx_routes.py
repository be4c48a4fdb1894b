"""detect.py and evaluate.py on an ONNX export (`--weights m.onnx`, `evaluate.py - DATA m.onnx`, a .pt through the
cache: detect.py's auto on a CPU, or `--engine onnx`) give the PyTorch route's detections and mAP, through the one
loader (`engines.load_network`); auto falls back to PyTorch, saying why, where ONNX Runtime cannot run the model;
evaluate.py's auto keeps PyTorch; and the bad inputs stop with one line naming the file."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from test_onnxrun import NEED, dataset, need_onnx, onnx_model, weights  # noqa: F401  (module fixtures: .pt, its
# export, a .data)
from yolo_lrm.inference.detect import main as detect_main
from yolo_lrm.engines import ORT_GAIN, cache_dir, cache_key, load_network
from yolo_lrm.evaluate_cli import main as eval_main


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A cache folder of the test's own (conftest's is the session's), empty at its start: what a test exports
    is what it finds there."""
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


def detections(weights_path, images, out, capsys, *extra: str):  # noqa: F811
    """detect.py's JSON detections per image (x1 y1 x2 y2 score class), and what it printed (`.out`, `.err`)."""
    summary = detect_main(['--weights', str(weights_path), '--source', str(images), '--project', str(out),
                           '--name', 'run', '--quiet', '--nosave', '--save-json', '--conf', '0.05', *extra])
    records = json.loads((summary.save_dir / 'detections.json').read_text())['images']
    return [np.array([d['box'] + [d['score'], d['class']] for d in r['detections']]) for r in records], \
        capsys.readouterr()


def route(printed) -> str:
    """detect.py's engine line."""
    return next(ln for ln in printed.out.splitlines() if ln.startswith('engine: '))


def assert_same_detections(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """Equal within float rounding (ONNX Runtime's kernels against PyTorch's), image by image."""
    assert len(got) == len(want) and sum(map(len, want)) > 0
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=0.02, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- the routes
def test_detect_on_an_export_gives_pytorchs_detections(weights, onnx_model, images, tmp_path, capsys):  # noqa: F811
    want, printed = detections(weights, images, tmp_path / 'pt', capsys, '--engine', 'torch')
    assert route(printed) == 'engine: PyTorch on cpu (--engine torch)'
    got, printed = detections(onnx_model, images, tmp_path / 'onnx', capsys)
    assert route(printed) == f'engine: ONNX Runtime fp32 on the CPU (an ONNX export: {onnx_model})'
    assert_same_detections(got, want)


def test_auto_on_a_cpu_runs_a_pt_with_onnxruntime_exported_once(weights, images, tmp_path, capsys,  # noqa: F811
                                                                cache):
    need_onnx()
    want, _ = detections(weights, images, tmp_path / 'pt', capsys, '--engine', 'torch')
    got, printed = detections(weights, images, tmp_path / 'first', capsys, '--device', 'cpu')
    cached = sorted((cache / 'onnx').glob('*.onnx'))
    assert len(cached) == 1 and re.fullmatch(r'net-64x64-[0-9a-f]{16}\.onnx', cached[0].name)
    assert cache_dir() == cache
    assert re.fullmatch(rf'engine: ONNX Runtime fp32 on the CPU \(auto: the fastest route on a CPU; cached export '
                        rf'{re.escape(str(cached[0]))}, exported now in \d+\.\d s\)', route(printed)), route(printed)
    assert f'{weights}: exporting to ONNX once for ONNX Runtime (--engine torch skips it): {cached[0]}' in printed.err
    assert_same_detections(got, want)
    # the next run reuses the export; --half (autocast on CUDA only) is said to change nothing
    stamp = cached[0].stat().st_mtime_ns
    again, printed = detections(weights, images, tmp_path / 'again', capsys, '--device', 'cpu', '--half')
    assert route(printed) == f'engine: ONNX Runtime fp32 on the CPU (auto: the fastest route on a CPU; cached ' \
                             f'export {cached[0]}, reused)'
    assert '--half: autocast is used on CUDA only; running fp32 on the CPU' in printed.out.splitlines()
    assert 'exporting' not in printed.err and cached[0].stat().st_mtime_ns == stamp
    for a, b in zip(again, got):
        np.testing.assert_array_equal(a, b)
    # --engine onnx takes the same cache; another input size would be another export (not made: ~10 s)
    assert load_network(weights, engine='onnx').route == \
        f'ONNX Runtime fp32 on the CPU (--engine onnx; cached export {cached[0]}, reused)'
    assert cache_key(str(weights), None, [], (96, 96)) != cache_key(str(weights), None, [], (64, 64)) == \
        cached[0].stem.rsplit('-', 1)[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='auto on a GPU: needs CUDA')
def test_auto_on_a_gpu_runs_pytorch(weights, cache):  # noqa: F811
    loaded = load_network(weights)
    assert loaded.route == 'PyTorch on cuda:0 (auto: PyTorch on a GPU, ONNX Runtime on a CPU)'
    assert next(loaded.net.parameters()).is_cuda and not cache.exists()


def hide_onnxruntime(monkeypatch) -> None:
    """Make onnxruntime look not installed (what the package checks look at) for the rest of the test."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'onnxruntime' else real(name, *a))


def test_auto_without_onnxruntime_falls_back_to_pytorch_saying_why(weights, images, tmp_path, capsys,  # noqa: F811
                                                                   monkeypatch, cache):
    want, _ = detections(weights, images, tmp_path / 'pt', capsys, '--engine', 'torch')
    hide_onnxruntime(monkeypatch)
    got, printed = detections(weights, images, tmp_path / 'auto', capsys, '--device', 'cpu')
    assert route(printed) == (f'engine: PyTorch on cpu (auto: {ORT_GAIN}, but onnxruntime is not installed: '
                              f'pip install "yolo_lrm[onnx]" (or pip install onnxruntime))')
    assert not cache.exists()  # checked before anything was exported
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="auto_cpu must be one of onnx, torch, got 'fast'"):
        load_network(weights, auto_cpu='fast')


def test_auto_falls_back_to_pytorch_when_the_export_cannot_be_made(weights, images, tmp_path, capsys,  # noqa: F811
                                                                   monkeypatch):
    need_onnx()
    blocker = tmp_path / 'a-file'  # the cache folder cannot be made under it
    blocker.write_text('')
    monkeypatch.setenv('YOLO_LRM_CACHE', str(blocker))
    _, printed = detections(weights, images, tmp_path / 'auto', capsys, '--device', 'cpu')
    reason = (f'{blocker / "onnx"}: cannot create the ONNX export cache (Not a directory): set YOLO_LRM_CACHE to a '
              f'writable folder')
    assert route(printed) == f'engine: PyTorch on cpu (auto: {ORT_GAIN}, but {reason})'
    assert 'exporting' not in printed.err  # found before the export's seconds were spent
    # asked for by name, the same reason is an error
    assert exit_message(detect_main, ['--weights', str(weights), '--source', str(images), '--project',
                                      str(tmp_path), '--engine', 'onnx']) == f'error: {reason}'


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


def test_evaluate_on_an_export_gives_pytorchs_map(weights, onnx_model, scored_data, tmp_path, capsys,  # noqa: F811
                                                  cache):
    maps, routes = {}, {}
    for name, model in (('pt', weights), ('onnx', onnx_model)):
        out = tmp_path / name
        eval_main(['-', str(scored_data), str(model), '--out', str(out), '--workers', '0', '--batch', '2',
                   '--device', 'cpu'])
        maps[name] = json.loads((out / 'eval.json').read_text())
        routes[name] = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('engine: ')]
    # evaluate.py's auto keeps PyTorch for a .pt on a CPU (scores as training's validation), converting nothing
    assert routes['pt'] == [f'engine: PyTorch on cpu (auto; --engine onnx exports it once for {ORT_GAIN})']
    assert not cache.exists()
    assert routes['onnx'] == [f'engine: ONNX Runtime fp32 on the CPU (an ONNX export: {onnx_model})']
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
    hide_onnxruntime(monkeypatch)
    message = exit_message(detect_main, ['--weights', str(onnx_model), '--source', str(images),
                                         '--project', str(tmp_path)])
    assert 'pip install "yolo_lrm[onnx]"' in message
