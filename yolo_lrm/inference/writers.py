"""What `detect.py` writes for each frame: annotated images and videos, Darknet label rows, KITTI result files and
a JSON record of every detection, plus the optional viewer window."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..evaluation.resultfiles import kitti_lines
from ..reports.draw import clip_boxes, draw_detections, palette
from .sources import VIDEO_EXTS, Frame, SourceError

# output video container -> fourcc, for sources in these containers; others (and cameras, streams) get MJPG in .avi,
# which every OpenCV build, the headless wheel included, can write
VIDEO_WRITERS = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'MJPG', '.avi': 'MJPG'}


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


