"""Defacing on real heads: brain never touched, face gone, robust to storage and FOV."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA
from scipy import ndimage as ndi

from bidsanon import deface
from bidsanon.formats import anat
from bidsanon.deface import face
from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.errors import InputError, PolicyError

SAMPLE = DATA / "anat" / "sample"
T1 = SAMPLE / "T1.mgz"
MNI = DATA / "anat" / "mni152" / "MNI152_T1_2mm.nii.gz"


# --------------------------------------------------------------------------- helpers

def brain_on_grid(img) -> np.ndarray:
    """The subject's own brain (brain.mgz, 1 mm) on ``img``'s grid: a voxel is brain if
    any 1 mm brain voxel falls in it."""
    brain = nib.load(SAMPLE / "brain.mgz")
    ijk = np.argwhere(np.asanyarray(brain.dataobj) > 0)
    world = ijk @ brain.affine[:3, :3].T + brain.affine[:3, 3]
    inv = np.linalg.inv(img.affine)
    vox = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(img.shape[:3])), axis=1)
    out = np.zeros(img.shape[:3], dtype=bool)
    out[tuple(vox[ok].T)] = True
    return out


def changed_voxels(before, after) -> np.ndarray:
    a = np.asanyarray(before.dataobj)
    b = np.asanyarray(after.dataobj)
    diff = a != b
    return diff.any(axis=3) if diff.ndim == 4 else diff


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def sample_landmarks(img) -> dict:
    """NAS/LPA/RPA of the sample subject in voxels of ``img`` (from the .fif, tkr RAS)."""
    from mne.io import read_fiducials

    pts, _ = read_fiducials(SAMPLE / "sample-fiducials.fif")
    names = {1: "LPA", 2: "NAS", 3: "RPA"}
    inv = np.linalg.inv(img.header.get_vox2ras_tkr())
    return {names[int(p["ident"])]: (inv[:3, :3] @ (p["r"] * 1000.0) + inv[:3, 3]).tolist()
            for p in pts}


def reorient(img, perm, flips):
    """The same head stored with permuted/flipped voxel axes (world unchanged)."""
    data = np.asanyarray(img.dataobj)
    # nibabel's orientation: row i = (output axis of input axis i, flip)
    ornt = np.array([[perm[i], -1 if flips[i] else 1] for i in range(3)])
    new = nib.orientations.apply_orientation(data, ornt)
    aff = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return nib.Nifti1Image(new, aff), ornt


def world_mask_on(mask: np.ndarray, src_aff, dst_img) -> tuple[np.ndarray, np.ndarray]:
    """Resample a mask from its grid to ``dst_img``'s grid (nearest); also return which
    destination voxels the source grid covers."""
    m = np.linalg.inv(src_aff) @ dst_img.affine
    out = ndi.affine_transform(mask.astype(np.float32), m[:3, :3], m[:3, 3],
                               output_shape=dst_img.shape[:3], order=0, cval=-1.0)
    return out > 0.5, out >= 0


@pytest.fixture(scope="module")
def t1():
    return nib.load(T1)


@pytest.fixture(scope="module")
def t1_brain(t1):
    return brain_on_grid(t1)


@pytest.fixture(scope="module")
def plain(t1):
    return deface.deface_image(t1)


def assert_brain_kept(before, result, brain):
    changed = changed_voxels(before, result.image)
    assert brain.sum() > 50000
    assert not (changed & brain).any(), f"{int((changed & brain).sum())} brain voxels changed"
    assert not (result.removed & brain).any()


# --------------------------------------------------------------------------- done-when

def test_sample_t1_brain_untouched_face_gone(t1, t1_brain, plain):
    assert face.has_face(t1), "the detector must find the face on the original render"
    assert plain.method == "template"
    assert_brain_kept(t1, plain, t1_brain)
    assert not face.has_face(plain.image)
    # a real face was removed: tens of mL, not a sliver
    assert plain.removed_voxels * plain.voxel_ml() > 200
    assert plain.registration.ok and plain.similarity >= 0.10


def thin_tissue(vol, thr, near, core, zooms, radius_mm=6.0) -> np.ndarray:
    """Tissue of ``near`` that a ball of ``radius_mm`` rolled inside the head (tissue
    above ``thr``, and ``core`` as solid) cannot reach: what stands off the scalp."""
    head = (vol > thr) | core
    r = np.ceil(radius_mm / zooms).astype(int)
    grid = np.indices(tuple(2 * r + 1)) - r[:, None, None, None]
    ball = np.sqrt(((grid * zooms[:, None, None, None]) ** 2).sum(0)) <= radius_mm
    return head & ~ndi.binary_opening(head, structure=ball) & near & ~core & (vol > thr)


def test_remove_ears_takes_the_whole_pinna():
    """Measured independently of how the patch is made, on a real 0.9 mm head: where the
    outer ear lies in MNI space (|x| > 55, -55 < y < 5, -50 < z < 25 mm), the tissue a
    6 mm ball rolled inside the head cannot reach (more than 8 mm from the protected
    brain): the pinna's helix, antihelix, tragus and lobe. The original has it; the
    output keeps none of it and has none of its own."""
    from bidsanon.deface.geometry import head_threshold
    from bidsanon.deface.protection import bbox, dilate_ball

    img = nib.load(DATA / "anat" / "chris" / "chris_t1.nii.gz")
    res = deface.deface_image(img, suffix="T1w")
    zooms = np.asarray(img.header.get_zooms()[:3], float)
    vol = np.asanyarray(img.dataobj).astype(np.float32)
    out = np.asanyarray(res.image.dataobj).astype(np.float32)
    thr = head_threshold(vol[::2, ::2, ::2])
    ijk = np.indices(img.shape).reshape(3, -1)
    w2t = res.registration.world_to_template
    mni = w2t[:3, :3] @ (img.affine[:3, :3] @ ijk + img.affine[:3, 3:4]) + w2t[:3, 3:4]
    x, y, z = mni.reshape((3,) + img.shape)
    near = (abs(x) > 55) & (y > -55) & (y < 5) & (z > -50) & (z < 25)
    box = bbox(near, (2, 2, 2))
    core = dilate_ball(res.protected[box], 8.0, zooms)
    ml = np.prod(zooms) / 1000.0
    before = thin_tissue(vol[box], thr, near[box], core, zooms)
    after = thin_tissue(out[box], thr, near[box], core, zooms)
    assert before.sum() * ml > 0.5, "the original has ears"
    assert (before & (out[box] > thr)).sum() < 0.05 * before.sum()
    assert after.sum() < 0.05 * before.sum()


def test_untouched_voxels_bit_identical_same_header(t1, plain):
    before = np.asanyarray(t1.dataobj)
    after = np.asanyarray(plain.image.dataobj)
    assert after.dtype == before.dtype
    assert type(plain.image) is type(t1)
    np.testing.assert_array_equal(plain.image.affine, t1.affine)
    keep = ~plain.changed_mask
    assert np.array_equal(after[keep], before[keep])
    assert (after[plain.removed] == 0).all()
    assert (changed_voxels(t1, plain.image) <= plain.changed_mask).all()
    # the cover: values between the fill and the cover value, a percentile of the input
    cover = after[plain.cover]
    assert plain.cover.sum() > 1000 and not (plain.cover & plain.removed).any()
    assert cover.min() >= 0 and cover.max() <= before.max()
    # most of it is one of three values: the face's cover and each ear's patch
    counts = np.sort(np.unique(cover, return_counts=True)[1])[::-1]
    assert counts[:3].sum() > 0.3 * cover.size


def test_mni152_head(tmp_path):
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    img = nib.load(MNI)
    brain = resample_to_img(load_mni152_brain_mask(resolution=2), img,
                            interpolation="nearest", force_resample=True,
                            copy_header=True).get_fdata() > 0
    assert face.has_face(img)
    res = deface.deface_image(img)
    assert_brain_kept(img, res, brain)
    assert not face.has_face(res.image)
    assert res.similarity > 0.9  # the template against itself


def test_landmark_method_sample_fiducials(t1, t1_brain):
    marks = sample_landmarks(t1)
    assert np.allclose(marks["NAS"], (42.3, 30.8, 74.1), atol=1.0)
    res = deface.deface_image(t1, method="landmarks", landmarks=marks,
                              policy={"remove_ears": False})
    assert res.method == "landmarks"
    assert_brain_kept(t1, res, t1_brain)
    assert not face.has_face(res.image)
    assert res.changed_voxels * res.voxel_ml() > 200
    # the box is the policy's box in the head frame, minus the protected brain
    lsec = deface.policy_section(None)["landmarks"]
    world = {k: t1.affine[:3, :3] @ np.asarray(v) + t1.affine[:3, 3] for k, v in marks.items()}
    box = deface.box_mask(t1.shape, t1.affine, deface.head_frame(world), lsec["rotate"],
                          lsec["scale"], lsec["translate"])
    # (the cover takes the part of it behind the moved face plane)
    assert np.array_equal(res.removed | (res.cover & box), box & ~res.protected)


def test_auto_with_landmarks_adds_template_masks(t1, t1_brain, plain):
    marks = sample_landmarks(t1)
    res = deface.deface_image(t1, landmarks=marks)
    assert res.method == "landmarks+template"
    assert_brain_kept(t1, res, t1_brain)
    assert not face.has_face(res.image)
    assert (plain.changed_mask & ~res.changed_mask).sum() < 0.01 * plain.changed_mask.sum()


def test_head_frame_axes():
    marks = {"NAS": np.array([0.0, 100.0, 10.0]), "LPA": np.array([-80.0, 5.0, 0.0]),
             "RPA": np.array([80.0, -5.0, 0.0])}
    frame = deface.head_frame(marks)
    rot = frame[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) > 0
    nas_head = np.linalg.inv(frame) @ np.append(marks["NAS"], 1.0)
    np.testing.assert_allclose(nas_head[[0, 2]], 0.0, atol=1e-9)  # NAS on the +y axis
    assert nas_head[1] > 90
    with pytest.raises(InputError):
        deface.head_frame({"NAS": np.zeros(3), "LPA": np.ones(3), "RPA": np.ones(3)})


def test_quickshear_style_plane_cut_has_no_face(t1, t1_brain):
    """A cut plane tangent to the brain (what quickshear does): no face detected."""
    brain_world = np.argwhere(t1_brain) @ t1.affine[:3, :3].T + t1.affine[:3, 3]
    yz = brain_world[:, 1:]
    front, bottom = yz[np.argmax(yz[:, 0])], yz[np.argmin(yz[:, 1])]
    d = bottom - front
    normal = np.array([d[1], -d[0]])
    if normal @ np.array([1.0, -1.0]) < 0:
        normal = -normal
    offset = ((yz - front) @ normal).max()
    ijk = np.indices(t1.shape).reshape(3, -1).T
    world = ijk @ t1.affine[:3, :3].T + t1.affine[:3, 3]
    cut = (((world[:, 1:] - front) @ normal) > offset).reshape(t1.shape)
    data = np.asanyarray(t1.dataobj).copy()
    data[cut] = 0
    sheared = nib.MGHImage(data, t1.affine, t1.header)
    assert face.has_face(t1)
    assert not face.has_face(sheared)


# --------------------------------------------------------------------------- robustness

ORIENTATIONS = [(p, f) for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1),
                                 (2, 1, 0))
                for f in np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).T.reshape(-1, 3)]


@pytest.mark.parametrize("index", sorted(np.random.default_rng(6).choice(48, 6,
                                                                          replace=False)))
def test_permuted_and_flipped_axes(t1, t1_brain, plain, index):
    perm, flips = ORIENTATIONS[index]
    img, ornt = reorient(t1, perm, tuple(flips))
    res = deface.deface_image(img)
    removed = apply_inverse(res.removed, ornt)
    assert removed.shape == plain.removed.shape
    assert dice(removed, plain.removed) >= 0.95
    brain = apply_forward(t1_brain, ornt)
    assert not (changed_voxels(img, res.image) & brain).any()


def apply_forward(arr, ornt):
    return nib.orientations.apply_orientation(arr, ornt)


def apply_inverse(arr, ornt):
    """Undo ``apply_orientation(x, ornt)``."""
    inv = np.zeros_like(ornt)
    for i, (ax, flip) in enumerate(ornt):
        inv[int(ax)] = (i, flip)
    return nib.orientations.apply_orientation(arr, inv)


def oblique(img, degrees, axis, pad=12):
    """The same head resampled onto a grid rotated by ``degrees`` about ``axis``."""
    data = np.asanyarray(img.dataobj).astype(np.float32)
    rot = deface.rotation_matrix(np.eye(3)[axis] * degrees)
    shape = np.array(data.shape) + pad
    center = img.affine[:3, :3] @ ((np.array(data.shape) - 1) / 2) + img.affine[:3, 3]
    aff = np.eye(4)
    aff[:3, :3] = rot @ img.affine[:3, :3]
    aff[:3, 3] = center - aff[:3, :3] @ ((shape - 1) / 2)
    m = np.linalg.inv(img.affine) @ aff
    new = ndi.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=1)
    return nib.Nifti1Image(np.rint(new).astype(np.int16), aff)


@pytest.mark.parametrize("degrees,axis", [(30, 0), (-20, 1), (25, 2)])
def test_oblique_grid(t1, t1_brain, plain, degrees, axis):
    img = oblique(t1, degrees, axis)
    res = deface.deface_image(img)
    removed, covered = world_mask_on(res.removed, img.affine, t1)
    assert dice(removed & covered, plain.removed & covered) >= 0.95
    brain, _ = world_mask_on(t1_brain, t1.affine, img)
    assert not (res.removed & brain).any()


def test_wrong_header_orientation_found_by_search(t1, plain):
    """The voxels rotated by 90 degrees but the header left as it was: the head lies on
    its back in world space. The orientation search still finds the face."""
    data = np.asanyarray(t1.dataobj)
    rotated = np.ascontiguousarray(np.flip(np.transpose(data, (0, 2, 1)), axis=1))
    img = nib.MGHImage(rotated, t1.affine, t1.header)
    res = deface.deface_image(img)
    assert res.registration.orientation != 0
    back = np.transpose(np.flip(res.removed, axis=1), (0, 2, 1))
    assert dice(back, plain.removed) >= 0.9
    with pytest.raises(InputError, match="quality check"):
        deface.deface_image(img, policy={"template": {"search_orientations": False}})


def test_origin_far_off(t1, t1_brain, plain):
    aff = t1.affine.copy()
    aff[:3, 3] += (100.0, -100.0, 100.0)
    img = nib.MGHImage(np.asanyarray(t1.dataobj), aff, t1.header)
    res = deface.deface_image(img)
    assert dice(res.removed, plain.removed) >= 0.95
    assert not (res.removed & t1_brain).any()


def test_cropped_no_neck(t1, t1_brain, plain):
    # LIA storage: axis 1 runs inferior; keep everything above the chin (cut 25 slices)
    keep = slice(0, t1.shape[1] - 25)
    data = np.asanyarray(t1.dataobj)[:, keep, :]
    img = nib.MGHImage(np.ascontiguousarray(data), t1.affine, t1.header)
    res = deface.deface_image(img)
    assert dice(res.removed, plain.removed[:, keep, :]) >= 0.95
    assert not (res.removed & t1_brain[:, keep, :]).any()
    assert not face.has_face(res.image)


def test_anisotropic_voxels(t1, t1_brain, plain):
    """1 x 1 x 3 mm voxels (resampled from the 3 mm head)."""
    zoom = np.diag([1 / 3, 1 / 3, 1.0, 1.0])
    aff = t1.affine @ zoom
    shape = (t1.shape[0] * 3, t1.shape[1] * 3, t1.shape[2])
    m = np.linalg.inv(t1.affine) @ aff
    data = ndi.affine_transform(np.asanyarray(t1.dataobj).astype(np.float32), m[:3, :3],
                                m[:3, 3], output_shape=shape, order=1)
    img = nib.Nifti1Image(np.rint(data).astype(np.int16), aff)
    res = deface.deface_image(img)
    removed, covered = world_mask_on(res.removed, img.affine, t1)
    assert dice(removed & covered, plain.removed & covered) >= 0.95
    brain, _ = world_mask_on(t1_brain, t1.affine, img)
    assert not (res.removed & brain).any()


def test_4d_every_volume_same_mask(t1, plain):
    data = np.asanyarray(t1.dataobj).astype(np.int16)
    stack = np.stack([data, data // 2 + 3], axis=-1)
    img = nib.Nifti1Image(stack, t1.affine)
    res = deface.deface_image(img)
    out = np.asanyarray(res.image.dataobj)
    assert out.shape == stack.shape and out.dtype == stack.dtype
    assert dice(res.changed_mask, plain.changed_mask) >= 0.95
    keep = ~res.changed_mask
    for t in range(2):
        assert (out[..., t][res.removed] == 0).all()
        assert np.array_equal(out[..., t][keep], stack[..., t][keep])
    # one cover for every volume (its values come from the mean volume)
    assert np.array_equal(out[..., 0][res.cover], out[..., 1][res.cover])


# --------------------------------------------------------------------------- NIfTI I/O

def test_scaled_nifti_bit_exact_through_handle(tmp_path, t1):
    data = np.asanyarray(t1.dataobj).astype(np.int16) * 7 - 300
    img = nib.Nifti1Image(data, t1.affine)
    img.header.set_slope_inter(0.25, 12.5)
    img.header.set_qform(t1.affine, code=1)
    img.header.set_sform(t1.affine, code=2)
    img.header["descrip"] = b"TE=3.2;Time=101112.000"
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(img, src)
    dst = tmp_path / "out" / "sub-01_T1w.nii.gz"
    dst.parent.mkdir()
    ctx = TaskContext(subject="01", new_subject="01", qc_dir=str(tmp_path / "qc"))
    result = anat.handle(src, dst, ctx)
    out = nib.load(dst)
    assert out.dataobj.slope == 0.25 and out.dataobj.inter == 12.5
    raw_in = np.asanyarray(nib.load(src).dataobj.get_unscaled())
    raw_out = np.asanyarray(out.dataobj.get_unscaled())
    changed = raw_in != raw_out
    assert 1000 < changed.sum()
    removed = raw_out[changed]
    # the fill is 0 in scaled units: raw (0 - 12.5) / 0.25 = -50; the cover's values lie
    # between it and a percentile of the input's tissue
    assert (removed == -50).sum() > 1000
    assert removed.min() >= -50 and removed.max() <= raw_in.max()
    assert out.header.get_qform(coded=True)[1] == 1
    assert out.header.get_sform(coded=True)[1] == 2
    np.testing.assert_allclose(out.affine, t1.affine, atol=1e-4)
    assert out.header["descrip"].item() == b""
    assert any(c.field == "nifti.descrip" for c in result.changes)
    m = result.metrics
    assert m["removed_voxels"] + m["cover_voxels"] >= changed.sum() > m["removed_voxels"]
    assert m["restored_voxels"] >= 0 and 0 < m["similarity"] <= 1
    # QC pictures are private: next to the key, not in the output folder
    assert set(result.qc) == {"sagittal", "axial", "contours", "render_front",
                              "render_yaw+60", "render_yaw-60", "render_pitch-20"}
    for path in result.qc.values():
        assert (tmp_path / "qc") in __import__("pathlib").Path(path).parents
    assert not list(dst.parent.glob("*.png"))
    assert not list(dst.parent.glob("*.partial"))


def test_handle_uses_sidecar_landmarks(tmp_path, t1):
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine), src)
    marks = sample_landmarks(t1)
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps(
        {"AnatomicalLandmarkCoordinates": marks}))
    dst = tmp_path / "out.nii.gz"
    result = anat.handle(src, dst, TaskContext())
    assert dst.is_file()
    assert any(c.location == "landmarks+template" for c in result.changes)
    assert not face.has_face(nib.load(dst))


def test_deterministic_output(tmp_path, t1):
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine), src)
    outs = []
    for n in range(2):
        dst = tmp_path / f"out{n}.nii.gz"
        anat.handle(src, dst, TaskContext())
        outs.append(dst.read_bytes())
    assert outs[0] == outs[1]


# --------------------------------------------------------------------------- bad input

def test_not_an_image(tmp_path):
    src = tmp_path / "sub-01_T1w.nii.gz"
    src.write_bytes(b"this is not a NIfTI file at all" * 20)
    dst = tmp_path / "out.nii.gz"
    with pytest.raises(InputError) as err:
        anat.handle(src, dst, TaskContext())
    assert str(src) in str(err.value)
    assert not dst.exists()


@pytest.mark.parametrize("shape,value", [((64, 64), 1), ((64, 64, 64), 0),
                                         ((64, 64, 1), 5), ((40, 40, 40), 7),
                                         ((32, 32, 32), np.nan)])
def test_blank_volumes_are_copied_with_a_warning(tmp_path, shape, value):
    """An image with a single value (or none finite) shows no face (issue 11): header
    scrubbed, voxels copied, a warning instead of a failed run."""
    src = tmp_path / "sub-01_T1w.nii"
    data = np.full(shape, value, dtype=np.float32 if np.isnan(value) else np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["descrip"] = b"Jane Doe 1961"
    nib.save(img, src)
    dst = tmp_path / "out.nii"
    result = anat.handle(src, dst, TaskContext())
    assert any("shows no face" in w for w in result.warnings), result.warnings
    out = nib.load(dst)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), data)
    assert b"Jane" not in out.header["descrip"].tobytes()


def test_a_volume_with_content_that_is_no_head_is_refused(tmp_path):
    """Voxels that vary but hold no head are still an input error naming the file."""
    src = tmp_path / "sub-01_T1w.nii"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(0, 3, (24, 24, 24)).astype(np.int16),
                             np.eye(4)), src)
    dst = tmp_path / "out.nii"
    with pytest.raises(InputError) as err:
        anat.handle(src, dst, TaskContext())
    assert str(src) in str(err.value)
    assert not dst.exists()


def test_failed_registration_is_never_accepted(tmp_path):
    """A volume that is not a head (a bright ellipsoid with noise) fails the check."""
    rng = np.random.default_rng(0)
    idx = np.indices((80, 80, 80)).astype(float) - 40
    blob = ((idx[0] / 30) ** 2 + (idx[1] / 35) ** 2 + (idx[2] / 25) ** 2) < 1
    data = (blob * 100 + rng.normal(0, 3, blob.shape)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.5, 2.5, 2.5, 1]))
    with pytest.raises(InputError, match="landmarks.*box|box.*landmarks"):
        deface.deface_image(img, name="blob.nii")


def test_truncated_gzip(tmp_path, t1):
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine), src)
    src.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(InputError):
        anat.handle(src, tmp_path / "o.nii.gz", TaskContext())


# --------------------------------------------------------------------------- policy

def test_policy_defaults_validate_and_document():
    values = schema.defaults(deface.POLICY)
    schema.validate(values, deface.POLICY)
    for path in schema.all_paths(deface.POLICY):
        node = deface.POLICY
        for part in path.split("."):
            node = node[part]
        if isinstance(node, schema.Key):
            assert len(node.doc) > 20, path
    with pytest.raises(PolicyError):
        schema.validate({"landmarks": {"rotate": [1, 2]}}, deface.POLICY)
    with pytest.raises(PolicyError):
        schema.validate({"method": "mri_deface"}, deface.POLICY)


def test_should_deface():
    sec = schema.defaults(deface.POLICY)
    assert deface.should_deface("T1w", sec)
    assert deface.should_deface("UNIT1", sec)
    assert not deface.should_deface("bold", sec)
    assert not deface.should_deface("T1w", {**sec, "enabled": False})
    assert deface.should_deface("T1map", {**sec, "suffixes": ["T1map"]})


def test_box_method_scanner_frame(t1, t1_brain):
    # a box in front of the sample head's face, in scanner mm
    box = {"frame": "scanner", "scale": [200, 120, 120], "translate": [0, 140, -70],
           "rotate": [0, 0, 0]}
    res = deface.deface_image(t1, policy={"method": "box", "box": box})
    assert res.method == "box" and res.removed_voxels > 1000
    expected = deface.box_mask(t1.shape, t1.affine, np.eye(4), box["rotate"], box["scale"],
                               box["translate"])
    assert np.array_equal(res.removed, expected & ~res.protected)
    assert not (res.removed & t1_brain).any()
    with pytest.raises(PolicyError):
        deface.deface_image(t1, policy={"method": "box"})


def test_smooth_fill_and_no_ears(t1, t1_brain, plain):
    res = deface.deface_image(t1, policy={"fill": "smooth", "remove_ears": False})
    assert res.removed_voxels < plain.changed_mask.sum()
    assert res.cover is not None and not res.cover.any()  # no cover with a smooth fill
    out = np.asanyarray(res.image.dataobj)
    before = np.asanyarray(t1.dataobj)
    assert np.array_equal(out[~res.removed], before[~res.removed])
    assert not (changed_voxels(t1, res.image) & t1_brain).any()
    assert out[res.removed].any()  # smoothed, not zero


def test_landmarks_required_for_landmark_method(t1):
    with pytest.raises(InputError, match="AnatomicalLandmarkCoordinates"):
        deface.deface_image(t1, method="landmarks")


def test_read_landmarks_aliases(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"AnatomicalLandmarkCoordinates": {
        "Nasion": [1, 2, 3], "LPA": [4, 5, 6], "RPA": [7, 8, 9]}}))
    marks = deface.read_landmarks(p)
    assert marks["NAS"].tolist() == [1, 2, 3]
    p.write_text(json.dumps({"AnatomicalLandmarkCoordinates": {"NAS": [1, 2, 3]}}))
    assert deface.read_landmarks(p) is None
    assert deface.read_landmarks(tmp_path / "missing.json") is None
    assert deface.sidecar_path(tmp_path / "a_T1w.nii.gz").name == "a_T1w.json"


# --------------------------------------------------------------------------- CLI

def test_cli_deface_nifti_and_mgz(tmp_path, t1, t1_brain):
    from bidsanon.cli import main

    out = tmp_path / "defaced.nii.gz"
    qc_dir = tmp_path / "qc"
    assert main(["deface", str(T1), "-o", str(out), "--qc-dir", str(qc_dir), "-q"]) == 0
    img = nib.load(out)
    assert np.asanyarray(img.dataobj).dtype == np.uint8
    changed = np.asanyarray(img.dataobj) != np.asanyarray(t1.dataobj)
    assert changed.sum() > 1000 and not (changed & t1_brain).any()
    assert len(list(qc_dir.glob("*.png"))) == 7  # 3 panels, contours, 3 renders
    mgz = tmp_path / "defaced.mgz"
    assert main(["deface", str(T1), "-o", str(mgz), "--keep-ears", "-q"]) == 0
    again = nib.load(mgz)
    assert isinstance(again, nib.MGHImage)
    assert np.array_equal(np.asanyarray(again.dataobj)[~changed],
                          np.asanyarray(t1.dataobj)[~changed])


def test_cli_errors_are_one_line(tmp_path, capsys):
    from bidsanon.cli import main

    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"junk" * 100)
    assert main(["deface", str(junk), "-o", str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(junk) in err
    assert not (tmp_path / "o.nii.gz").exists()
    assert main(["deface", str(T1), "-o", str(tmp_path / "o.txt")]) == 2
    assert main(["deface", str(T1), "-o", str(tmp_path / "o.nii"), "--method",
                            "landmarks"]) == 2
    assert "AnatomicalLandmarkCoordinates" in capsys.readouterr().err
    policy = tmp_path / "policy.yaml"
    policy.write_text("anat:\n  deface:\n    brain_margin_mm: 99\n")
    assert main(["deface", str(T1), "-o", str(tmp_path / "o.nii"), "--policy",
                            str(policy)]) == 2
    assert "brain_margin_mm" in capsys.readouterr().err


def test_cli_policy_file_applies(tmp_path):
    from bidsanon.cli import main

    policy = tmp_path / "policy.yaml"
    policy.write_text("anat:\n  deface:\n    fill_value: 7\n    remove_ears: false\n")
    out = tmp_path / "o.nii"
    assert main(["deface", str(T1), "-o", str(out), "--policy", str(policy), "-q"]) == 0
    data = np.asanyarray(nib.load(out).dataobj)
    before = np.asanyarray(nib.load(T1).dataobj)
    changed = data[data != before]
    # removed voxels take the fill; the cover's values lie between it and the cover value
    assert (changed == 7).sum() > 1000 and changed.min() >= 7


# --------------------------------------------------------------------------- other contrasts

PD = DATA / "anat" / "chris" / "chris_PD.nii.gz"


@pytest.fixture(scope="module")
def pd_head():
    return nib.load(PD)


def test_pd_weighted_head_fails_intensity_registration_check(pd_head):
    """The real PD head cannot be placed by T1 intensities: the check refuses it (the
    failure this suffix-aware registration fixes), it is not silently accepted."""
    with pytest.raises(InputError, match="quality check"):
        deface.deface_image(pd_head, method="template", name="chris_PD.nii.gz",
                            policy={"template": {"search_orientations": False}})


def test_pd_weighted_head_defaced_by_shape_registration(pd_head):
    """Registered on the shape of its head, the real PD head is defaced: the removed
    tissue lies in front of and below the head's centre, under 5 % of the skin inside the
    mapped template face mask is left unchanged, no voxel of the mapped template brain
    changes. (dlib does not find this face on the original's render: the slab stops at
    the nose tip, so a detector test would prove nothing here.)"""
    from bidsanon.deface import registration as reg
    from bidsanon.deface.geometry import apply_affine, head_mask

    res = deface.deface_image(pd_head, name="chris_PD.nii.gz", suffix="PDw")
    assert res.registration.ok and res.head_dice >= 0.85
    assert res.changed_voxels * res.voxel_ml() > 50.0
    changed = changed_voxels(pd_head, res.image)
    world = np.argwhere(changed) @ pd_head.affine[:3, :3].T + pd_head.affine[:3, 3]
    head = np.argwhere(np.asanyarray(pd_head.dataobj) > 0)
    centre = (head @ pd_head.affine[:3, :3].T + pd_head.affine[:3, 3]).mean(0)
    assert world[:, 1].mean() > centre[1] + 40.0  # anterior (RAS y)
    assert world[:, 2].mean() < centre[2]  # inferior
    labels = reg.lookup_labels(pd_head.shape, pd_head.affine,
                               res.registration.world_to_template, reg.load_template(4.0))
    brain = (labels & reg.BRAIN) > 0
    assert brain.sum() > 500000
    assert not (changed & brain).any()
    head = head_mask(np.asanyarray(pd_head.dataobj).astype(np.float32))
    skin = head & ~ndi.binary_erosion(head, iterations=2)
    # eyes, nose and mouth: the template face mask below the orbital roof (MNI z < -5
    # mm); above it, the brow, the brain margin keeps some forehead skin on purpose
    ijk = np.argwhere(skin & ((labels & reg.FACE) > 0))
    mni = apply_affine(res.registration.world_to_template @ pd_head.affine, ijk)
    ijk = ijk[mni[:, 2] < -5.0]
    assert len(ijk) > 1000
    kept = float((~changed[tuple(ijk.T)]).mean())
    assert kept < 0.05, f"{kept:.1%} of the eye/nose/mouth skin unchanged"


CHRIS_T1 = DATA / "anat" / "chris" / "chris_t1.nii.gz"


def test_pd_weighted_head_placed_through_its_session_t1w(pd_head):
    """With the same person's T1w as reference, the PD head is registered rigidly to it
    and placed through the T1w's own template registration: a closer fit than its head
    shape alone (higher similarity and head overlap, measured 0.116/0.94 against
    0.085/0.90), the same defacing guarantees, and no warning."""
    from bidsanon.deface import registration as reg

    t1 = nib.load(CHRIS_T1)
    shape_res = deface.deface_image(pd_head, suffix="PDw")
    via_res = deface.deface_image(pd_head, suffix="PDw", reference=t1)
    assert via_res.registration.ok and not via_res.warnings
    assert via_res.similarity > shape_res.similarity
    assert via_res.head_dice > shape_res.head_dice >= 0.85
    # the composed transform is the T1w's own registration carried by a rigid step:
    # the two images' template positions of the nasion region agree within a few mm
    own = reg.register(np.asanyarray(t1.dataobj).astype(np.float32), t1.affine)
    nasion = np.array([0.0, 80.0, -30.0, 1.0])
    in_t1 = np.linalg.inv(own.world_to_template) @ nasion
    in_pd = np.linalg.inv(via_res.registration.world_to_template) @ nasion
    assert np.linalg.norm(in_t1[:3] - in_pd[:3]) < 8.0
    changed = changed_voxels(pd_head, via_res.image)
    labels = reg.lookup_labels(pd_head.shape, pd_head.affine,
                               via_res.registration.world_to_template, reg.load_template(4.0))
    assert not (changed & ((labels & reg.BRAIN) > 0)).any()
    assert not face.multi_view_faces(via_res.image, detectors=("hog",))[1][("front", "hog")]


def test_unplaceable_reference_falls_back_to_the_head_shape(pd_head):
    """A reference that cannot be placed (noise) is not trusted: the head's shape places
    the image, and the result says so."""
    rng = np.random.default_rng(1)
    noise = nib.Nifti1Image(rng.integers(0, 255, (60, 60, 60)).astype(np.uint8),
                            np.diag([3.0, 3.0, 3.0, 1.0]))
    res = deface.deface_image(pd_head, suffix="PDw", reference=noise,
                              policy={"template": {"search_orientations": False}})
    assert res.registration.ok
    assert any("session's T1w could not place" in w for w in res.warnings)


def test_handler_finds_the_session_t1w(tmp_path):
    d = tmp_path / "sub-01" / "ses-a" / "anat"
    d.mkdir(parents=True)
    for name in ("sub-01_ses-a_T1w.nii.gz", "sub-01_ses-a_PDw.nii.gz",
                 "sub-01_ses-b_T1w.nii.gz", "sub-01_ses-a_T1w.json"):
        (d / name).write_bytes(b"")
    assert anat.session_t1w(d / "sub-01_ses-a_PDw.nii.gz") == d / "sub-01_ses-a_T1w.nii.gz"
    assert anat.session_t1w(d / "sub-01_ses-a_T1w.nii.gz") is None  # not itself
    (d / "sub-01_ses-a_T1w.nii.gz").unlink()
    assert anat.session_t1w(d / "sub-01_ses-a_PDw.nii.gz") is None  # not another session


def test_shape_registration_refuses_a_blob():
    """The contrast-free registration keeps refusing what is not a head."""
    rng = np.random.default_rng(0)
    idx = np.indices((80, 80, 80)).astype(float) - 40
    blob = ((idx[0] / 30) ** 2 + (idx[1] / 35) ** 2 + (idx[2] / 25) ** 2) < 1
    data = (blob * 100 + rng.normal(0, 3, blob.shape)).astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([2.5, 2.5, 2.5, 1]))
    with pytest.raises(InputError, match="quality check"):
        deface.deface_image(img, name="blob.nii", suffix="T2w")
