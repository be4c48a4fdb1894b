"""`evaluate.py`'s command line: run a model over a .data file's valid= list and score it, or score VOC / KITTI
result files; print the per-class table and write JSON, CSV, PR curves and the confusion matrix (see
`yolo_lrm.evaluation.evaluate` for the protocols and `--help` for the options)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .cfg import CfgError
from .engines import ENGINES, load_network
from .evaluation.evaluate import (METRICS, EvalResult, check_metrics, evaluate_model, format_table, save_csv, save_json,
                       score_kitti_dirs, score_voc_files)
from .data.datafile import parse_data
from .data.imagelist import ImageList
from .reports.run import write_eval_figures
from .textfile import read_names
from .evaluation.voc import read_image_set


def _output_args(ap: argparse.ArgumentParser, plots_default: str) -> None:
    ap.add_argument('--json', help='write the result as JSON here')
    ap.add_argument('--csv', help='write the table as CSV here')
    ap.add_argument('--plot', metavar='DIR', help='write PR curves per class (pr_<class>.png) and the confusion matrix '
                    f'(confusion.csv, confusion.png) here; {plots_default}')


def _report(result: EvalResult, json_path: str | None, csv_path: str | None, plot_dir: str | None,
            need_plots: bool = True) -> None:
    print(format_table(result))
    if json_path:
        save_json(result, json_path)
    if csv_path:
        save_csv(result, csv_path)
    if plot_dir:
        for note in write_eval_figures(result, plot_dir, need_plots=need_plots):
            print(f'note: {note}', file=sys.stderr)


def _main_voc(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog='evaluate.py voc', description='Score VOC result files (py-faster-rcnn rules).')
    ap.add_argument('--annotations', required=True, help='folder of VOC XML files (<id>.xml)')
    ap.add_argument('--image-set', required=True, help='file of image ids (ImageSets/Main/test.txt)')
    ap.add_argument('--names', required=True, help='class names, one per line')
    ap.add_argument('--results', required=True, help='result file template, {} = class name')
    ap.add_argument('--metric', nargs='+', choices=('voc07', 'area'), default=['voc07'])
    ap.add_argument('--iou', nargs='+', type=float, default=[0.5])
    ap.add_argument('--iou-ge', action='store_true', help="IoU >= threshold (official MATLAB devkit) instead of >")
    _output_args(ap, 'default: none')
    a = ap.parse_args(argv)
    result = score_voc_files(a.annotations, a.image_set, read_names(a.names), a.results, a.metric, a.iou, a.iou_ge)
    _report(result, a.json, a.csv, a.plot)


def _main_kitti(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog='evaluate.py kitti', description='Official KITTI 2D object evaluation.')
    ap.add_argument('--labels', required=True, help='label_2 folder (<frame>.txt, 15 columns)')
    ap.add_argument('--results', required=True, help='result folder (<frame>.txt, 16 columns, score last)')
    ap.add_argument('--frames', help='file of frame ids to evaluate (default: every label file)')
    _output_args(ap, 'default: none (KITTI result files give PR curves only)')
    a = ap.parse_args(argv)
    frames = read_image_set(a.frames) if a.frames else None
    _report(score_kitti_dirs(a.labels, a.results, frames), a.json, a.csv, a.plot)


def _main_model(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog='evaluate.py', description='Run a model over valid= of a .data file and score '
                                 'it; or "evaluate.py voc|kitti --help" to score result files.')
    ap.add_argument('cfg', help="network cfg ('-': the cfg inside a .pt, or an .onnx export's own network)")
    ap.add_argument('data', help='.data file (valid=, names=, annotations= or kitti_labels=)')
    ap.add_argument('weights', help='Darknet .weights, yolo_lrm .pt, or an .onnx export (python -m yolo_lrm.export)')
    ap.add_argument('--metric', nargs='+', choices=METRICS,
                    help='voc07 and/or area, or kitti or kitti-voc alone (default: kitti if the .data says '
                         'eval=kitti, else voc07)')
    ap.add_argument('--iou', nargs='+', type=float, default=[0.5], help='IoU thresholds (VOC metrics)')
    ap.add_argument('--iou-ge', action='store_true', help="IoU >= threshold (official MATLAB devkit) instead of >")
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--workers', type=int, default=2, help='image loading processes')
    ap.add_argument('--device', default='', help='cpu, cuda, cuda:N or N (default: cuda when available)')
    ap.add_argument('--engine', choices=ENGINES, default='auto', help="torch, onnx (ONNX Runtime on the CPU; a .pt / "
                    ".weights exported once, fp32, into the cache), auto: an .onnx with ONNX Runtime, a .pt / .weights "
                    "with PyTorch (unlike detect.py on a CPU: the scores are those of the network training validates)")
    ap.add_argument('--size', type=int, help='network input size (default: the cfg width)')
    ap.add_argument('--out', help='folder for result files, eval.json and eval.csv (default: results= of the .data)')
    ap.add_argument('--set', nargs='*', default=[], metavar='SECTION.KEY=VALUE', help='cfg overrides')
    _output_args(ap, 'default: the --out folder (pictures skipped with a note without matplotlib)')
    a = ap.parse_args(argv)
    if a.metric:
        try:
            check_metrics(a.metric)
        except ValueError as exc:
            ap.error(f'--metric: {exc}')
    if a.cfg == '-' and not a.weights.endswith(('.pt', '.onnx')):  # said here: the loader cannot name CFG
        raise CfgError(f'{a.weights}: a Darknet .weights file needs its cfg: give the cfg file as the first '
                       f'argument (CFG) instead of -')
    data = parse_data(a.data)
    metrics = a.metric or ['kitti' if data['eval'] == 'kitti' else 'voc07']
    loaded = load_network(a.weights, None if a.cfg == '-' else a.cfg, a.device, a.engine,
                          None if a.size is None else (a.size, a.size), a.set, auto_cpu='torch')
    print(f'engine: {loaded.route}', file=sys.stderr)  # stdout stays the table alone
    out = a.out or data['results']
    result = evaluate_model(loaded.net, data, metrics, a.iou, names=None if data.named else loaded.names, size=a.size,
                            batch_size=a.batch, out=out, workers=a.workers, inclusive=a.iou_ge)
    _warn_skipped(result.skipped, data.images('valid'))
    _report(result, a.json or os.path.join(out, 'eval.json'), a.csv or os.path.join(out, 'eval.csv'), a.plot or out,
            need_plots=a.plot is not None)


def _warn_skipped(skipped: Sequence[str], valid: ImageList) -> None:
    for reason in skipped:
        print(f'warning: skipped unreadable image {reason}', file=sys.stderr)
    if skipped:
        print(f'warning: {len(skipped)} of {len(valid.entries)} images in {valid.source} could not be read; they and '
              f'their ground truth are left out of the scores', file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """`evaluate.py` entry point (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {'voc': _main_voc, 'kitti': _main_kitti}
    # the package's logged warnings (missing result files, unknown classes) go to stderr as `warning: ...`
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter('warning: %(message)s'))
    handler.setLevel(logging.WARNING)
    logging.getLogger('yolo_lrm').addHandler(handler)
    try:
        commands.get(argv[0] if argv else '', _main_model)(argv[1:] if argv and argv[0] in commands else argv)
    except (ValueError, OSError, RuntimeError) as exc:  # CfgError and the readers' errors are ValueErrors
        raise SystemExit(f'error: {exc}') from None
    finally:
        logging.getLogger('yolo_lrm').removeHandler(handler)


if __name__ == '__main__':
    main()
