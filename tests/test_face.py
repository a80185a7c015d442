"""Head renders and dlib's face detector on real heads, defaced heads and non-heads."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA

from bidsanon import deface
from bidsanon.deface import face

T1 = DATA / "anat" / "sample" / "T1.mgz"
MNI = DATA / "anat" / "mni152" / "MNI152_T1_2mm.nii.gz"


@pytest.fixture(scope="module")
def t1():
    return nib.load(T1)


@pytest.fixture(scope="module")
def t1_front(t1):
    return face.render_head(t1, "front")


def test_render_views_shapes(t1, t1_front):
    assert t1_front.dtype == np.uint8 and t1_front.ndim == 2
    # 1 mm pixels: the 258 mm field of view plus 2 x 30 mm padding (+ 60 mm below the
    # neck, which the field of view cuts)
    assert 300 <= t1_front.shape[1] <= 330
    assert t1_front.shape[0] > t1_front.shape[1]
    left, right = face.render_head(t1, "left"), face.render_head(t1, "right")
    assert left.shape == right.shape
    assert (t1_front > 0).mean() > 0.2 and (left > 0).mean() > 0.2
    with pytest.raises(ValueError):
        face.render_head(t1, "top")


def test_face_found_on_real_heads(t1_front):
    boxes = face.detect_faces(t1_front)
    assert boxes and max(b.score for b in boxes) > 1.0
    b = max(boxes, key=lambda b: b.score)
    # the face sits in the upper-middle of the render, not at its edge
    h, w = t1_front.shape
    assert 0.25 * w < (b.left + b.right) / 2 < 0.75 * w
    assert (b.top + b.bottom) / 2 < 0.6 * h


def test_face_found_on_mni152_with_fov_extension():
    img = nib.load(MNI)
    depth, hit, cut = face.depth_map(img, "front")
    assert cut.any(), "the template's field of view stops at the nose"
    assert face.detect_faces(face.shade(depth, hit, cut))
    assert face.has_face(img)


@pytest.mark.parametrize("pose", [(0.0, 0.0), (60.0, 0.0), (-30.0, 20.0)])
def test_ray_cast_skips_only_samples_that_cannot_hit(t1, pose):
    """Each ray starts in front of the nearest occupied block and stops at its first
    hit: the depth map is the one of a cast that samples every ray from the front (one
    block reaching every sample)."""
    from dataclasses import replace

    from bidsanon.deface.geometry import rotation_matrix

    hv = face.head_volume(t1)
    everything = replace(hv, blocks=np.array([np.array(hv.vol.shape) / 2.0]),
                         block_reach=float(max(hv.vol.shape)))
    turn = np.eye(4)
    turn[:3, :3] = rotation_matrix((pose[1], 0.0, pose[0]))
    turn[:3, 3] = hv.centre - turn[:3, :3] @ hv.centre
    fast, full = face.depth_map(hv, pose=turn), face.depth_map(everything, pose=turn)
    assert full[1].mean() > 0.3  # the head fills a third of the picture
    for a, b in zip(fast, full):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["anat/niivue/T2w.nii.gz", "anat/chris/chris_t1.nii.gz"])
def test_head_volume_reads_integer_voxels_as_their_float32_copy(path):
    """int16 and uint8 heads are smoothed as they are stored (no float32 copy of the
    volume first): every field of the head volume is the float32 copy's, to the bit."""
    from bidsanon.deface.face import _ArrayImage
    from bidsanon.deface.geometry import downsample_factors

    img = nib.load(DATA / path)
    data = np.asanyarray(img.dataobj)
    assert data.dtype in (np.int16, np.uint8)
    assert (downsample_factors(img.affine, 2.0) == 1).all()  # smoothed as stored
    a = face.head_volume(img)
    b = face.head_volume(_ArrayImage(data.astype(np.float32), img.affine))
    assert a.threshold == b.threshold and a.box == b.box
    assert a.block_reach == b.block_reach
    for x, y in ((a.vol, b.vol), (a.blocks, b.blocks), (a.affine, b.affine),
                 (a.centre, b.centre)):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_component_sizes_are_bincounts():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(3)
    for shape in ((7, 9, 11), (80, 70, 60)):  # less and more than one slab
        lab, n = ndi.label(rng.random(shape) < 0.2)
        assert np.array_equal(face._component_sizes(lab, n), np.bincount(lab.ravel())[1:])


def test_head_volume_leaves_the_callers_mask_alone(t1):
    """The specks are removed in place on the head volume's own copy of a mask."""
    data = np.asanyarray(t1.dataobj)
    mask = (data > 30).astype(np.float32)
    mask[0, 0, 0] = 1.0  # a speck in the air, removed from the head volume
    before = mask.copy()
    hv = face.head_volume(t1, mask=mask)
    assert np.array_equal(mask, before)
    assert hv.vol[0, 0, 0] == 0.0 and hv.vol.base is not mask


def test_render_is_world_space(t1, t1_front):
    """The same head stored in another axis order renders the same picture."""
    data = np.asanyarray(t1.dataobj)
    ornt = np.array([[2, -1], [0, 1], [1, -1]])
    img = nib.Nifti1Image(nib.orientations.apply_orientation(data, ornt),
                          t1.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape))
    other = face.render_head(img, "front")
    assert other.shape == t1_front.shape
    assert np.abs(other.astype(int) - t1_front.astype(int)).mean() < 2.0
    assert face.has_face(img)


def test_no_face_after_defacing(t1):
    res = deface.deface_image(t1)
    for view in face.VIEWS:
        assert not face.detect_faces(face.render_head(res.image, view))


def test_no_face_on_non_heads():
    rng = np.random.default_rng(1)
    idx = np.indices((70, 80, 70)).astype(float)
    ellipsoid = (((idx[0] - 35) / 30) ** 2 + ((idx[1] - 40) / 35) ** 2
                 + ((idx[2] - 35) / 32) ** 2) < 1
    blob = nib.Nifti1Image((ellipsoid * 100 + rng.normal(0, 2, idx[0].shape)).astype(
        np.float32), np.diag([2.5, 2.5, 2.5, 1]))
    assert not face.has_face(blob, views=face.VIEWS)
    noise = nib.Nifti1Image(rng.random((40, 40, 40)).astype(np.float32), np.eye(4))
    assert not face.has_face(noise)


def test_detect_faces_accepts_image_and_threshold(t1, t1_front):
    assert face.detect_faces(t1) == face.detect_faces(t1_front)
    assert not face.detect_faces(t1_front, threshold=10.0)
    assert len(face.detect_faces(t1_front, upsample=(1,))) >= 1


@pytest.mark.skipif(not face.mtcnn_available(), reason="torch not installed "
                    "(extra bidsanon[mtcnn])")
def test_mtcnn_finds_the_face_not_the_back(t1, t1_front):
    boxes = face.detect(t1_front, "mtcnn")
    assert boxes and max(b.score for b in boxes) > 0.95
    b = max(boxes, key=lambda b: b.score)
    h, w = t1_front.shape  # a box in the render's own pixels, on the face
    assert 0.25 * w < (b.left + b.right) / 2 < 0.75 * w
    assert (b.top + b.bottom) / 2 < 0.6 * h
    assert 80 < b.right - b.left < w
    assert face.detect(face.render_view(t1, back=True), "mtcnn") == []
    assert "mtcnn" in face.available_detectors()


def test_detectors_are_optional_but_hog():
    have = face.available_detectors()
    assert have[0] == "hog" and set(have) <= set(face.DETECTORS)
    with pytest.raises(ValueError):
        face.detect(np.zeros((10, 10), np.uint8), "haar")


def test_multi_view_faces_takes_an_array(t1):
    data = np.asanyarray(t1.dataobj)
    pics, hits = face.multi_view_faces(data, affine=t1.affine, detectors=("hog",))
    assert set(pics) == set(face.VIEWPOINTS)
    assert hits[("front", "hog")] == face.detect(pics["front"], "hog")
    assert hits[("front", "hog")]  # the sample head's face
    with pytest.raises(ValueError):
        face.multi_view_faces(data)


def test_check_file(tmp_path, t1):
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine), src)
    findings = face.check_file(src, "sub-01/anat/sub-01_T1w.nii.gz")
    assert [f.rule for f in findings] == ["anat.face"]
    assert findings[0].severity == "error"
    defaced = tmp_path / "defaced_T1w.nii.gz"
    nib.save(deface.deface_image(t1).image, defaced)
    assert face.check_file(defaced, "x") == []
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"no image here" * 10)
    assert [f.rule for f in face.check_file(junk, "junk.nii.gz")] == ["anat.unreadable"]


def test_hog_model_file_is_dlibs_detector(tmp_path, t1_front):
    # the shipped file must be the installed dlib's own detector, byte for byte (a new
    # dlib release that changes its detector fails here), and find what it finds
    import dlib

    own = tmp_path / "own.svm"
    builtin = dlib.get_frontal_face_detector()
    builtin.save(str(own))
    assert face.HOG_MODEL.read_bytes() == own.read_bytes()
    pic = np.ascontiguousarray(t1_front)
    want = []
    for up in (0, 1):
        dets, scores, _ = builtin.run(pic, up, -1.0)
        want += [(d.left(), d.top(), d.right(), d.bottom(), s)
                 for d, s in zip(dets, scores) if s > -1.0]
    got = face.detect_faces(pic, threshold=-1.0)
    assert want and [(b.left, b.top, b.right, b.bottom, b.score) for b in got] == want


def test_hog_in_threads_finds_what_it_finds_in_one(t1):
    # dlib's HOG run releases the GIL; one detector shared by threads crashed (double
    # free) or returned other boxes: each thread has its own
    from concurrent.futures import ThreadPoolExecutor

    pics, _ = face.multi_view_faces(t1, detectors=())
    pics = list(pics.values()) * 2
    one = [face.detect(p, "hog") for p in pics]
    with ThreadPoolExecutor(2) as pool:
        two = list(pool.map(lambda p: face.detect(p, "hog"), pics))
    assert any(one) and two == one
