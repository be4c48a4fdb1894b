"""Loss Rank Mining: the selection rule against a plain-Python walk, and its effect on the loss gradient."""
import pytest
import torch

from yolo_lrm.loss import lrm
from yolo_lrm.box import pairwise_iou_cxcywh
from yolo_lrm.cfg import CfgError
from yolo_lrm.head import decode
from yolo_lrm.loss.lrm import select_hard_examples

from conftest import bench_module
from test_loss import ANCHORS, as_targets, random_case, small_loss


def reference_select(loss, iou, classes, k, thresh):
    """The paper's rule, literally: walk by loss descending (lower index first on ties), keep a prediction unless
    an already-kept one of the same class overlaps it with IoU >= thresh, stop after k."""
    order = sorted(range(len(loss)), key=lambda i: (-loss[i], i))
    kept = []
    for i in order:
        if len(kept) == k:
            break
        if thresh is not None and any(classes[j] == classes[i] and iou[j][i] >= thresh for j in kept):
            continue
        kept.append(i)
    return sorted(kept)


def random_inputs(g: torch.Generator, b: int, n: int):
    """Losses with many ties, boxes with exact duplicates, three classes."""
    loss = torch.randint(0, 6, (b, n), generator=g).float() + (torch.rand(b, n, generator=g) < .3) * 0.5
    boxes = torch.cat((torch.rand(b, n, 2, generator=g), torch.rand(b, n, 2, generator=g) * .5 + .05), -1)
    dup = torch.randint(0, n, (b, n), generator=g)
    copy = torch.rand(b, n, generator=g) < .3
    boxes = torch.where(copy.unsqueeze(-1), boxes.gather(1, dup.unsqueeze(-1).expand(b, n, 4)), boxes)
    return loss, boxes, torch.randint(0, 3, (b, n), generator=g)


def check_against_reference(loss, boxes, classes, k, thresh):
    got = select_hard_examples(loss, boxes, classes, k, thresh)
    iou = pairwise_iou_cxcywh(boxes, boxes)
    for i in range(loss.shape[0]):
        expected = reference_select(loss[i].tolist(), iou[i].tolist(), classes[i].tolist(), k, thresh)
        assert got[i].nonzero().flatten().tolist() == expected, (k, thresh, i)


@pytest.mark.parametrize('seed', range(24))
def test_selection_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = [1, 5, 30, 90][seed % 4]
    loss, boxes, classes = random_inputs(g, 3, n)
    for k in (1, 4, 16, 200):
        for thresh in (None, 0.0, 0.5, 0.7, 1.0):
            check_against_reference(loss, boxes, classes, k, thresh)


def test_identical_boxes_and_extension_past_the_first_prefix():
    # every box identical and one class: NMS keeps one; the first prefix (2k) holds one kept, so the search
    # must extend to all N and still agree with the walk
    loss = torch.rand(2, 50, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([.4, .5, .2, .3]).expand(2, 50, 4)
    same = torch.zeros(2, 50, dtype=torch.long)
    got = select_hard_examples(loss, boxes, same, 3, 0.5)
    assert got.sum(1).tolist() == [1, 1] and got[torch.arange(2), loss.argmax(1)].all()
    two = (torch.arange(50) == 49).long().expand(2, 50)       # one box of a second class, ranked anywhere
    check_against_reference(loss, boxes, two, 3, 0.5)
    assert select_hard_examples(loss, boxes, two, 3, 0.5).sum().item() == 4
    assert select_hard_examples(loss, boxes, same, 3, None).sum(1).tolist() == [3, 3]


def test_images_in_groups_give_the_same_answer(monkeypatch):
    loss, boxes, classes = random_inputs(torch.Generator().manual_seed(99), 5, 40)
    whole = select_hard_examples(loss, boxes, classes, 9, 0.4)
    monkeypatch.setattr(lrm, 'PAIR_BUDGET', 2 * 40 * 40)   # two images per group, the last group alone
    assert torch.equal(select_hard_examples(loss, boxes, classes, 9, 0.4), whole)
    check_against_reference(loss, boxes, classes, 9, 0.4)


def test_threshold_is_inclusive():
    # nested boxes whose IoU is exactly 0.5 in binary floating point
    boxes = torch.tensor([[[.25, .25, .5, .5], [.25, .125, .5, .25]]])
    assert pairwise_iou_cxcywh(boxes, boxes)[0, 0, 1].item() == 0.5
    loss, cls = torch.tensor([[2.0, 1.0]]), torch.zeros(1, 2, dtype=torch.long)
    assert select_hard_examples(loss, boxes, cls, 2, 0.5).tolist() == [[True, False]]
    assert select_hard_examples(loss, boxes, cls, 2, 0.5000001).tolist() == [[True, True]]
    assert select_hard_examples(loss, boxes, cls + torch.tensor([[0, 1]]), 2, 0.5).tolist() == [[True, True]]


def test_ties_k_larger_than_n_and_empty():
    loss = torch.zeros(1, 6)
    boxes = torch.rand(1, 6, 4) * .5 + .1
    cls = torch.arange(6).view(1, 6)
    assert select_hard_examples(loss, boxes, cls, 3, None).tolist() == [[True] * 3 + [False] * 3]
    assert select_hard_examples(loss, boxes, cls, 10, 0.5).all()
    assert select_hard_examples(torch.zeros(2, 0), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
                                5, 0.5).shape == (2, 0)
    assert select_hard_examples(torch.zeros(0, 4), torch.zeros(0, 4, 4), torch.zeros(0, 4, dtype=torch.long),
                                5, 0.5).shape == (0, 4)
    with pytest.raises(ValueError, match='expected loss'):
        select_hard_examples(loss, boxes[..., :3], cls, 3, None)


# ------------------------------------------------------------------------------------------ inside the loss
def lrm_grads(loss_kind: str, k: int, nms: float, seen: int = 0):
    raw, truths = random_case(21)
    targets = as_targets(truths)
    plain = small_loss(f'region.loss={loss_kind}')
    mined = small_loss(f'region.loss={loss_kind}', f'lrm.hard_examples={k}', f'lrm.nms={nms}')
    grads = []
    for crit in (plain, mined):
        f = raw.clone().requires_grad_()
        res = crit(f, targets, seen)
        res.total.backward()
        grads.append((f.grad.view(2, 3, 8, 4, 5), res))
    return raw, grads


@pytest.mark.parametrize('loss_kind', ['loss2', 'loss1'])
@pytest.mark.parametrize('k,nms', [(7, 0.5), (12, 1.0), (500, 0.7)])
def test_mask_zeroes_exactly_the_unselected_predictions(loss_kind, k, nms):
    raw, ((g_plain, plain), (g_lrm, res)) = lrm_grads(loss_kind, k, nms)
    mask = res.mask
    assert plain.mask is None and mask.shape == (2, 3, 4, 5)
    assert (mask.view(2, -1).sum(1) <= k).all()
    chan = mask.unsqueeze(2).expand_as(g_lrm)                 # a prediction's 8 channels share its mask entry
    assert torch.equal(g_lrm[~chan], torch.zeros_like(g_lrm[~chan]))
    assert torch.equal(g_lrm[chan], g_plain[chan])
    # the mask is the rule applied to the per-prediction loss, decoded boxes and argmax classes
    dec = decode(raw, torch.tensor(ANCHORS), loss_kind)
    classes = raw.view(2, 3, 8, 4, 5)[:, :, 5:].argmax(2).view(2, -1)
    expected = select_hard_examples(plain.per_prediction.view(2, -1), dec.boxes.view(2, -1, 4), classes, k,
                                    nms if nms < 1 else None)
    assert torch.equal(mask.view(2, -1), expected)
    assert torch.equal(res.per_prediction, plain.per_prediction)
    assert abs(res.total.item() - (plain.per_prediction * mask).sum().item()) < 1e-4
    assert abs(res.stats['lrm_share'].item() - res.total.item() / plain.total.item()) < 1e-5
    assert res.stats['lrm_fg'].item() + res.stats['lrm_bg'].item() == mask.sum().item()
    # passed over: not kept, yet ranked above the image's last kept prediction (stable order by loss, descending)
    passed = 0
    for loss, kept in zip(plain.per_prediction.view(2, -1).tolist(), mask.view(2, -1).tolist()):
        ranked = [kept[i] for i in sorted(range(len(loss)), key=lambda i: -loss[i])]
        last = max(r for r, flag in enumerate(ranked) if flag)
        passed += sum(not flag for flag in ranked[:last])
    assert res.stats['lrm_passed'].item() == passed
    # hard examples are mostly the responsible predictions (large coordinate and class terms)
    assert res.stats['lrm_fg'].item() > 0


def test_lrm_off_in_eval_or_with_zero_k_is_plain_loss():
    raw, truths = random_case(2)
    targets = as_targets(truths)
    plain = small_loss()(raw, targets, 0)
    crit = small_loss('lrm.hard_examples=4', 'lrm.nms=0.5')
    assert crit(raw, targets, 0).mask is not None
    crit.eval()
    off = crit(raw, targets, 0)
    assert off.mask is None and torch.equal(off.total, plain.total) and 'lrm_fg' not in off.stats


def test_no_truths_selects_background_only():
    raw, _ = random_case(3)
    res = small_loss('lrm.hard_examples=5', 'lrm.nms=0.6')(raw, as_targets([[], []]), 0)
    assert res.stats['lrm_fg'].item() == 0 and res.stats['lrm_bg'].item() == res.mask.sum().item() > 0
    assert res.stats['count'].item() == 0


def two_images(fg: torch.Tensor | None = None):
    """Image 0: the 2nd-ranked prediction sits on the 1st (same class), and so does the 4th; image 1: no overlaps."""
    from yolo_lrm.loss.mining import Predictions
    loss = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    boxes = torch.tensor([[[.2, .2, .1, .1], [.2, .2, .1, .1], [.7, .7, .1, .1], [.2, .2, .1, .1]],
                          [[.1, .1, .1, .1], [.3, .3, .1, .1], [.5, .5, .1, .1], [.7, .7, .1, .1]]])
    zeros = torch.zeros_like(loss)
    return Predictions(zeros, loss, zeros, boxes, torch.zeros(2, 4, dtype=torch.long),
                       torch.zeros(2, 4, dtype=torch.bool) if fg is None else fg, torch.zeros(2))


def test_passed_over_counts_what_nms_skipped_above_the_last_kept():
    """K=2 at NMS .5 keeps ranks 1 and 3 of image 0: the 2nd is passed over; the 4th, below the last kept, is not
    counted."""
    from yolo_lrm.cfg import parse_cfg_text
    from yolo_lrm.loss.mining import mine
    lrm = parse_cfg_text('[net]\n[lrm]\nhard_examples=2\nnms=0.5\n').lrm
    mined = mine(lrm, two_images(), seen=0, num_anchors=1)
    assert mined.mask.tolist() == [[True, False, True, False], [True, True, False, False]]
    assert mined.stats['lrm_passed'].item() == 1 and mined.stats['lrm_bg'].item() == 4


def test_bench_lrm_walk_stats():
    """bench/lrm_walk.py: the top-K backgrounds the NMS walk leaves out, and which of them a kept foreground
    suppressed."""
    walk_stats = bench_module('lrm_walk').walk_stats
    objectness = torch.tensor([[.9, .8, .5, .1], [.4, .3, .2, .1]])
    s = walk_stats(two_images(), objectness, 2, 0.5)
    assert s['kept_bg'] == 2 and s['top_bg_skipped'] == 0.5 and s['skipped_by_fg'] == 0
    assert s['bg_loss_kept'] == pytest.approx(13 / 20) and s['obj_kept'] == pytest.approx((.9 + .5 + .4 + .3) / 4)
    fg = torch.tensor([[True, False, False, False], [False, False, False, False]])
    s = walk_stats(two_images(fg), objectness, 2, 0.5)  # now the suppressor is a foreground
    assert s['skipped_by_fg'] == 0.5 and s['obj_fg'] == pytest.approx(.9) and s['kept_bg'] == 1.5
    assert walk_stats(two_images(), objectness, 2, None)['top_bg_skipped'] == 0


# ------------------------------------------------------------------------------------------ the probe
def per_prediction_energy(crit, raw, targets, seen):
    """‖∂(own loss)/∂F‖² of each prediction, by one backward pass per prediction (B, N)."""
    b, n = raw.shape[0], 3 * 4 * 5
    out = torch.zeros(b, n)
    for i in range(b):
        for j in range(n):
            f = raw.clone().requires_grad_()
            crit(f, targets, seen).per_prediction.view(b, n)[i, j].backward()
            out[i, j] = f.grad.square().sum()
    return out


@pytest.mark.parametrize('loss_kind', ['loss2', 'loss1'])
def test_probe_measures_what_lrm_would_keep_and_leaves_the_loss_alone(loss_kind):
    raw, truths = random_case(21)
    targets = as_targets(truths)
    seen = 0  # the anchor prior on: every prediction has a gradient
    grads = []
    for crit in (small_loss(f'region.loss={loss_kind}'),
                 small_loss(f'region.loss={loss_kind}', 'lrm.probe=1', 'lrm.probe_k=7', 'lrm.probe_nms=0.5')):
        f = raw.clone().requires_grad_()
        res = crit(f, targets, seen)
        res.total.backward()
        grads.append((f.grad, res))
    (g_plain, plain), (g_probe, probed) = grads
    assert torch.equal(g_probe, g_plain) and torch.equal(probed.total, plain.total) and probed.mask is None
    # the same statistics as LRM at K=7, NMS .5, which really keeps those predictions
    _, (_, (_, mined)) = lrm_grads(loss_kind, 7, 0.5)
    for key in ('lrm_fg', 'lrm_bg', 'lrm_passed', 'lrm_share', 'lrm_k'):
        assert torch.allclose(probed.stats[key], mined.stats[key]), key
    energy = per_prediction_energy(small_loss(f'region.loss={loss_kind}'), raw, targets, seen)
    kept = mined.mask.view(2, -1)
    assert probed.stats['lrm_grad_share'].item() == pytest.approx((energy * kept).sum().item() / energy.sum().item(),
                                                                  rel=1e-5)
    assert 0 < probed.stats['lrm_grad_share'].item() < 1


def test_probe_with_lrm_on_measures_its_own_selection_and_soft_weights_square():
    raw, truths = random_case(5)
    targets = as_targets(truths)
    energy = per_prediction_energy(small_loss(), raw, targets, 0)
    res = small_loss('lrm.hard_examples=9', 'lrm.nms=0.7', 'lrm.probe=1', 'lrm.probe_k=2', 'lrm.soft=0.5')(
        raw.clone().requires_grad_(), targets, 0)
    w = res.weight.view(2, -1)
    assert res.mask.view(2, -1).sum(1).tolist() == [9, 9]  # its own K, not probe_k
    assert res.stats['lrm_grad_share'].item() == pytest.approx((energy * w.square()).sum().item() /
                                                               energy.sum().item(), rel=1e-5)
    assert 'lrm_grad_share' not in small_loss('lrm.hard_examples=9')(raw, targets, 0).stats


def test_probe_settings_are_checked():
    with pytest.raises(CfgError, match='probe_k'):
        small_loss('lrm.probe=1', 'lrm.probe_k=0')
    with pytest.raises(CfgError, match='probe must be 0 or 1'):
        small_loss('lrm.probe=2')
