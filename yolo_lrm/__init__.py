"""yolo_lrm: a Darknet-faithful YOLOv2 trainer with Loss Rank Mining."""
__version__ = '0.1.0'
