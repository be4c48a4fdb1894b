"""The region loss: Darknet's fixture gradients and statistics, an independent loop-by-loop reference of Darknet's
algorithm (darknet-reference.md §2.3-2.4), the overwrite rule, Loss1 / focal against direct formulas."""
import math
import re

import numpy as np
import pytest
import torch

from yolo_lrm.cfg import CfgError, apply_overrides, parse_cfg_text
from yolo_lrm.head import decode
from yolo_lrm.loss.region import RegionLoss, format_region_line
from yolo_lrm.model import Darknet

from conftest import need_fixtures

ANCHORS = [(0.6, 0.9), (1.5, 1.1), (2.6, 2.9)]
SMALL_CFG = """
[net]
width=5
height=4
channels=24

[region]
anchors={anchors}
num=3
classes=3
softmax=1
bias_match=1
rescore=1
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
thresh=.6
"""


def small_loss(*overrides: str) -> RegionLoss:
    """A 3-anchor, 3-class criterion for a 5x4 grid, with `section.key=value` overrides."""
    cfg = parse_cfg_text(SMALL_CFG.format(anchors=','.join(f'{v}' for a in ANCHORS for v in a)), 'small.cfg')
    apply_overrides(cfg, list(overrides))
    return RegionLoss(cfg.region, cfg.lrm)


def as_targets(truths: list[list[tuple]], m: int = 30) -> torch.Tensor:
    """Per-image lists of (x, y, w, h, class) to the (B, M, 5) (class, cx, cy, w, h) padded tensor."""
    out = torch.full((len(truths), m, 5), -1.0)
    for b, rows in enumerate(truths):
        for k, (x, y, w, h, c) in enumerate(rows):
            out[b, k] = torch.tensor([c, x, y, w, h])
    return out


def grad_of(crit: RegionLoss, raw: torch.Tensor, targets: torch.Tensor, seen: int):
    """(-dtotal/dF, result) for one call."""
    f = raw.clone().requires_grad_()
    res = crit(f, targets, seen)
    res.total.backward()
    return -f.grad, res


# ---------------------------------------------------------------- an independent reference of Darknet's algorithm
def _iou(a, b):
    ow = min(a[0] + a[2] / 2, b[0] + b[2] / 2) - max(a[0] - a[2] / 2, b[0] - b[2] / 2)
    oh = min(a[1] + a[3] / 2, b[1] + b[3] / 2) - max(a[1] - a[3] / 2, b[1] - b[3] / 2)
    inter = max(ow, 0) * max(oh, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def darknet_reference(raw, truths, anchors, p, seen):
    """Darknet's region deltas times the logistic derivative (= -dL/dF), the statistics, (owner truth of each
    responsible prediction, position of every truth in order) and best IoUs: the loops of darknet-reference.md §2.3
    in float64."""
    bsz, ch, h, w = raw.shape
    a = len(anchors)
    r = raw.double().numpy().reshape(bsz, a, ch // a, h, w)
    sig = 1 / (1 + np.exp(-r))
    cls = np.exp(r[:, :, 5:] - r[:, :, 5:].max(2, keepdims=True))
    cls /= cls.sum(2, keepdims=True)
    delta = np.zeros_like(r)
    owner, placed = {}, []
    best_ious = np.zeros((bsz, a, h, w))

    def pbox(b, n, j, i, wh=None):
        return ((i + sig[b, n, 0, j, i]) / w, (j + sig[b, n, 1, j, i]) / h,
                math.exp(r[b, n, 2, j, i]) * anchors[n][0] / w, math.exp(r[b, n, 3, j, i]) * anchors[n][1] / h)

    st = dict(iou=0.0, cat=0.0, obj=0.0, recall=0.0, recall75=0.0, count=0)
    for b in range(bsz):
        rows = truths[b][:30]
        for j in range(h):
            for i in range(w):
                for n in range(a):
                    best = max([_iou(pbox(b, n, j, i), t[:4]) for t in rows], default=0.0)
                    best_ious[b, n, j, i] = best
                    delta[b, n, 4, j, i] = 0.0 if best > p['thresh'] else p['noobject_scale'] * (0 - sig[b, n, 4, j, i])
                    if seen < 12800:
                        delta[b, n, 0, j, i] = .01 * (.5 - sig[b, n, 0, j, i])
                        delta[b, n, 1, j, i] = .01 * (.5 - sig[b, n, 1, j, i])
                        delta[b, n, 2, j, i] = .01 * (0 - r[b, n, 2, j, i])
                        delta[b, n, 3, j, i] = .01 * (0 - r[b, n, 3, j, i])
        for t in rows:
            x, y, tw, th, c = t
            i, j = int(x * w), int(y * h)
            best_n, best = 0, 0.0
            for n in range(a):
                shape = (anchors[n][0] / w, anchors[n][1] / h) if p['bias_match'] else pbox(b, n, j, i)[2:]
                v = _iou((0, 0, *shape), (0, 0, tw, th))
                if v > best:
                    best_n, best = n, v
            n = best_n
            iou = _iou(pbox(b, n, j, i), t[:4])
            s = p['coord_scale'] * (2 - tw * th)
            delta[b, n, 0, j, i] = s * ((x * w - i) - sig[b, n, 0, j, i])
            delta[b, n, 1, j, i] = s * ((y * h - j) - sig[b, n, 1, j, i])
            delta[b, n, 2, j, i] = s * (math.log(tw * w / anchors[n][0]) - r[b, n, 2, j, i])
            delta[b, n, 3, j, i] = s * (math.log(th * h / anchors[n][1]) - r[b, n, 3, j, i])
            delta[b, n, 4, j, i] = p['object_scale'] * ((iou if p['rescore'] else 1) - sig[b, n, 4, j, i])
            onehot = np.eye(ch // a - 5)[int(c)]
            delta[b, n, 5:, j, i] = p['class_scale'] * (onehot - cls[b, n, :, j, i])
            owner[(b, n, j, i)] = t
            placed.append((b, n, j, i))
            st['iou'] += iou
            st['recall'] += iou > .5
            st['recall75'] += iou > .75
            st['obj'] += sig[b, n, 4, j, i]
            st['cat'] += cls[b, n, int(c), j, i]
            st['count'] += 1
    for e in (0, 1, 4):
        delta[:, :, e] *= sig[:, :, e] * (1 - sig[:, :, e])
    k = max(st['count'], 1)
    stats = {'iou': st['iou'] / k, 'class_prob': st['cat'] / k, 'obj_prob': st['obj'] / k,
             'noobj_prob': sig[:, :, 4].mean(), 'recall50': st['recall'] / k, 'recall75': st['recall75'] / k,
             'count': st['count']}
    return torch.from_numpy(delta.reshape(bsz, ch, h, w)), stats, (owner, placed), best_ious


def random_case(seed: int, bsz: int = 2, n_truths: int = 4):
    """Raw output for the small cfg and truths that include two on one cell and anchor, and one a prediction
    already overlaps with IoU > .6 (so that the no-object mask is exercised)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(bsz, 24, 4, 5, generator=g) * 1.5
    truths = []
    for b in range(bsz):
        rows = []
        for _ in range(n_truths):
            x, y = torch.rand(2, generator=g).tolist()
            tw, th = (torch.rand(2, generator=g) * 0.8 + 0.05).tolist()
            rows.append((x, y, tw, th, int(torch.randint(3, (1,), generator=g))))
        x, y, tw, th, _ = rows[0]
        rows.append((x, y, tw * 1.02, th * 0.98, (rows[0][4] + 1) % 3))  # same cell, same anchor, later
        # make anchor 2 of cell (1, 1) predict a box close to truth (0.3, 0.375, 0.5, 0.6)
        rows.append((0.3, 0.375, 0.5, 0.6, 1))
        v = raw.view(bsz, 3, 8, 4, 5)
        v[b, 2, 0, 1, 1] = v[b, 2, 1, 1, 1] = 0.0
        v[b, 2, 2, 1, 1] = math.log(0.5 * 5 / ANCHORS[2][0]) + 0.1
        v[b, 2, 3, 1, 1] = math.log(0.6 * 4 / ANCHORS[2][1]) - 0.1
        truths.append(rows)
    return raw, truths


PARAMS = dict(thresh=.6, noobject_scale=1, object_scale=5, class_scale=1, coord_scale=1, rescore=1, bias_match=1)


# ------------------------------------------------------------------------------------------------ the fixture
def _fixture_case(seen: int):
    fx = need_fixtures()
    net = Darknet(fx / 'cfg' / 'region_test_batch1.cfg')
    raw = torch.from_numpy(np.fromfile(fx / 'region_b1' / 'input.f32', '<f4').reshape(-1, 125, 13, 13).copy())
    truth = torch.from_numpy(np.fromfile(fx / 'region_b1' / 'truth.f32', '<f4').reshape(raw.shape[0], 30, 5).copy())
    # Darknet's list ends at the first x == 0 row; ours marks padding with class -1
    ended = (truth[..., 0] == 0).to(torch.int64).cumsum(1) > 0
    targets = torch.where(ended.unsqueeze(-1), torch.full_like(truth, -1.0), truth[..., [4, 0, 1, 2, 3]])
    expected = np.fromfile(fx / 'region_b1' / f'gpu_backward_delta_seen{seen}.f32', '<f4').reshape(raw.shape)
    printed = (fx / 'region_b1' / f'stdout_seen{seen}.txt').read_text().strip()
    return net, raw, targets, torch.from_numpy(expected.copy()), printed


@pytest.mark.parametrize('seen', [0, 20000])
def test_darknet_fixture_gradient_and_stats(seen):
    net, raw, targets, expected, printed = _fixture_case(seen)
    crit = RegionLoss(net.region, net.cfg.lrm)
    got, res = grad_of(crit, raw, targets, seen)
    assert (got - expected).abs().max().item() < 1e-5
    nums = [float(v) for v in re.findall(r'[-\d.]+(?:e[-+]?\d+)?', printed.split('Region')[1])]
    ours = [res.stats[k].item() for k in ('iou', 'class_prob', 'obj_prob', 'noobj_prob', 'recall50', 'count')]
    assert np.allclose(ours, nums, atol=1e-5, rtol=0), (ours, nums)
    assert res.darknet_line() == printed
    assert res.mask is None and res.per_prediction.shape == (1, 5, 13, 13)
    assert abs(res.total.item() - res.per_prediction.sum().item()) < 1e-3
    assert abs(sum(res.terms.values()).item() - res.total.item()) < 1e-3
    assert (res.terms['prior'].item() > 0) == (seen < 12800)


# --------------------------------------------------------------------------------------- Loss2 vs the reference
@pytest.mark.parametrize('seed,seen,bias_match,rescore', [(0, 0, 1, 1), (1, 20000, 1, 1), (2, 100, 0, 1),
                                                          (3, 50000, 1, 0)])
def test_loss2_matches_darknet_loops(seed, seen, bias_match, rescore):
    raw, truths = random_case(seed)
    crit = small_loss(f'region.bias_match={bias_match}', f'region.rescore={rescore}')
    got, res = grad_of(crit, raw, as_targets(truths), seen)
    ref, stats, (owner, _), best = darknet_reference(raw, truths, ANCHORS, {**PARAMS, 'bias_match': bias_match,
                                                                        'rescore': rescore}, seen)
    assert (best > .6).any(), 'the case must exercise the no-object mask'
    assert torch.allclose(got.double(), ref, atol=1e-5, rtol=0)
    for key, value in stats.items():
        assert abs(res.stats[key].item() - value) < 1e-5, key
    resp = torch.zeros(2, 3, 4, 5, dtype=torch.bool)
    for b, n, j, i in owner:
        resp[b, n, j, i] = True
    assert int(resp.sum()) < stats['count'], 'the case must contain an overwritten truth'


def test_overwrite_last_truth_wins_and_both_counted():
    raw = torch.randn(1, 24, 4, 5, generator=torch.Generator().manual_seed(7))
    first, later = (0.51, 0.40, 0.20, 0.30, 0), (0.58, 0.45, 0.22, 0.26, 2)  # cell (2, 1), anchor 1 for both
    crit = small_loss()
    got, res = grad_of(crit, raw, as_targets([[first, later]]), 20000)
    # closed form for the later truth at anchor 1 of cell (col 2, row 1), Darknet's delta after sigmoid'
    r = raw.view(1, 3, 8, 4, 5)[0, 1, :, 1, 2].double()
    s = torch.sigmoid(r)
    x, y, tw, th, c = later
    sc = 2 - tw * th
    pred = ((2 + s[0].item()) / 5, (1 + s[1].item()) / 4, math.exp(r[2]) * ANCHORS[1][0] / 5,
            math.exp(r[3]) * ANCHORS[1][1] / 4)
    probs = torch.softmax(r[5:], 0)
    expected = torch.cat([
        torch.stack([sc * (x * 5 - 2 - s[0]) * s[0] * (1 - s[0]), sc * (y * 4 - 1 - s[1]) * s[1] * (1 - s[1]),
                     sc * (math.log(tw * 5 / ANCHORS[1][0]) - r[2]), sc * (math.log(th * 4 / ANCHORS[1][1]) - r[3]),
                     5 * (_iou(pred, later[:4]) - s[4]) * s[4] * (1 - s[4])]),
        torch.eye(3, dtype=torch.float64)[c] - probs])
    assert torch.allclose(got.view(1, 3, 8, 4, 5)[0, 1, :, 1, 2].double(), expected, atol=1e-6)
    assert res.stats['count'].item() == 2
    ious = [_iou(pred, t[:4]) for t in (first, later)]
    assert abs(res.stats['iou'].item() - sum(ious) / 2) < 1e-6
    assert abs(res.stats['class_prob'].item() - (probs[0] + probs[2]).item() / 2) < 1e-6


def test_autograd_matches_finite_differences():
    raw, truths = random_case(11, bsz=1)
    raw = raw.double()
    crit = small_loss()
    targets = as_targets(truths)
    f = raw.clone().requires_grad_()
    res = crit(f, targets, 0)
    res.total.backward()
    resp = [tuple(k) for k in (res.per_prediction > 0).nonzero().tolist()]
    _, _, (owner, _), _ = darknet_reference(raw, truths, ANCHORS, PARAMS, 0)
    (b, n, j, i) = next(iter(owner))
    # a responsible prediction's x, y, w, h move its IoU target, which the loss holds constant: probe its
    # objectness and class logits, and every entry of a prediction that is responsible for nothing
    free = next(k for k in resp if k not in owner)
    probes = [(b, n * 8 + e, j, i) for e in (4, 5, 7)] + [(free[0], free[1] * 8 + e, free[2], free[3])
                                                          for e in range(8)]
    eps = 1e-6
    for idx in probes:
        up, down = raw.clone(), raw.clone()
        up[idx] += eps
        down[idx] -= eps
        fd = (crit(up, targets, 0).total - crit(down, targets, 0).total).item() / (2 * eps)
        assert abs(fd - f.grad[idx].item()) < 1e-6 * max(1.0, abs(fd)), idx


def test_truth_limit_padding_and_empty_images():
    crit = small_loss()
    raw = torch.randn(2, 24, 4, 5, generator=torch.Generator().manual_seed(3))
    rows = [((k % 5 + .5) / 5, (k // 5 % 4 + .5) / 4, .3, .3, k % 3) for k in range(31)]
    targets = as_targets([rows, []], m=31)
    targets[0, 3] = torch.tensor([1, .5, .5, 0., .2])    # zero width: ignored
    res = crit(raw, targets, 0)
    assert res.stats['count'].item() == 30                # 31 rows, one ignored, 30 kept: the 31st is used
    targets[0, 3] = torch.tensor([1, .5, .5, .1, .2])
    assert crit(raw, targets, 0).stats['count'].item() == 30  # 31 valid rows: the last one is dropped
    empty = crit(raw, torch.zeros(2, 0, 5), 0)
    assert empty.stats['count'].item() == 0 and math.isnan(empty.stats['iou'].item())
    assert 'Avg IOU: nan' in empty.darknet_line() and empty.darknet_line().endswith('count: 0')
    assert empty.terms['coord'].item() == 0 and empty.terms['noobj'].item() > 0


def test_errors_name_file_and_key():
    with pytest.raises(CfgError, match=r"small\.cfg: --set region\.max=31: \[region\] key 'max'"):
        small_loss('region.max=31')
    with pytest.raises(CfgError, match='focal'):
        small_loss('region.focal=1')
    with pytest.raises(ValueError, match=r'small\.cfg.*expected F'):
        small_loss()(torch.zeros(1, 25, 4, 5), torch.zeros(1, 1, 5), 0)
    assert format_region_line({'iou': torch.tensor(.5), 'class_prob': torch.tensor(.25), 'obj_prob': torch.tensor(.1),
                               'noobj_prob': torch.tensor(.01), 'recall50': torch.tensor(1.),
                               'count': torch.tensor(2.)}) \
        == 'Region Avg IOU: 0.500000, Class: 0.250000, Obj: 0.100000, No Obj: 0.010000, Avg Recall: 1.000000,  count: 2'


# ----------------------------------------------------------------------------------------------- Loss1, focal
def loss1_direct(raw, truths, p, seen, focal=None):
    """Loss1 written prediction by prediction with the reference's assignment, as a differentiable scalar."""
    _, _, (owner, _), best = darknet_reference(raw.detach(), truths, ANCHORS, PARAMS, seen)
    targets = {}
    for (b, n, j, i), (x, y, tw, th, c) in owner.items():
        targets[(b, n, j, i)] = (x * 5 - i, y * 4 - j, math.log(tw * 5 / ANCHORS[n][0]),
                                 math.log(th * 4 / ANCHORS[n][1]), 2 - tw * th, c)
    r = raw.view(raw.shape[0], 3, 8, 4, 5)
    total = raw.new_zeros(())
    for b, n, j, i in np.ndindex(raw.shape[0], 3, 4, 5):
        v = r[b, n, :, j, i]
        logp = torch.log_softmax(v[4:], 0)
        t = targets.get((b, n, j, i))
        if t is not None:
            a = torch.stack([torch.sigmoid(v[0]), torch.sigmoid(v[1]), v[2], v[3]])
            total = total + 0.5 * p['coord_scale'] * t[4] * ((torch.tensor(t[:4], dtype=v.dtype) - a) ** 2).sum()
            k, weight = 1 + t[5], p['class_scale'] * (focal[1] if focal else 1)
        else:
            if seen < 12800:
                a = torch.stack([torch.sigmoid(v[0]), torch.sigmoid(v[1]), v[2], v[3]])
                total = total + 0.005 * ((torch.tensor([.5, .5, 0, 0], dtype=v.dtype) - a) ** 2).sum()
            if best[b, n, j, i] > p['thresh']:
                continue
            k, weight = 0, p['noobject_scale'] * ((1 - focal[1]) if focal else 1)
        mod = (1 - logp[k].exp()) ** focal[0] if focal else 1
        total = total - weight * mod * logp[k]
    return total


@pytest.mark.parametrize('focal', [None, (2.0, 0.25), (0.5, 0.4)])
@pytest.mark.parametrize('seen', [0, 20000])
def test_loss1_matches_direct_formula(focal, seen):
    raw, truths = random_case(5, bsz=1)
    raw = raw.double()
    opts = ['region.loss=loss1', 'region.noobject_scale=0.7', 'region.class_scale=1.3']
    if focal:
        opts += ['region.focal=1', f'region.focal_gamma={focal[0]}', f'region.focal_alpha={focal[1]}']
    crit = small_loss(*opts)
    got, res = grad_of(crit, raw, as_targets(truths), seen)
    f = raw.clone().requires_grad_()
    direct = loss1_direct(f, truths, {**PARAMS, 'noobject_scale': 0.7, 'class_scale': 1.3}, seen, focal)
    direct.backward()
    assert abs(res.total.item() - direct.item()) < 1e-6 * max(1.0, direct.item())
    assert torch.allclose(got, -f.grad, atol=1e-7)
    assert res.terms['obj'].item() == 0 and res.terms['noobj'].item() > 0


def test_focal_gamma0_is_alpha_weighted_ce():
    raw, truths = random_case(9)
    targets = as_targets(truths)
    base = ['region.loss=loss1', 'region.coord_scale=0']
    ce = small_loss(*base)(raw, targets, 20000)
    fl = small_loss(*base, 'region.focal=1', 'region.focal_gamma=0', 'region.focal_alpha=0.3')(raw, targets, 20000)
    assert ce.terms['cls'].item() > 0
    assert abs(fl.terms['cls'].item() - 0.3 * ce.terms['cls'].item()) < 1e-5
    assert abs(fl.terms['noobj'].item() - 0.7 * ce.terms['noobj'].item()) < 1e-4
    ratio = fl.per_prediction / ce.per_prediction
    assert torch.all(((ratio - 0.3).abs() < 1e-5) | ((ratio - 0.7).abs() < 1e-5) | ce.per_prediction.eq(0))


def test_loss1_training_scores_are_decode_scores():
    """With only the classification term left, each prediction's loss is -log of the score decode() reports."""
    raw, truths = random_case(4)
    crit = small_loss('region.loss=loss1', 'region.coord_scale=0', 'region.thresh=1')
    res = crit(raw, as_targets(truths), 20000)
    dec = decode(raw, torch.tensor(ANCHORS), 'loss1')
    _, _, (owner, placed), _ = darknet_reference(raw, truths, ANCHORS, PARAMS, 20000)
    expected = -torch.log(1 - dec.obj)                     # background: -log p(background)
    for (b, n, j, i), t in owner.items():
        expected[b, n, j, i] = -torch.log(dec.scores[b, n, j, i, t[4]])
    assert torch.allclose(res.per_prediction, expected, atol=1e-5)
    assert abs(res.stats['obj_prob'].item() - np.mean([dec.obj[k].item() for k in placed])) < 1e-6
    assert abs(res.stats['class_prob'].item() - np.mean([dec.scores[k][owner_cls].item()
                                                    for k, owner_cls in zip(placed, _classes(truths))])) < 1e-6


def _classes(truths):
    return [t[4] for rows in truths for t in rows]
