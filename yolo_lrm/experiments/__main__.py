"""`python -m yolo_lrm.experiments`: the grid command (`cli.py` and `--help`)."""
from yolo_lrm.experiments.cli import main

main()
