"""The mining options and IoU-balanced losses: each formula against a direct computation, and the settings under
which each option reduces to the plain loss or to plain LRM."""
import math

import pytest
import torch

from yolo_lrm.box import iou_cxcywh, pairwise_iou_cxcywh
from yolo_lrm.cfg import CfgError, parse_cfg_text
from yolo_lrm.head import decode
from yolo_lrm.loss.lrm import select_hard_examples
from yolo_lrm.loss.mining import progress

from test_loss import ANCHORS, PARAMS, _iou, as_targets, darknet_reference, random_case, small_loss
from test_lrm import random_inputs, reference_select

SEEN = 20000  # past the anchor prior unless a test says otherwise


def run(*opts: str, seen: int = SEEN, seed: int = 21, truths=None):
    """(dtotal/dF viewed (B, A, 8, H, W), LossResult) of the small criterion on a random case."""
    raw, case_truths = random_case(seed)
    f = raw.clone().requires_grad_()
    res = small_loss(*opts)(f, as_targets(case_truths if truths is None else truths), seen)
    res.total.backward()
    return f.grad.view(2, 3, 8, 4, 5), res


def flat(t: torch.Tensor) -> torch.Tensor:
    """(B, A, H, W) -> (B, N) in the prediction order."""
    return t.reshape(t.shape[0], -1)


def owners(seed: int = 21, truths=None):
    """Each responsible prediction's owner truth, from the independent reference: {(b, n, j, i): truth}."""
    raw, case_truths = random_case(seed)
    return darknet_reference(raw, case_truths if truths is None else truths, ANCHORS, PARAMS, SEEN)[2][0]


def owner_ious(seed: int = 21) -> dict:
    """IoU of each responsible prediction's decoded box with its owner truth."""
    raw, _ = random_case(seed)
    boxes = decode(raw, torch.tensor(ANCHORS)).boxes
    return {k: _iou(boxes[k].tolist(), t[:4]) for k, t in owners(seed).items()}


def lrm_inputs():
    """(boxes, argmax classes) of the small case, as the criterion gives them to the selection."""
    raw, _ = random_case(21)
    boxes = decode(raw, torch.tensor(ANCHORS)).boxes.view(2, -1, 4)
    return boxes, raw.view(2, 3, 8, 4, 5)[:, :, 5:].argmax(2).view(2, -1)


def walk_inputs(res):
    """(plain per-prediction loss, boxes, classes, pairwise IoU) of the small case: a reference walk's inputs."""
    _, plain = run()
    boxes, classes = lrm_inputs()
    return flat(plain.per_prediction).detach(), boxes, classes, pairwise_iou_cxcywh(boxes, boxes)


# ------------------------------------------------------------------------------------------- the selection walk
@pytest.mark.parametrize('seed', range(6))
def test_per_image_k_and_candidates_match_the_walk(seed):
    g = torch.Generator().manual_seed(seed)
    loss, boxes, classes = random_inputs(g, 3, 40)
    cand = torch.rand(3, 40, generator=g) < 0.6
    k = torch.tensor([0, 3, 11])
    iou = pairwise_iou_cxcywh(boxes, boxes)
    for thresh in (None, 0.3, 0.7):
        got = select_hard_examples(loss, boxes, classes, k, thresh, cand)
        for b in range(3):
            idx = cand[b].nonzero().flatten().tolist()       # the walk over the candidates alone
            sub = reference_select([loss[b, i].item() for i in idx], [[iou[b, i, j].item() for j in idx] for i in idx],
                                   [classes[b, i].item() for i in idx], int(k[b]), thresh)
            assert got[b].nonzero().flatten().tolist() == [idx[s] for s in sub], (thresh, b)
        # one budget for every image, given as an int or per image, is the same walk
        assert torch.equal(select_hard_examples(loss, boxes, classes, torch.full((3,), 5), thresh),
                           select_hard_examples(loss, boxes, classes, 5, thresh))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_pairwise_iou_is_the_broadcast_iou_bit_for_bit(dtype):
    g = torch.Generator().manual_seed(5)
    a = torch.cat((torch.rand(3, 40, 2, generator=g), torch.rand(3, 40, 2, generator=g) * .5), -1).to(dtype)
    b = torch.cat((torch.rand(3, 9, 2, generator=g), torch.rand(3, 9, 2, generator=g) * .5), -1).to(dtype)
    b[:, 0, 2] = 0                                           # zero area: IoU 0 through the `union > 0` rule
    b[:, 1, 2] = -0.1                                        # a negative width, as garbage input may have
    b[:, 2] = a[:, 0]                                        # an identical box: IoU 1 (to rounding)
    got = pairwise_iou_cxcywh(a, b)
    assert torch.equal(got, iou_cxcywh(a.unsqueeze(-2), b.unsqueeze(-3)))
    assert torch.allclose(got[:, 0, 2], torch.ones(3, dtype=dtype), atol=1e-4) and not got[:, :, 0].any()


# --------------------------------------------------------------------------------------- IoU-balanced losses
@pytest.mark.parametrize('eta', [1.5, 0.7])
def test_iou_balanced_cls_weights_and_normaliser(eta):
    g_plain, plain = run('region.class_scale=1.3')
    _, obj_only = run('region.class_scale=0')                 # the responsible predictions' objectness alone
    g_bal, res = run('region.class_scale=1.3', 'region.iou_balanced_cls=1', f'region.eta={eta}')
    ious = owner_ious()
    keys = list(ious)
    obj = torch.tensor([obj_only.per_prediction_cls[k].item() for k in keys], dtype=torch.float64)
    cls = torch.tensor([plain.per_prediction_cls[k].item() for k in keys], dtype=torch.float64) - obj
    p = torch.tensor([ious[k] for k in keys], dtype=torch.float64) ** eta
    w_obj, w_cls = p * obj.sum() / (p * obj).sum(), p * cls.sum() / (p * cls).sum()   # eq. 2, one per term
    got = torch.tensor([res.per_prediction_cls[k].item() for k in keys], dtype=torch.float64)
    assert torch.allclose(got, w_obj * obj + w_cls * cls, rtol=1e-5)
    assert abs(got.sum().item() - (obj + cls).sum().item()) < 1e-4          # the sum over positives is kept
    assert not torch.allclose(got, obj + cls, rtol=1e-3)
    # other predictions and every coordinate term are untouched
    resp = torch.zeros_like(res.per_prediction, dtype=torch.bool)
    for k in keys:
        resp[k] = True
    assert torch.equal(res.per_prediction_cls[~resp], plain.per_prediction_cls[~resp])
    assert torch.equal(res.per_prediction_loc, plain.per_prediction_loc)
    # the weights carry no gradient: each channel's gradient is the plain one times its weight
    for n, (k, wo, wc) in enumerate(zip(keys, w_obj, w_cls)):
        b, a, j, i = k
        assert torch.allclose(g_bal[b, a, 5:, j, i].double(), wc * g_plain[b, a, 5:, j, i].double(), atol=1e-7)
        assert abs(g_bal[b, a, 4, j, i].item() - wo.item() * g_plain[b, a, 4, j, i].item()) < 1e-7
        assert torch.equal(g_bal[b, a, :4, j, i], g_plain[b, a, :4, j, i])


def test_iou_balanced_cls_loss1_uses_one_normaliser_and_spares_the_background():
    _, plain = run('region.loss=loss1')
    _, res = run('region.loss=loss1', 'region.iou_balanced_cls=1', 'region.eta=2')
    ious = owner_ious()
    keys = list(ious)
    ce = torch.tensor([plain.per_prediction_cls[k].item() for k in keys], dtype=torch.float64)
    p = torch.tensor([ious[k] for k in keys], dtype=torch.float64) ** 2
    got = torch.tensor([res.per_prediction_cls[k].item() for k in keys], dtype=torch.float64)
    assert torch.allclose(got, p * ce * ce.sum() / (p * ce).sum(), rtol=1e-5)
    assert abs(res.terms['noobj'].item() - plain.terms['noobj'].item()) < 1e-6
    assert res.terms['obj'].item() == 0


@pytest.mark.parametrize('lam,w_loc', [(1.5, 3.0), (0.5, 1.0)])
def test_iou_balanced_loc_weights(lam, w_loc):
    g_plain, plain = run(seen=0)                              # seen 0: the anchor prior is on and must stay
    g_bal, res = run('region.iou_balanced_loc=1', f'region.lambda={lam}', f'region.w_loc={w_loc}', seen=0)
    ious = owner_ious()
    expected = plain.per_prediction_loc.clone()
    grad = g_plain.clone()
    for k, iou in ious.items():
        w = w_loc * iou ** lam
        expected[k] *= w
        grad[k[0], k[1], :4, k[2], k[3]] *= w
    assert torch.allclose(res.per_prediction_loc, expected, rtol=1e-5, atol=1e-8)
    assert torch.equal(res.per_prediction_cls, plain.per_prediction_cls)
    assert torch.allclose(g_bal, grad, rtol=1e-5, atol=1e-8)


def test_iou_balanced_with_zero_exponents_is_the_plain_loss():
    for extra in ((), ('lrm.hard_examples=9', 'lrm.nms=0.5')):
        g_plain, plain = run(*extra)
        g_bal, res = run(*extra, 'region.iou_balanced_cls=1', 'region.eta=0', 'region.iou_balanced_loc=1',
                         'region.lambda=0', 'region.w_loc=1')
        assert torch.equal(res.total, plain.total) and torch.equal(g_bal, g_plain)
        assert torch.equal(res.per_prediction, plain.per_prediction)
    with pytest.raises(CfgError, match="'eta'"):
        small_loss('region.eta=-1')


# --------------------------------------------------------------------------------------- stratified selection
def test_schedule_in_images():
    lrm = parse_cfg_text('[net]\n[lrm]\nbeta_start=1000\nbeta_ramp=4000\n').lrm
    assert [progress(lrm, s) for s in (0, 999, 1000, 3000, 5000, 9000)] == [0, 0, 0, 0.5, 1, 1]
    step = parse_cfg_text('[net]\n[lrm]\nbeta_start=1000\n').lrm
    assert [progress(step, s) for s in (999, 1000)] == [0, 1]


def test_stratified_ranks_by_the_scheduled_mix():
    opts = ('lrm.hard_examples=3', 'lrm.select=stratified', 'lrm.select_beta=2.8', 'lrm.beta_start=10000',
            'lrm.beta_ramp=20000')
    g, res = run(*opts)                                      # seen 20000: halfway, β = 1.4
    assert res.stats['lrm_beta'].item() == pytest.approx(1.4) and res.stats['lrm_alpha'].item() == 1
    boxes, classes = lrm_inputs()
    score = flat(res.per_prediction_cls) + 1.4 * flat(res.per_prediction_loc)
    assert torch.equal(flat(res.mask), select_hard_examples(score.detach(), boxes, classes, 3))
    _, lrm = run('lrm.hard_examples=3')
    assert not torch.equal(res.mask, lrm.mask), 'the case must tell the two rankings apart'
    # only the selection changes: the selected predictions backpropagate their whole loss
    g_plain, plain = run()
    chan = res.mask.unsqueeze(2).expand_as(g)
    assert torch.equal(g[chan], g_plain[chan]) and not g[~chan].any()
    assert torch.equal(res.per_prediction, plain.per_prediction)


@pytest.mark.parametrize('nms', [1.0, 0.5])
def test_beta_zero_is_lrm_on_the_cls_part(nms):
    """β = 0 (before beta_start) ranks by L_cls = objectness + class: the LRM mask of the same criterion without
    coordinate terms (coord_scale=0 past the anchor prior), while the loss that backpropagates keeps them."""
    opts = ('lrm.hard_examples=3', f'lrm.nms={nms}', 'lrm.select=stratified', 'lrm.beta_start=30000')
    g, res = run(*opts)
    assert res.stats['lrm_beta'].item() == 0
    _, no_loc = run('region.coord_scale=0', 'lrm.hard_examples=3', f'lrm.nms={nms}')
    assert not no_loc.per_prediction_loc.any()
    assert torch.equal(res.mask, no_loc.mask)
    boxes, classes = lrm_inputs()
    assert torch.equal(flat(res.mask), select_hard_examples(flat(res.per_prediction_cls).detach(), boxes, classes, 3,
                                                            nms if nms < 1 else None))
    _, lrm = run('lrm.hard_examples=3', f'lrm.nms={nms}')
    assert not torch.equal(res.mask, lrm.mask), 'the case must tell L_cls from the whole loss'
    assert res.terms['coord'].item() > 0


@pytest.mark.parametrize('nms', [1.0, 0.5])
def test_beta_one_is_lrm_exactly(nms):
    g, res = run('lrm.hard_examples=8', f'lrm.nms={nms}', 'lrm.select=stratified', 'lrm.select_beta=1')
    g_lrm, lrm = run('lrm.hard_examples=8', f'lrm.nms={nms}')
    assert res.stats['lrm_beta'].item() == 1
    assert torch.equal(res.mask, lrm.mask) and torch.equal(res.total, lrm.total) and torch.equal(g, g_lrm)


@pytest.mark.parametrize('nms', [None, 0.4])
def test_strata_shares_against_two_walks(nms):
    opts = ['lrm.hard_examples=9', f'lrm.nms={nms or 1}', 'lrm.select=strata', 'lrm.strata_cls_share=0.3',
            'lrm.beta_start=10000', 'lrm.beta_ramp=20000']
    _, res = run(*opts)                                       # halfway: share = 1 - 0.5 * 0.7 = 0.65, K_cls = 6
    assert res.stats['lrm_cls_share'].item() == pytest.approx(0.65)
    boxes, classes = lrm_inputs()
    cls, loc = flat(res.per_prediction_cls).detach(), flat(res.per_prediction_loc).detach()
    iou = pairwise_iou_cxcywh(boxes, boxes)
    for b in range(2):
        first = reference_select(cls[b].tolist(), iou[b].tolist(), classes[b].tolist(), 6, nms)
        second = [math.inf if i in first else v for i, v in enumerate(loc[b].tolist())]
        kept = reference_select(second, iou[b].tolist(), classes[b].tolist(), len(first) + 3, nms)
        assert set(first) <= set(kept)
        assert flat(res.mask)[b].nonzero().flatten().tolist() == kept
    # at the start every pick comes from the L_cls stratum: stratified selection with β = 0
    _, start = run(*opts, seen=0)
    _, beta0 = run('lrm.hard_examples=9', f'lrm.nms={nms or 1}', 'lrm.select=stratified', 'lrm.beta_start=10000',
                   seen=0)
    assert torch.equal(start.mask, beta0.mask)


# ----------------------------------------------------------------------------------------------- adaptive K
@pytest.mark.parametrize('nms', [1.0, 0.5])
def test_constant_adaptive_rules_equal_fixed_k(nms):
    _, fixed = run('lrm.hard_examples=7', f'lrm.nms={nms}')
    for rule in (('lrm.k_mode=truths', 'lrm.k_per_truth=0'), ('lrm.k_mode=loss_share', 'lrm.loss_share=0')):
        _, res = run('lrm.hard_examples=20', 'lrm.k_min=7', f'lrm.nms={nms}', *rule)
        assert torch.equal(res.mask, fixed.mask), rule
        assert res.stats['lrm_k'].item() == 7


def test_k_per_truth_scales_with_each_images_truths():
    _, case = random_case(21)
    truths = [case[0][:1], case[1][:4]]                      # 1 and 4 truths: K = round(0.5 * 1 * 3) = 2 (floored
    _, res = run('lrm.hard_examples=12', 'lrm.k_mode=truths', 'lrm.k_per_truth=0.5', 'lrm.k_min=3',  # to 3), 6
                 truths=truths)
    _, plain = run(truths=truths)
    boxes, classes = lrm_inputs()
    loss = flat(plain.per_prediction).detach()
    for b, k in enumerate((3, 6)):
        assert torch.equal(flat(res.mask)[b], select_hard_examples(loss[b:b + 1], boxes[b:b + 1], classes[b:b + 1],
                                                                   k)[0])
    assert res.stats['lrm_k'].item() == 4.5
    _, capped = run('lrm.hard_examples=4', 'lrm.k_mode=truths', 'lrm.k_per_truth=0.5', truths=truths)
    assert flat(capped.mask).sum(1).tolist() == [2, 4]


@pytest.mark.parametrize('nms', [None, 0.5])
def test_loss_share_is_the_shortest_walk_reaching_the_share(nms):
    _, res = run('lrm.hard_examples=40', 'lrm.k_mode=loss_share', 'lrm.loss_share=0.6', f'lrm.nms={nms or 1}')
    loss, boxes, classes, iou = walk_inputs(res)
    sizes = []
    for b in range(2):
        walk = reference_select(loss[b].tolist(), iou[b].tolist(), classes[b].tolist(), 40, nms)
        walk.sort(key=lambda i: (-loss[b, i].item(), i))
        need, acc, k = 0.6 * loss[b].sum().item(), 0.0, 0
        while k < len(walk) and acc < need:
            acc += loss[b, walk[k]].item()
            k += 1
        sizes.append(k)
        assert flat(res.mask)[b].nonzero().flatten().tolist() == sorted(walk[:k])
    assert 0 < min(sizes) and max(sizes) < 40
    assert res.stats['lrm_k'].item() == sum(sizes) / 2
    assert res.stats['lrm_share'].item() >= 0.6


# ------------------------------------------------------------------------------------------------- soft LRM
def test_soft_zero_is_hard_lrm():
    g_hard, hard = run('lrm.hard_examples=8', 'lrm.nms=0.5')
    g_soft, soft = run('lrm.hard_examples=8', 'lrm.nms=0.5', 'lrm.soft=0', 'lrm.soft_decay=3')
    assert torch.equal(soft.total, hard.total) and torch.equal(g_soft, g_hard) and torch.equal(soft.mask, hard.mask)
    assert torch.equal(soft.weight, hard.mask.float())


def test_soft_constant_scales_the_others():
    g_plain, plain = run()
    g, res = run('lrm.hard_examples=8', 'lrm.nms=0.5', 'lrm.soft=0.25')
    _, hard = run('lrm.hard_examples=8', 'lrm.nms=0.5')
    assert torch.equal(res.mask, hard.mask)
    w = torch.where(res.mask, 1.0, 0.25)
    assert torch.equal(res.weight, w)
    assert torch.allclose(g, g_plain * w.unsqueeze(2), atol=1e-7)
    assert res.total.item() == pytest.approx((plain.per_prediction * w).sum().item(), rel=1e-6)
    assert res.stats['lrm_share'].item() == pytest.approx(res.total.item() / plain.total.item(), rel=1e-5)
    g_one, one = run('lrm.hard_examples=8', 'lrm.soft=1')
    assert torch.equal(one.total, plain.total) and torch.equal(g_one, g_plain)


def test_soft_decay_by_rank_beyond_k():
    _, res = run('lrm.hard_examples=6', 'lrm.nms=0.5', 'lrm.soft=0.5', 'lrm.soft_decay=2')
    loss = flat(res.per_prediction).detach()
    for b in range(2):
        ranked = sorted(range(60), key=lambda i: (-loss[b, i].item(), i))
        k = int(flat(res.mask)[b].sum())
        assert k == 6
        for r, i in enumerate(ranked):
            expected = 1.0 if flat(res.mask)[b, i] else 0.5 * math.exp(-2 * max(0, r - k) / k)
            assert flat(res.weight)[b, i].item() == pytest.approx(expected, rel=1e-6)
    assert flat(res.weight).min() < 0.5 * math.exp(-2 * 40 / 6)   # the tail has decayed
    with pytest.raises(CfgError, match="'soft'"):
        small_loss('lrm.soft=1.5')


# ---------------------------------------------------------------------------------------------------- OHEM
@pytest.mark.parametrize('nms', [None, 0.5])
def test_ohem_keeps_every_foreground_and_ratio_backgrounds(nms):
    _, res = run('lrm.hard_examples=100', 'lrm.mode=ohem', 'lrm.neg_pos_ratio=3', f'lrm.nms={nms or 1}')
    loss, boxes, classes, iou = walk_inputs(res)
    fg = torch.zeros(2, 60, dtype=torch.bool)
    for b, n, j, i in owners():
        fg[b, n * 20 + j * 5 + i] = True
    mask = flat(res.mask)
    assert (mask & fg).sum().item() == fg.sum().item()       # every foreground prediction
    for b in range(2):
        bg = (~fg[b]).nonzero().flatten().tolist()
        want = 3 * int(fg[b].sum())
        sub = reference_select([loss[b, i].item() for i in bg], [[iou[b, i, j].item() for j in bg] for i in bg],
                               [classes[b, i].item() for i in bg], want, nms)
        assert len(sub) == want                              # exactly ratio x foreground backgrounds
        assert (mask[b] & ~fg[b]).nonzero().flatten().tolist() == [bg[s] for s in sub]
    assert res.stats['lrm_fg'].item() == fg.sum().item()
    assert res.stats['lrm_bg'].item() == 3 * fg.sum().item()


def test_ohem_floor_cap_and_errors():
    _, empty = run('lrm.hard_examples=100', 'lrm.mode=ohem', 'lrm.k_min=4', truths=[[], []])
    assert flat(empty.mask).sum(1).tolist() == [4, 4] and empty.stats['lrm_fg'].item() == 0
    _, capped = run('lrm.hard_examples=5', 'lrm.mode=ohem')
    assert capped.stats['lrm_bg'].item() == 10 and capped.stats['lrm_fg'].item() > 0
    with pytest.raises(CfgError, match="'k_mode'"):
        small_loss('lrm.hard_examples=5', 'lrm.mode=ohem', 'lrm.k_mode=truths')
    with pytest.raises(CfgError, match="'k_min'"):
        small_loss('lrm.hard_examples=5', 'lrm.k_min=6')


def test_everything_at_once_trains_and_eval_is_plain():
    opts = ('region.iou_balanced_cls=1', 'region.iou_balanced_loc=1', 'region.w_loc=2', 'lrm.hard_examples=10',
            'lrm.nms=0.6', 'lrm.mode=ohem', 'lrm.select=strata', 'lrm.soft=0.1', 'lrm.soft_decay=1')
    g, res = run(*opts, seen=500)
    assert torch.isfinite(g).all() and g.any() and res.mask.any()
    raw, truths = random_case(21)
    crit = small_loss(*opts).eval()
    off = crit(raw, as_targets(truths), 500)
    assert off.mask is None and off.weight is None and 'lrm_k' not in off.stats
    assert torch.equal(off.total, off.per_prediction.sum())
