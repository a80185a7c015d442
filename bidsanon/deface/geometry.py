"""Voxel/world geometry, head masks and boxes in the head frame."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

from bidsanon.errors import InputError


# --------------------------------------------------------------------------- geometry

def corners(shape) -> np.ndarray:
    return np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                     for k in (0, shape[2] - 1)], dtype=float)


def apply_affine(aff: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (N, 3) points."""
    return pts @ aff[:3, :3].T + aff[:3, 3]


def mask_centre(mask: np.ndarray) -> np.ndarray:
    """Mean voxel index of a boolean mask's True voxels: ``np.argwhere(mask).mean(0)``
    to the bit (integer sums, then one division), without the N x ndim index array
    (0.3-0.6 s for the removed region of a 1 mm head). NaN for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    n = int(np.count_nonzero(mask))
    if n == 0:
        return np.full(mask.ndim, np.nan)
    out = np.empty(mask.ndim)
    for ax in range(mask.ndim):
        counts = np.count_nonzero(mask, axis=tuple(a for a in range(mask.ndim) if a != ax))
        out[ax] = float(np.dot(np.arange(mask.shape[ax], dtype=np.int64),
                               counts.astype(np.int64))) / n
    return out


def block_mean(vol: np.ndarray, f) -> np.ndarray:
    """Means of ``vol`` over blocks of ``f`` voxels (integers per axis; a partial block at
    the far end of an axis is dropped), as float32."""
    f = np.asarray(f, int)
    n = np.array(vol.shape[:3]) // f
    v = np.zeros(tuple(n), dtype=np.float32)
    for o in itertools.product(*(range(int(x)) for x in f)):  # one strided pass each
        v += vol[o[0]: n[0] * f[0]: f[0], o[1]: n[1] * f[1]: f[1], o[2]: n[2] * f[2]: f[2]]
    v /= np.float32(f.prod())
    return v


def downsample_factors(affine: np.ndarray, target_mm: float) -> np.ndarray:
    """The block sizes (voxels per axis) :func:`downsample` averages; all 1: it only
    casts to float32."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    return np.maximum(1, np.floor(target_mm / zooms / 1.5)).astype(int)


#: Voxel types whose every value float32 holds exactly.
EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.float32, np.int8, np.uint8, np.int16,
                                               np.uint16))


def downsample(vol: np.ndarray, affine: np.ndarray, target_mm: float,
               keep_exact: bool = False):
    """Block-average ``vol`` by integer factors towards ``target_mm`` voxels (cheap
    anti-aliasing before the resampling to the registration grid), as float32.

    Where no block is averaged, ``keep_exact`` returns a ``vol`` of the
    :data:`EXACT_IN_FLOAT32` types as it is, not a float32 copy with the same values (for
    a reader that computes in float64 anyway, as scipy's filters do)."""
    f = downsample_factors(affine, target_mm)
    if np.all(f == 1):
        if keep_exact and vol.dtype in EXACT_IN_FLOAT32:
            return vol, affine
        return vol.astype(np.float32, copy=False), affine
    v = block_mean(vol, f)
    scale = np.diag([*f, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = (f - 1) / 2.0
    return v, affine @ shift @ scale


def world_grid(vol: np.ndarray, affine: np.ndarray, res: float, bounds=None,
               order: int = 1, cval: float = 0.0):
    """Resample ``vol`` onto a world-aligned (RAS) grid of ``res`` mm voxels.

    ``bounds`` is ((xmin, ymin, zmin), (xmax, ymax, zmax)) in mm; by default the world
    bounding box of the volume. Returns the volume and its voxel -> world affine: float32,
    except that nearest-neighbour sampling (``order=0``) of a uint8 volume (a mask)
    stays uint8, the same values without a float32 copy of the whole volume.
    """
    if bounds is None:
        w = apply_affine(affine, corners(vol.shape))
        bounds = (w.min(0), w.max(0))
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    shape = tuple(int(np.floor((h - l) / res)) + 1 for l, h in zip(lo, hi))
    grid_aff = np.diag([res, res, res, 1.0])
    grid_aff[:3, 3] = lo
    m = np.linalg.inv(affine) @ grid_aff  # grid voxel -> source voxel
    if not (order == 0 and vol.dtype == np.uint8):
        vol = vol.astype(np.float32, copy=False)
    out = ndi.affine_transform(vol, m[:3, :3], m[:3, 3],
                               output_shape=shape, order=order, cval=cval,
                               mode="constant")
    return out, grid_aff


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def head_threshold(vol: np.ndarray) -> float:
    """Intensity above which a voxel belongs to the head (half Otsu's threshold of the
    finite values above their 0.5th percentile, clipped at their 99.5th)."""
    # One copy of the values, partitioned in place: the percentiles and the histogram
    # do not depend on the order. np.percentile would copy the 54 MB of a 1 mm head
    # twice more, and the clip once more, each a fresh array that costs page faults.
    if vol.size == 0:
        return 0.0
    if np.isfinite(vol.min()) and np.isfinite(vol.max()):  # NaN and inf reach min/max
        v = np.array(vol, copy=True).ravel()
    else:
        v = vol[np.isfinite(vol)]
    if v.size == 0:
        return 0.0
    v = v[v > np.percentile(v, 0.5, overwrite_input=True)]
    if v.size == 0:
        return 0.0
    hi = np.percentile(v, 99.5, overwrite_input=True)
    return 0.5 * _otsu(np.clip(v, None, hi, out=v if v.dtype.kind == "f" else None))


def head_mask(vol: np.ndarray, thr: float | None = None) -> np.ndarray:
    """The head: above the threshold, largest component, holes filled."""
    thr = head_threshold(vol) if thr is None else thr
    mask = vol > thr
    lab, n = ndi.label(mask)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        mask = lab == (int(np.argmax(sizes)) + 1)
    mask = ndi.binary_closing(mask, iterations=1)
    return ndi.binary_fill_holes(mask)


def rotation_matrix(degrees) -> np.ndarray:
    """Rotation about x, then y, then z (degrees), as FieldTrip's ``rotate``."""
    rx, ry, rz = np.deg2rad(np.asarray(degrees, float))
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    my = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    mz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return mz @ my @ mx


def head_frame(world_landmarks: dict[str, np.ndarray]) -> np.ndarray:
    """4x4 head frame -> world from NAS, LPA, RPA in world mm.

    Neuromag convention: x from LPA to RPA, y towards NAS (perpendicular to x), z up,
    origin where the perpendicular from NAS meets the LPA-RPA line.
    """
    nas, lpa, rpa = (np.asarray(world_landmarks[k], float) for k in ("NAS", "LPA", "RPA"))
    ex = rpa - lpa
    if np.linalg.norm(ex) < 1e-3:
        raise InputError("LPA and RPA coincide; cannot build the head frame")
    ex /= np.linalg.norm(ex)
    origin = lpa + np.dot(nas - lpa, ex) * ex
    ey = nas - origin
    if np.linalg.norm(ey) < 1e-3:
        raise InputError("NAS lies on the LPA-RPA line; cannot build the head frame")
    ey /= np.linalg.norm(ey)
    ez = np.cross(ex, ey)
    out = np.eye(4)
    out[:3, :3] = np.column_stack([ex, ey, ez])
    out[:3, 3] = origin
    return out


def box_mask(shape, affine: np.ndarray, frame: np.ndarray, rotate, scale, translate,
             ) -> np.ndarray:
    """Voxels inside a box given in ``frame`` (frame -> world 4x4), FieldTrip-style:
    a unit cube scaled by ``scale``, rotated by ``rotate`` and centred on ``translate``."""
    box = np.eye(4)
    box[:3, :3] = rotation_matrix(rotate) @ np.diag(np.maximum(np.asarray(scale, float),
                                                               1e-9))
    box[:3, 3] = translate
    # image voxel -> unit-cube coordinates
    m = np.linalg.inv(frame @ box) @ affine
    out = np.zeros(shape[:3], dtype=bool)
    j, k = np.meshgrid(np.arange(shape[1], dtype=np.float32),
                       np.arange(shape[2], dtype=np.float32), indexing="ij")
    for i in range(shape[0]):
        inside = np.ones(j.shape, dtype=bool)
        for r in range(3):
            c = m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3]
            inside &= np.abs(c) <= 0.5
        out[i] = inside
    return out


