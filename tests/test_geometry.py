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
