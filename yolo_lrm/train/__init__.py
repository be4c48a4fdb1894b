"""The training run behind `python train.py`: what it is asked, how it starts, its loop, what it logs.

`args.py` (the run's options), `setup.py` (what a run starts from, checked before anything is written), `trainer.py`
(the loop), `stats.py` (the per-update statistics), `runlog.py` (`train.log`, `results.csv`), `runstate.py` (where a
run stands), `stopping.py` (early ends), `optim.py` (Darknet's SGD), `schedule.py` (Darknet's lr policies),
`track.py` (`--track`'s folder of per-image losses, written here and read by the label audit).
"""
