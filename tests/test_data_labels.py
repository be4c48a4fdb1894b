"""Label paths, label parsing, image headers and decoding."""
import cv2
import numpy as np
import pytest

from yolo_lrm.data.labels import ImageError, image_size, label_path, parse_label_text, raw_rule_hint, read_image


@pytest.mark.parametrize('image, label', [
    ('VOCdevkit/VOC2007/JPEGImages/000001.jpg', 'VOCdevkit/VOC2007/labels/000001.txt'),
    ('/d/images/train/a.png', '/d/labels/train/a.txt'),
    ('/d/raw/a.JPG', '/d/labels/a.txt'),
    ('/d/images/x/images/a.JPEG', '/d/labels/x/images/a.txt'),      # first occurrence only
    ('/d/drawings/a.jpg', '/d/dlabelsings/a.txt'),                  # Darknet's raw rule, kept on purpose
    ('/d/images/a.jpeg', '/d/labels/a.txt'),                        # stricter: any image extension
    ('/d/images/a.bmp', '/d/labels/a.txt'),
    ('/d/x.jpg.d/images/a.jpg', '/d/x.jpg.d/labels/a.txt'),         # stricter: the suffix, not the first '.jpg'
])
def test_label_path_follows_darknet(image, label):
    assert label_path(image) == label


def test_raw_hint_only_inside_a_name():
    assert 'raw' in raw_rule_hint('/d/drawings/a.jpg')
    assert raw_rule_hint('/d/raw/a.jpg') == ''
    assert raw_rule_hint('/d/images/a.jpg') == ''


def test_parse_label_text_keeps_good_lines_and_names_bad_ones():
    text = ('0 0.5 0.5 0.25 0.125\n\n1 0.1 0.2 0.3\n2 a 0.1 0.1 0.1\n1.5 0.1 0.1 0.1 0.1\n3 0.4 0.4 0.1 nan\n'
            '4 .25 .75 .5 .5\n')
    rows, lines, bad = parse_label_text(text)
    assert rows.dtype == np.float32
    assert rows.tolist() == [[0, .5, .5, .25, .125], [4, .25, .75, .5, .5]]
    assert lines.tolist() == [1, 7]
    assert [b[0] for b in bad] == [3, 4, 5, 6]


def test_image_size_from_headers(tmp_path):
    im = np.zeros((37, 53, 3), np.uint8)
    for ext in ('.jpg', '.png', '.bmp'):
        path = str(tmp_path / f'a{ext}')
        cv2.imwrite(path, im)
        assert image_size(path) == (53, 37)
    (tmp_path / 'bad.jpg').write_bytes(b'\xff\xd8\xff\xe0\x00\x10JFIF')   # header cut before the frame marker
    with pytest.raises(ImageError, match='bad.jpg'):
        image_size(str(tmp_path / 'bad.jpg'))
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(ImageError, match='empty.png'):
        image_size(str(tmp_path / 'empty.png'))


def test_read_image_is_rgb_and_names_bad_files(tmp_path):
    im = np.zeros((4, 6, 3), np.uint8)
    im[..., 2] = 255                                          # red in OpenCV's BGR
    cv2.imwrite(str(tmp_path / 'red.png'), im)
    rgb = read_image(str(tmp_path / 'red.png'))
    assert rgb.shape == (4, 6, 3) and rgb[0, 0].tolist() == [255, 0, 0]
    (tmp_path / 'junk.jpg').write_bytes(b'not an image')
    with pytest.raises(ImageError, match='junk.jpg'):
        read_image(str(tmp_path / 'junk.jpg'))
    with pytest.raises(ImageError, match='missing.jpg'):
        read_image(str(tmp_path / 'missing.jpg'))
