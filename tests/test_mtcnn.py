"""MTCNN on torch (bidsanon.deface.mtcnn) against facenet-pytorch, and its NMS."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA
from test_face import t1, t1_front  # noqa: F401 - the sample head and its front render

from bidsanon.deface import face, mtcnn

pytestmark = pytest.mark.skipif(not mtcnn.available(), reason="torch not installed")

#: What facenet-pytorch 2.5.3's ``MTCNN(min_face_size=40, keep_all=True).detect`` gave
#: (torch 2.14.1, one thread, 2026-12-02) on these renders of real heads: x1, y1, x2, y2,
#: probability. The renders' pixel sums pin the renders they were measured on.
REFERENCE = {
    ("sample/T1.mgz", "front"): (6168051, [80.53, 58.35, 229.85, 252.92, 0.9999]),
    ("chris/chris_PD.nii.gz", "pitch+20"): (3873679, [43.42, 56.53, 174.65, 233.98, 0.9323]),
    ("mni152/MNI152_T1_2mm.nii.gz", "yaw-30"): (5844114, [70.61, 108.31, 202.4, 277.41,
                                                          0.9967]),
}


@pytest.mark.parametrize("head, view", list(REFERENCE))
def test_same_faces_as_facenet_pytorch(head, view):
    pic = face.render_view(nib.load(DATA / "anat" / head), *face.VIEWPOINTS[view])
    pixels, expected = REFERENCE[(head, view)]
    assert int(pic.sum()) == pixels
    found = mtcnn.detect(pic, min_face=40)
    assert found.shape == (1, 5)
    np.testing.assert_allclose(found[0, :4], expected[:4], atol=0.05)
    assert abs(found[0, 4] - expected[4]) < 1e-3


def test_nothing_on_the_back_or_an_empty_picture(t1):
    assert len(mtcnn.detect(face.render_view(t1, back=True), min_face=40)) == 0
    assert mtcnn.detect(np.zeros((100, 120), np.uint8)).shape == (0, 5)
    assert mtcnn.detect(np.zeros((8, 8), np.uint8)).shape == (0, 5)  # below one window


def test_grey_and_rgb_pictures_agree(t1_front):
    rgb = np.repeat(t1_front[..., None], 3, axis=2)
    np.testing.assert_array_equal(mtcnn.detect(t1_front, 40), mtcnn.detect(rgb, 40))


def _brute_nms(boxes, scores, threshold, method):
    plus = 1.0 if method == "min" else 0.0
    area = lambda b: (b[2] - b[0] + plus) * (b[3] - b[1] + plus)  # noqa: E731
    keep = []
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        ok = True
        for j in keep:
            w = max(0.0, min(boxes[i][2], boxes[j][2]) - max(boxes[i][0], boxes[j][0]) + plus)
            h = max(0.0, min(boxes[i][3], boxes[j][3]) - max(boxes[i][1], boxes[j][1]) + plus)
            inter = w * h
            den = (min(area(boxes[i]), area(boxes[j])) if method == "min"
                   else area(boxes[i]) + area(boxes[j]) - inter)
            if inter / den > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("method, threshold", list(itertools.product(("union", "min"), (0.3, 0.7))))
def test_nms_keeps_what_a_pairwise_search_keeps(method, threshold):
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 80, (60, 2))
    boxes = np.c_[xy, xy + rng.uniform(5, 40, (60, 2))]
    scores = rng.permutation(60) / 60.0  # distinct: the order is defined
    keep = mtcnn.nms(boxes, scores, threshold, method)
    assert keep.tolist() == _brute_nms(boxes.tolist(), scores.tolist(), threshold, method)
    assert 1 < len(keep) < 60


def test_face_module_uses_it(t1_front):
    assert "mtcnn" in face.available_detectors()
    boxes = face.detect(t1_front, "mtcnn", res=1.0)
    assert [round(b.score, 3) for b in boxes] == [round(float(s), 3) for s in
                                                   mtcnn.detect(t1_front, 40)[:, 4]]
