"""Run a model over a .data file's valid list and score it, or score VOC / KITTI result files (see `--help`)."""
import os

# Must precede the first torch import: OpenMP threads that spin while idle collapse CPU evaluation when anything else
# wants a core (a demo evaluation took 100 s of CPU instead of 9 s on a busy 2-core machine).  An explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from yolo_lrm.evaluate_cli import main  # noqa: E402

if __name__ == '__main__':
    main()
