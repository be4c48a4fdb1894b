"""The training criterion: YOLOv2's region loss and the hard-example mining it applies.

`region.py` (the loss: Loss2 as Darknet, Loss1, focal; `RegionLoss`), `mining.py` (the `[lrm]` options: plain LRM and
those beyond the paper), `lrm.py` (Loss Rank Mining's ranking and NMS selection).  Each imports only the next.
"""
