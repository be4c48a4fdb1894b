"""Multi-scale mini-batches (Darknet `random=1`, reference §5.2) as a batch sampler decided in the main process.

Sizes: mini-batch m belongs to update `u = m // subdivisions`.  Every 10 updates (blocks starting at update 0, 10,
20, ...) a new square size `(r % 10 + 10) * 32` (320..608) is drawn, a pure function of (seed, u // 10); the last 200
updates use 608.  Darknet checks `batch_num + 200 > max_batches` only at the block starts, so it switches to 608 up to
ten updates later than we do.  `random=False` keeps `base_size`.

Order: epochs without replacement, each a permutation drawn from (seed, epoch); Darknet instead draws every image
with replacement (`rand() % N`).  Mini-batch m takes positions `[m * G, (m + 1) * G)` of the endless concatenation
of epochs, where `G = batch_size * world_size`; rank r takes its `batch_size` slice of that global batch.  Everything
is a function of (seed, m), so a resumed run (`start_minibatch`) continues the same sequence.

Each item is a `Sample(index, size, seed)`; `seed` (from seed, epoch, index) seeds that item's augmentation, so
results do not depend on DataLoader workers.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

SIZES = tuple(range(320, 609, 32))  # Darknet: (rand() % 10 + 10) * 32
FINAL_SIZE = 608
FINAL_UPDATES = 200
RESIZE_EVERY = 10
_MASK64 = (1 << 64) - 1


class Sample(NamedTuple):
    """One item of a mini-batch: dataset index, network input size, augmentation seed."""
    index: int
    size: int
    seed: int


def _mix(*values: int) -> int:
    """A 63-bit hash of integers (splitmix64 steps): cheap, stable across processes and Python versions."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x >> 1


def multiscale_size(update: int, seed: int, max_batches: int, random: bool, base_size: int) -> int:
    """Network input size for an update (0-based count of updates done before it)."""
    if not random:
        return base_size
    if update + FINAL_UPDATES >= max_batches:
        return FINAL_SIZE
    return SIZES[_mix(seed, 1, update // RESIZE_EVERY) % len(SIZES)]


class MultiScaleBatchSampler:
    """Yields lists of `Sample` for `DataLoader(batch_sampler=...)`; see the module docstring for the rules."""

    def __init__(self, num_images: int, batch_size: int, subdivisions: int, seed: int, random: bool,
                 base_size: int, max_batches: int, rank: int = 0, world_size: int = 1, start_minibatch: int = 0):
        if num_images <= 0:
            raise ValueError('the dataset has no usable images')
        if batch_size <= 0 or subdivisions <= 0 or max_batches <= 0:
            raise ValueError(f'batch_size, subdivisions and max_batches must be positive, got '
                             f'{batch_size}, {subdivisions}, {max_batches}')
        if seed < 0:
            raise ValueError(f'seed must be non-negative, got {seed}')
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in 0..{world_size - 1}')
        if base_size % 32:
            raise ValueError(f'base_size must be a multiple of 32, got {base_size}')
        self.num_images, self.batch_size, self.subdivisions = num_images, batch_size, subdivisions
        self.seed, self.random, self.base_size, self.max_batches = seed, random, base_size, max_batches
        self.rank, self.world_size = rank, world_size
        self.total_minibatches = max_batches * subdivisions
        if not 0 <= start_minibatch <= self.total_minibatches:
            raise ValueError(f'start_minibatch {start_minibatch} is not in 0..{self.total_minibatches}')
        self.start_minibatch = start_minibatch
        self._perm: tuple[int, np.ndarray | None] = (-1, None)

    def __len__(self) -> int:
        return self.total_minibatches - self.start_minibatch

    def size_of(self, minibatch: int) -> int:
        """Input size of a mini-batch."""
        return multiscale_size(minibatch // self.subdivisions, self.seed, self.max_batches, self.random,
                               self.base_size)

    def permutation(self, epoch: int) -> np.ndarray:
        """Image order of one epoch (the last one is kept: consecutive mini-batches share it)."""
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.num_images))
        return self._perm[1]

    def batch(self, minibatch: int) -> list[Sample]:
        """This rank's samples of one mini-batch (a pure function of the constructor arguments and `minibatch`)."""
        size = self.size_of(minibatch)
        first = (minibatch * self.world_size + self.rank) * self.batch_size
        out = []
        for pos in range(first, first + self.batch_size):
            epoch, at = divmod(pos, self.num_images)
            index = int(self.permutation(epoch)[at])
            out.append(Sample(index, size, _mix(self.seed, 2, epoch, index)))
        return out

    def __iter__(self) -> Iterator[list[Sample]]:
        for m in range(self.start_minibatch, self.total_minibatches):
            yield self.batch(m)
