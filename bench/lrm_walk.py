"""What the LRM walk keeps and what it leaves untrained, on a trained network and real training images.

For each NMS setting, over the first `--images` training images (letterboxed, not augmented) at a given K:
  kept_bg           backgrounds kept per image (the foregrounds are kept too: they rank first)
  bg_loss_kept      share of the backgrounds' loss that the kept backgrounds carry
  top_bg_skipped    of the K−fg highest-loss backgrounds (the no-NMS choice), how many the walk does not keep
  skipped_by_fg     ... of those, suppressed by a kept foreground (same predicted class, IoU >= NMS)
  obj_kept/obj_left mean objectness (1 − p(background) for Loss1, sigmoid for Loss2) of kept / not kept backgrounds
  obj_fg            mean objectness of the foregrounds
Used in docs/results.md (#16, collapses) to see why K=64 / NMS .7 collapses on the demo and K=64 / NMS .5 does not.

    python bench/lrm_walk.py --weights RUN/weights/last.pt --data data/demo.data -k 64 --nms none 0.5 0.7
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolo_lrm.box import pairwise_iou_cxcywh  # noqa: E402
from yolo_lrm.data.datafile import parse_data  # noqa: E402
from yolo_lrm.checkpoint import load_model  # noqa: E402
from yolo_lrm.data.dataset import ListDataset, collate  # noqa: E402
from yolo_lrm.head import decode  # noqa: E402
from yolo_lrm.loss.lrm import select_hard_examples  # noqa: E402
from yolo_lrm.loss import region as loss_module  # noqa: E402
from yolo_lrm.loss.region import RegionLoss  # noqa: E402
from yolo_lrm.loss.mining import mine as mining_mine  # noqa: E402


def captured_predictions(weights: str, data: str, images: int, k: int):
    """(the loss's Predictions for the first `images` training images, objectness (B, N)) under the weights, at
    the number of images they were trained on (so that the anchor-prior term is as it was in training)."""
    net, _ = load_model(weights, overrides=[f'lrm.hard_examples={k}'])  # mining on, so the loss hands them over
    captured = {}

    def capture(lrm, p, seen_images, num_anchors):
        captured['p'] = p
        return mining_mine(lrm, p, seen_images, num_anchors)

    crit = RegionLoss(net.region, net.cfg.lrm).train()
    ds = ListDataset(parse_data(data)['train'], net.region['classes'], augment=False)
    images, targets, _, _ = collate([ds[(i, net.cfg.net['width'])] for i in range(min(images, len(ds)))])
    loss_module.mine = capture
    try:
        with torch.no_grad():
            out = net(images)
            crit(out, targets, seen=int(net.seen))
    finally:
        loss_module.mine = mining_mine
    objectness = decode(out, net.anchors, net.region['loss']).obj  # Loss1: 1 - p(background)
    return captured['p'], objectness.reshape(out.shape[0], -1)      # (B, N) in the loss's order (A, H, W)


def walk_stats(p, objectness: torch.Tensor, k: int, nms: float | None) -> dict[str, float]:
    """The columns of the module docstring for one K and NMS threshold."""
    total = p.loc + p.obj + p.cls
    kept = select_hard_examples(total, p.boxes, p.classes, k, nms)
    top = select_hard_examples(total, p.boxes, p.classes, k, None)
    bg = ~p.fg
    skipped = top & ~kept & bg
    # a skipped prediction's suppressor: a kept prediction of its class that overlaps it at >= nms (any, if several)
    by_fg = torch.zeros_like(skipped)
    if nms is not None:
        iou = pairwise_iou_cxcywh(p.boxes, p.boxes)
        same = p.classes.unsqueeze(2) == p.classes.unsqueeze(1)
        suppressor = same & (iou >= nms) & kept.unsqueeze(1)
        by_fg = skipped & (suppressor & p.fg.unsqueeze(1)).any(2)
    images = total.shape[0]
    bg_loss = (total * bg).sum()
    mean = lambda m: float(objectness[m].mean()) if m.any() else float('nan')  # noqa: E731
    return {'kept_bg': float((kept & bg).sum()) / images,
            'bg_loss_kept': float((total * (kept & bg)).sum() / bg_loss),
            'top_bg_skipped': float(skipped.sum()) / images, 'skipped_by_fg': float(by_fg.sum()) / images,
            'obj_kept': mean(kept & bg), 'obj_left': mean(~kept & bg), 'obj_fg': mean(p.fg)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--weights', required=True, nargs='+')
    ap.add_argument('--data', required=True)
    ap.add_argument('-k', type=int, default=64)
    ap.add_argument('--nms', nargs='+', default=['none', '0.5', '0.7'])
    ap.add_argument('--images', type=int, default=64)
    ap.add_argument('--json', help='also write the rows here')
    a = ap.parse_args(argv)
    rows = []
    for weights in a.weights:
        p, objectness = captured_predictions(weights, a.data, a.images, a.k)
        for spec in a.nms:
            row = {'weights': weights, 'k': a.k, 'nms': spec,
                   **walk_stats(p, objectness, a.k, None if spec == 'none' else float(spec))}
            rows.append(row)
            print(' '.join(f'{key} {value:.3f}' if isinstance(value, float) else f'{key} {value}'
                           for key, value in row.items()))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + '\n')


if __name__ == '__main__':
    main()
