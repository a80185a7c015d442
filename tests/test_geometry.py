"""Geometry helpers of the defacing: exact centres of masks, world-aligned resampling."""

from __future__ import annotations

import numpy as np
import pytest

from bidsanon.deface.geometry import mask_centre, world_grid


@pytest.mark.parametrize("shape", [(7,), (5, 9), (31, 40, 23), (2, 3, 4, 5)])
def test_mask_centre_is_argwhere_mean_to_the_bit(shape):
    rng = np.random.default_rng(len(shape))
    for density in (0.001, 0.3, 0.97):
        mask = rng.random(shape) < density
        if not mask.any():
            mask.flat[3] = True
        expected = np.argwhere(mask).mean(0)
        got = mask_centre(mask)
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected)  # equal, not close: QC bytes depend on it


def test_mask_centre_of_empty_mask_is_nan():
    assert np.isnan(mask_centre(np.zeros((4, 4, 4), bool))).all()


def test_world_grid_nearest_of_uint8_mask_keeps_values_and_type():
    rng = np.random.default_rng(0)
    mask = (rng.random((30, 34, 28)) < 0.4).astype(np.uint8)
    aff = np.array([[0.0, 0.9, 0.1, -12.0], [1.1, 0.0, 0.0, 5.0],
                    [0.05, 0.0, 1.0, -3.0], [0, 0, 0, 1.0]])
    got, grid = world_grid(mask, aff, 1.5, order=0)
    ref, ref_grid = world_grid(mask.astype(np.float32), aff, 1.5, order=0)
    assert got.dtype == np.uint8 and ref.dtype == np.float32
    assert np.array_equal(got.astype(np.float32), ref) and np.array_equal(grid, ref_grid)
    # trilinear sampling still works in float32
    assert world_grid(mask, aff, 1.5, order=1)[0].dtype == np.float32


def _head_threshold_by_definition(vol: np.ndarray) -> float:
    """The threshold as first written: copies at every step (the definition)."""
    from bidsanon.deface.geometry import _otsu

    v = vol[np.isfinite(vol)]
    v = v[v > np.percentile(v, 0.5)] if v.size else v
    if v.size == 0:
        return 0.0
    return 0.5 * _otsu(np.clip(v, None, np.percentile(v, 99.5)))


def _real_heads():
    import nibabel as nib
    from conftest import DATA

    for path in ("anat/sample/T1.mgz", "anat/chris/chris_t1.nii.gz",
                 "anat/niivue/T2w.nii.gz", "anat/mni152/MNI152_T1_2mm.nii.gz"):
        yield path, np.asanyarray(nib.load(DATA / path).dataobj)


def test_head_threshold_is_its_definition_to_the_bit():
    """One in-place copy instead of five: the same threshold on real heads in their own
    integer type, as float32 and float64, strided, with NaN and inf, constant or empty,
    and the input is left as it was."""
    from bidsanon.deface.geometry import head_threshold

    cases = []
    for name, data in _real_heads():
        f32 = data.astype(np.float32)
        holed = f32.copy()
        holed[::7, ::5, ::3] = np.nan
        holed[1, 1, 1], holed[2, 2, 2] = np.inf, -np.inf
        cases += [(name, data), (name + " f32", f32), (name + " f64", data.astype(float)),
                  (name + " strided", f32[::2, ::2, ::2]), (name + " NaN/inf", holed)]
    cases += [("constant", np.full((5, 6, 7), 3.0, np.float32)),
              ("empty", np.zeros((0, 4, 4), np.float32)),
              ("all NaN", np.full((4, 4, 4), np.nan, np.float32))]
    for name, vol in cases:
        before = vol.copy()
        assert head_threshold(vol) == _head_threshold_by_definition(vol), name
        assert np.array_equal(vol, before, equal_nan=True), name
