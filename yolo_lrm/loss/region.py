"""The YOLOv2 region loss: Darknet HEAD's Loss2, the paper's Loss1 (optionally focal), and the LRM mask.

Loss2 is the function whose gradient with respect to the raw output F is minus Darknet's region delta after the
logistic derivative (Darknet's `forward_region_layer` / `backward_region_layer_gpu`).  Per prediction (raw
outputs x, y, w, h, o and class logits), with every target and weight held constant:

    ½·λ_o·(t_o − σ(o))² + ½·λ_c·[(t_x − σ(x))² + (t_y − σ(y))² + (t_w − w)² + (t_h − h)²] + class_scale·CE

* every prediction: no-object target 0 with `noobject_scale`, or weight 0 where its box overlaps some truth of the
  image with IoU > thresh; while `seen < 12800`, a 0.01 prior pulling x, y to the cell centre and w, h to the anchor;
* the responsible prediction of each truth (cell `int(x·W), int(y·H)`, anchor of best shape IoU, first maximum
  wins) replaces those with coordinate targets (scale `coord_scale·(2 − w·h)`), objectness target IoU (rescore=1)
  or 1 with `object_scale`, and the class cross-entropy.  A later truth on the same prediction overwrites an
  earlier one; statistics count both.  At most 30 truths per image are used (Darknet's region layer limit).

Loss1 (paper Fig. 3): a (C+1)-way softmax per prediction whose first logit is the objectness channel read as
"background".  Every prediction gets a classification loss: its responsible truth's class (weight `class_scale`),
else background (weight `noobject_scale`); predictions that are not responsible but overlap a truth with IoU >
thresh are ignored, as in Loss2's no-object rule.  Box regression is Loss2's coordinate term on the responsible
predictions; the 0.01 anchor prior while `seen < 12800` is kept too, so Loss1 and Loss2 differ only in how
objectness and classes are scored.  `focal=1` replaces the cross-entropy by Lin et al.'s focal loss
`−α_t·(1 − p_t)^γ·log p_t`, with α_t = focal_alpha for foreground and 1 − focal_alpha for background predictions.
Inference (`head.decode(..., loss='loss1')`) scores a class by the same (C+1)-softmax probability; the statistics
report that probability as `class_prob` and 1 − p(background) as `obj_prob` / `noobj_prob`.

IoU-balanced losses (Wu et al., "IoU-balanced Loss Functions for Single-stage Object Detection", eq. 1-4),
`[region]` keys, off by default; IoU is that of the responsible prediction's box with its truth, and no weight or
normaliser carries a gradient:
* `iou_balanced_cls=1`, `eta=1.5`: each responsible prediction's class term (Loss2: and, separately, its objectness
  term) is multiplied by iou^η · S / S_η, where S and S_η are that term's plain and iou^η-weighted sums over the
  responsible predictions of the whole call (the forwarded mini-batch, as the paper's batch normaliser), so the
  sum is unchanged; η = 0 is the plain loss.  Loss1's background terms and Loss2's no-object terms are untouched.
* `iou_balanced_loc=1`, `lambda=1.5`, `w_loc=1`: each responsible prediction's coordinate term is multiplied by
  w_loc · iou^λ (eq. 4, no normaliser; the paper tuned w_loc ≈ 3 for λ = 1.5 to keep the first step's sum); the
  anchor prior is untouched.  λ = 0 with w_loc = 1 is the plain loss.
The mining options of `[lrm]` (stratified selection, adaptive K, soft LRM, OHEM) are described in `mining.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from ..box import iou_cxcywh, pairwise_iou_cxcywh
from ..cfg import Section, check_region
from ..head import grid_boxes, split_output
from .mining import Predictions, check_lrm, mine, mining_on, probe, reports_lrm

MAX_TRUTHS = 30          # Darknet's region layer reads exactly 30 truth slots per image
PRIOR_SEEN = 12800       # the anchor prior applies while fewer images than this have been seen
PRIOR_SCALE = 0.01
TERMS = ('coord', 'obj', 'noobj', 'cls', 'prior')   # the parts of the loss that LossResult.terms holds


@dataclass
class LossResult:
    """What one call of the criterion returns (see the module docstring and docs/architecture.md)."""
    total: torch.Tensor                # scalar: sum over the batch (after the LRM weight when LRM is on)
    per_prediction: torch.Tensor       # (B, A, H, W): each prediction's own loss, before masking
    per_prediction_cls: torch.Tensor   # (B, A, H, W): its L_cls part (objectness / no-object + class)
    per_prediction_loc: torch.Tensor   # (B, A, H, W): its L_loc part (coordinates or anchor prior); cls + loc = own
    terms: dict[str, torch.Tensor]     # TERMS: detached sums after the mask (add up to total);
    #                                    Loss1: cls = foreground, noobj = background classification, obj = 0
    stats: dict[str, torch.Tensor]     # Darknet's printed statistics, named as in `stats.KEYS` (+ lrm_fg, lrm_bg,
    #                                    lrm_share, lrm_k, ... with LRM)
    mask: torch.Tensor | None          # (B, A, H, W) bool: the LRM hard examples, None when LRM is off
    weight: torch.Tensor | None        # (B, A, H, W): multiplier of each prediction's loss (soft LRM), None when off

    def darknet_line(self) -> str:
        """Darknet's `Region Avg IOU: ...` line for this batch (synchronises with the device)."""
        return format_region_line(self.stats)


def format_region_line(stats: dict[str, torch.Tensor]) -> str:
    """Format statistics as the line Darknet's region layer prints (`nan` when the batch has no truth)."""
    v = {k: float(t) for k, t in stats.items()}
    return (f"Region Avg IOU: {v['iou']:f}, Class: {v['class_prob']:f}, Obj: {v['obj_prob']:f}, "
            f"No Obj: {v['noobj_prob']:f}, Avg Recall: {v['recall50']:f},  count: {int(v['count'])}")


@dataclass
class _Truths:
    """The batch's truths (B, M) and where each one lands among the N = A·H·W predictions."""
    box: torch.Tensor       # (B, M, 4) cx, cy, w, h
    cls: torch.Tensor       # (B, M) long
    valid: torch.Tensor     # (B, M) bool
    index: torch.Tensor     # (B, M) long: flat prediction index (anchor, row, col) of the responsible prediction
    coord: torch.Tensor     # (B, M, 5): targets x, y (after sigmoid), w, h (raw), and the coordinate scale


@dataclass
class _Assignment:
    """Per prediction (B, N): responsibility and the (constant) targets of the owning truth."""
    resp: torch.Tensor      # bool: responsible for some truth (the last one in file order wins)
    coord: torch.Tensor     # (B, N, 5) owner's coordinate targets and scale (garbage where not responsible)
    cls: torch.Tensor       # long: owner's class (0 where not responsible)
    iou: torch.Tensor       # IoU of the prediction's box with its owner truth
    best_iou: torch.Tensor  # max IoU of the prediction's box with every truth of the image (-1 without truths)


class RegionLoss(nn.Module):
    """The training criterion for one `[region]` and one `[lrm]` section (`hard_examples=0`: no mining): `crit(F, targets, seen)`.

    `targets` is (B, M, 5) float, rows (class, cx, cy, w, h) normalised, class = -1 for padding; rows with zero
    width or height are ignored (Darknet would take log(0)).  `seen` is the int count of training images seen.
    LRM applies in training mode only (`crit.train()`, the default; `crit.eval()` switches it off); it masks (soft
    LRM: down-weights) each prediction's loss, which is the same as masking the gradient of its 5+C channels of F
    (paper eq. 1-2), because a prediction's loss depends on its own channels only once the targets are fixed.
    The loss itself never waits for the device; LRM with NMS does, a few times per call (see `lrm.py`; one more
    with a per-image K).
    """

    def __init__(self, region: Section, lrm: Section):
        super().__init__()
        check_loss_settings(region, lrm)
        self.region, self.lrm = region, lrm
        r = region
        self.num_anchors, self.num_classes = r['num'], r['classes']
        self.max_truths = r['max']
        self._anchors = torch.tensor(r['anchors'], dtype=torch.float32).view(-1, 2)

    # ------------------------------------------------------------------------------------------------- public
    def forward(self, output: torch.Tensor, targets: torch.Tensor, seen: int) -> LossResult:
        """Loss of the raw output F (B, A*(5+C), H, W) against `targets` (B, M, 5) after `seen` training images."""
        a, c = self.num_anchors, self.num_classes
        b, ch, h, w = output.shape
        if ch != a * (5 + c) or targets.dim() != 3 or targets.shape[0] != b or targets.shape[2] != 5:
            raise ValueError(f'{self.region.where()}: [region] num={a}, classes={c}: expected F (B, {a * (5 + c)}, '
                             f'H, W) and targets (B, M, 5); got {tuple(output.shape)} and {tuple(targets.shape)}')
        if self._anchors.device != output.device:
            self._anchors = self._anchors.to(output.device)
        anchors = self._anchors
        dtype = torch.promote_types(output.dtype, torch.float32)            # half outputs: loss in float32
        raw5 = split_output(output.to(dtype), a)                             # (B, A, 5+C, H, W)
        pred = raw5.permute(0, 1, 3, 4, 2).reshape(b, a * h * w, 5 + c)     # (B, N, 5+C), N in Darknet's order
        with torch.no_grad():
            boxes = grid_boxes(raw5.detach(), anchors).reshape(b, -1, 4)
            truths = self._truths(targets.to(output.device, dtype), anchors.to(dtype), boxes, h, w)
            assign = self._assign(truths, boxes, b, a * h * w)
        coord = self._coord_loss(pred, assign, seen)
        if self.region['loss'] == 'loss1':
            obj, cls = torch.zeros_like(coord), self._loss1_cls(pred, assign)
        else:
            obj, cls = self._loss2_obj_cls(pred, assign)
        coord, obj, cls = self._iou_balance(coord, obj, cls, assign)
        per_pred = coord + obj + cls
        parts = self._parts(coord, obj, cls, pred, boxes, truths, assign)
        mined = mine(self.lrm, parts, seen, self.num_anchors) if parts is not None and mining_on(self.lrm) else None
        keep = per_pred.new_ones(()) if mined is None else mined.weight
        resp = assign.resp.to(per_pred.dtype)
        # Loss2's class term lives on responsible predictions only, Loss1's obj term is 0: one split serves both
        terms = {'coord': coord * resp, 'prior': coord * (1 - resp), 'obj': obj * resp, 'cls': cls * resp,
                 'noobj': (obj + cls) * (1 - resp)}
        terms = {k: (v * keep).sum().detach() for k, v in terms.items()}
        total = (per_pred * keep).sum()
        stats = self._stats(pred, boxes, truths)
        shape = (b, a, h, w)
        if mined is not None:
            stats.update(mined.stats)
        elif parts is not None:  # the probe alone: statistics of what LRM would keep, the loss untouched
            stats.update(probe(self.lrm, parts))
        return LossResult(total, per_pred.view(shape), (obj + cls).view(shape), coord.view(shape), terms, stats,
                          None if mined is None else mined.mask.view(shape),
                          None if mined is None else mined.weight.view(shape))

    # ------------------------------------------------------------------------------------------ assignment
    def _truths(self, targets: torch.Tensor, anchors: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> _Truths:
        if targets.shape[1] == 0:  # keep gathers well-defined: one padding row
            targets = targets.new_full((targets.shape[0], 1, 5), -1.0)
        cls, box = targets[..., 0], targets[..., 1:5]
        valid = (cls >= 0) & (box[..., 2] > 0) & (box[..., 3] > 0)
        valid &= valid.cumsum(1) <= self.max_truths
        # Darknet truncates; the clamp only matters for a centre exactly on the right/bottom border
        col = (box[..., 0] * w).long().clamp(0, w - 1)
        row = (box[..., 1] * h).long().clamp(0, h - 1)
        best = self._best_anchor(box, anchors, boxes, row * w + col, h, w)
        tw, th = box[..., 2].clamp(min=1e-12), box[..., 3].clamp(min=1e-12)
        coord = torch.stack((box[..., 0] * w - col, box[..., 1] * h - row,
                             torch.log(tw * w / anchors[best, 0]), torch.log(th * h / anchors[best, 1]),
                             self.region['coord_scale'] * (2 - box[..., 2] * box[..., 3])), -1)
        return _Truths(box, cls.long().clamp(min=0), valid, (best * h + row) * w + col, coord)

    def _best_anchor(self, box: torch.Tensor, anchors: torch.Tensor, boxes: torch.Tensor, cell: torch.Tensor,
                     h: int, w: int) -> torch.Tensor:
        """Responsible anchor per truth (B, M): best IoU of shapes centred at 0; argmax takes the first maximum."""
        a = self.num_anchors
        if self.region['bias_match']:
            shapes = torch.stack((anchors[:, 0] / w, anchors[:, 1] / h), -1).expand(*box.shape[:2], a, 2)
        else:  # Darknet's bias_match=0: the shapes currently predicted by the cell's anchors
            per_cell = boxes.view(box.shape[0], a, h * w, 4)
            idx = cell.unsqueeze(1).unsqueeze(-1).expand(-1, a, -1, 4)
            shapes = per_cell.gather(2, idx)[..., 2:].transpose(1, 2)       # (B, M, A, 2)
        centred = torch.cat((torch.zeros_like(shapes), shapes), -1)
        truth = torch.cat((torch.zeros_like(box[..., 2:]), box[..., 2:]), -1).unsqueeze(2)
        iou = iou_cxcywh(centred, truth)
        return iou.argmax(-1)

    @staticmethod
    def _assign(truths: _Truths, boxes: torch.Tensor, b: int, n: int) -> _Assignment:
        m = truths.valid.shape[1]
        order = torch.arange(m, device=boxes.device).expand(b, m)
        # "last truth wins": each prediction takes the highest truth index that points at it
        owner = torch.full((b, n), -1, dtype=torch.long, device=boxes.device).scatter_reduce(
            1, torch.where(truths.valid, truths.index, 0), torch.where(truths.valid, order, -1), 'amax')
        own = owner.clamp(min=0)
        own_box = truths.box.gather(1, own.unsqueeze(-1).expand(b, n, 4))
        coord = truths.coord.gather(1, own.unsqueeze(-1).expand(b, n, 5))
        ious = pairwise_iou_cxcywh(boxes, truths.box).masked_fill(~truths.valid.unsqueeze(1), -1.0)
        return _Assignment(owner >= 0, coord, truths.cls.gather(1, own), iou_cxcywh(boxes, own_box),
                           ious.max(-1).values)

    # -------------------------------------------------------------------------------------------- the terms
    def _coord_loss(self, pred: torch.Tensor, assign: _Assignment, seen: int) -> torch.Tensor:
        """½·λ·Σ(target − a)² over x, y (a = sigmoid) and w, h (a = raw): truth terms, else the anchor prior."""
        prior_scale = PRIOR_SCALE if seen < PRIOR_SEEN else 0.0
        prior = torch.zeros_like(assign.coord[..., :4])
        prior[..., :2] = 0.5                                      # the cell centre; w, h = the anchor's
        target = torch.where(assign.resp.unsqueeze(-1), assign.coord[..., :4], prior)
        scale = torch.where(assign.resp, assign.coord[..., 4], prior_scale)
        a = torch.cat((torch.sigmoid(pred[..., :2]), pred[..., 2:4]), -1)
        return 0.5 * scale * (target - a).pow(2).sum(-1)

    def _loss2_obj_cls(self, pred: torch.Tensor, assign: _Assignment) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss2's objectness (object or no-object) and class cross-entropy per prediction."""
        r = self.region
        weight = torch.where(assign.resp, r['object_scale'], self._background(assign, 1.0))
        target = torch.where(assign.resp, assign.iou if r['rescore'] else torch.ones_like(assign.iou),
                             torch.zeros_like(assign.iou))
        obj = 0.5 * weight * (target - torch.sigmoid(pred[..., 4])).pow(2)
        ce = nnf.cross_entropy(pred[..., 5:].reshape(-1, self.num_classes), assign.cls.reshape(-1),
                               reduction='none').view_as(obj)
        return obj, torch.where(assign.resp, r['class_scale'] * ce, torch.zeros_like(ce))

    def _background(self, assign: _Assignment, factor: float) -> torch.Tensor:
        """Weight of the no-object / background term: factor·noobject_scale, 0 where IoU > thresh with a truth."""
        zero = torch.zeros_like(assign.best_iou)
        return torch.where(assign.best_iou > self.region['thresh'], zero, factor * self.region['noobject_scale'])

    def _loss1_cls(self, pred: torch.Tensor, assign: _Assignment) -> torch.Tensor:
        """Loss1's (C+1)-way classification (focal if configured) per prediction; 0 where ignored."""
        r = self.region
        target = torch.where(assign.resp, assign.cls + 1, torch.zeros_like(assign.cls))
        logp = torch.log_softmax(pred[..., 4:], -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        alpha = r['focal_alpha'] if r['focal'] else 1.0
        beta = 1 - r['focal_alpha'] if r['focal'] else 1.0
        weight = torch.where(assign.resp, r['class_scale'] * alpha, self._background(assign, beta))
        loss = -logp
        if r['focal'] and r['focal_gamma'] != 0:
            # clamp: (1 - p)^γ has an infinite slope at p = 1 for γ < 1
            loss = loss * (-torch.expm1(logp)).clamp(min=1e-12).pow(r['focal_gamma'])
        return weight * loss

    def _iou_balance(self, coord: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor,
                     assign: _Assignment) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The IoU-balanced weights (module docstring) on the responsible predictions' terms, when configured."""
        r, resp, iou = self.region, assign.resp, assign.iou   # iou was computed without gradient
        if r['iou_balanced_loc']:
            coord = torch.where(resp, coord * (r['w_loc'] * iou.pow(r['lambda'])), coord)
        if r['iou_balanced_cls']:
            focus = iou.pow(r['eta'])
            obj = torch.where(resp, obj * _balanced(obj, focus, resp), obj)
            cls = torch.where(resp, cls * _balanced(cls, focus, resp), cls)
        return coord, obj, cls

    # ---------------------------------------------------------------------------------------- LRM and stats
    def _parts(self, coord: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor, pred: torch.Tensor,
               boxes: torch.Tensor, truths: _Truths, assign: _Assignment) -> Predictions | None:
        """What mining (or the probe) looks at, in training mode when `[lrm]` mines or probes; else None."""
        lrm = self.lrm
        if not self.training or not reports_lrm(lrm):
            return None
        energy = None
        if lrm['probe'] and pred.requires_grad:
            # each prediction's loss depends on its own row of F only: one backward through the loss gives them all
            grad, = torch.autograd.grad((coord + obj + cls).sum(), pred, retain_graph=True)
            energy = grad.detach().square().sum(-1)
        classes = pred[..., 5:].detach().argmax(-1)  # also the argmax of Loss1's class scores
        return Predictions(coord.detach(), obj.detach(), cls.detach(), boxes, classes, assign.resp,
                           truths.valid.sum(1), energy)

    def _stats(self, pred: torch.Tensor, boxes: torch.Tensor, truths: _Truths) -> dict[str, torch.Tensor]:
        """Darknet's printed statistics over every valid truth (overwritten ones too), as 0-dim tensors."""
        with torch.no_grad():
            p = pred.detach()
            if self.region['loss'] == 'loss1':
                probs = torch.softmax(p[..., 4:], -1)
                objness, cls_prob = 1 - probs[..., 0], probs[..., 1:]
            else:
                objness, cls_prob = torch.sigmoid(p[..., 4]), torch.softmax(p[..., 5:], -1)
            b = p.shape[0]
            at = truths.index
            iou = iou_cxcywh(boxes.gather(1, at.unsqueeze(-1).expand(b, at.shape[1], 4)), truths.box)
            valid = truths.valid.to(p.dtype)
            count = valid.sum()
            t_cls = cls_prob.gather(1, at.unsqueeze(-1).expand(b, at.shape[1], self.num_classes))
            t_cls = t_cls.gather(-1, truths.cls.unsqueeze(-1)).squeeze(-1)
            stats = {'iou': (iou * valid).sum() / count, 'class_prob': (t_cls * valid).sum() / count,
                     'obj_prob': (objness.gather(1, at) * valid).sum() / count, 'noobj_prob': objness.mean(),
                     'recall50': ((iou > 0.5) * valid).sum() / count, 'recall75': ((iou > 0.75) * valid).sum() / count,
                     'count': count}
        return stats


def _balanced(term: torch.Tensor, focus: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """focus · S / S_focus: the IoU-balanced weight keeping the term's sum over the responsible predictions (eq. 2)."""
    t = torch.where(resp, term.detach(), torch.zeros_like(focus))
    plain, weighted = t.sum(), (t * focus).sum()
    return focus * torch.where(weighted > 0, plain / weighted.clamp(min=torch.finfo(t.dtype).tiny), 1.0)


def check_loss_settings(region: Section, lrm: Section) -> None:
    """Raise CfgError (naming the file and key) for `[region]`/`[lrm]` settings the loss cannot train with; the
    constructor runs it, and the experiment runner before any run starts."""
    r = region
    check_region(r)
    if r['max'] > MAX_TRUTHS:
        raise r.error(f'the region layer reads at most {MAX_TRUTHS} truths per image; max={r["max"]}', 'max')
    if r['focal'] and r['loss'] != 'loss1':
        raise r.error('focal=1 needs loss=loss1 (Loss2 has no shared foreground/background term)', 'focal')
    for key in ('eta', 'lambda', 'w_loc'):
        if r[key] < 0:
            raise r.error(f'{key} must be >= 0', key)
    check_lrm(lrm)
