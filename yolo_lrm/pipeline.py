"""The one inference pipeline: letterbox → network → decode + NMS → unletterbox.

The detector (`inference/detector.py`), the evaluation (`evaluation/evaluate.py`) and the label audit
(`labelcheck/audit.py`) all letterbox with `letterbox.letterbox` and turn the network's F into image detections with
`Postprocess`, so a detection that `detect.py` shows is the detection that `evaluate.py` scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .head import detect
from .letterbox import unletterbox


@dataclass(frozen=True)
class Postprocess:
    """F → per image an (n, 6) tensor `x1, y1, x2, y2, score, class` in 0-based pixels of that image (unclipped, as
    evaluation scores them), best first."""
    anchors: torch.Tensor          # (A, 2) grid units, on the output's device
    loss: str                      # the [region] loss variant: how scores are decoded
    size: tuple[int, int]          # the network input (w, h) the images were letterboxed to
    conf: float
    nms: float
    max_det: int
    classes: tuple[int, ...] | None = None

    @classmethod
    def for_network(cls, net, size: tuple[int, int], conf: float, nms: float, max_det: int | None = None,
                    classes: Sequence[int] | None = None, device: torch.device | None = None) -> 'Postprocess':
        """The post-processing of `net` (a `Darknet` or an `OnnxNetwork`) at input `size`; `max_det=None` keeps
        every (box, class) pair above `conf`, as Darknet's `detector valid` writes them."""
        if max_det is None:
            max_det = net.num_anchors * (size[0] // net.stride) * (size[1] // net.stride) * net.num_classes
        anchors = net.anchors if device is None else net.anchors.to(device)
        return cls(anchors, net.region['loss'], size, conf, nms, max_det, None if classes is None else tuple(classes))

    def __call__(self, output: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """Detections per image in its own pixels; `sizes` holds each image's original (w, h)."""
        dets = detect(output, self.anchors, self.conf, self.nms, self.loss, self.max_det,
                      None if self.classes is None else list(self.classes))
        return [torch.cat((unletterbox(d[:, :4], w, h, *self.size), d[:, 4:]), 1) for d, (w, h) in zip(dets, sizes)]
