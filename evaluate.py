"""Run a model over a .data file's valid list and score it, or score VOC / KITTI result files (see `--help`)."""
from yolo_lrm.evaluate import main

if __name__ == '__main__':
    main()
