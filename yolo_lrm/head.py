"""Decoding the region output F into boxes and scores (Darknet's `get_region_box` / `get_region_detections`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .box import cxcywh_to_xyxy, nms


def split_output(output: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """(B, A*(5+C), H, W) -> (B, A, 5+C, H, W): channel n*(5+C)+e is entry e of anchor n (Darknet's layout)."""
    b, ch, h, w = output.shape
    return output.view(b, num_anchors, ch // num_anchors, h, w)


def grid_boxes(raw: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Predicted boxes (B, A, H, W, 4) as (cx, cy, w, h) relative to the network input, from split raw output."""
    _, a, _, h, w = raw.shape
    col = torch.arange(w, device=raw.device, dtype=raw.dtype).view(1, 1, 1, w)
    row = torch.arange(h, device=raw.device, dtype=raw.dtype).view(1, 1, h, 1)
    anc = anchors.to(raw.device, raw.dtype)
    bx = (col + torch.sigmoid(raw[:, :, 0])) / w
    by = (row + torch.sigmoid(raw[:, :, 1])) / h
    bw = torch.exp(raw[:, :, 2]) * anc[:, 0].view(1, a, 1, 1) / w
    bh = torch.exp(raw[:, :, 3]) * anc[:, 1].view(1, a, 1, 1) / h
    return torch.stack((bx, by, bw, bh), -1)


@dataclass
class Decoded:
    """Every prediction of a batch, in Darknet's detection order (anchor, row, col)."""
    boxes: torch.Tensor   # (B, A, H, W, 4) cx, cy, w, h relative to the network input
    obj: torch.Tensor     # (B, A, H, W) objectness (Loss1: 1 - background probability)
    scores: torch.Tensor  # (B, A, H, W, C) detection score per class


def decode(output: torch.Tensor, anchors: torch.Tensor, loss: str = 'loss2') -> Decoded:
    """Decode F.  Loss2: score = sigmoid(obj) * softmax(classes).  Loss1: the objectness channel is the background
    logit of a (C+1)-way softmax and score = that softmax's class probability (the same rule the loss trains)."""
    raw = split_output(output.float(), anchors.shape[0])
    boxes = grid_boxes(raw, anchors)
    logits = raw[:, :, 4:].movedim(2, -1)            # (B, A, H, W, 1+C)
    if loss == 'loss1':
        p = torch.softmax(logits, -1)
        return Decoded(boxes, 1 - p[..., 0], p[..., 1:])
    obj = torch.sigmoid(logits[..., 0])
    return Decoded(boxes, obj, obj.unsqueeze(-1) * torch.softmax(logits[..., 1:], -1))


def detect(output: torch.Tensor, anchors: torch.Tensor, conf_thresh: float, nms_thresh: float,
           loss: str = 'loss2', max_det: int = 300, classes: list[int] | None = None) -> list[torch.Tensor]:
    """Detections per image as (n, 6) rows `x1, y1, x2, y2, score, class` relative to the network input.

    Like Darknet, every (box, class) pair whose score exceeds `conf_thresh` is a candidate (a box can be reported for
    several classes); class-wise NMS (IoU > nms_thresh) follows; at most `max_det` rows, best first.
    """
    dec = decode(output, anchors, loss)
    b = dec.boxes.shape[0]
    boxes = dec.boxes.reshape(b, -1, 4)
    scores = dec.scores.reshape(b, boxes.shape[1], -1)
    if classes is not None:
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        allowed[classes] = True
        scores = scores * allowed
    results = []
    for i in range(b):  # per image: candidate counts differ, so this loop is over images, not predictions
        pred, cls = (scores[i] > conf_thresh).nonzero(as_tuple=True)
        s = scores[i, pred, cls]
        bx = boxes[i, pred]
        if nms_thresh < 1 and len(s):
            keep = nms(bx, s, cls, nms_thresh)
        else:
            keep = torch.sort(s, descending=True, stable=True).indices
        keep = keep[:max_det]
        results.append(torch.cat((cxcywh_to_xyxy(bx[keep]), s[keep, None], cls[keep, None].to(s.dtype)), 1))
    return results
