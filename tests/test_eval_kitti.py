"""Official KITTI 2D protocol: hand-computed cases per rule, and parity with a plain-loop reference (a line-by-line
reading of the devkit's `cleanData` / `computeStatistics` / `getThresholds` / `eval_class`) on random cases."""
import json
import math

import numpy as np
import pytest

from yolo_lrm.evaluate_cli import main as eval_main
from yolo_lrm.evaluation.kitti import KittiClass, Objects, evaluate_kitti, read_results

MIN_H, MAX_OCC, MAX_TR = (40, 25, 25), (0, 1, 2), (0.15, 0.3, 0.5)
OVERLAP = {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}
LEVEL = {'easy': 0, 'moderate': 1, 'hard': 2}


# ------------------------------------------------------------------------------------------ plain-loop reference
def ref_overlap(a, b, over_a=False):
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return 0.
    inter = w * h
    a_area = (a[2] - a[0]) * (a[3] - a[1])
    b_area = (b[2] - b[0]) * (b[3] - b[1])
    return inter / a_area if over_a else inter / (a_area + b_area - inter)


def ref_clean(cls, gt, det, lv):
    ign_gt, dc, ign_det, n_gt = [], [], [], 0
    for g in gt:
        t = g['type'].lower()
        if t == cls.lower():
            valid = 1
        elif (cls == 'Pedestrian' and t == 'person_sitting') or (cls == 'Car' and t == 'van'):
            valid = 0
        else:
            valid = -1
        ignore = g['occ'] > MAX_OCC[lv] or g['trunc'] > MAX_TR[lv] or g['box'][3] - g['box'][1] <= MIN_H[lv]
        if valid == 1 and not ignore:
            ign_gt.append(0)
            n_gt += 1
        elif valid == 0 or (ignore and valid == 1):
            ign_gt.append(1)
        else:
            ign_gt.append(-1)
    dc = [g for g in gt if g['type'].lower() == 'dontcare']
    for d in det:
        height = int(abs(d['box'][1] - d['box'][3]))
        if height < MIN_H[lv]:
            ign_det.append(1)
        elif d['type'].lower() == cls.lower():
            ign_det.append(0)
        else:
            ign_det.append(-1)
    return ign_gt, dc, ign_det, n_gt


def ref_stats(cls, gt, det, dc, ign_gt, ign_det, compute_fp, thresh=0.):
    tp = fp = fn = 0
    v = []
    assigned = [False] * len(det)
    low = [compute_fp and d['score'] < thresh for d in det]
    min_ov = OVERLAP[cls]
    for i, g in enumerate(gt):
        if ign_gt[i] == -1:
            continue
        det_idx, valid_det, max_ov, assigned_ignored = -1, -10000000., 0., False
        for j, d in enumerate(det):
            if ign_det[j] == -1 or assigned[j] or low[j]:
                continue
            ov = ref_overlap(d['box'], g['box'])
            if not compute_fp and ov > min_ov and d['score'] > valid_det:
                det_idx, valid_det = j, d['score']
            elif compute_fp and ov > min_ov and (ov > max_ov or assigned_ignored) and ign_det[j] == 0:
                max_ov, det_idx, valid_det, assigned_ignored = ov, j, 1, False
            elif compute_fp and ov > min_ov and valid_det == -10000000. and ign_det[j] == 1:
                det_idx, valid_det, assigned_ignored = j, 1, True
        if valid_det == -10000000. and ign_gt[i] == 0:
            fn += 1
        elif valid_det != -10000000. and (ign_gt[i] == 1 or ign_det[det_idx] == 1):
            assigned[det_idx] = True
        elif valid_det != -10000000.:
            tp += 1
            v.append(det[det_idx]['score'])
            assigned[det_idx] = True
    if compute_fp:
        fp = sum(1 for j in range(len(det)) if not (assigned[j] or ign_det[j] in (-1, 1) or low[j]))
        stuff = 0
        for c in dc:
            for j, d in enumerate(det):
                if assigned[j] or ign_det[j] in (-1, 1) or low[j]:
                    continue
                if ref_overlap(d['box'], c['box'], over_a=True) > min_ov:
                    assigned[j] = True
                    stuff += 1
        fp -= stuff
    return tp, fp, fn, v


def ref_thresholds(v, n_gt):
    v = sorted(v, reverse=True)
    t, current = [], 0.
    for i in range(len(v)):
        l_recall = (i + 1) / n_gt
        r_recall = (i + 2) / n_gt if i < len(v) - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < len(v) - 1:
            continue
        t.append(v[i])
        current += 1.0 / 40.0
    return t


def ref_eval_class(cls, gts, dets, level):
    lv = LEVEL[level]
    if not any(d['type'].lower() == cls.lower() and d['box'][0] >= 0 for ds in dets for d in ds):
        return np.zeros(41)
    cleaned, v, n_gt = [], [], 0
    for gt, det in zip(gts, dets):
        ig, dc, idet, n = ref_clean(cls, gt, det, lv)
        n_gt += n
        cleaned.append((ig, dc, idet))
        v += ref_stats(cls, gt, det, dc, ig, idet, False)[3]
    thresholds = ref_thresholds(v, n_gt)
    precision = [0.] * 41
    for k, t in enumerate(thresholds):
        tp = fp = 0
        for (ig, dc, idet), gt, det in zip(cleaned, gts, dets):
            a, b, _, _ = ref_stats(cls, gt, det, dc, ig, idet, True, t)
            tp, fp = tp + a, fp + b
        precision[k] = tp / (tp + fp) if tp + fp else math.nan  # C++: 0/0.0 is NaN
    out = []
    for i in range(41):  # std::max_element semantics: the first element unless a later one compares greater
        best = precision[i]
        for x in precision[i + 1:]:
            if best < x:
                best = x
        out.append(best)
    return np.array(out)


# ------------------------------------------------------------------------------------------------------- helpers
def to_objects(frames, with_score):
    """frames: list (per frame) of dicts -> flattened Objects."""
    rows = [(f, o) for f, objs in enumerate(frames) for o in objs]
    n = len(rows)
    return Objects(np.array([f for f, _ in rows], np.int64), np.array([o['type'].lower() for _, o in rows], str),
                   np.array([o['box'] for _, o in rows], np.float64).reshape(n, 4),
                   np.array([o.get('trunc', 0.) for _, o in rows], np.float64),
                   np.array([o.get('occ', 0) for _, o in rows], np.float64),
                   np.array([o.get('score', 0.) for _, o in rows], np.float64))


def G(t, box, occ=0, trunc=0.):
    return {'type': t, 'box': box, 'occ': occ, 'trunc': trunc}


def D(t, box, score):
    return {'type': t, 'box': box, 'score': score}


def run(gt, det, cls='Car', level='moderate') -> KittiClass:
    """Our evaluation of one frame (lists of G/D), checked against the reference on the way."""
    out = evaluate_kitti(to_objects([gt], False), to_objects([det], True))[cls]
    np.testing.assert_array_equal(out.precision[level], ref_eval_class(cls, [gt], [det], level))
    return out


CAR = [0, 0, 50, 50]
FAR = [300, 0, 350, 50]


# -------------------------------------------------------------------------------------------------- hand cases
def test_ap11_counts_index_zero_ap40_does_not():
    r = run([G('Car', CAR), G('Car', FAR)], [D('Car', CAR, .9), D('Car', FAR, .8)])
    # two TP scores -> two thresholds, precision [1, 1, 0, ..., 0]
    assert r.precision['moderate'][:3].tolist() == [1, 1, 0]
    assert r.ap('moderate', 11) == pytest.approx(1 / 11) and r.ap('moderate', 40) == pytest.approx(1 / 40)


def test_neighbour_classes_absorb_detections():
    dets = [D('Car', CAR, .8), D('Car', FAR, .9)]
    assert run([G('Car', CAR), G('Van', FAR)], dets).precision['moderate'][0] == 1.0   # Van: ignored GT
    assert run([G('Car', CAR), G('Truck', FAR)], dets).precision['moderate'][0] == 0.5  # Truck: a plain FP
    peds = [D('Pedestrian', CAR, .8), D('Pedestrian', FAR, .9)]
    assert run([G('Pedestrian', CAR), G('Person_sitting', FAR)], peds, 'Pedestrian').precision['moderate'][0] == 1
    cyc = [D('Cyclist', CAR, .8), D('Cyclist', FAR, .9)]
    assert run([G('Cyclist', CAR), G('Person_sitting', FAR)], cyc, 'Cyclist').precision['moderate'][0] == 0.5


def test_dontcare_uses_intersection_over_detection_area():
    gt = [G('Car', CAR), G('DontCare', [100, 0, 300, 100])]
    inside = run(gt, [D('Car', CAR, .8), D('Car', [110, 10, 150, 60], .9)])    # IoU .1, inter/area 1
    three_quarters = run(gt, [D('Car', CAR, .8), D('Car', [90, 10, 130, 60], .9)])  # inter/area .75 > .7
    half = run(gt, [D('Car', CAR, .8), D('Car', [80, 10, 120, 60], .9)])        # .5: a FP
    assert [r.precision['moderate'][0] for r in (inside, three_quarters, half)] == [1.0, 1.0, 0.5]


@pytest.mark.parametrize('level,limit', [('moderate', 25.), ('easy', 40.)])
def test_gt_height_equal_to_min_height_is_ignored(level, limit):
    dets = [D('Car', CAR, .8), D('Car', [100, 0, 150, limit], .9)]
    at_limit = run([G('Car', CAR), G('Car', [100, 0, 150, limit])], dets, level=level)
    # `<=`: the GT of height exactly `limit` is ignored, its detection absorbed: one threshold, precision [1, 0...]
    assert at_limit.precision[level][:2].tolist() == [1, 0] and at_limit.ap(level, 40) == 0
    above = run([G('Car', CAR), G('Car', [100, 0, 150, limit + .01])], dets, level=level)
    assert above.precision[level][:3].tolist() == [1, 1, 0] and above.ap(level, 40) == pytest.approx(1 / 40)


def test_small_detection_of_any_class_is_ignored_and_can_steal_a_gt():
    gt = [G('Car', [0, 0, 50, 26])]  # 26 px: valid at moderate
    steal = run(gt, [D('Pedestrian', [0, 0, 50, 24.5], .95), D('Car', [0, 0, 50, 26], .5)])
    # pass 1 gives the GT its highest-scoring candidate, the 24-px pedestrian (ignored): no TP, no threshold
    assert steal.ap('moderate', 11) == 0 and not steal.precision['moderate'].any()
    alone = run(gt, [D('Car', [0, 0, 50, 26], .5)])
    assert alone.ap('moderate', 11) == pytest.approx(1 / 11)
    # a small Car detection elsewhere is not a FP
    assert run([G('Car', CAR)], [D('Car', CAR, .8), D('Car', [200, 0, 250, 20], .9)]).precision['moderate'][0] == 1


def test_occlusion_three_is_outside_every_level():
    r = run([G('Car', CAR, occ=3), G('Car', FAR)], [D('Car', CAR, .9), D('Car', FAR, .8)], level='hard')
    assert r.precision['hard'][:2].tolist() == [1, 0]  # one valid GT only


def test_overlap_is_strict():
    gt = [G('Car', [0, 0, 100, 100])]
    assert run(gt, [D('Car', [0, 0, 100, 70], .9)]).ap('moderate', 11) == 0  # IoU exactly .7: no match
    assert run(gt, [D('Car', [0, 0, 100, 71], .9)]).ap('moderate', 11) == pytest.approx(1 / 11)


def test_class_without_detections_at_x1_ge_0_is_not_evaluated():
    r = evaluate_kitti(to_objects([[G('Cyclist', CAR)]], False),
                       to_objects([[D('Cyclist', [-1, 0, 50, 50], .9)]], True))['Cyclist']
    assert not r.evaluated and r.ap('moderate', 11) == 0


def test_zero_tp_and_fp_at_a_threshold_gives_nan_like_the_cpp():
    # pass 1: the Van takes the small det (highest score), the Car the valid one (TP .5); at threshold .5 the Van
    # takes the valid det (largest overlap) and the Car only has the small one: TP = FP = 0 -> NaN
    gt = [G('Van', [0, 0, 50, 26]), G('Car', [0, 0, 50, 26.5])]
    r = run(gt, [D('Car', [0, 0, 50, 26], .5), D('Car', [0, 0, 50, 24], .9)])
    assert math.isnan(r.precision['moderate'][0]) and math.isnan(r.ap('moderate', 11))
    assert r.ap('moderate', 40) == 0.0


# ------------------------------------------------------------------------------------------------ random parity
TYPES = ['Car', 'car', 'Van', 'Pedestrian', 'Person_sitting', 'Cyclist', 'Truck', 'DontCare']


def random_frames(rng):
    gts, dets = [], []
    for _ in range(int(rng.integers(1, 4))):
        gt, det = [], []
        for _ in range(int(rng.integers(0, 7))):
            x, y = rng.uniform(0, 150, 2).round(2)
            h = float(rng.choice([24.5, 25., 25.5, 39., 40., 41., *rng.uniform(10, 90, 3).round(2)]))
            w = float(rng.uniform(10, 60))
            gt.append(G(str(rng.choice(TYPES)), [x, y, x + w, y + h], int(rng.integers(0, 4)),
                        float(rng.choice([0., .15, .2, .3, .4, .5, .6]))))
        for _ in range(int(rng.integers(0, 9))):
            if gt and rng.random() < .7:
                b = np.array(gt[int(rng.integers(len(gt)))]['box']) + rng.normal(0, 3, 4).round(1)
            else:
                x, y = rng.uniform(-5, 150, 2)
                b = np.array([x, y, x + rng.uniform(5, 60), y + rng.uniform(5, 60)])
            t = str(rng.choice(['Car', 'Pedestrian', 'Cyclist', 'Van', 'CAR']))
            score = float(rng.integers(0, 4)) / 4 if rng.random() < .5 else float(rng.random())
            det.append(D(t, [float(v) for v in b], score))
        gts.append(gt)
        dets.append(det)
    return gts, dets


def test_parity_with_reference_on_random_cases():
    for seed in range(150):
        rng = np.random.default_rng(seed)
        gts, dets = random_frames(rng)
        ours = evaluate_kitti(to_objects(gts, False), to_objects(dets, True))
        for cls in ('Car', 'Pedestrian', 'Cyclist'):
            for level in ('easy', 'moderate', 'hard'):
                np.testing.assert_array_equal(ours[cls].precision[level], ref_eval_class(cls, gts, dets, level),
                                              err_msg=f'seed {seed} {cls} {level}')


def test_parity_with_many_gt_per_frame_and_many_thresholds():
    rng = np.random.default_rng(7)
    gt, det = [], []
    for k in range(60):  # 60 valid cars in one frame: > 41 TP scores, many matching rounds
        box = [k * 20., 0., k * 20. + 18, 50.]
        gt.append(G('Car', box))
        if rng.random() < .8:
            det.append(D('Car', [v + rng.normal(0, 1) for v in box], float(rng.random())))
        det.append(D('Car', [k * 20. + 5, 0., k * 20. + 23, 50.], float(rng.random())))  # straddles two GT
    ours = evaluate_kitti(to_objects([gt], False), to_objects([det], True))['Car']
    np.testing.assert_array_equal(ours.precision['moderate'], ref_eval_class('Car', [gt], [det], 'moderate'))
    assert (ours.precision['moderate'] > 0).sum() >= 25  # many thresholds really were evaluated


# ------------------------------------------------------------------------------------------------ files and CLI
@pytest.fixture
def kitti_dirs(tmp_path):
    labels, results = tmp_path / 'label_2', tmp_path / 'results'
    labels.mkdir(), results.mkdir()
    tail = '1.5 1.6 3.9 1.0 1.7 20.0 0.1'
    (labels / '000000.txt').write_text(f'Car 0.00 0 -1.5 0.00 0.00 50.00 50.00 {tail}\n'
                                       f'DontCare -1 -1 -10 100.0 0.0 300.0 100.0 -1 -1 -1 -1000 -1000 -1000 -10\n')
    (labels / '000001.txt').write_text(f'Pedestrian 0.00 1 0.3 10.00 10.00 30.00 70.00 {tail}\n')
    (labels / '000002.txt').write_text(f'Cyclist 0.00 0 0.3 10.00 10.00 30.00 70.00 {tail}\n')
    inv = '-1 -1 -1 -1000 -1000 -1000 -10'
    (results / '000000.txt').write_text(f'Car -1 -1 -10 0 0 50 50 {inv} 0.9\nCar -1 -1 -10 110 10 150 60 {inv} 0.95\n')
    (results / '000001.txt').write_text(f'Pedestrian -1 -1 -10 10 10 30 70 {inv} 0.7\n')
    return labels, results  # frame 000002 has no result file: its cyclist is simply missed


def test_cli_on_disk(kitti_dirs, tmp_path, capsys):
    labels, results = kitti_dirs
    out = tmp_path / 'k.json'
    eval_main(['kitti', '--labels', str(labels), '--results', str(results), '--json', str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['mAP', 'Car', 'Pedestrian', 'Cyclist']
    assert lines[1].split()[0] == 'kitti-r40-moderate' and len(lines) == 7
    doc = json.loads(out.read_text())
    # one GT, one TP per class -> precision [1, 0, ...]: R40 = 0, R11 = 1/11; the cyclist class has no detection
    assert doc['per_class'] == {'Car': 0.0, 'Pedestrian': 0.0, 'Cyclist': 0.0}
    r11 = {r['metric']: r for r in doc['also']}['kitti-r11-moderate']
    assert r11['per_class']['Car'] == pytest.approx(1 / 11) and r11['per_class']['Pedestrian'] == pytest.approx(1 / 11)
    assert doc['iou'] == {'Car': 0.7, 'Pedestrian': 0.5, 'Cyclist': 0.5}


def test_strict_result_format_and_folder_checks(kitti_dirs):
    labels, results = kitti_dirs
    (results / '000001.txt').write_text('Pedestrian -1 -1 -10 10 10 30 70 -1 -1 -1 -1000 -1000 -1000 -10\n')
    with pytest.raises(SystemExit, match=r'000001\.txt:1: expected 16 fields, got 15'):
        eval_main(['kitti', '--labels', str(labels), '--results', str(results)])
    (results / '000001.txt').write_text('Pedestrian -1 -1 -10 10 10 30 70 -1 -1 -1 -1000 -1000 -1000 -10 high\n')
    with pytest.raises(SystemExit, match=r'000001\.txt:1: fields after the type must be finite numbers'):
        eval_main(['kitti', '--labels', str(labels), '--results', str(results)])
    good = (labels / '000002.txt').read_text()
    (labels / '000002.txt').write_text(good.replace(' 0 0.3 ', ' 0.5 0.3 '))
    with pytest.raises(SystemExit, match=r'000002\.txt:1: occlusion must be an integer'):
        eval_main(['kitti', '--labels', str(labels), '--results', str(results)])
    (labels / '000002.txt').write_text(good)
    (results / '000001.txt').write_text('')
    (results / '000009.txt').write_text('')
    with pytest.raises(SystemExit, match=r'1 result files have no label file, e\.g\. 000009\.txt'):
        eval_main(['kitti', '--labels', str(labels), '--results', str(results)])
    # with an explicit frame list, other result files are fine
    assert len(read_results(results, ['000000', '000001'], strict_extra=False).frame) == 2
