"""`python -m yolo_lrm.labelcheck`: the label audit (see the package docstring and `--help`)."""
import os

# before torch loads OpenMP, as train.py and evaluate.py do: spinning OpenMP threads collapse CPU inference when
# anything else wants a core; an explicit OMP_WAIT_POLICY wins
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from yolo_lrm.labelcheck.cli import main  # noqa: E402

main()
