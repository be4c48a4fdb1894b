"""Darknet label files: the image → label path rule, strict parsing, box checks, cheap image-size reads and decoding.

Label path (Darknet `fill_truth_detection`): the first occurrence of `images`, then `JPEGImages`, then `raw` in the
path is replaced by `labels`, exactly as Darknet does (so `raw` inside a name such as `drawings` is replaced too).
Stricter than Darknet for the extension: the final suffix is replaced by `.txt` for every image extension and any
case (`.jpeg`, `.bmp`, `.webp`, ...), where Darknet only knows `.jpg .png .JPG .JPEG` (first occurrence anywhere in
the path) and, for other names, parses the image file itself as a label file.
"""
from __future__ import annotations

import math
import os
import struct

import cv2
import numpy as np

# what OpenCV's imread decodes; one set, so the label rule, the VOC converter and detect's sources agree
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm', '.pgm', '.pbm', '.pnm', '.jp2')
_DIR_RULES = (('images', 'labels'), ('JPEGImages', 'labels'), ('raw', 'labels'))
# IMREAD_IGNORE_ORIENTATION: Darknet's stb_image ignores EXIF rotation, and labels refer to the stored pixels.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class ImageError(ValueError):
    """An image that cannot be read or decoded (the message names the file)."""


def label_path(image_path: str) -> str:
    """Darknet's label file for an image path (see the module docstring for where we are stricter)."""
    path = image_path
    for old, new in _DIR_RULES:
        path = path.replace(old, new, 1)
    stem, ext = os.path.splitext(path)
    if ext.lower() in IMAGE_EXTENSIONS:
        return stem + '.txt'
    for ext in ('.jpg', '.png', '.JPG', '.JPEG'):  # Darknet's own rule for anything else
        path = path.replace(ext, '.txt', 1)
    return path


def raw_rule_hint(image_path: str) -> str:
    """A hint when Darknet's `raw` → `labels` rule hit the inside of a name (e.g. `drawings`), else ''."""
    path = image_path.replace('images', 'labels', 1).replace('JPEGImages', 'labels', 1)
    at = path.find('raw')
    if at < 0:
        return ''
    parts = path.replace('\\', '/').split('/')
    if 'raw' in parts:
        return ''
    return f" (note: Darknet's rule replaced the 'raw' at character {at} of the path with 'labels')"


def parse_label_text(text: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """Parse `class cx cy w h` lines: (rows (n, 5) float32, 1-based line numbers (n,), malformed [(line, text)]).

    Blank lines are skipped.  A line is malformed unless it has exactly five fields, an integer class and four finite
    numbers; Darknet's `fscanf` instead stops reading the file at the first such line.
    """
    rows: list[tuple[float, ...]] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 5:
                raise ValueError
            values = (int(fields[0]), *map(float, fields[1:]))
            if not all(math.isfinite(v) for v in values[1:]):
                raise ValueError
        except ValueError:
            bad.append((lineno, _shown(line.strip())))
            continue
        rows.append(values)
        lines.append(lineno)
    return (np.array(rows, dtype=np.float32).reshape(-1, 5), np.array(lines, dtype=np.int32), bad)


def _shown(line: str, limit: int = 200) -> str:
    """A label line for a message: whole (an extra column is what tells an exporter's score apart), long ones cut."""
    return line if len(line) <= limit else line[:limit] + '...'


def malformed_reason(line: str) -> str:
    """Why `parse_label_text` rejected a line, for the scan's messages."""
    fields = line.split()
    if len(fields) != 5:
        return f'{len(fields)} fields, expected 5 (class cx cy w h)'
    try:
        int(fields[0])
    except ValueError:
        return f'class {fields[0]!r} is not an integer'
    return 'cx cy w h must be finite numbers'


def box_issue(x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> str | None:
    """What is wrong with a box given by its pixel edges (0-based) in a `width` x `height` image, or None.

    'empty': zero or negative width or height, or no overlap with the image (a label of it would be degenerate);
    'outside': it extends beyond the image (a label of it has an edge outside [0, 1], which training clips).
    The converters drop 'empty' boxes and report both (`yolo_lrm.data.voc`, `yolo_lrm.data.kitti`).
    """
    if not (x2 > x1 and y2 > y1) or min(x2, width) <= max(x1, 0) or min(y2, height) <= max(y1, 0):
        return 'empty'
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        return 'outside'
    return None


def box_issue_lines(empty: list[str], outside: list[str], errors: list[str], outside_note: str) -> list[str]:
    """The converters' summary lines for skipped files and for `box_issue` findings (counts, then one per item)."""
    lines = []
    if empty:
        lines.append(f'empty boxes dropped (zero size or outside the image): {len(empty)}')
    if outside:
        lines.append(f'boxes partly outside the image, written unclipped{outside_note} (training clips them): '
                     f'{len(outside)}')
    lines += [f'skipped: {e}' for e in errors]
    lines += [f'empty box dropped: {e}' for e in empty]
    lines += [f'box outside the image: {e}' for e in outside]
    return lines


def _exif_orientation(segment: bytes) -> int:
    """The orientation tag (0x0112) in the first IFD of an APP1 Exif segment; 1 (as stored) when absent."""
    tiff = segment[6:] if segment.startswith(b'Exif\0\0') else b''
    order = {b'II': '<', b'MM': '>'}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = struct.unpack(order + 'I', tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    for k in range(struct.unpack(order + 'H', tiff[ifd:ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            break
        if struct.unpack(order + 'H', tiff[at:at + 2])[0] == 0x0112:
            return struct.unpack(order + 'H', tiff[at + 8:at + 10])[0]
    return 1


def _jpeg_size(f) -> tuple[int, int, int] | None:
    """(width, height, EXIF orientation) from a JPEG's markers."""
    if f.read(2) != b'\xff\xd8':
        return None
    orientation = 1
    while True:
        head = f.read(2)
        if len(head) < 2 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:          # fill byte: the marker code follows
            f.seek(-1, 1)
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        seg = f.read(2)
        if len(seg) < 2:
            return None
        length = struct.unpack('>H', seg)[0]
        if marker == 0xE1:          # APP1: Exif, where cameras and phones say how to rotate the stored pixels
            segment = f.read(max(length - 2, 0))
            orientation = _exif_orientation(segment) if orientation == 1 else orientation
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            data = f.read(5)
            if len(data) < 5:
                return None
            h, w = struct.unpack('>HH', data[1:5])
            return w, h, orientation
        f.seek(length - 2, 1)


def _png_size(head: bytes) -> tuple[int, int, int] | None:
    """(width, height, orientation 1) from a PNG's IHDR."""
    if len(head) < 24 or head[12:16] != b'IHDR':
        return None
    return (*struct.unpack('>II', head[16:24]), 1)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) read from the file header (see `image_header`)."""
    return image_header(path)[:2]


def image_header(path: str) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) read from the file header (JPEG, PNG; other formats are decoded; the
    orientation is read from JPEGs only, 1 elsewhere).

    Raises OSError when the file cannot be opened and ImageError when it is not a readable image.
    """
    with open(path, 'rb') as f:
        head = f.read(24)
        size = None
        if head.startswith(b'\xff\xd8'):
            f.seek(0)
            size = _jpeg_size(f)
        elif head.startswith(b'\x89PNG\r\n\x1a\n'):
            size = _png_size(head)
        elif head:
            im = read_image(path)
            size = (im.shape[1], im.shape[0], 1)
    if not size or size[0] <= 0 or size[1] <= 0:
        raise ImageError(f'{path}: not a readable image (bad or truncated header)')
    return size


def read_image(path: str) -> np.ndarray:
    """Decode an image as (H, W, 3) uint8 RGB (EXIF orientation ignored, as Darknet's stb_image does)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode: works for any path encoding
    except OSError as exc:
        raise ImageError(f'{path}: cannot read image ({exc.strerror})') from None
    im = cv2.imdecode(data, _IMREAD_FLAGS) if data.size else None
    if im is None:
        raise ImageError(f'{path}: cannot decode image ({data.size} bytes)')
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
