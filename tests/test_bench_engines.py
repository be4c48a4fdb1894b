"""bench/bench_engines.py on a small network: every engine gives figures or the reason it has none, and the
fp32 vs INT8 accuracy table scores the exports through evaluate_model."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import bench_module
from test_export import CFG, weights  # noqa: F401  (fixture)
from test_onnxrun import NEED, dataset  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def need_onnx():
    """Skip without the onnx extra; give back torch's thread count, which the bench sets."""
    for module in ('onnx', 'onnxscript', 'onnxruntime'):
        pytest.importorskip(module, reason=NEED)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_speed_rows_and_reasons(tmp_path, dataset, capsys):  # noqa: F811
    bench = bench_module('bench_engines')
    cfg = tmp_path / 'small.cfg'
    cfg.write_text(CFG)
    out = tmp_path / 'speed.json'
    bench.main(['--cfgs', str(cfg), '--batches', '1', '2', '--rounds', '2', '--threads', '1', '--calib', str(dataset),
                '--calib-images', '2', '--engines', 'pytorch', 'ort', 'ort-int8', 'opencv', '--work',
                str(tmp_path / 'work'), '--json', str(out)])
    rows = json.loads(out.read_text())['speed']
    assert [(r['batch'], r['engine']) for r in rows] == [(b, e) for b in (1, 2)
                                                         for e in ('pytorch', 'ort', 'ort-int8', 'opencv')]
    for r in rows:
        if r['engine'] == 'opencv':
            assert r['net_ms'] is None and r['reason'].startswith('no --opencv-python given')
        else:
            assert r['net_ms'] > 0 and r['e2e_ms'] > 0 and len(r['net_runs']) == 2 and not r['reason']
    assert {p.name for p in (tmp_path / 'work').iterdir()} == {'small.weights', 'small.onnx', 'small.int8.onnx'}
    text = capsys.readouterr().out
    assert 'avx2' in text.splitlines()[0] or 'no AVX2' in text.splitlines()[0]
    assert '1.00    1.00' in text  # the PyTorch row is its own baseline


def test_accuracy_table_scores_fp32_and_int8(tmp_path, weights, dataset, capsys):  # noqa: F811
    bench = bench_module('bench_engines')
    out = tmp_path / 'acc.json'
    bench.main(['--weights', str(weights), '--data', str(dataset), '--rounds', '1', '--threads', '1',
                '--calib-images', '3', '--work', str(tmp_path / 'work'), '--json', str(out)])
    rows = json.loads(out.read_text())['accuracy']
    assert [r['model'] for r in rows] == ['pytorch', 'ort fp32', 'int8 qdq/per-channel/u8u8/head fp32']
    assert rows[0]['map'] == pytest.approx(rows[1]['map'], abs=1e-6)  # fp32 ONNX scores what PyTorch scores
    assert all(r['net_ms'] > 0 for r in rows)
    assert 'INT8 calibrated on 3 images' in capsys.readouterr().out
