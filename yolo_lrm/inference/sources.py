"""Where detection frames come from and how they are read: `--source` classified into images, a video file or a
live stream (`resolve_source`), OpenCV captures opened with clear errors (`open_capture`), and `FrameReader`, which
decodes and letterboxes frames in a background thread ahead of the network.
"""
from __future__ import annotations

import glob
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..data import ImageError, read_image, resolve_list
from ..data.labels import IMAGE_EXTENSIONS

VIDEO_EXTS = {'.avi', '.mp4', '.mkv', '.mov', '.m4v', '.mpg', '.mpeg', '.wmv', '.webm', '.flv', '.ts', '.3gp'}
STREAM_SCHEMES = ('rtsp://', 'rtsps://', 'rtmp://', 'http://', 'https://', 'udp://', 'tcp://')


class SourceError(ValueError):
    """A source that cannot be read: the message names the file, camera or URL."""


@dataclass
class Source:
    """What `--source` names: `kind` is 'images' (paths), 'video' (one file) or 'stream' (camera index or URL)."""
    spec: str
    kind: str
    items: list[str]

    @property
    def live(self) -> bool:
        """Cameras and network streams: frames come in real time, so stale ones may be dropped."""
        return self.kind == 'stream'


def resolve_source(spec: str) -> Source:
    """Classify `--source`: camera index, stream URL, video file, image, folder, `.txt` list or glob."""
    if spec.isdigit():
        return Source(spec, 'stream', [spec])
    if spec.lower().startswith(STREAM_SCHEMES):
        path_part = spec.split('?', 1)[0].lower()
        is_file = spec.lower().startswith(('http://', 'https://')) and Path(path_part).suffix in VIDEO_EXTS
        return Source(spec, 'video' if is_file else 'stream', [spec])
    path = Path(spec)
    if path.is_dir():
        images = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise SourceError(f'{spec}: folder has no images ({", ".join(sorted(IMAGE_EXTENSIONS))})')
        return Source(spec, 'images', images)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTS:
            return Source(spec, 'video', [spec])
        if suffix == '.txt':  # a Darknet image list, read by the rule the rest of the package uses
            items = resolve_list(path)
            if not items:
                raise SourceError(f'{spec}: list file is empty')
            return Source(spec, 'images', items)
        return Source(spec, 'images', [spec])
    if glob.has_magic(spec):
        images = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise SourceError(f'{spec}: the pattern matches no image files')
        return Source(spec, 'images', images)
    raise SourceError(f'{spec}: no such file or folder (nor a glob, camera index or stream URL)')


def open_capture(source: Source) -> cv2.VideoCapture:
    """Open a video file, camera or stream with OpenCV; a clear error when it cannot be opened."""
    spec = source.items[0]
    if spec.isdigit():
        cap = cv2.VideoCapture(int(spec))
        what = f'camera {spec}: not available (no such device, busy, or no permission)'
    else:
        if source.kind == 'video' and not spec.lower().startswith(STREAM_SCHEMES) and not os.path.isfile(spec):
            raise SourceError(f'{spec}: video not found')
        cap = cv2.VideoCapture(spec, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 15000])
        what = f'{spec}: cannot open ' + ('stream' if source.live else 'video (corrupt file or unsupported codec)')
    if not cap.isOpened():
        cap.release()
        raise SourceError(what)
    return cap


@dataclass
class Frame:
    """One decoded, letterboxed frame; `index`/`count` number it within its video or image list."""
    rgb: np.ndarray        # the original image (H, W, 3) uint8
    tensor: np.ndarray     # (3, net_h, net_w) float32 letterboxed network input
    source: str
    index: int
    count: int | None      # frames in the video or images in the list (None for live streams)
    read_s: float          # decoding + letterboxing time
    video: bool = False    # a frame of a video file, camera or stream (else an image file)
    fps: float = 0.0       # video frame rate (0 when unknown)


@dataclass
class Skip:
    """An image of a list that could not be read."""
    source: str
    reason: str


_END = object()


class FrameReader:
    """Decodes and letterboxes frames in a background thread, a bounded queue ahead of the network, so that
    decoding overlaps inference.  For live streams the oldest queued frame is dropped when the network falls
    behind (real-time output rather than an ever-growing delay)."""

    def __init__(self, source: Source, prepare: Callable[[np.ndarray], np.ndarray], depth: int = 8):
        self.source, self.prepare = source, prepare
        # open a video or camera now, so that a bad one fails before any output is made
        self.capture = open_capture(source) if source.kind != 'images' else None
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, depth))
        self.stop = threading.Event()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name='frame-reader', daemon=True)

    def __iter__(self) -> Iterator[Frame | Skip]:
        self.thread.start()
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (also mid-stream) and wait for it; a stream stuck in a read is left to die with the
        process (the thread is a daemon) after `timeout` seconds."""
        self.stop.set()
        if self.thread.ident is None and self.capture is not None:  # never started: nobody else releases it
            self.capture.release()
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            try:
                self.queue.get(timeout=0.05)  # unblocks a producer waiting on a full queue
            except queue.Empty:
                pass

    def _run(self) -> None:
        try:
            frames = self._images() if self.source.kind == 'images' else self._video()
            for item in frames:
                if self.stop.is_set():
                    break
                self._put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it in the main thread
            self._put(exc)
        self._put(_END)

    def _put(self, item: object) -> None:
        if self.source.live and isinstance(item, Frame) and self.queue.full():
            try:
                self.queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _images(self) -> Iterator[Frame | Skip]:
        paths = self.source.items
        for i, path in enumerate(paths):
            t = time.perf_counter()
            try:
                rgb = read_image(path)  # evaluation's reader: same pixels, so the same boxes
            except ImageError as exc:
                yield Skip(path, str(exc))
                continue
            yield Frame(rgb, self.prepare(rgb), path, i, len(paths), time.perf_counter() - t)

    def _video(self) -> Iterator[Frame]:
        cap = self.capture
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if not self.source.live else None
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            i = 0
            while not self.stop.is_set():
                t = time.perf_counter()
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(rgb, self.prepare(rgb), self.source.spec, i, count or None, time.perf_counter() - t,
                            True, fps)
                i += 1
            if i == 0 and not self.stop.is_set():
                raise SourceError(f'{self.source.spec}: opened, but no frame could be decoded')
        finally:
            cap.release()
