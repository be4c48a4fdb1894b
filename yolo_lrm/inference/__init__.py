"""Real-time inference behind `python detect.py`.

`sources.py` (images, folders, videos, cameras, streams), `detector.py` (the network in the one inference pipeline),
`writers.py` (what is written per frame), `detect.py` (the run over a source, its timings and the command line).
"""
