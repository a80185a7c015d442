"""QC pictures of a defaced head: slices with outlines, front render, private paths."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from bidsanon import deface
from bidsanon.formats import anat
from bidsanon.deface import qc
from bidsanon.deface.geometry import mask_centre
from bidsanon.context import TaskContext

T1 = DATA / "anat" / "sample" / "T1.mgz"


@pytest.fixture(scope="module")
def defaced():
    img = nib.load(T1)
    return img, deface.deface_image(img)


def _has(rgb, color):
    return bool(np.all(rgb == np.array(color, dtype=np.uint8), axis=-1).any())


def test_slice_panels_show_removed_and_protected(defaced):
    img, res = defaced
    panels = qc.slice_panels(img, res.image, res.removed, res.protected, cover=res.cover)
    assert set(panels) == {"sagittal", "axial"}
    assert _has(panels["sagittal"], qc.COVER_RGB)  # the cover over the cut, mid-sagittal
    for name, rgb in panels.items():
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert _has(rgb, qc.REMOVED_RGB), name
        assert _has(rgb, qc.PROTECTED_RGB), name
        half = (rgb.shape[1] - 4) // 2
        before, after = rgb[:, :half], rgb[:, half + 4:]
        # the face is bright before and black after (outside the outlines)
        gray = lambda a: a[..., 0].astype(int)  # noqa: E731
        assert gray(before).sum() > gray(after).sum()


def test_write_qc_files_and_skip(tmp_path, defaced):
    img, res = defaced
    written = qc.write_qc(img, res, lambda n: tmp_path / n)
    assert set(written) == {"sagittal", "axial", "render_front", "contours", "render_yaw+60",
                            "render_yaw-60", "render_pitch-20"}
    for path in written.values():
        with Image.open(path) as pic:
            assert pic.format == "PNG" and pic.size[0] > 100
    front = np.array(Image.open(written["render_front"]))
    assert front.ndim == 2 and (front > 0).mean() > 0.1
    assert qc.write_qc(img, res, lambda n: None) == {}


def test_qc_deterministic(tmp_path, defaced):
    img, res = defaced
    a = qc.write_qc(img, res, lambda n: tmp_path / f"a_{n}")
    b = qc.write_qc(img, res, lambda n: tmp_path / f"b_{n}")
    for name in a:
        assert open(a[name], "rb").read() == open(b[name], "rb").read()


def test_handle_writes_qc_only_when_asked(tmp_path):
    t1 = nib.load(T1)
    src = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(t1.dataobj), t1.affine), src)
    out = tmp_path / "out"
    out.mkdir()
    res = anat.handle(src, out / "sub-01_T1w.nii.gz", TaskContext())
    assert res.qc == {}
    res = anat.handle(src, out / "sub-02_T1w.nii.gz",
                        TaskContext(qc_dir=str(tmp_path / "key_qc"),
                                    policy={"anat": {"deface": {"qc": {"enabled": False}}}}))
    assert res.qc == {}
    assert sorted(p.name for p in out.iterdir()) == ["sub-01_T1w.nii.gz", "sub-02_T1w.nii.gz"]


def test_plane_of_uint8_mask_is_the_float_sampling(defaced):
    """Masks are sampled as uint8 views (no float32 copy per plane): the same pixels."""
    img, res = defaced
    aff = np.asarray(img.affine, float)
    c = aff[:3, :3] @ mask_centre(res.removed) + aff[:3, 3]  # a plane through the cut
    origin, u, v = c - (0.0, 60.0, 60.0), (0, 1, 0), (0, 0, 1)
    as_uint8 = qc._plane(res.removed.view(np.uint8), aff, origin, u, v, 120, 120, 0, 1.0)
    as_float = qc._plane(res.removed.astype(np.float32), aff, origin, u, v, 120, 120, 0, 1.0)
    assert as_uint8.any()
    assert np.array_equal(as_uint8 > 0.5, as_float > 0.5)
