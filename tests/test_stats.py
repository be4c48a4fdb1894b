"""The named layout of the per-update statistics: the loss's names are the logged names, and the reductions."""
import math

import pytest

from test_loss import as_targets, random_case, small_loss
from yolo_lrm.train import stats
from yolo_lrm.loss.region import TERMS
from yolo_lrm.train.runlog import COLUMNS


@pytest.mark.parametrize('mining', [(), ('lrm.hard_examples=8', 'lrm.nms=0.5'),
                                    ('lrm.hard_examples=8', 'lrm.select=stratified'),
                                    ('lrm.hard_examples=8', 'lrm.select=strata'),
                                    ('lrm.hard_examples=8', 'lrm.k_mode=loss_share'), ('lrm.probe=1',),
                                    ('lrm.hard_examples=8', 'lrm.probe=1')])
def test_every_statistic_the_loss_reports_has_one_place(mining):
    """A statistic added to the loss but not to stats.KEYS (or DIAGNOSTICS), or to KEYS but not to the loss, fails
    here; results.csv has a column for every logged key."""
    raw, truths = random_case(0)
    result = small_loss(*mining)(raw.requires_grad_(), as_targets(truths), 20000)
    reported = set(result.terms) | set(result.stats)
    assert reported <= set(stats.KEYS) | set(stats.DIAGNOSTICS), reported - set(stats.KEYS)
    probe = 'lrm.probe=1' in mining
    wanted = {k for k in stats.KEYS if k != 'loss' and (mining or not k.startswith('lrm_'))
              and (probe or k != 'lrm_grad_share')}
    assert wanted <= reported, wanted - reported
    assert set(result.terms) == set(TERMS)
    row = stats.pack(result)
    assert row.shape == (len(stats.KEYS),)
    logged = [c for c in COLUMNS if c in stats.KEYS]
    assert logged == list(stats.LOGGED) and len(set(COLUMNS)) == len(COLUMNS)


def test_unpack_reduces_each_kind():
    """Two mini-batches (the second without truths) summed over two processes: losses per image, truth statistics
    over the truths, the no-object probability and LRM share over mini-batches, LRM counts per image."""
    names = stats.KEYS
    first = dict.fromkeys(names, 0.0)
    first.update(loss=8.0, coord=1.0, obj=2.0, noobj=3.0, cls=1.5, prior=0.5, iou=0.6 * 4, class_prob=0.5 * 4,
                 obj_prob=0.25 * 4, recall50=3.0, recall75=1.0, count=4.0, noobj_prob=0.02 * 2, lrm_fg=6.0,
                 lrm_bg=10.0, lrm_share=0.9 * 2, lrm_grad_share=0.6 * 2)
    second = dict.fromkeys(names, 0.0)
    second.update(loss=4.0, noobj=4.0, noobj_prob=0.04 * 2, lrm_bg=16.0, lrm_share=0.7 * 2, lrm_grad_share=0.4 * 2)
    summed = [first[k] for k in names] + [second[k] for k in names]
    assert 'lrm_grad_share' not in stats.unpack(summed, batch=8, minibatches=4, mining=True)  # measured by probe=1
    values = stats.unpack(summed, batch=8, minibatches=4, mining=True, probe=True)
    assert values['lrm_grad_share'] == pytest.approx(0.5)
    assert values['loss'] == 12.0 / 8 and values['noobj'] == 7.0 / 8 and values['prior'] == 0.5 / 8
    assert values['iou'] == pytest.approx(0.6) and values['recall50'] == 0.75 and values['obj_prob'] == 0.25
    assert values['noobj_prob'] == pytest.approx(0.03) and values['lrm_share'] == pytest.approx(0.8)
    assert values['lrm_fg'] == 6.0 / 8 and values['lrm_bg'] == 26.0 / 8
    assert 'count' not in values and set(values) == set(stats.LOGGED)
    plain = stats.unpack([second[k] for k in names], batch=4, minibatches=1, mining=False)
    assert math.isnan(plain['iou']) and not any(k.startswith('lrm_') for k in plain)


def test_pack_weights_truth_means_by_the_count():
    raw, truths = random_case(1)
    result = small_loss()(raw, as_targets(truths), 20000)
    row = dict(zip(stats.KEYS, stats.pack(result).tolist()))
    count = result.stats['count'].item()
    assert row['iou'] == pytest.approx(result.stats['iou'].item() * count, rel=1e-6)
    assert row['noobj_prob'] == pytest.approx(result.stats['noobj_prob'].item())
    assert row['loss'] == pytest.approx(result.total.item()) and row['lrm_fg'] == 0
