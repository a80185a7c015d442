"""Brain protection's morphology (bidsanon/deface/protection.py) against exact references:
a brute-force nearest-voxel search for the ball dilation, scipy for the erosion, and the
protection's independence of the rest of the removal region."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bidsanon.deface import protection


def brute_force_ball(mask: np.ndarray, radius: float, zooms) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` mm of a mask voxel's centre."""
    pts = np.argwhere(mask)
    vox = np.indices(mask.shape).reshape(3, -1).T
    if not len(pts):
        return np.zeros(mask.shape, dtype=bool)
    d = np.sqrt((((vox[:, None, :] - pts[None]) * np.asarray(zooms)) ** 2).sum(-1)).min(1)
    return (d <= radius).reshape(mask.shape)


@pytest.mark.parametrize("seed", range(12))
def test_dilate_ball_is_the_euclidean_ball(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(4, 22, 3))
    mask = rng.random(shape) < rng.choice([0.002, 0.01, 0.04])
    zooms = rng.choice([0.5, 0.88, 1.0, 1.2, 3.0], 3)
    radius = float(rng.choice([0.0, 0.9, 2.0, 3.7, 5.0]))
    assert np.array_equal(protection.dilate_ball(mask, radius, zooms),
                          brute_force_ball(mask, radius, zooms))


def test_dilate_ball_matches_the_distance_transform_on_a_blob():
    idx = np.indices((40, 44, 38))
    blob = (((idx[0] - 20) / 12.0) ** 2 + ((idx[1] - 22) / 15.0) ** 2
            + ((idx[2] - 19) / 11.0) ** 2) < 1
    for zooms in ((1.0, 1.0, 1.0), (0.9, 0.9, 1.2)):
        ref = ndi.distance_transform_edt(~blob, sampling=zooms) <= 5.0
        assert np.array_equal(protection.dilate_ball(blob, 5.0, zooms), ref)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_erode_cross_is_scipys_erosion(iterations):
    rng = np.random.default_rng(iterations)
    mask = ndi.binary_dilation(rng.random((17, 23, 19)) < 0.05, iterations=2)
    mask[0, 5:9, 5:9] = True  # touching the border: outside counts as background
    assert np.array_equal(protection.erode_cross(mask, iterations),
                          ndi.binary_erosion(mask, iterations=iterations))


def test_protection_does_not_depend_on_the_rest_of_the_candidate():
    idx = np.indices((48, 56, 50))
    head = (((idx[0] - 24) / 22.0) ** 2 + ((idx[1] - 28) / 26.0) ** 2
            + ((idx[2] - 25) / 23.0) ** 2) < 1
    brain = (((idx[0] - 24) / 15.0) ** 2 + ((idx[1] - 26) / 18.0) ** 2
             + ((idx[2] - 27) / 15.0) ** 2) < 1
    vol = np.where(brain, 100.0, np.where(head, 40.0, 2.0)).astype(np.float32)
    vol += np.random.default_rng(0).normal(0, 3, vol.shape).astype(np.float32)
    face = head & (idx[1] > 40)
    ears = head & ((idx[0] < 8) | (idx[0] > 40)) & (np.abs(idx[1] - 28) < 6)
    both, _, _ = protection.protect(face | ears, brain, vol, (1.0, 1.0, 1.0), 5.0, 6.0)
    alone, _, _ = protection.protect(face, brain, vol, (1.0, 1.0, 1.0), 5.0, 6.0)
    assert alone.any() and not (alone & ~both).any()
    assert np.array_equal(alone, both & face)
