"""Real-time inference: read images / videos / cameras / streams, run letterbox → network → decode + NMS →
unletterbox, draw and save the results.

The preprocessing is `letterbox.letterbox` and the decoding `head.detect` + `letterbox.unletterbox`: exactly what
evaluation uses, so a detection here is the detection that was scored.  The network is PyTorch's or an ONNX export
run by ONNX Runtime (`engines.load_network`, `--engine`: the pipeline around it is the same).  Speed comes from
conv+BN fusion, channels_last, autocast on CUDA, batches for image folders and a reader thread
(`sources.FrameReader`) that decodes and letterboxes the next frames while the network runs on the current ones.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..allocator import keep_freed_memory
from ..cfg import CfgError
from ..data.datafile import parse_data
from ..engines import ENGINES, load_network
from ..evaluation.resultfiles import kitti_lines
from ..export import ExportError
from ..head import detect
from ..letterbox import letterbox, unletterbox
from ..model import Darknet
from ..onnxrun import OnnxNetwork
from ..reports.draw import clip_boxes, draw_detections, palette
from ..runfolder import increment_dir
from .sources import VIDEO_EXTS, Frame, FrameReader, Skip, SourceError, resolve_source
from ..textfile import read_lines

DEFAULT_CONF = 0.25  # Darknet: `detector test` .5, `demo` .24; .25 keeps demo's recall with a round number
# output video container -> fourcc, for sources in these containers; others (and cameras, streams) get MJPG in .avi,
# which every OpenCV build, the headless wheel included, can write
VIDEO_WRITERS = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'MJPG', '.avi': 'MJPG'}


# ------------------------------------------------------------------------------------------------------ detector
class Detector:
    """A network ready for inference: eval mode, BN fused, optionally channels_last and autocast (CUDA); an
    `OnnxNetwork` is taken as it is (the export is already fused, and ONNX Runtime picks its own layout).

    `detector([rgb images])` returns per image an (n, 6) tensor `x1, y1, x2, y2, score, class` in pixels of that
    image (unclipped, as evaluation scores them); the steps are also exposed for timing: `prepare`, `network`,
    `postprocess`.
    """

    def __init__(self, net: Darknet | OnnxNetwork, size: tuple[int, int] | None = None, conf: float = DEFAULT_CONF,
                 nms: float = 0.45, max_det: int = 300, classes: list[int] | None = None, half: str | None = None,
                 fuse: bool = True, channels_last: bool = True):
        self.net = net.eval()
        self.device = next(net.parameters()).device
        if self.device.type == 'cpu':
            keep_freed_memory()
        is_torch = isinstance(net, torch.nn.Module)
        if fuse and is_torch:
            net.fuse()
        # channels_last: cuDNN's preferred layout; on CPU (oneDNN) it cut CPU time by 0-20% on the cfgs measured,
        # most on tiny-yolo, whose NCHW max-pools are slow (bench/bench_infer.py)
        self.channels_last = channels_last and is_torch
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.size = size or (net.width, net.height)
        net.check_input_size(*self.size)
        if half not in (None, 'fp16', 'bf16'):
            raise ValueError(f'half must be fp16 or bf16, got {half!r}')
        # autocast is for CUDA only: on CPU half precision is slower than fp32 on most processors
        self.dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(half) if self.device.type == 'cuda' else None
        if classes is not None and any(not 0 <= c < net.num_classes for c in classes):
            raise ValueError(f'classes {classes} outside 0..{net.num_classes - 1}')
        self.conf, self.nms, self.max_det, self.classes = conf, nms, max_det, classes
        self.anchors = net.anchors.to(self.device)

    def prepare(self, image_rgb: np.ndarray) -> np.ndarray:
        """Darknet's letterbox of an (H, W, 3) RGB image to the network size: (3, h, w) float32."""
        return letterbox(image_rgb, *self.size)

    @torch.inference_mode()
    def network(self, batch: np.ndarray) -> torch.Tensor:
        """Raw output F (float32) for a (B, 3, h, w) float32 batch of letterboxed images."""
        x = torch.from_numpy(batch)
        if self.device.type == 'cuda':
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.net(x)
        return out.float()

    @torch.inference_mode()
    def postprocess(self, output: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Decode + class-wise NMS, then map the boxes to each image's pixels (`sizes` = (w, h) per image)."""
        dets = detect(output, self.anchors, self.conf, self.nms, self.net.region['loss'], self.max_det, self.classes)
        return [torch.cat((unletterbox(d[:, :4], w, h, *self.size), d[:, 4:]), 1) for d, (w, h) in zip(dets, sizes)]

    def __call__(self, images_rgb: list[np.ndarray]) -> list[torch.Tensor]:
        """Detections for a list of (H, W, 3) RGB uint8 images, run as one batch."""
        batch = np.stack([self.prepare(im) for im in images_rgb])
        return self.postprocess(self.network(batch), [(im.shape[1], im.shape[0]) for im in images_rgb])

    def warmup(self, batch: int = 1) -> None:
        """One forward pass on a blank batch (first-call allocation, cuDNN autotuning) before timing starts."""
        self.network(np.full((batch, 3, self.size[1], self.size[0]), 0.5, dtype=np.float32))
        synchronize(self.device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are real."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------------- outputs
def darknet_label_lines(dets: np.ndarray, im_w: int, im_h: int, with_score: bool) -> list[str]:
    """Darknet label rows `class cx cy w h [score]`, normalised to the image, from clipped pixel boxes."""
    cx, cy = (dets[:, 0] + dets[:, 2]) / 2 / im_w, (dets[:, 1] + dets[:, 3]) / 2 / im_h
    w, h = (dets[:, 2] - dets[:, 0]) / im_w, (dets[:, 3] - dets[:, 1]) / im_h
    rows = np.stack((cx, cy, w, h, dets[:, 4]), 1)
    fmt = '{:d} {:.6f} {:.6f} {:.6f} {:.6f} {:.6f}' if with_score else '{:d} {:.6f} {:.6f} {:.6f} {:.6f}'
    return [fmt.format(int(c), *r) for c, r in zip(dets[:, 5].tolist(), rows.tolist())]


def json_record(frame: Frame, dets: np.ndarray, names: list[str]) -> dict:
    """One image or video frame with its detections (clipped 0-based pixel boxes x1, y1, x2, y2)."""
    h, w = frame.rgb.shape[:2]
    return {'source': frame.source, 'frame': frame.index, 'width': w, 'height': h,
            'detections': [{'class': int(c), 'name': names[int(c)], 'score': round(s, 6),
                            'box': [round(v, 2) for v in (x1, y1, x2, y2)]}
                           for x1, y1, x2, y2, s, c in dets.tolist()]}


@dataclass
class OutputOptions:
    """What to write for each frame."""
    save_images: bool = True
    save_txt: bool = False
    save_conf: bool = False
    save_kitti: bool = False
    save_json: bool = False
    view: bool = False
    show_conf: bool = True


class ResultWriter:
    """Writes annotated images / videos and the result files of a run into `save_dir`."""

    def __init__(self, save_dir: Path, names: list[str], opts: OutputOptions):
        self.dir, self.names, self.opts = save_dir, names, opts
        self.colors = palette(len(names))
        self.stems: dict[str, str] = {}
        self.videos: dict[str, cv2.VideoWriter] = {}
        self.records: list[dict] = []
        self.view = viewer_available() if opts.view else False

    def write(self, frame: Frame, raw: np.ndarray) -> bool:
        """Draw and save one frame's (n, 6) pixel detections (unclipped, as the detector returns them); False when
        the viewer asked to stop."""
        stem = self._stem(frame.source)
        name = f'{stem}_{frame.index:06d}' if frame.video else stem
        h, w = frame.rgb.shape[:2]
        dets = clip_boxes(raw, w, h)
        if self.opts.save_txt:
            rows = darknet_label_lines(dets, w, h, self.opts.save_conf)
            self._text('labels', name, ''.join(ln + '\n' for ln in rows))
        if self.opts.save_kitti:  # evaluation's writer: the same file `evaluate.py --metric kitti` scores
            self._text('kitti', name, kitti_lines(raw, w, h, self.names))
        if self.opts.save_json:
            self.records.append(json_record(frame, dets, self.names))
        if not (self.opts.save_images or self.view):
            return True
        canvas = draw_detections(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR), dets, self.names, self.colors,
                                 self.opts.show_conf)
        if self.opts.save_images:
            if frame.video:
                self._video(stem, frame, canvas).write(canvas)
            else:
                ext = Path(frame.source).suffix.lower()
                cv2.imwrite(str(self.dir / f'{stem}{ext if ext in (".jpg", ".jpeg", ".png", ".bmp") else ".jpg"}'),
                            canvas)
        if self.view:
            cv2.imshow('yolo_lrm detect', canvas)
            if cv2.waitKey(1) & 0xFF == ord('q'):
                return False
        return True

    def close(self) -> list[str]:
        """Finish videos and the JSON file; returns what was written, for the summary."""
        for writer in self.videos.values():
            writer.release()
        written = []
        if self.opts.save_json:
            (self.dir / 'detections.json').write_text(json.dumps({'names': self.names, 'images': self.records}))
            written.append('detections.json')
        written += [d + '/' for d in ('labels', 'kitti') if (self.dir / d).is_dir()]
        if self.view:
            cv2.destroyAllWindows()
        return written

    def _stem(self, source: str) -> str:
        """A file-name stem per source, unique within the run (two inputs may share a name)."""
        if source not in self.stems:
            base = f'camera{source}' if source.isdigit() else Path(source.split('?', 1)[0]).stem or 'stream'
            base = ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in base)
            stem, n = base, 2
            while stem in self.stems.values():
                stem, n = f'{base}_{n}', n + 1
            self.stems[source] = stem
        return self.stems[source]

    def _text(self, folder: str, name: str, text: str) -> None:
        out = self.dir / folder
        out.mkdir(exist_ok=True)
        (out / f'{name}.txt').write_text(text)

    def _video(self, stem: str, frame: Frame, canvas: np.ndarray) -> cv2.VideoWriter:
        if stem not in self.videos:
            h, w = canvas.shape[:2]
            ext = Path(frame.source.split('?', 1)[0]).suffix.lower() if not frame.source.isdigit() else ''
            self.videos[stem] = open_video_writer(self.dir, stem, ext, frame.fps or 25.0, (w, h))
        return self.videos[stem]


def open_video_writer(folder: Path, stem: str, ext: str, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """A writer for `folder/stem` in the source's container `ext` where OpenCV writes it (`VIDEO_WRITERS`), else
    MJPG in .avi; prints a line when a source's .mp4/.mov/... could not be kept."""
    want = ext if ext in VIDEO_WRITERS else '.avi'
    for suffix in dict.fromkeys((want, '.avi')):
        path = folder / f'{stem}{suffix}'
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_WRITERS[suffix]), fps, size)
        if writer.isOpened():
            if suffix != want:
                print(f'this OpenCV build cannot write {want} ({VIDEO_WRITERS[want]}): writing {path} (MJPG) '
                      f'instead')
            elif ext in VIDEO_EXTS and ext != suffix:
                print(f'{ext} videos are written as {suffix} (MJPG): {path}')
            return writer
        writer.release()
    raise SourceError(f'{path}: cannot open a video writer')


def viewer_available() -> bool:
    """Whether `--view` can open a window; prints why not (headless OpenCV, no display) when it cannot."""
    gui = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith('GUI:')]
    if gui and gui[0].split(':', 1)[1].strip().upper() == 'NONE':
        print('--view: this OpenCV build has no GUI (opencv-python-headless); '
              'install opencv-python for --view. Continuing without a window.')
        return False
    if os.name == 'posix' and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        print('--view: no display found (DISPLAY is not set). Continuing without a window.')
        return False
    return True


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
