"""Scoring detections: a model run over an image list, and the VOC and KITTI protocols.

`evaluate.py` (a model over a list, scored: `evaluate_model`), `voc.py` (PASCAL VOC AP), `kitti.py` (the official KITTI
2D protocol), `resultfiles.py` (Darknet's result files), `confusion.py` (the detection confusion matrix).
"""
