"""Brain protection: the dilated (and refined) brain mask whose voxels defacing never changes."""

from __future__ import annotations


import numpy as np
from scipy import ndimage as ndi



# --------------------------------------------------------------------------- protection

def bbox(mask: np.ndarray, pad) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    sl = []
    for ax in range(3):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        sl.append(slice(max(int(hit[0]) - pad[ax], 0),
                        min(int(hit[-1]) + pad[ax] + 1, mask.shape[ax])))
    return tuple(sl)


def _block_any(mask: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Max-pool a boolean volume by integer factors ``f`` (edge blocks included)."""
    n = -(-np.array(mask.shape) // f)
    padded = np.zeros(tuple(n * f), dtype=bool)
    padded[tuple(slice(0, s) for s in mask.shape)] = mask
    return padded.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).any(axis=(1, 3, 5))


def focus_box(candidate: np.ndarray, brain: np.ndarray, zooms,
              reach_mm: float) -> tuple[slice, ...] | None:
    """Bounding box (padded by ``reach_mm``) of the candidate voxels that lie within
    ``reach_mm`` of the brain: the only place where protection can change anything.
    Found on a ~4 mm max-pooled grid, so it is a superset."""
    zooms = np.asarray(zooms, float)
    f = np.maximum(1, np.floor(4.0 / zooms)).astype(int)
    cb, bb = _block_any(candidate, f), _block_any(brain, f)
    r = np.ceil(reach_mm / (f * zooms)).astype(int) + 1
    near = ndi.maximum_filter(bb, size=tuple(2 * r + 1), mode="constant") & cb
    if not near.any():
        return None
    pad = np.ceil(reach_mm / zooms).astype(int) + 1
    out = []
    for ax in range(3):
        hit = np.nonzero(near.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        lo = int(hit[0]) * f[ax] - pad[ax]
        hi = (int(hit[-1]) + 1) * f[ax] + pad[ax]
        out.append(slice(max(lo, 0), min(hi, candidate.shape[ax])))
    return tuple(out)


def protect(candidate: np.ndarray, brain: np.ndarray, vol: np.ndarray, zooms,
            margin_mm: float, refine_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Brain protection: (removed, protected, restored voxel count).

    ``protected`` is ``brain`` (grown by intensity within ``refine_mm`` when that is
    reliable) dilated by a sphere of ``margin_mm`` (Euclidean distance in mm, so
    anisotropic voxels are handled). It is computed exactly where the removal region
    comes within reach of the brain (:func:`focus_box`); elsewhere nothing could be
    restored and it is the undilated brain. ``removed`` is ``candidate`` minus
    ``protected``: the same as removing ``candidate`` and copying every protected voxel
    back from the input, without the copy.
    """
    zooms = np.asarray(zooms, float)
    protected = brain.copy()
    box = focus_box(candidate, brain, zooms, margin_mm + refine_mm)
    if box is None:
        return candidate.copy(), protected, 0
    b = brain[box]
    if refine_mm > 0:
        b = _refine(b, vol[box], zooms, refine_mm)
    if margin_mm > 0:
        b = ndi.distance_transform_edt(~b, sampling=zooms) <= margin_mm
    protected[box] |= b
    restored = int((candidate[box] & protected[box]).sum())
    removed = candidate & ~protected
    return removed, protected, restored


def _refine(brain: np.ndarray, vol: np.ndarray, zooms, refine_mm: float) -> np.ndarray:
    """Add voxels of brain-like intensity within ``refine_mm`` of the mask and connected
    to it. Skipped when brain and background intensities are not well separated."""
    inner = ndi.binary_erosion(brain, iterations=2)
    if inner.sum() < 100:
        return brain
    vals = vol[inner]
    lo, hi = np.percentile(vals, [10, 99])
    background = np.percentile(vol[~brain], 20) if (~brain).any() else 0.0
    if not lo > background + 0.25 * (np.median(vals) - background):
        return brain  # not reliable: brain tissue not clearly brighter than background
    near = ndi.distance_transform_edt(~brain, sampling=zooms) <= refine_mm
    grow = brain | (near & (vol >= lo) & (vol <= hi))
    lab, _ = ndi.label(grow)
    keep = np.unique(lab[brain])
    return np.isin(lab, keep[keep > 0]) | brain


