"""Grids of training runs that give the paper's tables: `python -m yolo_lrm.experiments` (`cli.py` has the command).

`cli.py` (the command line and the grid loop), `grids.py` (the rows of the grids and the budgets they share), `runs.py`
(one run and its record), `report.py` (the tables and plots from the records).
"""
