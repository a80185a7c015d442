"""The head's new surface after defacing: flat and closed where the face was; whole pinnae.

Setting the face region to a fill value leaves the cut's cross-section open: the orbits,
the nasal cavity, the sinuses and the mouth are dark in most contrasts, and the brain
margin keeps the orbits' upper part, so a surface render of the cut shows eye sockets
and a nose opening, and face detectors fire on it (issue #20). :func:`new_surface`
closes it with a flat cover: the template's face plane, moved forward just over the
protected voxels, inside the head's outline, written with one bright value on a smooth
ramp. A smoothed copy of the face's own outline does not do: it keeps a nose, cheeks and
a chin, and the detectors find a mannequin's face on it (docs/deface.md).
:func:`pinnae` finds the outer ears whole: what a ball rolled inside the head near the
ears cannot reach (a morphological opening) stands off the scalp and goes; the scalp
behind it stays. Neither ever changes a protected voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bidsanon.deface.geometry import block_mean
from bidsanon.deface.protection import bbox, block_any, dilate_ball

#: Voxel size (mm) of the grid the head's outline is filled on (the cover's extent).
OUTLINE_MM = 2.0


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3D, then in every slice along each axis: a cavity open at one
    end, such as the airway running to the edge of the field of view, is a hole in most
    of its slices. Each pass is one labelling of the background (components that do not
    reach the array's faces -- the slice's edges, for a slice -- are holes)."""
    out = np.asarray(mask, dtype=bool).copy()
    for ax in (None, 0, 1, 2):
        struct = ndi.generate_binary_structure(3, 1)
        if ax is not None:  # connect within slices across ``ax`` only
            idx = [1, 1, 1]
            for off in (0, 2):
                idx[ax] = off
                struct[tuple(idx)] = False
        lab, n = ndi.label(~out, struct)
        if n == 0:
            continue
        edge = np.zeros(n + 1, dtype=bool)
        for face_ax in range(3):
            if face_ax == ax:
                continue
            for end in (0, -1):
                edge[np.take(lab, end, axis=face_ax).ravel()] = True
        edge[0] = True
        out |= ~edge[lab]
    return out


def _upsample(small: np.ndarray, f: np.ndarray, shape) -> np.ndarray:
    up = small
    for ax in range(3):
        up = np.repeat(up, f[ax], axis=ax)
    # voxels beyond the last whole block take the nearest block's value
    pad = [(0, max(s - u, 0)) for s, u in zip(shape[:3], up.shape)]
    return np.pad(up, pad, mode="edge")[tuple(slice(0, s) for s in shape[:3])]


def coarse(zooms) -> np.ndarray:
    """Integer block factors from the image's voxels to the ~:data:`OUTLINE_MM` grid."""
    return np.maximum(1, np.round(OUTLINE_MM / np.asarray(zooms, float))).astype(int)


def head_outline(vol: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
    """The head on the coarse grid of block factors ``f``: block means above
    ``threshold``, its largest part, holes filled (:func:`fill_holes`): skull, sinuses
    and orbits are inside, the air around the head is not."""
    small = block_mean(vol, f) > threshold
    lab, n = ndi.label(small)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        small = lab == (int(np.argmax(sizes)) + 1)
    return fill_holes(small)


#: Width (mm) of the intensity ramp across the new surface (at least four voxels): the
#: surface any render threshold finds is a plane, not a voxel staircase.
RAMP_MM = 3.0
#: How far (mm) the new surface lies in front of the protected voxels the cut exposes,
#: and how far in front of the face plane it may go at most.
COVER_MM = 3.0
MAX_FORWARD_MM = 40.0


def ramp_width(zooms) -> float:
    """The ramp's width (mm) for these voxel sizes: :data:`RAMP_MM`, at least four voxels.
    The cover writes kept voxels up to this far from the removed region, so the brain
    protection must be exact that far out (``protect(..., reach_mm=...)``)."""
    return max(RAMP_MM, 4.0 * float(np.max(zooms)))


def new_surface(vol: np.ndarray, removed: np.ndarray, protected: np.ndarray,
                affine: np.ndarray, plane: tuple[np.ndarray, np.ndarray],
                threshold: float, *, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """The voxels that make the head's new, flat surface where the face was, and their
    values.

    The template's face plane (``plane``: a point and the unit normal towards the face,
    world mm) is moved forward until it lies :data:`COVER_MM` in front of every
    protected voxel the removal exposes (the brain margin reaches the orbits), at most
    :data:`MAX_FORWARD_MM`. Every removed voxel behind the moved plane and inside the
    head's outline (:func:`head_outline`), and every voxel of the head within a ramp of
    them in a slab of one ramp behind the plane, gets the cover value (:func:`cover_value`), crossing
    to ``fill`` over :data:`RAMP_MM` (or four voxels) at the plane. The new surface is then
    that plane, cut by the head's outline: flat, closed over the orbits, the nasal
    cavity and the sinuses the cut opened, over the protected voxels, with no relief of
    the face. Protected voxels are never among the written ones.

    Returns the mask of those voxels and their values (the image's stored units), in
    the mask's order.
    """
    zooms = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(0))
    empty = np.zeros(removed.shape, dtype=bool), np.zeros(0, np.float32)
    if not removed.any():
        return empty
    point, normal = (np.asarray(v, float) for v in plane)
    lin = normal @ affine[:3, :3]  # signed distance (mm) = ijk @ lin + off
    off = float(normal @ (affine[:3, 3] - point))

    def ahead(ijk) -> np.ndarray:
        return np.asarray(ijk, float).T @ lin + off if len(ijk[0]) else np.zeros(0)

    box = bbox(removed, (1, 1, 1))
    exposed = protected[box] & ndi.binary_dilation(removed[box])
    ex = np.nonzero(exposed)
    ex = [ex[a] + box[a].start for a in range(3)]
    front = float(ahead(ex).max()) + COVER_MM if len(ex[0]) else COVER_MM
    front = min(max(front, COVER_MM), MAX_FORWARD_MM)
    f = coarse(zooms)
    head = head_outline(vol, f, threshold)
    # the coarse outline misses the outermost voxels of the skin: tissue within one
    # coarse voxel of it counts as inside, so no strip of original skin lines the cover
    inside = _upsample(head, f, vol.shape)
    inside |= _upsample(ndi.binary_dilation(head), f, vol.shape) & (vol > threshold)
    ramp = ramp_width(zooms)
    # everything written lies within a ramp of the removed region: work in its box
    pad = np.ceil(ramp / zooms).astype(int) + 1
    rbox = bbox(removed, pad)
    rem, ins, pro = removed[rbox], inside[rbox], protected[rbox]
    # the signed distance of every voxel, separably: d[i, j, k] = i l0 + j l1 + k l2 + off
    axes = [(np.arange(sl.start, sl.stop, dtype=np.float32) * np.float32(lin[a]))
            for a, sl in enumerate(rbox)]
    d = (axes[0][:, None, None] + axes[1][None, :, None]) + (axes[2][None, None, :] + off)
    # the removed voxels behind the plane, and the voxels within a ramp of them in a
    # slab just behind it: where the plane runs behind the removed region's own
    # (staircase) boundary, the kept tissue there would otherwise make the surface
    near = dilate_ball(rem, ramp, zooms)
    near &= d >= front - ramp
    near |= rem
    near &= d < front + ramp / 2
    near &= ins
    near &= ~pro
    t = np.clip((front - d[near]) / ramp + 0.5, 0.0, 1.0)
    writable = np.zeros(removed.shape, dtype=bool)
    writable[rbox] = near
    value = cover_value(vol, removed & inside, threshold)
    return writable, (fill + (value - fill) * t).astype(np.float32)


def cover_value(vol: np.ndarray, near: np.ndarray, threshold: float) -> float:
    """The cover's intensity: the 90th percentile of the head's tissue (above
    ``threshold``) among the ``near`` voxels, so a render threshold that shows the skin
    shows the cover."""
    v = vol[near]
    v = v[v > threshold]
    if v.size == 0:
        return float(threshold) * 2.0
    return float(np.percentile(v, 90))


def skull_core(brain: np.ndarray, zooms, grow_mm: float = 12.0) -> np.ndarray:
    """The brain grown by ``grow_mm`` (on the coarse grid): the skull's contents and the
    skull, never the outer ear. Dark bone joins the scalp to the brain through it."""
    zooms = np.asarray(zooms, float)
    f = coarse(zooms)
    small = block_any(brain, f)
    if grow_mm > 0:
        small = dilate_ball(small, grow_mm, f * zooms)
    return _upsample(small, f, brain.shape)


def pinnae(vol: np.ndarray, core: np.ndarray, zone: np.ndarray, zooms,
           threshold: float, radius_mm: float) -> np.ndarray:
    """The outer ears: head voxels of ``zone`` that a ball of ``radius_mm`` rolled inside
    the head (a morphological opening) does not reach -- structures thinner than about
    twice the radius standing off the scalp. The head is the voxels above ``threshold``
    and ``core`` (:func:`skull_core`), so the scalp over the dark skull is part of a
    thick solid and stays, while the concha's bowl, open to the air, is not filled."""
    zooms = np.asarray(zooms, float)
    pad = np.ceil(2 * radius_mm / zooms).astype(int) + 2
    box = bbox(zone, pad)
    out = np.zeros(zone.shape, dtype=bool)
    if box is None or radius_mm <= 0:
        return out
    head = (vol[box] > threshold) | core[box]
    # erosion as the complement of the dilated air; outside the box counts as neither,
    # so the head is not eroded from the box's faces
    core = ~dilate_ball(~head, radius_mm, zooms)
    opened = dilate_ball(core, radius_mm, zooms)
    out[box] = head & ~opened & zone[box]
    return out
