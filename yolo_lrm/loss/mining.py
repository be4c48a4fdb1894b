"""Hard-example mining options on top of LRM: which predictions of each image backpropagate, and with what weight.

Everything here is decided without gradient.  The loss that backpropagates is the region loss itself, each
prediction's loss multiplied by its mining weight (1 when selected; 0, or the soft weight, otherwise); only the
selection changes between the options.  A prediction's loss splits into two parts that add up to it:

* L_loc: its coordinate terms (the truth regression of a responsible prediction; elsewhere the 0.01 anchor prior
  while seen < 12800, which is a box regression too);
* L_cls: everything else: Loss2's objectness / no-object and class terms, or Loss1's (C+1)-way classification.

`[lrm]` keys (training only; `hard_examples=0` switches every option off; the defaults are plain LRM):

* `hard_examples=0`: K, the number of predictions kept per image; with an adaptive K or OHEM, the most kept per
  image (for OHEM: the most backgrounds).  `nms=1`: the LRM NMS threshold (>= 1: no NMS).
* `select=loss|stratified|strata` (S-OHEM, Li et al., Sec. 3.3).  `loss`: rank by the loss.
  `stratified`: rank by L_select = α·L_cls + β·L_loc with α = 1 and β = select_beta·t(seen).  `strata`: K_cls =
  round(share·K) predictions by L_cls first, then the rest of K by L_loc (with NMS, the first ones also suppress in
  the second walk), where share = 1 − t(seen)·(1 − strata_cls_share) goes from 1 down to `strata_cls_share=0.5`.
  t(seen) = clamp((seen − beta_start) / beta_ramp, 0, 1), a step at beta_start when beta_ramp = 0; `seen`,
  `beta_start=0` and `beta_ramp=0` count training images (the trainer's `seen`), `select_beta=2` is the target β
  (the paper raised it to 1.9 on VOC, 2.3 on KITTI once the loss was stable).  β = 0 ranks by L_cls alone, which
  is LRM's ranking of a loss without coordinate terms; β = 1 is LRM's ranking exactly (the score is summed in the
  loss's own order).  Statistics: `lrm_alpha`, `lrm_beta` (stratified), `lrm_cls_share` (strata).
* `k_mode=fixed|truths|loss_share` (the paper's first open problem).  `truths`: K = max(k_min, round(k_per_truth ×
  truths × anchors)) per image, `k_per_truth=1`, `k_min=0`.  `loss_share`: the shortest prefix of the selection
  walk (after NMS, so among predictions the walk keeps) whose loss reaches `loss_share=0.9` of the image's total
  loss over all its predictions, at least k_min.  Both are capped at hard_examples.  Statistic: `lrm_k`, the
  predictions kept per image, averaged over the batch.
* `soft=0` (the paper's second open problem): a non-selected prediction's loss (and gradient) is multiplied by
  soft·exp(−soft_decay·max(0, r − K) / max(K, 1)) instead of 0, where r is its 0-based rank by its whole loss
  (whatever `select` ranked by) among the candidates (every prediction; OHEM: the backgrounds) and K the number of
  candidates selected in its image.
  `soft_decay=0` gives the constant soft; soft = 0 is hard LRM exactly.
* `probe=0`: `probe=1` measures the mechanism (docs/results.md, the pretrained study) at the cost of one more
  backward pass through the loss (not the network): `lrm_grad_share`, the share of the squared gradient norm at F,
  ‖∂L/∂F‖², that the kept predictions carry (each prediction's gradient lives in its own 5+C channels, so the norm
  splits over predictions; a soft weight w scales a prediction's share by w²).  With hard_examples=0 the loss is
  untouched and the statistics `lrm_fg`, `lrm_bg`, `lrm_passed`, `lrm_share`, `lrm_k`, `lrm_grad_share` describe
  what plain LRM with K = `probe_k=256` and NMS `probe_nms=0.7` (>= 1: none) would keep; with LRM on they describe
  its own selection.
* `mode=lrm|ohem`: `ohem` is SSD-style hard negative mining: every responsible (foreground) prediction is kept and
  the backgrounds are ranked by themselves, keeping max(k_min, round(neg_pos_ratio × #foreground)) of them per
  image (`neg_pos_ratio=3`, at most hard_examples); NMS, `select` and `soft` apply to the backgrounds as in LRM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from ..cfg import Section
from .lrm import rank_order, select_ranked


@dataclass
class Predictions:
    """One batch's per-prediction loss parts and geometry (B, N), detached: what the mining rules look at."""
    loc: torch.Tensor      # L_loc: coordinate terms
    obj: torch.Tensor      # Loss2's objectness / no-object term (0 for Loss1)
    cls: torch.Tensor      # class term (Loss1: the (C+1)-way classification, background included)
    boxes: torch.Tensor    # (B, N, 4) predicted cx, cy, w, h
    classes: torch.Tensor  # predicted class (argmax)
    fg: torch.Tensor       # bool: responsible for a truth
    truths: torch.Tensor   # (B,) truths the loss used in each image
    energy: torch.Tensor | None = None  # ‖∂(own loss)/∂F‖² of each prediction (`probe=1`), else None

    @property
    def total(self) -> torch.Tensor:
        """Each prediction's loss, summed in the loss's own order (so the values are bit-identical)."""
        return self.loc + self.obj + self.cls


@dataclass
class Mining:
    """The outcome for one batch."""
    mask: torch.Tensor              # (B, N) bool: the selected predictions
    weight: torch.Tensor            # (B, N) multiplier of each prediction's loss
    stats: dict[str, torch.Tensor]  # lrm_fg, lrm_bg, lrm_passed, lrm_share, lrm_k (+ lrm_grad_share, lrm_alpha, ...)


def check_lrm(lrm: Section) -> None:
    """Reject `[lrm]` values out of range, naming the file, line and key."""
    for key in ('hard_examples', 'k_min', 'select_beta', 'beta_start', 'beta_ramp', 'soft_decay', 'k_per_truth',
                'neg_pos_ratio'):
        if lrm[key] < 0:
            raise lrm.error(f'{key} must be >= 0' + (' (0 switches LRM off)' if key == 'hard_examples' else ''), key)
    for key in ('soft', 'strata_cls_share', 'loss_share'):
        if not 0 <= lrm[key] <= 1:
            raise lrm.error(f'{key} must be in [0, 1]', key)
    if mining_on(lrm) and lrm['hard_examples'] < lrm['k_min']:
        raise lrm.error(f'k_min={lrm["k_min"]} exceeds the cap hard_examples={lrm["hard_examples"]}', 'k_min')
    if lrm['mode'] == 'ohem' and lrm['k_mode'] != 'fixed':
        raise lrm.error('mode=ohem sets its own budget (neg_pos_ratio); k_mode needs mode=lrm', 'k_mode')
    if lrm['probe'] not in (0, 1):
        raise lrm.error('probe must be 0 or 1', 'probe')
    if lrm['probe_k'] <= 0 or lrm['probe_nms'] <= 0:
        raise lrm.error('probe_k and probe_nms must be positive', 'probe_k' if lrm['probe_k'] <= 0 else 'probe_nms')


def mining_on(lrm: Section) -> bool:
    """Whether an `[lrm]` section changes the loss (hard_examples > 0, the one way to say on); `probe` only measures."""
    return lrm['hard_examples'] > 0


def reports_lrm(lrm: Section) -> bool:
    """Whether the loss reports the `lrm_*` statistics: mining on, or the probe measuring."""
    return mining_on(lrm) or bool(lrm['probe'])


def progress(lrm: Section, seen: int) -> float:
    """t in [0, 1]: how far the S-OHEM schedule is after `seen` training images."""
    if seen < lrm['beta_start']:
        return 0.0
    return 1.0 if lrm['beta_ramp'] <= 0 else min(1.0, (seen - lrm['beta_start']) / lrm['beta_ramp'])


def mine(lrm: Section, p: Predictions, seen: int, num_anchors: int) -> Mining:
    """Select each image's hard examples and weight the others, as the `[lrm]` section says."""
    total = p.total
    cand = ~p.fg if lrm['mode'] == 'ohem' else None
    mask, order, stats = _walk(lrm, p, total, _budget(lrm, p, num_anchors), progress(lrm, seen), cand)
    if lrm['k_mode'] == 'loss_share':
        mask = _trim_to_share(mask, order, total, lrm['loss_share'], lrm['k_min'])
    if cand is not None:
        mask = mask | p.fg
    weight = _soft_weight(lrm, mask, order if lrm['select'] == 'loss' else None, total, cand)
    stats.update(selection_stats(p, mask, order, weight))
    return Mining(mask, weight, stats)


def probe(lrm: Section, p: Predictions) -> dict[str, torch.Tensor]:
    """The statistics of the plain LRM walk at `probe_k` / `probe_nms` (what LRM would keep), for a loss it does
    not change."""
    order = rank_order(p.total)
    nms = lrm['probe_nms'] if lrm['probe_nms'] < 1 else None
    mask = select_ranked(order, p.boxes, p.classes, lrm['probe_k'], nms)
    return selection_stats(p, mask, order, mask.to(p.total.dtype))


def selection_stats(p: Predictions, mask: torch.Tensor, order: torch.Tensor,
                    weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """lrm_fg, lrm_bg (kept per batch), lrm_passed, lrm_share, lrm_k, and lrm_grad_share when `p.energy` is known."""
    total = p.total
    ranked = mask.gather(1, order)
    # passed over: ranked above the image's last kept prediction, yet not kept (NMS suppressed it; 0 without NMS)
    passed = ~ranked & (ranked.cumsum(1) < ranked.sum(1, keepdim=True))
    stats = {'lrm_fg': (mask & p.fg).sum(), 'lrm_bg': (mask & ~p.fg).sum(), 'lrm_passed': passed.sum(),
             'lrm_share': (total * weight).sum() / total.sum(), 'lrm_k': mask.sum(1).to(total.dtype).mean()}
    if p.energy is not None:
        stats['lrm_grad_share'] = (p.energy * weight.square()).sum() / p.energy.sum()
    return stats


def _walk(lrm: Section, p: Predictions, total: torch.Tensor, k: int | torch.Tensor, t: float,
          cand: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The selection of `select` with budget k: (mask, the ranking its last walk used, schedule statistics)."""
    nms = lrm['nms'] if lrm['nms'] < 1 else None
    if lrm['select'] == 'strata':
        share = 1 - t * (1 - lrm['strata_cls_share'])
        k_cls = round(share * k) if isinstance(k, int) else torch.round(share * k).long()
        first = select_ranked(rank_order(p.obj + p.cls), p.boxes, p.classes, k_cls, nms, cand)
        # the L_cls picks lead the L_loc walk: they stay kept, suppress their overlaps, and K - K_cls more follow
        order = rank_order(p.loc.masked_fill(first, math.inf))
        mask = select_ranked(order, p.boxes, p.classes, first.sum(1) + (k - k_cls), nms, cand)
        return mask, order, {'lrm_cls_share': total.new_full((), share)}
    beta = lrm['select_beta'] * t
    # α = 1; β·L_loc + L_obj + L_cls is the loss's own sum when β = 1, and L_cls alone when β = 0
    order = rank_order(total if lrm['select'] == 'loss' else beta * p.loc + p.obj + p.cls)
    mask = select_ranked(order, p.boxes, p.classes, k, nms, cand)
    if lrm['select'] == 'loss':
        return mask, order, {}
    return mask, order, {'lrm_alpha': total.new_ones(()), 'lrm_beta': total.new_full((), beta)}


def _budget(lrm: Section, p: Predictions, num_anchors: int) -> int | torch.Tensor:
    """K per image: hard_examples, or the rule of k_mode / OHEM as a (B,) tensor floored at k_min, capped."""
    cap = lrm['hard_examples']
    if lrm['mode'] == 'ohem':
        want = lrm['neg_pos_ratio'] * p.fg.sum(1)
    elif lrm['k_mode'] == 'truths':
        want = lrm['k_per_truth'] * num_anchors * p.truths
    else:  # fixed, and loss_share, which trims the walk with the cap afterwards
        return cap
    return torch.round(want).long().clamp(min=lrm['k_min'], max=cap)


def _trim_to_share(mask: torch.Tensor, order: torch.Tensor, total: torch.Tensor, share: float,
                   k_min: int) -> torch.Tensor:
    """The shortest prefix of the walk `order` (kept predictions, at least k_min) reaching `share` of each image's loss.

    Prefixes of a walk are the walks with smaller budgets (see `lrm.py`), so this is the walk with that K."""
    kept = mask.gather(1, order)
    loss = total.gather(1, order) * kept
    before = nnf.pad(loss.cumsum(1)[:, :-1], (1, 0))       # kept loss ranked above each prediction
    take = kept & ((before < share * total.sum(1, keepdim=True)) | (kept.cumsum(1) <= k_min))
    return torch.zeros_like(mask).scatter_(1, order, take)


def _soft_weight(lrm: Section, mask: torch.Tensor, order: torch.Tensor | None, total: torch.Tensor,
                 cand: torch.Tensor | None) -> torch.Tensor:
    """1 for the selected predictions, else soft·exp(−soft_decay·max(0, r − K) / max(K, 1)) (module docstring)."""
    one = mask.to(total.dtype)
    soft, decay = lrm['soft'], lrm['soft_decay']
    if soft == 0:
        return one
    if decay == 0:
        return torch.where(mask, one, soft)
    order = rank_order(total) if order is None else order
    cand = torch.ones_like(mask) if cand is None else cand
    rank = torch.empty_like(order).scatter_(1, order, cand.gather(1, order).cumsum(1) - 1)
    k = (mask & cand).sum(1, keepdim=True)
    beyond = (rank - k).clamp(min=0).to(total.dtype) / k.clamp(min=1)
    return torch.where(mask, one, soft * torch.exp(-decay * beyond))
