"""The head's new surface after defacing: flat and closed where the face was, smooth scalp
where the ears were.

Setting the face region to a fill value leaves the cut's cross-section open: the orbits,
the nasal cavity, the sinuses and the mouth are dark in most contrasts, and the brain
margin keeps the orbits' upper part, so a surface render of the cut shows eye sockets
and a nose opening, and face detectors fire on it (issue #20). :func:`new_surface`
closes it with a flat cover: the template's face plane, moved forward just over the
protected voxels, inside the head's outline, written with one bright value on a smooth
ramp. A smoothed copy of the face's own outline does not do: it keeps a nose, cheeks and
a chin, and the detectors find a mannequin's face on it (docs/deface.md).
:func:`ear_patch` takes each outer ear whole: seen from the side, the head's surface
over the ear is replaced by a smooth patch fitted to the scalp around it, the pinna
outside it goes and the concha and the ear canal's mouth under it are covered. Neither
ever changes a protected voxel (the pipeline leaves them out).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bidsanon.deface.geometry import block_mean
from bidsanon.deface.protection import bbox, dilate_ball

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


def _upsample(small: np.ndarray, f: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """The voxels in ``box`` (slices of the image grid) of the coarse grid ``small`` of
    block factors ``f``: each voxel takes its block's value, voxels beyond the last
    whole block the nearest block's."""
    up = small
    for ax, sl in enumerate(box[:3]):
        up = np.take(up, np.minimum(np.arange(sl.start, sl.stop) // f[ax],
                                    small.shape[ax] - 1), axis=ax)
    return up


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
    ramp = ramp_width(zooms)
    # everything written lies within a ramp of the removed region: work in its box
    pad = np.ceil(ramp / zooms).astype(int) + 1
    rbox = bbox(removed, pad)
    rem, pro = removed[rbox], protected[rbox]
    f = coarse(zooms)
    head = head_outline(vol, f, threshold)
    # the coarse outline misses the outermost voxels of the skin: tissue within one
    # coarse voxel of it counts as inside, so no strip of original skin lines the cover
    ins = _upsample(head, f, rbox)
    ins |= _upsample(ndi.binary_dilation(head), f, rbox) & (vol[rbox] > threshold)
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
    value = cover_value(vol[rbox], rem & ins, threshold)
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


#: Width (mm) of the ring of scalp around an ear patch that its shape is fitted to.
EAR_RING_MM = 8.0
#: A column whose surface stands more than this (mm) outside the fitted scalp is pinna.
EAR_STANDOFF_MM = 3.0
#: How far (mm) around the patch the pinna is looked for beyond the template's ear.
EAR_SEARCH_MM = 15.0
#: Ring points more than this (mm) outside the fitted scalp are dropped, and the fit
#: made again, this many rounds.
EAR_TRIM_MM = 1.0
EAR_TRIM_ROUNDS = 4
#: Depth (mm) of tissue written under the patch where it lies over air (the concha, the
#: mouth of the ear canal), so no render shows a pit there.
EAR_SLAB_MM = 5.0


def _disk(mask: np.ndarray, radius_mm: float, zooms2) -> np.ndarray:
    """A 2D mask dilated by a disk of ``radius_mm`` (pixel sizes ``zooms2``)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=zooms2) <= radius_mm


def _quadric_terms(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The terms 1, u, v, u^2, uv, v^2 of a quadric in u, v (last axis)."""
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)


def harmonic_fill(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """``values`` with the ``unknown`` pixels replaced by the harmonic interpolation of
    the known ones around them (Laplace's equation, 5-point stencil, solved exactly):
    the smoothest surface that meets its boundary without a step."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    out = np.asarray(values, dtype=np.float64).copy()
    idx = np.flatnonzero(unknown)
    if idx.size == 0:
        return out
    number = -np.ones(unknown.size, dtype=np.int64)
    number[idx] = np.arange(idx.size)
    h, w = unknown.shape
    r, c = np.unravel_index(idx, unknown.shape)
    rows, cols, data = [np.arange(idx.size)], [np.arange(idx.size)], [np.zeros(idx.size)]
    rhs = np.zeros(idx.size)
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        rr, cc = r + dr, c + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        data[0] = data[0] + inside  # a pixel's degree: neighbours inside the grid
        flat = np.where(inside, rr * w + np.clip(cc, 0, w - 1), 0)
        nb = np.where(inside, number[flat], -1)
        free = inside & (nb >= 0)
        rows.append(np.flatnonzero(free))
        cols.append(nb[free])
        data.append(-np.ones(int(free.sum())))
        fixed = inside & (nb < 0)
        np.add.at(rhs, np.flatnonzero(fixed), out.ravel()[flat[fixed]])
    m = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(idx.size, idx.size)).tocsr()
    out.ravel()[idx] = spsolve(m, rhs)
    return out


def ear_patch(vol: np.ndarray, ear: np.ndarray, axis: int, outward: int, zooms,
              threshold: float, margin_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """One outer ear replaced by a smooth patch of scalp.

    Seen along the left-right voxel ``axis`` from the ear's side (``outward`` +1 when
    the ear lies towards higher indices, -1 otherwise), the head's surface is a depth map.
    Over the shadow of the template's ear mask ``ear`` grown by ``margin_mm``, and over
    every column within :data:`EAR_SEARCH_MM` of it whose surface stands more than
    :data:`EAR_STANDOFF_MM` outside the scalp (the rest of the pinna), the depth map is
    replaced: a quadric fitted to the scalp of an :data:`EAR_RING_MM` ring around the
    patch (points standing off it dropped), plus the harmonic interpolation of what the
    ring's scalp deviates from it, so the patch meets the scalp without a step.

    Returns
    -------
    remove : numpy.ndarray
        Head voxels (above ``threshold``) outside the new surface: the pinna, whole.
    fill : numpy.ndarray
        Voxels at or below ``threshold`` in the :data:`EAR_SLAB_MM` under it.
    value : float
        The tissue intensity for ``fill`` (:func:`cover_value` of the scalp under the
        ring).
    """
    zooms = np.asarray(zooms, float)
    remove = np.zeros(vol.shape[:3], dtype=bool)
    fill = np.zeros(vol.shape[:3], dtype=bool)
    if not ear.any():
        return remove, fill, 0.0
    # the view: lateral axis first, outside at index 0 (views, written through)
    def view(a):
        a = np.moveaxis(a, axis, 0)
        return a[::-1] if outward > 0 else a
    others = [ax for ax in range(3) if ax != axis]
    z2 = zooms[others]
    v_vol, v_ear, v_rem, v_fill = view(vol), view(ear), view(remove), view(fill)
    shadow = v_ear.any(axis=0)
    reach = margin_mm + EAR_SEARCH_MM + EAR_RING_MM + 2.0
    grown = _disk(shadow, reach, z2)
    rows = np.flatnonzero(grown.any(axis=1))
    cols = np.flatnonzero(grown.any(axis=0))
    box2 = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    deep = int(np.flatnonzero(v_ear.any(axis=(1, 2)))[-1]) + 1  # no deeper than the ear mask
    sub = v_vol[(slice(0, deep),) + box2]
    head = sub > threshold
    solid = ndi.binary_opening(head)  # an isolated bright voxel in the air is no surface
    found = solid.any(axis=0)
    depth = np.where(found, np.argmax(solid, axis=0), deep).astype(np.float64)
    u, v = np.meshgrid(np.arange(depth.shape[0]) * z2[0], np.arange(depth.shape[1]) * z2[1],
                       indexing="ij")
    u, v = u - u.mean(), v - v.mean()  # centred: a well-conditioned fit
    step = zooms[axis]
    patch = _disk(shadow[box2], margin_mm, z2)
    for _ in range(2):  # fit the scalp around it; grow over the pinna standing off it
        ring = _disk(patch, EAR_RING_MM, z2) & ~patch & found
        keep = ring.copy()
        # the pinna only ever stands outside the scalp: trimming the points outside the
        # fit, again and again, leaves the scalp's own (robust to a ring half on the ear)
        for _ in range(EAR_TRIM_ROUNDS):
            if keep.sum() < 6:
                return remove, fill, 0.0
            coef, *_ = np.linalg.lstsq(_quadric_terms(u[keep], v[keep]), depth[keep],
                                       rcond=None)
            base = _quadric_terms(u, v) @ coef
            off = (base - depth) * step  # mm outside the fitted scalp
            keep = ring & (off < EAR_TRIM_MM)
        near = _disk(patch, EAR_SEARCH_MM, z2)
        patch = patch | _disk(near & found & (off > EAR_STANDOFF_MM), 2.0, z2)
    ring = _disk(patch, EAR_RING_MM, z2) & ~patch & found & (off < EAR_TRIM_MM)
    resid = np.where(ring, depth - base, 0.0)
    # outside the patch and its ring the deviation is pinned to 0: a closed boundary
    surface = base + harmonic_fill(resid, patch)
    # where the patch runs to the edge of the field of view the quadric extrapolates:
    # never more lateral or deeper than the ring's own scalp, by more than the standoff
    lo, hi = depth[ring].min(), depth[ring].max()
    surface = np.clip(surface, lo - EAR_STANDOFF_MM / step, hi + EAR_STANDOFF_MM / step)
    change = patch
    k = np.arange(deep, dtype=np.float64)[:, None, None]
    outside = (k < surface[None] - 0.5) & change[None]
    slab = ((k >= surface[None] - 0.5) & (k < surface[None] - 0.5 + EAR_SLAB_MM / step)
            & change[None])
    v_rem[(slice(0, deep),) + box2] = head & outside
    v_fill[(slice(0, deep),) + box2] = ~head & slab
    under = ((k >= depth[None]) & (k < depth[None] + EAR_SLAB_MM / step) & ring[None])
    value = cover_value(sub, under, threshold)
    return remove, fill, value


def touching(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The parts (26-connected) of ``mask`` that touch ``other``."""
    out = np.zeros(mask.shape, dtype=bool)
    box = bbox(mask, (2, 2, 2))
    if box is None:
        return out
    st = np.ones((3, 3, 3), dtype=bool)
    lab, n = ndi.label(mask[box], st)
    hit = np.zeros(n + 1, dtype=bool)
    m = mask[box]
    hit[np.unique(lab[ndi.binary_dilation(other[box], st) & m])] = True
    hit[0] = False
    out[box] = hit[lab]
    return out
