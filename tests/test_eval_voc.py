"""VOC scoring: hand-computed cases for every rule, and parity with a plain-loop reference on random cases."""
import math

import numpy as np
import pytest

from yolo_lrm.evaluation.evaluate import score_voc, score_voc_files
from yolo_lrm.evaluate_cli import main as eval_main
from yolo_lrm.textfile import read_names
from yolo_lrm.evaluation.voc import (Detections, GroundTruth, class_ap, class_pr, load_voc_annotations, read_detections,
                               read_image_set)


# ------------------------------------------------------------------------------------------ plain-loop reference
def ref_voc_ap(gt, dets, cls, thr=0.5, use_07=True, ge=False):
    """py-faster-rcnn's voc_eval + voc_ap, written as plain loops from the protocol text.
    gt: {image: [(cls, difficult, box)]}; dets: [(image, score, box)] of class `cls`, file order."""
    recs, npos = {}, 0
    for image, objs in gt.items():
        mine = [o for o in objs if o[0] == cls]
        recs[image] = {'box': [o[2] for o in mine], 'difficult': [o[1] for o in mine], 'det': [False] * len(mine)}
        npos += sum(1 for o in mine if not o[1])
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # Python's sort is stable
    tp, fp = [], []
    for i in order:
        image, _, bb = dets[i]
        r = recs[image]
        ovmax, jmax = -math.inf, -1
        for j, g in enumerate(r['box']):
            iw = max(min(g[2], bb[2]) - max(g[0], bb[0]) + 1., 0.)
            ih = max(min(g[3], bb[3]) - max(g[1], bb[1]) + 1., 0.)
            inter = iw * ih
            uni = (bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) + (g[2] - g[0] + 1.) * (g[3] - g[1] + 1.) - inter
            if inter / uni > ovmax:
                ovmax, jmax = inter / uni, j
        if (ovmax >= thr) if ge else (ovmax > thr):
            if r['difficult'][jmax]:
                tp.append(0), fp.append(0)
            elif not r['det'][jmax]:
                r['det'][jmax] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    if npos == 0:
        return math.nan
    ctp = np.cumsum(tp, dtype=float)
    cfp = np.cumsum(fp, dtype=float)
    rec = [t / npos for t in ctp]
    prec = [t / max(t + f, np.finfo(np.float64).eps) for t, f in zip(ctp, cfp)]
    if use_07:
        ap = 0.
        for t in np.arange(0., 1.1, 0.1):
            ps = [p for r_, p in zip(rec, prec) if r_ >= t]
            ap += (max(ps) if ps else 0.) / 11.
        return ap
    mrec, mpre = [0.] + rec + [1.], [0.] + prec + [0.]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


# ------------------------------------------------------------------------------------------------------- helpers
def make_gt(objs, n_images):
    """objs: [(image, cls, box, difficult)] -> GroundTruth."""
    return GroundTruth([f'im{i}' for i in range(n_images)], np.array([o[0] for o in objs], np.int64),
                       np.array([o[1] for o in objs], np.int64),
                       np.array([o[2] for o in objs], np.float64).reshape(-1, 4),
                       np.array([o[3] for o in objs], bool))


def make_dets(rows):
    """rows: [(image, score, box)] -> Detections."""
    if not rows:
        return Detections.empty()
    return Detections(np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float64),
                      np.array([r[2] for r in rows], np.float64))


def ap(objs, rows, metric='voc07', iou=0.5, inclusive=False, n_images=1):
    """AP of class 0 (sums of 11 ones / 11 are 1.0000000000000002 in floats, so compare with approx)."""
    return class_ap(class_pr(make_gt(objs, n_images), 0, make_dets(rows), iou, inclusive), metric)


A = [1, 1, 10, 10]


def far(k):
    """A 10x10 box that overlaps nothing else in these tests."""
    return [100 + 20 * k, 100, 109 + 20 * k, 109]


# -------------------------------------------------------------------------------------------------- hand cases
def test_difficult_is_neither_tp_nor_fp_nor_counted():
    objs = [(0, 0, A, True), (0, 0, far(0), False)]
    rows = [(0, .9, A), (0, .8, far(0))]
    # the detection on the difficult box is ignored: one TP on npos=1, precision 1 everywhere
    assert ap(objs, rows) == pytest.approx(1.0) and ap(objs, rows, 'area') == 1.0
    # had it counted as FP, precision at recall 1 would be .5
    assert ap([(0, 0, A, False), (0, 0, far(0), False)], [(0, .9, far(5)), (0, .8, far(0))], 'area') == 0.25


def test_duplicate_is_fp_without_fallback_to_the_next_gt():
    b = [3, 1, 12, 10]  # IoU(A, b) = 80/120 = .67: a fallback would match it
    objs = [(0, 0, A, False), (0, 0, b, False)]
    rows = [(0, .9, A), (0, .8, A)]
    # tp=[1,0] fp=[0,1]: rec [.5,.5], prec [1,.5]; 11-point: t = 0 ... 0.5 see precision 1 -> 6/11
    assert ap(objs, rows) == pytest.approx(6 / 11, abs=1e-15)
    assert ap(objs, rows, 'area') == 0.5


def test_iou_exactly_at_threshold_strict_vs_inclusive():
    det = [1, 1, 10, 20]  # +1 convention: inter 100, union 100 + 200 - 100 = 200 -> IoU exactly 0.5
    assert ap([(0, 0, A, False)], [(0, .9, det)]) == 0.0
    assert ap([(0, 0, A, False)], [(0, .9, det)], inclusive=True) == pytest.approx(1.0)


def test_recall_exactly_point_three_misses_the_arange_step():
    objs = [(0, 0, far(k), False) for k in range(10)]
    rows = [(0, .9 - k / 10, far(k)) for k in range(3)]  # 3 TP of 10: recall 0.3, precision 1
    # np.arange's 4th step is 0.30000000000000004 > 0.3: only t = 0, .1, .2 count (k/10 steps would give 4/11)
    assert ap(objs, rows) == pytest.approx(3 / 11, abs=1e-15)
    assert ap(objs, rows, 'area') == pytest.approx(0.3)


def test_tied_scores_keep_file_order():
    objs = [(0, 0, A, False)]
    # equal scores: the FP first (file order) -> prec [0, .5]; the other order would give AP 1
    assert ap(objs, [(0, .5, far(0)), (0, .5, A)]) == pytest.approx(0.5)
    assert ap(objs, [(0, .5, A), (0, .5, far(0))]) == pytest.approx(1.0)


def test_fp_on_image_without_gt_and_other_class_gt():
    objs = [(0, 0, A, False), (1, 1, far(0), False)]  # image 1 only has class-1 GT
    rows = [(1, .9, far(0)), (0, .8, A)]  # rank 1: FP (class-1 GT is not matched across classes)
    assert ap(objs, rows, 'area', n_images=2) == 0.5


def test_class_without_gt_is_nan_and_left_out_of_the_mean():
    gt = make_gt([(0, 0, A, False)], 1)
    res = score_voc(gt, [make_dets([(0, .9, A)]), make_dets([(0, .9, A)])], ['a', 'b'])
    assert res.per_class['a'] == pytest.approx(1.0) and math.isnan(res.per_class['b'])
    assert res.map == res.per_class['a']
    assert res.to_json()['per_class']['b'] is None


# ------------------------------------------------------------------------------------------------------- files
def write_xml(path, objects, size=(100, 80)):
    objs = ''.join(
        f'<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>'
        + ('' if d is None else f'<difficult>{d}</difficult>')
        + '<bndbox>' + ''.join(f'<{k}>{v}</{k}>' for k, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), box))
        + '</bndbox></object>' for n, d, box in objects)
    path.write_text(f'<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>'
                    f'{objs}</annotation>')


@pytest.fixture
def voc_case(tmp_path):
    ann = tmp_path / 'Annotations'
    ann.mkdir()
    write_xml(ann / 'a.xml', [('cat', 0, (1, 1, 10, 10)), ('dog', 1, (20, 20, 40, 40)), ('cow', 0, (5, 5, 9, 9))])
    write_xml(ann / 'b.xml', [('cat', None, ('21.0', '21.7', '30', '30')), ('dog', 0, (50, 50, 70, 60))])
    (tmp_path / 'test.txt').write_text('a\nb\n')
    (tmp_path / 'names').write_text('cat\ndog\nbird\n')
    res = tmp_path / 'res'
    res.mkdir()
    (res / 'comp4_det_test_cat.txt').write_text('a 0.900000 1 1 10 10\nb 0.800000 21 21 30 30\nb 0.7 60 60 70 70\n')
    (res / 'comp4_det_test_dog.txt').write_text('')  # empty: AP 0, no crash
    return tmp_path                                   # bird: no file and no GT -> NaN


def test_xml_parsing_float_tolerant_and_default_difficult(voc_case):
    gt = load_voc_annotations(voc_case / 'Annotations', ['a', 'b'], ['cat', 'dog'])
    assert gt.boxes[3].tolist() == [21, 21, 30, 30]  # '21.7' -> 21, as int() would truncate
    assert gt.difficult.tolist() == [False, True, False, False, False]
    assert gt.cls.tolist() == [0, 1, -1, 0, 1]      # cow is not in the class list


def test_score_files_and_cli(voc_case, capsys):
    res = score_voc_files(str(voc_case / 'Annotations'), str(voc_case / 'test.txt'), ['cat', 'dog', 'bird'],
                          str(voc_case / 'res' / 'comp4_det_test_{}.txt'), ['voc07', 'area'])
    assert res.per_class['cat'] == pytest.approx(1.0) and res.per_class['dog'] == 0.0
    assert math.isnan(res.per_class['bird']) and res.map == pytest.approx(0.5)
    assert res.also[0].metric == 'area' and res.also[0].map == 0.5
    with_cow = score_voc_files(str(voc_case / 'Annotations'), ['a', 'b'], ['cat', 'cow'],
                               str(voc_case / 'res' / 'comp4_det_test_{}.txt'))
    assert with_cow.per_class['cow'] == 0.0  # GT but no result file at all: AP 0, no crash
    out = voc_case / 'out.json'
    eval_main(['voc', '--annotations', str(voc_case / 'Annotations'), '--image-set', str(voc_case / 'test.txt'),
               '--names', str(voc_case / 'names'), '--results', str(voc_case / 'res' / 'comp4_det_test_{}.txt'),
               '--metric', 'voc07', 'area', '--iou', '0.5', '0.7', '--json', str(out), '--csv',
               str(voc_case / 'out.csv')])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ['mAP', 'cat', 'dog', 'bird']
    assert table[1].split() == ['voc07@0.5', '50.00', '100.00', '0.00', '-']
    assert [ln.split()[0] for ln in table[1:]] == ['voc07@0.5', 'area@0.5', 'voc07@0.7', 'area@0.7']
    import json
    doc = json.loads(out.read_text())
    assert doc['metric'] == 'voc07' and doc['iou'] == 0.5 and doc['per_class']['bird'] is None
    assert doc['map'] == pytest.approx(0.5)
    assert len(doc['also']) == 3
    assert (voc_case / 'out.csv').read_text().splitlines()[1] == 'voc07@0.5,50.0000,100.0000,0.0000,'


def test_bad_inputs_name_file_and_line(voc_case):
    ids = {'a': 0, 'b': 1}
    bad = voc_case / 'bad.txt'
    bad.write_text('a 0.9 1 1 10 10\nzzz 0.5 1 1 2 2\n')
    with pytest.raises(ValueError, match=r'bad\.txt:2: image id is not in the image set'):
        read_detections(bad, ids)
    bad.write_text('a 0.9 1 1 10 10\n\na 0.5 1 1 2\n')
    with pytest.raises(ValueError, match=r'bad\.txt:3: expected 6 fields'):
        read_detections(bad, ids)
    bad.write_text('a 0.9 1 1 10\na 0.9 1 1 10 10 10\n')  # the field count adds up, the lines do not
    with pytest.raises(ValueError, match=r'bad\.txt:1: expected 6 fields'):
        read_detections(bad, ids)
    bad.write_text('a 0.9 1 1 10 10\n   \nb 0.5 1 1 2 2\n')  # a whitespace-only line is just blank
    assert read_detections(bad, ids).image.tolist() == [0, 1]
    bad.write_text('a 0.9 1 1 10 x\n')
    with pytest.raises(ValueError, match=r'bad\.txt:1: score and box must be finite numbers'):
        read_detections(bad, ids)
    with pytest.raises(SystemExit, match='no result file found'):
        eval_main(['voc', '--annotations', str(voc_case / 'Annotations'), '--image-set',
                   str(voc_case / 'test.txt'), '--names', str(voc_case / 'names'), '--results',
                   str(voc_case / 'nowhere_{}.txt')])
    (voc_case / 'Annotations' / 'a.xml').write_text('<annotation>\n<object>\n</annotation>')
    with pytest.raises(ValueError, match=r'a\.xml:3: malformed XML'):
        load_voc_annotations(voc_case / 'Annotations', ['a'], ['cat'])
    (voc_case / 'dup.txt').write_text('a\nb\na\n')
    with pytest.raises(ValueError, match=r'dup\.txt:3: image id .a. repeats line 1'):
        read_image_set(voc_case / 'dup.txt')


# ------------------------------------------------------------------------------------------------ random parity
def random_case(rng):
    n_img = int(rng.integers(1, 5))
    gt = {}
    for i in range(n_img):
        objs = []
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.integers(1, 40, 2)
            w, h = rng.integers(1, 25, 2)
            objs.append((int(rng.integers(0, 2)), bool(rng.random() < .2), [x, y, x + w, y + h]))
        gt[i] = objs
    all_boxes = [(i, o[2]) for i, objs in gt.items() for o in objs]
    dets = []
    for _ in range(int(rng.integers(0, 14))):
        if all_boxes and rng.random() < .75:
            i, b = all_boxes[int(rng.integers(len(all_boxes)))]
            jitter = rng.integers(-3, 4, 4) if rng.random() < .6 else rng.normal(0, 2, 4)
            box = [float(v) for v in np.array(b) + jitter]
        else:
            i = int(rng.integers(n_img))
            x, y = rng.uniform(1, 40, 2)
            box = [x, y, x + rng.uniform(1, 25), y + rng.uniform(1, 25)]
        score = float(rng.integers(0, 4)) / 4 if rng.random() < .5 else float(rng.random())  # many ties
        dets.append((i, score, box))
    return gt, dets


def test_parity_with_reference_on_random_cases():
    for seed in range(300):
        rng = np.random.default_rng(seed)
        gt_dict, dets = random_case(rng)
        objs = [(i, c, b, d) for i, lst in gt_dict.items() for c, d, b in lst]
        gt = make_gt(objs, len(gt_dict))
        for thr, ge in ((0.5, False), (0.5, True), (0.3, False), (0.7, False)):
            pr = class_pr(gt, 0, make_dets(dets), thr, ge)
            for metric in ('voc07', 'area'):
                with np.errstate(divide='ignore', invalid='ignore'):  # inverted jittered boxes
                    want = ref_voc_ap(gt_dict, dets, 0, thr, metric == 'voc07', ge)
                got = class_ap(pr, metric)
                assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-12), \
                    (seed, thr, ge, metric)


# ------------------------------------------------------------------------------------------------------ warnings
def test_missing_result_file_of_a_class_with_gt_is_a_warning(voc_case, caplog, capsys):
    res = score_voc_files(str(voc_case / 'Annotations'), ['a', 'b'], ['cat', 'cow', 'bird'],
                          str(voc_case / 'res' / 'comp4_det_test_{}.txt'))
    assert res.per_class['cow'] == 0.0 and math.isnan(res.per_class['bird'])  # the devkit's counting
    missing = [r.getMessage() for r in caplog.records if 'no result file' in r.getMessage()]
    assert missing == [f"{voc_case / 'res' / 'comp4_det_test_cow.txt'}: no result file for class 'cow', which has "
                       f"1 ground-truth object: its AP counts as 0"]  # bird has no GT: no word
    (voc_case / 'names2').write_text('cat\ncow\n')
    eval_main(['voc', '--annotations', str(voc_case / 'Annotations'), '--image-set', str(voc_case / 'test.txt'),
               '--names', str(voc_case / 'names2'), '--results', str(voc_case / 'res' / 'comp4_det_test_{}.txt')])
    err = capsys.readouterr().err
    assert "warning: " in err and "comp4_det_test_cow.txt: no result file for class 'cow'" in err


def test_annotation_objects_of_unknown_classes_are_reported(voc_case, caplog):
    write_xml(voc_case / 'Annotations' / 'c.xml', [('cow', 0, (1, 1, 5, 5)), ('cow', 1, (2, 2, 6, 6)),
                                                   ('horse', 0, (1, 1, 5, 5))])
    gt = load_voc_annotations(voc_case / 'Annotations', ['a', 'b', 'c'], ['cat', 'dog'])
    assert gt.cls.tolist().count(-1) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2  # one per unknown class, the most frequent first
    assert "3 objects of class 'cow'" in messages[0] and 'a.xml' in messages[0] and 'names file' in messages[0]
    assert "1 object of class 'horse'" in messages[1] and 'c.xml' in messages[1]
    caplog.clear()
    load_voc_annotations(voc_case / 'Annotations', ['a', 'b'], ['cat', 'dog', 'cow'])
    assert not caplog.records


def test_text_files_with_a_utf8_bom_read_clean(voc_case):
    (voc_case / 'bom_set.txt').write_bytes('\ufeffa\nb\n'.encode())
    (voc_case / 'bom_names').write_bytes('\ufeffcat\ndog\n'.encode())
    assert read_image_set(voc_case / 'bom_set.txt') == ['a', 'b']
    assert read_names(voc_case / 'bom_names') == ['cat', 'dog']
    (voc_case / 'res' / 'comp4_det_test_cat.txt').write_bytes('\ufeffa 0.9 1 1 10 10\n'.encode())
    assert read_detections(voc_case / 'res' / 'comp4_det_test_cat.txt', {'a': 0}).image.tolist() == [0]
    (voc_case / 'latin1.txt').write_bytes(b'caf\xe9\n')
    with pytest.raises(ValueError, match=r'latin1\.txt: cannot read image set file'):
        read_image_set(voc_case / 'latin1.txt')
