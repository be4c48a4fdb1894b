"""The label audit: find label errors and hard examples in a dataset with a trained detector (issue #31).

    python -m yolo_lrm.labelcheck --weights W --data DATA [--split train|valid|test] [--out DIR] [--conf .25]
    python -m yolo_lrm.labelcheck --data DATA --folds 2 --cfg CFG [--weights INIT] [--budget bccd-cpu] [--set ...]

The model runs over the split's images as evaluation does (letterbox, threshold .005, NMS .45); the training
criterion scores every image and every label box (`audit.py`); labels and detections give issues of four kinds
(`issues.py`: the rules); `report.py` writes, into OUT (default `runs/labelcheck/<data>-<split>`):

* `label_issues.csv`: one row per issue, grouped by kind (missing, wrong_class, bad_box, spurious), ranked by score
  within each: `kind, rank, score, image, label_file`, the label as its file says it (`class, class_name, cx, cy, w,
  h`, normalised as Darknet labels; empty for `missing`), the model's suggestion (`suggested_class, suggested_name,
  s_cx, s_cy, s_w, s_h`; empty for `spurious`), `iou` of label and suggestion, the label's loss terms `coord, obj,
  cls`, and the `fold` that audited it (`--folds`);
* `boxes.csv`: every label box with its region loss terms (coord, obj, cls) and their sum;
* `images.csv`: every image, hardest first, with its region loss (and its hardness over training with a track), its
  boxes and issues; `hard_images.txt`: the hardest `--hard` share of them as a Darknet list (absolute paths), usable
  as a `train=` list to fine-tune on or to oversample;
* `issues.jpg`: the top `--top` issues, the kinds taking turns: a crop around the label and the suggestion, the
  labels on the left, the detections above `--conf` on the right;
* `summary.json`: counts per kind, the model(s), and which source ranked the hard images: the final model's loss,
  or a training run's track (written by `train.py --track`: each training image's loss at every update that drew it,
  in `yolo_lrm/train/track.py`'s format, so that images that stay hard rank above images the model has merely
  memorised), found as `--track DIR` or beside WEIGHTS (`RUN/track/`).

`--folds K` (`folds.py`) audits each of K seeded parts of the split with a model trained on the others, through the
normal trainer: no label is judged by a model that learnt it.  Bad input ends with an error naming the file: a model
whose class count or class names differ from the data's, a split the .data file lacks or whose list has no usable
image, neither the model nor the data naming the classes.  The package's modules are imported by name
(`yolo_lrm.labelcheck.audit`, ...); this file imports nothing, so that `__main__` can set up OpenMP first.
"""
