"""Detect objects in images, folders, globs, list files, videos, cameras or streams (see `--help`)."""
import os

# Must precede the first torch import.  OpenMP threads that spin while idle steal the cores from the frame-reader
# thread and from anything else running; on a busy 2-core machine spinning made detection 2.4x slower
# (bench/bench_infer.py).  An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from yolo_lrm.inference.detect import main  # noqa: E402

if __name__ == '__main__':
    main()
