"""The training track: each training image's loss at every update that drew it, and the images that stay hard.

Format (a folder, `RUN/track/`, written by the trainer with `--track`; this module owns both sides):
* `images.txt`: the training list's usable images, one absolute path per line; line i (0-based) is image index i.
* `updates_<first>-<last>.npz`: the records of updates first..last, three equal-length arrays: `update` (int32, the
  update the image was drawn for, 1-based as `results.csv`), `image` (int32, an index into images.txt), `loss`
  (float32, the image's summed region loss in that update's forward pass, before any mining mask); under DDP the
  records of every process.  Chunks cover disjoint update ranges; a chunk is written whole (atomically) just before
  each resumable checkpoint, so a resumed run deletes the chunks past its checkpoint (`drop_after`) and a reader never
  sees half a chunk.

Ranking (`stays_hard`): an image's loss in an update is divided by the mean loss of that update's images (the level
falls as training goes on, and augmentation varies by draw); an image's hardness is the mean of that ratio over its
draws in the later half of the recorded updates (all its draws if it was not drawn there).  An image the model only
memorised late was easy for it in those updates; one that stays hard keeps a high ratio.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_write
from ..textfile import read_lines

IMAGES = 'images.txt'
_CHUNK = re.compile(r'updates_(\d+)-(\d+)\.npz$')


class TrackError(ValueError):
    """A track folder that cannot be read (the message names the file)."""


@dataclass
class Track:
    """Every record of a track folder, in update order."""
    folder: str
    images: list[str]
    update: np.ndarray      # (R,) int64
    image: np.ndarray       # (R,) int64
    loss: np.ndarray        # (R,) float64

    def describe(self) -> str:
        """`<folder>: R losses of I images over updates a..b`."""
        span = f'updates {self.update.min()}..{self.update.max()}' if len(self.update) else 'no updates'
        return f'{self.folder}: {len(self.loss)} losses of {len(np.unique(self.image))} images over {span}'


def write_images(folder: str | os.PathLike, paths: Sequence[str]) -> None:
    """images.txt of a track folder (the trainer's dataset order)."""
    text = ''.join(f'{os.path.abspath(p)}\n' for p in paths)
    atomic_write(Path(folder) / IMAGES, lambda f: f.write(text.encode()))


def write_chunk(folder: str | os.PathLike, update: np.ndarray, image: np.ndarray, loss: np.ndarray) -> Path:
    """One chunk of records (its update range from the data); returns its path."""
    update, image, loss = (np.asarray(a).reshape(-1) for a in (update, image, loss))
    if not len(update) == len(image) == len(loss) or not len(update):
        raise ValueError(f'track chunk: expected equal, non-zero lengths, got {len(update)}, {len(image)}, {len(loss)}')
    path = Path(folder) / f'updates_{int(update.min()):08d}-{int(update.max()):08d}.npz'
    arrays = {'update': update.astype(np.int32), 'image': image.astype(np.int32), 'loss': loss.astype(np.float32)}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def check_resumed_list(folder: str | os.PathLike, paths: Sequence[str], update: int) -> None:
    """TrackError when a resumed run's training list is not the list its kept chunks (updates up to `update`)
    index: their image numbers would name other images.  Nothing to check without images.txt or kept chunks."""
    folder = Path(folder)
    kept = [p for p in folder.glob('updates_*.npz') if (m := _CHUNK.search(p.name)) and int(m.group(1)) <= update]
    if not kept or not (folder / IMAGES).is_file():
        return
    old = read_lines(folder / IMAGES, 'the track\'s image list', TrackError)
    new = [os.path.abspath(p) for p in paths]
    if old != new:
        line = next((k for k, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new))) + 1
        raise TrackError(f'{folder / IMAGES}:{line}: the training list changed since the track began ({len(old)} '
                         f'images then, {len(new)} now): its records would name other images; resume without '
                         f'--track, or move {folder} away to start a new track')


def drop_after(folder: str | os.PathLike, update: int) -> list[str]:
    """Delete the chunks holding updates after `update` (a resumed run goes on from its checkpoint); their names."""
    dropped = [p for p in sorted(Path(folder).glob('updates_*.npz'))
               if (m := _CHUNK.search(p.name)) and int(m.group(2)) > update]
    for p in dropped:
        p.unlink()
    return [p.name for p in dropped]


def read_track(folder: str | os.PathLike) -> Track:
    """Read a track folder; TrackError naming the file for a missing images.txt, an unreadable or inconsistent chunk,
    overlapping update ranges, or an image index outside images.txt."""
    folder = Path(folder)
    if not (folder / IMAGES).is_file():
        raise TrackError(f'{folder}: not a track folder (no {IMAGES}; train with --track to record one)')
    images = read_lines(folder / IMAGES, 'the track\'s image list', TrackError)
    chunks = sorted((int(m.group(1)), int(m.group(2)), p) for p in folder.glob('updates_*.npz')
                    if (m := _CHUNK.search(p.name)))
    if not chunks:
        raise TrackError(f'{folder}: no updates_*.npz chunks (the run saved no track yet)')
    parts = []
    for k, (first, last, path) in enumerate(chunks):
        if k and first <= chunks[k - 1][1]:
            raise TrackError(f'{path}: updates {first}-{last} overlap {chunks[k - 1][2].name}')
        parts.append(_read_chunk(path, first, last, len(images)))
    update, image, loss = (np.concatenate(a) for a in zip(*parts))
    return Track(str(folder), images, update, image, loss)


def _read_chunk(path: Path, first: int, last: int, n_images: int) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as z:
            update, image, loss = (z[k].astype(t) for k, t in (('update', np.int64), ('image', np.int64),
                                                               ('loss', np.float64)))
    except (OSError, ValueError, KeyError) as exc:
        raise TrackError(f'{path}: not a readable track chunk ({exc})') from None
    if not len(update) == len(image) == len(loss):
        raise TrackError(f'{path}: arrays of different lengths ({len(update)}, {len(image)}, {len(loss)})')
    if len(update) and (update.min() < first or update.max() > last):
        raise TrackError(f'{path}: updates {update.min()}-{update.max()} outside the name\'s range {first}-{last}')
    if len(image) and (image.min() < 0 or image.max() >= n_images):
        raise TrackError(f'{path}: image index {int(image.max())} outside the {n_images} images of {IMAGES}')
    return update, image, loss


def stays_hard(track: Track, paths: Sequence[str]) -> np.ndarray:
    """Hardness of each of `paths` over training (see the module docstring); NaN for an image never drawn or not in
    the track."""
    first: dict[str, int] = {}  # a path listed twice (the scan keeps duplicate entries) is one image: its first index
    image = np.array([first.setdefault(os.path.abspath(p), i) for i, p in enumerate(track.images)],
                     np.int64)[track.image]
    mean_of_update = np.zeros(track.update.max() + 1)
    counts = np.bincount(track.update, minlength=len(mean_of_update))
    np.add.at(mean_of_update, track.update, track.loss)
    mean_of_update = mean_of_update / np.maximum(counts, 1)
    ratio = track.loss / np.where(mean_of_update[track.update] > 0, mean_of_update[track.update], 1.0)
    late = track.update > (track.update.min() + track.update.max()) / 2
    n = len(track.images)
    late_sum, late_n = np.bincount(image[late], ratio[late], n), np.bincount(image[late], minlength=n)
    all_sum, all_n = np.bincount(image, ratio, n), np.bincount(image, minlength=n)
    with np.errstate(invalid='ignore', divide='ignore'):
        hard = np.where(late_n > 0, late_sum / late_n, all_sum / all_n)   # NaN where never drawn
    return np.array([hard[first[os.path.abspath(p)]] if os.path.abspath(p) in first else np.nan for p in paths])
