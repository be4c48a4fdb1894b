"""box.py (NMS, greedy suppression), head.py (decoding) and letterbox.py against straightforward references."""
import math

import numpy as np
import pytest
import torch

from yolo_lrm.box import greedy_keep, iou_cxcywh, nms
from yolo_lrm.head import decode, detect
from yolo_lrm.letterbox import darknet_resize, letterbox, letterbox_size, unletterbox


def reference_nms(boxes, scores, classes, thr):
    """Darknet's do_nms_sort, one class at a time, with plain loops."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(not (classes[j] == classes[i] and float(iou_cxcywh(boxes[i], boxes[j])) > thr) for j in kept):
            kept.append(i)
    return sorted(kept, key=lambda i: (-float(scores[i]), i))


@pytest.mark.parametrize('seed', range(40))
def test_nms_matches_sequential_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 50, (1,), generator=g))
    boxes = torch.rand(n, 4, generator=g) * 0.4 + 0.1
    scores = torch.rand(n, generator=g)
    if seed % 2:
        scores = torch.round(scores * 3) / 3  # many ties
    classes = torch.randint(0, 3, (n,), generator=g)
    assert nms(boxes, scores, classes, 0.45).tolist() == reference_nms(boxes, scores, classes, 0.45)


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2]])
    iou = float(iou_cxcywh(boxes[0], boxes[1]))
    classes = torch.zeros(2, dtype=torch.long)
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, classes, iou).tolist() == [0, 1]          # IoU == thr: both stay
    assert nms(boxes, scores, classes, iou - 1e-4).tolist() == [0]
    assert nms(boxes, scores, torch.tensor([0, 1]), 0.0).tolist() == [0, 1]  # other class never suppresses


def test_greedy_keep_chain():
    # 0 suppresses 1, 1 would suppress 2: greedy keeps 0 and 2 (1 is gone before it can act)
    sup = torch.zeros(3, 3, dtype=torch.bool)
    sup[0, 1] = sup[1, 2] = True
    assert greedy_keep(sup).tolist() == [True, False, True]
    assert greedy_keep(sup, torch.tensor([False, True, True])).tolist() == [False, True, False]


def test_decode_boxes_and_scores():
    a, c, h, w = 2, 3, 2, 3
    out = torch.zeros(1, a * (5 + c), h, w)
    anchors = torch.tensor([[1.0, 2.0], [3.0, 1.5]])
    out[0, (5 + c) + 2, 1, 2] = math.log(2.0)   # anchor 1, tw at row 1 col 2
    out[0, (5 + c) + 4, 1, 2] = 10.0            # objectness
    out[0, (5 + c) + 5 + 2, 1, 2] = 10.0        # class 2
    dec = decode(out, anchors)
    assert torch.allclose(dec.boxes[0, 1, 1, 2], torch.tensor([2.5 / 3, 1.5 / 2, 2 * 3.0 / 3, 1.5 / 2]))
    assert dec.scores[0, 1, 1, 2].argmax() == 2 and dec.scores[0, 1, 1, 2, 2] > 0.99
    dets = detect(out, anchors, conf_thresh=0.5, nms_thresh=0.45)[0]
    assert dets.shape == (1, 6) and int(dets[0, 5]) == 2
    assert torch.allclose(dets[0, :4], torch.tensor([2.5 / 3 - 1, 0.75 - 0.375, 2.5 / 3 + 1, 0.75 + 0.375]))


def reference_resize(im, w, h):
    """Darknet's resize_image written as its C loops (float32)."""
    c, h0, w0 = im.shape
    part = np.zeros((c, h0, w), np.float32)
    ws, hs = np.float32(w0 - 1) / np.float32(w - 1), np.float32(h0 - 1) / np.float32(h - 1)
    for k in range(c):
        for r in range(h0):
            for col in range(w):
                if col == w - 1 or w0 == 1:
                    part[k, r, col] = im[k, r, w0 - 1]
                else:
                    sx = np.float32(col) * ws
                    ix = int(sx)
                    dx = np.float32(sx - ix)
                    part[k, r, col] = (np.float32(1) - dx) * im[k, r, ix] + dx * im[k, r, ix + 1]
    out = np.zeros((c, h, w), np.float32)
    for k in range(c):
        for r in range(h):
            sy = np.float32(r) * hs
            iy = int(sy)
            dy = np.float32(sy - iy)
            out[k, r] = (np.float32(1) - dy) * part[k, iy]
            if r == h - 1 or h0 == 1:
                continue
            out[k, r] += dy * part[k, iy + 1]
    return out


@pytest.mark.parametrize('src,dst', [((7, 11), (5, 9)), ((9, 6), (13, 17)), ((31, 23), (17, 29))])
def test_darknet_resize_matches_c_loops(src, dst):
    im = np.random.default_rng(0).random((3, *src), dtype=np.float32)
    got = darknet_resize(im, dst[1], dst[0])
    assert np.allclose(got, reference_resize(im, dst[1], dst[0]), atol=1e-6)


def test_letterbox_geometry_and_inverse():
    img = np.zeros((48, 80, 3), np.uint8)
    img[10:20, 30:50] = 255                    # a white block: pixels x 30..49, y 10..19
    canvas = letterbox(img, 64, 64)
    new_w, new_h = letterbox_size(80, 48, 64, 64)
    assert (new_w, new_h) == (64, 38)
    dy = (64 - new_h) // 2
    assert np.all(canvas[:, :dy] == 0.5) and np.all(canvas[:, dy + new_h:] == 0.5)
    # a box in the letterboxed frame maps back to the original pixels exactly
    box = torch.tensor([[30 / 80 * new_w / 64, (dy + 10 / 48 * new_h) / 64,
                         50 / 80 * new_w / 64, (dy + 20 / 48 * new_h) / 64]], dtype=torch.float64)
    back = unletterbox(box, 80, 48, 64, 64)
    # Darknet offsets the box by (64-new_h)/2 as a float while pasting at the integer offset: half a pixel here
    shift = ((64 - new_h) / 2.0 - dy) / new_h * 48
    assert torch.allclose(back, torch.tensor([[30.0, 10 - shift, 50.0, 20 - shift]], dtype=torch.float64), atol=1e-9)


def test_postprocess_keeps_every_pair_and_maps_to_each_image():
    from yolo_lrm.model import Darknet
    from yolo_lrm.pipeline import Postprocess
    net = Darknet('cfg/demo.cfg')
    post = Postprocess.for_network(net, (96, 64), conf=0.0, nms=1.0)
    # Darknet's `detector valid` writes every (box, class) pair: A anchors x the 3x2 grid x C classes
    assert post.max_det == net.num_anchors * 3 * 2 * net.num_classes
    out = torch.randn(2, net.num_anchors * (5 + net.num_classes), 2, 3, generator=torch.Generator().manual_seed(0))
    sizes = [(192, 128), (96, 96)]  # the first fills the 96x64 input exactly, the second is letterboxed
    dets = post(out, sizes)
    assert [len(d) for d in dets] == [post.max_det] * 2
    rel = detect(out, post.anchors, 0.0, 1.0, net.region['loss'], post.max_det)
    for d, r, (w, h) in zip(dets, rel, sizes):
        torch.testing.assert_close(d[:, :4], unletterbox(r[:, :4], w, h, 96, 64))
        torch.testing.assert_close(d[:, 4:], r[:, 4:])
    np.testing.assert_allclose(dets[0][:, :4].numpy(), (rel[0][:, :4] * torch.tensor([192, 128, 192, 128])).numpy(),
                               rtol=1e-5, atol=1e-3)
    only = Postprocess.for_network(net, (96, 64), conf=0.0, nms=1.0, classes=[1])(out, sizes)
    assert all(set(d[:, 5].tolist()) == {1.0} for d in only)
