"""Darknet's learning-rate schedule against values computed by hand from `get_current_rate` (pjreddie HEAD)."""
import math

import pytest

from yolo_lrm.cfg import parse_cfg_text
from yolo_lrm.train.schedule import current_batch, learning_rate, schedule_warnings


def net(**keys) -> dict:
    base = dict(learning_rate=0.001, burn_in=0, power=4.0, policy='constant', steps=[], scales=[], step=1,
                scale=1.0, gamma=1.0, max_batches=0)
    return {**base, **keys}


def test_burn_in_power_4():
    n = net(burn_in=1000, policy='steps', steps=[40000, 60000], scales=[.1, .1])
    assert learning_rate(n, 0) == 0.0
    assert learning_rate(n, 1) == pytest.approx(1e-3 * 1e-12, rel=1e-12)
    assert learning_rate(n, 500) == pytest.approx(1e-3 * 0.5 ** 4, rel=1e-12)     # 6.25e-5, not linear's 5e-4
    assert learning_rate(n, 999) == pytest.approx(1e-3 * 0.999 ** 4, rel=1e-12)
    assert learning_rate(n, 1000) == pytest.approx(1e-3)                        # burn-in over: policy takes over


def test_burn_in_custom_power():
    assert learning_rate(net(burn_in=100, power=2.0), 50) == pytest.approx(1e-3 * 0.25)


def test_steps_boundary_is_inclusive():
    n = net(policy='steps', steps=[40000, 60000], scales=[.1, .1])
    assert learning_rate(n, 39999) == pytest.approx(1e-3)
    assert learning_rate(n, 40000) == pytest.approx(1e-4)      # steps[i] <= batch_num applies the scale
    assert learning_rate(n, 59999) == pytest.approx(1e-4)
    assert learning_rate(n, 60000) == pytest.approx(1e-5)
    assert learning_rate(n, 80200) == pytest.approx(1e-5)


def test_steps_with_scale_up():
    n = net(policy='steps', steps=[100, 20000, 30000], scales=[10, .1, .1], learning_rate=1e-4)
    assert [learning_rate(n, k) for k in (1, 99, 100, 19999, 20000, 30000)] == pytest.approx(
        [1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-5])


def test_negative_step_head_bug_tiny_yolo():
    # yolov2-tiny-voc.cfg: a size_t batch_num compares -1 as 2^64-1 > batch_num, so the walk returns the base lr
    n = net(policy='steps', steps=[-1, 100, 20000, 30000], scales=[.1, 10, .1, .1])
    for k in (1, 6, 99, 100, 150, 20000, 25000, 30000, 40200):
        assert learning_rate(n, k) == 1e-3
    warnings = schedule_warnings(n)
    assert len(warnings) == 1 and 'steps[0]=-1' in warnings[0]


def test_negative_step_later_in_list_keeps_earlier_scales():
    n = net(policy='steps', steps=[100, -5, 300], scales=[.1, 10, .1])
    assert learning_rate(n, 50) == pytest.approx(1e-3)
    assert learning_rate(n, 100) == pytest.approx(1e-4)
    assert learning_rate(n, 1000) == pytest.approx(1e-4)   # stops at the negative entry


def test_poly():
    n = net(policy='poly', learning_rate=0.1, max_batches=800000)
    assert learning_rate(n, 0) == pytest.approx(0.1)
    assert learning_rate(n, 400000) == pytest.approx(0.1 * 0.5 ** 4)
    assert learning_rate(n, 800000) == 0.0
    assert learning_rate(net(policy='poly', learning_rate=0.1, max_batches=1000, power=1.0), 250) == \
        pytest.approx(0.075)


def test_step_and_exp_and_constant():
    assert learning_rate(net(policy='step', learning_rate=.01, step=100, scale=.5), 99) == pytest.approx(.01)
    assert learning_rate(net(policy='step', learning_rate=.01, step=100, scale=.5), 250) == pytest.approx(.0025)
    assert learning_rate(net(policy='step', step=-3, scale=.5), 250) == pytest.approx(1e-3)   # unsigned quotient 0
    assert learning_rate(net(policy='exp', gamma=.99), 10) == pytest.approx(1e-3 * 0.99 ** 10)
    assert learning_rate(net(), 12345) == 1e-3


def test_sigmoid_including_unsigned_wrap():
    n = net(policy='sigmoid', gamma=0.01, step=100)
    assert learning_rate(n, 200) == pytest.approx(1e-3 / (1 + math.e))
    assert learning_rate(n, 100) == pytest.approx(5e-4)
    assert learning_rate(n, 50) == 0.0                      # batch_num - step wraps to ~2^64
    assert schedule_warnings(n)


def test_reads_a_parsed_net_section():
    cfg = parse_cfg_text('[net]\nlearning_rate=0.001\nburn_in=100\npolicy=steps\nsteps=400,500\nscales=.1,.1\n'
                         'max_batches=600\n[convolutional]\nfilters=4\n')
    assert learning_rate(cfg.net, 500) == pytest.approx(1e-5)
    assert schedule_warnings(cfg.net) == []


def test_update_counting_is_darknets():
    # batch=64 subdivisions=8: seen grows by 8 before each forward; the update runs after the 8th mini-batch,
    # when seen=64, so the first update uses batch_num 1 (and burn-in's first lr is lr*(1/burn_in)^4, not 0)
    n = net(burn_in=1000)
    seen = 0
    for _ in range(8):
        seen += 8
    assert current_batch(seen, 64) == 1
    assert learning_rate(n, current_batch(seen, 64)) == pytest.approx(1e-3 * (1 / 1000) ** 4)
    assert current_batch(64 * 1000 - 8, 64) == 999   # mid-update: still counts completed updates


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match='scale per step'):
        learning_rate(net(policy='steps', steps=[1, 2], scales=[.1]), 5)
    with pytest.raises(ValueError, match='max_batches'):
        learning_rate(net(policy='poly'), 5)
    with pytest.raises(ValueError, match='burn_in'):
        learning_rate(net(burn_in=-1), 5)
