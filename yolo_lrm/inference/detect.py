"""`detect.py`: read images / videos / cameras / streams, run the detector (`detector.py`) over their frames in
batches, write the results (`writers.py`) and report the timings; its command line.

A reader thread (`sources.FrameReader`) decodes and letterboxes the next frames while the network runs on the
current ones.  The engine (PyTorch or ONNX Runtime) is chosen by `engines.load_network` (`--engine`) and named in the
`engine:` line.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..cfg import CfgError
from ..data.datafile import parse_data
from ..engines import ENGINES, load_network
from ..export import ExportError
from ..runfolder import increment_dir
from ..textfile import read_lines
from .detector import DEFAULT_CONF, Detector, synchronize
from .sources import Frame, FrameReader, Skip, SourceError, resolve_source
from .writers import OutputOptions, ResultWriter


# ------------------------------------------------------------------------------------------------------- running
@dataclass
class Summary:
    """What a run did, with its timings (seconds summed over frames)."""
    save_dir: Path
    frames: int = 0
    skipped: list[str] = field(default_factory=list)
    detections: int = 0
    wall_s: float = 0.0
    read_s: float = 0.0
    net_s: float = 0.0
    post_s: float = 0.0
    write_s: float = 0.0
    dropped: int = 0

    @property
    def fps(self) -> float:
        """End to end: decode + letterbox + network + decode/NMS + drawing/saving, over the wall-clock time."""
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def net_fps(self) -> float:
        """Network forward passes only."""
        return self.frames / self.net_s if self.net_s else 0.0


def run(detector: Detector, reader: FrameReader, writer: ResultWriter, batch: int = 1,
        verbose: bool = True) -> Summary:
    """Run the detector over a reader's frames (batches of `batch`; 1 for live streams), writing results as they
    come; closes the reader and returns the summary with timings."""
    source = reader.source
    batch = 1 if source.live else max(1, batch)
    summary = Summary(writer.dir)
    # CUDA: warm up (and let cuDNN autotune) at the batch shape; CPU: one image is enough, a batch can take seconds
    detector.warmup(batch if detector.device.type == 'cuda' else 1)
    start = time.perf_counter()
    pending: list[Frame] = []
    try:
        for item in reader:
            if isinstance(item, Skip):
                if len(source.items) == 1 and source.kind == 'images':
                    raise SourceError(item.reason)
                summary.skipped.append(item.source)
                print(f'skip: {item.reason}')
                continue
            pending.append(item)
            if len(pending) == batch:
                frames, pending = pending, []
                if not _process(detector, frames, writer, summary, verbose):
                    break  # the viewer asked to stop
        else:
            if pending:  # the last, partial batch
                _process(detector, pending, writer, summary, verbose)
    except KeyboardInterrupt:
        print('interrupted: finishing the files written so far')
    finally:
        reader.close()
        summary.wall_s = time.perf_counter() - start
        summary.dropped = reader.dropped
    return summary


def _process(detector: Detector, frames: list[Frame], writer: ResultWriter, summary: Summary,
             verbose: bool) -> bool:
    t0 = time.perf_counter()
    output = detector.network(np.stack([f.tensor for f in frames]))
    synchronize(detector.device)
    t1 = time.perf_counter()
    dets = detector.postprocess(output, [(f.rgb.shape[1], f.rgb.shape[0]) for f in frames])
    dets = [d.cpu().numpy() for d in dets]
    t2 = time.perf_counter()
    net_ms, post_ms = (t1 - t0) * 1e3 / len(frames), (t2 - t1) * 1e3 / len(frames)
    summary.net_s += t1 - t0
    summary.post_s += t2 - t1
    keep_going = True
    for frame, det in zip(frames, dets):
        t = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        keep_going = writer.write(frame, det) and keep_going
        write_ms = (time.perf_counter() - t) * 1e3
        summary.write_s += write_ms / 1e3
        summary.read_s += frame.read_s
        summary.frames += 1
        summary.detections += len(det)
        if verbose:
            print(f'{_frame_label(frame)} {w}x{h}: {_describe(det, writer.names)} '
                  f'(read {frame.read_s * 1e3:.1f} ms, net {net_ms:.1f} ms, nms {post_ms:.1f} ms, '
                  f'draw/save {write_ms:.1f} ms)')
    return keep_going


def _frame_label(frame: Frame) -> str:
    of = f'/{frame.count}' if frame.count else ''
    return f'{frame.index + 1}{of} {frame.source}'


def _describe(dets: np.ndarray, names: list[str]) -> str:
    if not len(dets):
        return 'no detections'
    classes, counts = np.unique(dets[:, 5].astype(np.int64), return_counts=True)
    return ', '.join(f'{n} {names[c]}' for c, n in zip(classes.tolist(), counts.tolist()))


def report(summary: Summary, written: list[str]) -> str:
    """The closing lines: frame counts, end-to-end and network-only FPS, mean stage times, where results are."""
    n = max(summary.frames, 1)
    lines = [f'{summary.frames} frames in {summary.wall_s:.2f} s: end-to-end {summary.fps:.1f} FPS '
             f'(decode + letterbox + network + NMS + drawing/saving), network only {summary.net_fps:.1f} FPS',
             f'mean per frame: read {summary.read_s / n * 1e3:.1f} ms (in the reader thread), '
             f'net {summary.net_s / n * 1e3:.1f} ms, nms {summary.post_s / n * 1e3:.1f} ms, '
             f'draw/save {summary.write_s / n * 1e3:.1f} ms; {summary.detections} detections']
    if summary.skipped:
        lines.append(f'{len(summary.skipped)} unreadable images skipped')
    if summary.dropped:
        lines.append(f'{summary.dropped} live frames dropped (the network was slower than the stream)')
    lines.append(f'results in {summary.save_dir}' + (f' ({", ".join(written)})' if written else ''))
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `detect.py` command line."""
    ap = argparse.ArgumentParser(
        description='Detect objects in images, folders, globs, list files, videos, cameras or streams.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument('--weights', required=True, help='.pt checkpoint (carries cfg and names), Darknet .weights, or '
                    'an .onnx export (python -m yolo_lrm.export: carries cfg, names and input size)')
    ap.add_argument('--cfg', help='network cfg (needed for .weights; overrides the one inside a .pt)')
    ap.add_argument('--engine', choices=ENGINES, default='auto',
                    help='torch: PyTorch; onnx: ONNX Runtime on the CPU (a .pt / .weights is exported once, fp32, '
                    'into the cache); auto: the fastest route: an .onnx with ONNX Runtime, a .pt / .weights with '
                    'ONNX Runtime on a CPU (exported once; PyTorch, with the reason, where onnxruntime is missing '
                    'or the export fails) and with PyTorch on a GPU. The route taken is printed (engine: ...)')
    ap.add_argument('--names', help='class names file, one per line (default: from the .pt / .onnx, or --data)')
    ap.add_argument('--data', help='.data file whose names= gives the class names')
    ap.add_argument('--source', required=True,
                    help='image, folder, glob, .txt list of paths, video file, camera index or rtsp/http URL')
    ap.add_argument('--img-size', type=int, nargs='+', metavar='N',
                    help='network input: N (square) or W H, multiples of 32 (default: the cfg width/height)')
    ap.add_argument('--conf', type=float, default=DEFAULT_CONF,
                    help="score threshold (Darknet: 'detector test' .5, 'demo' .24)")
    ap.add_argument('--nms', type=float, default=0.45, help='class-wise NMS IoU threshold (>= 1: no NMS)')
    ap.add_argument('--max-det', type=int, default=300, help='at most this many detections per image')
    ap.add_argument('--classes', nargs='+', help='keep only these classes (ids or names)')
    ap.add_argument('--device', default='', help="cpu, cuda, cuda:N or N (default: cuda when available)")
    ap.add_argument('--half', nargs='?', const='fp16', choices=['fp16', 'bf16'],
                    help='autocast the network to fp16 (default) or bf16 on CUDA')
    ap.add_argument('--batch', type=int, default=1, help='images per forward pass (image lists and video files)')
    ap.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                    help='channels_last memory format (NHWC), usually faster on CPU and GPU')
    ap.add_argument('--project', default='runs/detect', help='results go to PROJECT/NAME')
    ap.add_argument('--name', default='exp', help='run name (exp, exp2, ... when it exists)')
    ap.add_argument('--exist-ok', action='store_true', help='reuse PROJECT/NAME instead of incrementing')
    ap.add_argument('--nosave', action='store_true', help='do not save annotated images/videos')
    ap.add_argument('--save-txt', action='store_true', help='labels/<image>.txt: class cx cy w h (normalised)')
    ap.add_argument('--save-conf', action='store_true', help='add the score to --save-txt rows')
    ap.add_argument('--save-kitti', action='store_true', help='kitti/<image>.txt in the KITTI result format')
    ap.add_argument('--save-json', action='store_true', help='detections.json with every detection')
    ap.add_argument('--view', action='store_true', help='show results in a window (needs opencv-python)')
    ap.add_argument('--hide-conf', action='store_true', help='draw labels without scores')
    ap.add_argument('--quiet', action='store_true', help='no per-frame lines')
    args = ap.parse_args(argv)
    if args.img_size is not None and len(args.img_size) > 2:
        ap.error('--img-size takes N or W H')
    if args.batch < 1 or args.max_det < 1:
        ap.error('--batch and --max-det must be at least 1')
    return args


def resolve_names(args: argparse.Namespace, stored: list[str] | None, num_classes: int) -> list[str]:
    """Class names from --names, --data, the checkpoint, or `class<i>`; their number must match the network."""
    if args.names:
        names = read_lines(args.names, 'names file')
        where = args.names
    elif args.data:
        names, where = parse_data(args.data).names(), args.data
    elif stored:
        names, where = list(stored), f'{args.weights} (stored names)'
    else:
        return [f'class{i}' for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f'{where}: {len(names)} class names, but the network has {num_classes} classes')
    return names


def resolve_classes(items: list[str] | None, names: list[str]) -> list[int] | None:
    """--classes as ids: each item is a class index or a class name."""
    if items is None:
        return None
    ids = []
    for item in items:
        if item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        elif item in names:
            ids.append(names.index(item))
        else:
            raise ValueError(f'--classes: {item!r} is neither a class index 0..{len(names) - 1} nor a class name')
    return ids


def build_detector(args: argparse.Namespace) -> tuple[Detector, list[str], str]:
    """Load the network named by the command line and wrap it for inference; returns it with the class names and
    the engine's route in words."""
    if not args.cfg and not str(args.weights).endswith(('.pt', '.onnx')):  # said here: the loader cannot name --cfg
        raise ValueError(f'{args.weights}: a Darknet .weights file needs its cfg: pass --cfg CFG')
    size = None if args.img_size is None else (args.img_size[0], args.img_size[-1])
    loaded = load_network(args.weights, args.cfg, args.device, args.engine, size)
    names = resolve_names(args, loaded.names, loaded.net.num_classes)
    if args.save_kitti and any(len(n.split()) != 1 for n in names):
        raise ValueError('--save-kitti: class names must be single words (KITTI types), got '
                         + ', '.join(repr(n) for n in names if len(n.split()) != 1))
    detector = Detector(loaded.net, size, args.conf, args.nms, args.max_det, resolve_classes(args.classes, names),
                        args.half, channels_last=args.channels_last)
    if args.half and detector.device.type != 'cuda':
        print('--half: autocast is used on CUDA only; running fp32 on the CPU')
    return detector, names, loaded.route


def main(argv: list[str] | None = None) -> Summary:
    """`python detect.py --weights W --source SRC [...]`; user errors exit with a one-line message."""
    args = parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our messages replace OpenCV's warnings
    opts = OutputOptions(not args.nosave, args.save_txt, args.save_conf, args.save_kitti, args.save_json,
                         args.view, not args.hide_conf)
    try:
        source = resolve_source(args.source)
        detector, names, route = build_detector(args)
        print(f'engine: {route}')
        batch = 1 if source.live else args.batch
        reader = FrameReader(source, detector.prepare, depth=2 * batch + 2)
        try:
            writer = ResultWriter(increment_dir(Path(args.project) / args.name, args.exist_ok), names, opts)
            print(f'{args.weights}: {len(names)} classes, input {detector.size[0]}x{detector.size[1]}, '
                  f'{detector.device}, batch {batch}, conf {args.conf}, nms {args.nms}')
            try:
                summary = run(detector, reader, writer, batch, not args.quiet)
            finally:
                written = writer.close()
        finally:
            reader.close()
    except (CfgError, SourceError, ValueError, OSError, ExportError) as exc:
        raise SystemExit(f'error: {exc}') from None
    print(report(summary, written))
    if summary.frames == 0:
        raise SystemExit(f'error: {args.source}: no image could be read')
    return summary
