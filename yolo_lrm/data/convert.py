"""Dataset converters, one command each:

    python -m yolo_lrm.data.convert voc ROOT [--out DIR] [--names FILE] [--keep-difficult]
    python -m yolo_lrm.data.convert kitti ROOT --out DIR [--seed 0] [--test-fraction 0.1]
                                     [--person-sitting {drop,pedestrian}]
    python -m yolo_lrm.data.convert yolo DATA_YAML --out DIR
    python -m yolo_lrm.data.convert coco ANNOTATIONS.json [MORE.json ...] --out DIR [--images DIR ...]
                                     [--split NAME ...]

See `yolo_lrm/data/voc.py`, `kitti.py`, `yolo.py` and `coco.py` for what is written.
"""
from __future__ import annotations

import argparse
import time

from .coco import convert_coco
from .kitti import convert_kitti
from .layout import ConvertError
from .voc import convert_voc
from .yolo import convert_yolo
from ..textfile import read_names


def _names(path: str | None) -> list[str] | None:
    return read_names(path, ConvertError) if path else None


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog='python -m yolo_lrm.data.convert', description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='format', required=True)
    voc = sub.add_parser('voc', help='PASCAL VOC layout (VOCdevkit/VOC<year>/... or one plain VOC folder)')
    voc.add_argument('root')
    voc.add_argument('--out', help='output folder (default: in place, as voc_label.py)')
    voc.add_argument('--names', help='class names file (default: the 20 VOC classes, or the names in the XML)')
    voc.add_argument('--keep-difficult', action='store_true', help='keep difficult=1 objects (default: drop)')
    kit = sub.add_parser('kitti', help='KITTI object detection (training/image_2, training/label_2)')
    kit.add_argument('root')
    kit.add_argument('--out', required=True, help='output folder')
    kit.add_argument('--seed', type=int, default=0, help='seed of the random train/test split')
    kit.add_argument('--test-fraction', type=float, default=0.1)
    kit.add_argument('--person-sitting', choices=('drop', 'pedestrian'), default='drop')
    yolo = sub.add_parser('yolo', help='Ultralytics / Roboflow YOLO export: a data.yaml beside images/ and labels/')
    yolo.add_argument('data_yaml')
    yolo.add_argument('--out', required=True, help='output folder')
    coco = sub.add_parser('coco', help='COCO JSON annotation files, one split each')
    coco.add_argument('annotations', nargs='+', metavar='ANNOTATIONS.json')
    coco.add_argument('--images', nargs='+', metavar='DIR', help="the images' folder: one for all files or one per "
                      "file (default: each file's own folder, as Roboflow exports it)")
    coco.add_argument('--split', nargs='+', metavar='NAME', help='split names, one per file (default: the file names)')
    coco.add_argument('--out', required=True, help='output folder')
    for p in (voc, kit, coco):
        p.add_argument('--workers', type=int, default=None, help='processes (default: all cores)')
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.format == 'voc':
            result = convert_voc(args.root, args.out, _names(args.names), args.keep_difficult, args.workers)
        elif args.format == 'kitti':
            result = convert_kitti(args.root, args.out, args.seed, args.test_fraction, args.person_sitting,
                                   args.workers)
        elif args.format == 'yolo':
            result = convert_yolo(args.data_yaml, args.out)
        else:
            result = convert_coco(args.annotations, args.out, args.images, args.split, args.workers)
    except (ValueError, OSError) as exc:   # ConvertError, and a data.yaml's CfgError or the scan's DatasetError
        raise SystemExit(f'error: {exc}') from None
    print(result.summary())
    print(f'done in {time.perf_counter() - start:.2f} s')


if __name__ == '__main__':
    main()
