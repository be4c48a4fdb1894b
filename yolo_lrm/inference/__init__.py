"""Real-time inference behind `python detect.py`.

`detect.py` (the detector, its writers and command line), `sources.py` (images, folders, videos, cameras, streams).
"""
