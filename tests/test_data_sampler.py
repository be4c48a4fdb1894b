"""Multi-scale batch sampler: sizes per update, epochs, resume, DDP slices, DataLoader workers."""
from itertools import islice

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from yolo_lrm.data import ListDataset, MultiScaleBatchSampler, collate
from yolo_lrm.data.sampler import SIZES


def _sampler(**kw):
    args = dict(num_images=10, batch_size=2, subdivisions=2, seed=3, random=True, base_size=416, max_batches=260)
    args.update(kw)
    return MultiScaleBatchSampler(**args)


def test_sizes_change_every_10_updates_and_end_at_608():
    s = _sampler()
    sizes = [s.size_of(m) for m in range(len(s))]
    assert len(sizes) == 260 * 2
    per_update = sizes[::2]
    assert sizes[1::2] == per_update                                # both mini-batches of an update agree
    assert all(x in SIZES for x in per_update)
    assert per_update[60:] == [608] * 200                           # the last 200 updates
    blocks = [per_update[b:b + 10] for b in range(0, 60, 10)]
    assert all(len(set(b)) == 1 for b in blocks)                    # one size per block of 10 updates
    assert len({b[0] for b in blocks}) > 2                          # and new draws across blocks
    for batch, size in zip(s, sizes):
        assert {x.size for x in batch} == {size}
    assert {x.size for b in _sampler(random=False) for x in b} == {416}


def test_epochs_without_replacement_and_fresh_augmentation_seeds():
    s = _sampler(num_images=10, batch_size=5, subdivisions=1, max_batches=4)
    batches = list(s)
    epoch0 = [x.index for b in batches[:2] for x in b]
    epoch1 = [x.index for b in batches[2:] for x in b]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    seeds0 = {x.index: x.seed for b in batches[:2] for x in b}
    seeds1 = {x.index: x.seed for b in batches[2:] for x in b}
    assert all(seeds0[i] != seeds1[i] for i in range(10))


def test_resume_continues_the_same_sequence():
    full = list(_sampler(max_batches=40))
    for start in (0, 1, 17, 79):
        assert list(_sampler(max_batches=40, start_minibatch=start)) == full[start:]
    assert list(_sampler(max_batches=40, seed=4)) != full


def test_ddp_ranks_take_disjoint_slices_of_one_global_batch():
    ranks = [list(_sampler(num_images=12, batch_size=3, world_size=2, rank=r, max_batches=6)) for r in (0, 1)]
    single = list(_sampler(num_images=12, batch_size=6, max_batches=6))
    for b0, b1, whole in zip(*ranks, single):
        assert b0 + b1 == whole                                      # same images, sizes and seeds
        assert len({x.size for x in b0 + b1}) == 1
    epoch = [x.index for b in ranks[0][:2] + ranks[1][:2] for x in b]
    assert sorted(epoch) == list(range(12))


def test_bad_arguments():
    with pytest.raises(ValueError, match='rank'):
        _sampler(rank=2, world_size=2)
    with pytest.raises(ValueError, match='multiple of 32'):
        _sampler(base_size=400)
    with pytest.raises(ValueError, match='start_minibatch'):
        _sampler(start_minibatch=10 ** 6)


def _tiny_dataset(tmp_path, n=6):
    rng = np.random.default_rng(0)
    for i in range(n):
        (tmp_path / 'images').mkdir(exist_ok=True)
        (tmp_path / 'labels').mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / 'images' / f'{i}.jpg'), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
        (tmp_path / 'labels' / f'{i}.txt').write_text(f'{i % 2} .5 .5 .3 .4\n')
    (tmp_path / 'train.txt').write_text(''.join(f'images/{i}.jpg\n' for i in range(n)))
    return ListDataset(tmp_path / 'train.txt', 2, augment=True, hyp={'jitter': .2, 'hue': .1, 'saturation': 1.5,
                                                                    'exposure': 1.5})


def test_dataloader_workers_follow_the_sampler_and_are_reproducible(tmp_path):
    ds = _tiny_dataset(tmp_path)
    # mini-batches 36..43 = updates 18..21: the size changes at update 20
    sampler = _sampler(num_images=len(ds), start_minibatch=36)
    expected = [s for s in islice(iter(sampler), 8)]
    assert len({b[0].size for b in expected[:4]}) == 1 and len({b[0].size for b in expected[4:]}) == 1
    loaded = []
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2, collate_fn=collate, persistent_workers=True)
    for images, targets, _, _ in islice(loader, 8):
        loaded.append((images, targets))
    for (images, targets), batch in zip(loaded, expected):
        assert images.shape == (2, 3, batch[0].size, batch[0].size)
        assert targets.shape[0] == 2 and targets.shape[2] == 5
    in_process = [collate([ds[x] for x in batch]) for batch in expected[:2]]
    for (images, targets), (ref_images, ref_targets, _, _) in zip(loaded, in_process):
        assert torch.equal(images, ref_images) and torch.equal(targets, ref_targets)
