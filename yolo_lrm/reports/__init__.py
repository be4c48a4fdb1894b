"""Pictures of runs and evaluations.

`run.py` (what a run shows besides numbers: `RunReports`, TensorBoard, `write_eval_figures`), `plots.py` (matplotlib
figures), `mosaic.py` (OpenCV image mosaics), `draw.py` (boxes drawn on images).
"""
