"""The new surface over the cut (bidsanon.deface.surface), on synthetic volumes with a
known answer; the real heads are in test_deface and test_face_battery."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bidsanon.deface import surface


def ball(shape, centre, radius) -> np.ndarray:
    idx = np.indices(shape).astype(float)
    return sum((idx[a] - centre[a]) ** 2 for a in range(3)) <= radius ** 2


def test_fill_holes_closes_a_cavity_open_at_one_end():
    solid = ball((40, 40, 40), (20, 20, 20), 15)
    tube = np.zeros_like(solid)
    tube[18:23, 18:23, 20:] = True  # a channel from the middle out through one face
    mask = solid & ~tube
    filled = surface.fill_holes(mask)
    assert filled[20, 20, 25] and filled[20, 20, 34]  # inside the head, in the channel
    assert not filled[20, 20, 39]  # beyond the head: air, not a hole
    assert not filled[2, 2, 2]


def test_harmonic_fill_is_exact_on_harmonic_functions():
    yy, xx = np.mgrid[:50, :60].astype(float)
    truth = 0.3 * yy - 0.2 * xx + 0.01 * yy * xx  # harmonic: its Laplacian is 0
    unknown = ((yy - 25) / 18) ** 2 + ((xx - 30) / 22) ** 2 < 1
    got = surface.harmonic_fill(np.where(unknown, 123.0, truth), unknown)
    np.testing.assert_allclose(got, truth, atol=1e-9)
    flat = surface.harmonic_fill(np.where(unknown, 0.0, 2.5), unknown)
    np.testing.assert_allclose(flat, 2.5, atol=1e-9)  # a constant boundary: no bump


def ear_head(shape=(96, 96, 96)):
    """A ball head, a 3-voxel-thick pinna standing off its +x side, a 4 mm ear canal."""
    c = np.array(shape) / 2.0
    head = ball(shape, c, 34)
    i, j, k = np.indices(shape)
    r = np.sqrt((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2)
    # the pinna: a plate 3 voxels thick, 4-16 voxels off the scalp, 30 x 18 voxels
    pinna = (i >= c[0] + 38) & (i < c[0] + 41) & (abs(j - c[1]) < 9) & (abs(k - c[2]) < 15)
    stalk = (i >= c[0] + 30) & (i < c[0] + 41) & (abs(j - c[1]) < 3) & (abs(k - c[2]) < 3)
    canal = ((j - c[1] - 5) ** 2 + (k - c[2] - 5) ** 2 < 16) & (r > 26) & (i > c[0])
    vol = np.where((head | pinna | stalk) & ~canal, 100.0, 0.0).astype(np.float32)
    # the template's ear mask: around the ear's root, inside and outside the head
    ear = (i > c[0] + 26) & (abs(j - c[1]) < 8) & (abs(k - c[2]) < 10)
    return vol, ear, head, pinna | stalk, canal


def test_ear_patch_takes_the_pinna_keeps_the_scalp_covers_the_canal():
    vol, ear, head, pinna, canal = ear_head()
    remove, fill, value = surface.ear_patch(vol, ear, 0, +1, np.ones(3), 50.0, 6.0)
    # the whole pinna, beyond the template's mask too, down to the scalp's voxel
    outside = pinna & ~ndi.binary_dilation(head) & (vol > 50)
    assert remove[outside].all()
    assert (remove & head).sum() < 0.002 * head.sum()  # the scalp stays
    assert not (remove & (vol <= 50)).any() and not (fill & (vol > 50)).any()
    depth = np.indices(vol.shape)[0] - vol.shape[0] // 2  # from the centre
    assert fill[canal & (depth >= 29) & (depth <= 32)].all()  # the mouth (scalp at 33.3)
    assert not fill[canal & (depth < 27)].any()  # deeper than the slab: left as it is
    assert not fill[canal & (depth > 35)].any()  # the air beyond the patch stays air
    assert value == 100.0
    # nothing is written on the other side of the head
    assert not (remove | fill)[: vol.shape[0] // 2].any()


def test_ear_patch_follows_the_axis_and_the_side():
    vol, ear, head, pinna, _ = ear_head()
    want, want_fill, _ = surface.ear_patch(vol, ear, 0, +1, np.ones(3), 50.0, 6.0)
    # the same head with the ear towards lower indices of the second axis
    turn = lambda a: np.moveaxis(a, 0, 1)[:, ::-1]  # noqa: E731
    got, got_fill, _ = surface.ear_patch(np.ascontiguousarray(turn(vol)), turn(ear), 1, -1,
                                         np.ones(3), 50.0, 6.0)
    np.testing.assert_array_equal(got, turn(want))
    np.testing.assert_array_equal(got_fill, turn(want_fill))


def test_touching_keeps_the_parts_next_to_the_other_mask():
    a = np.zeros((20, 20, 20), dtype=bool)
    a[2:4, 2:4, 2:4] = True
    a[10:12, 10:12, 10:12] = True
    b = np.zeros_like(a)
    b[12, 12, 12] = True  # diagonal neighbour of the second part only
    got = surface.touching(a, b)
    assert got[10:12, 10:12, 10:12].all() and not got[2:4, 2:4, 2:4].any()


def test_new_surface_is_a_flat_cover_and_never_writes_protected():
    shape = (64, 64, 64)
    head = ball(shape, (32, 32, 32), 26)
    rng = np.random.default_rng(0)
    vol = np.where(head, 100.0 + 20 * rng.random(shape), 0.0).astype(np.float32)
    vol[head & (rng.random(shape) < 0.2)] = 5.0  # dark cavities all through the tissue
    affine = np.eye(4)
    j = np.indices(shape)[1]
    removed = head & (j > 44)  # the "face": everything in front of y = 44
    removed |= (j > 44) & ~head
    protected = ball(shape, (32, 32, 32), 12) | (ball(shape, (32, 47, 32), 4))
    removed &= ~protected
    plane = (np.array([0.0, 44.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    mask, values = surface.new_surface(vol, removed, protected, affine, plane, 50.0,
                                       fill=0.0)
    assert not (mask & protected).any()
    out = vol.copy()
    out[removed] = 0.0
    out[mask] = values
    # the cover lies COVER_MM in front of the protected bump that reaches y = 51
    front = 51.0 + surface.COVER_MM
    ramp = surface.ramp_width(np.ones(3))
    # along y, inside the head's outline: every column crosses the threshold at the
    # same depth (a plane), whatever the cavities behind it
    crossings = []
    for i in range(22, 43, 4):
        for k in range(22, 43, 4):
            col = out[i, :, k]
            above = np.nonzero(col > 50.0)[0]
            crossings.append(above.max())
    assert max(crossings) - min(crossings) <= 1
    assert abs(np.median(crossings) - front) <= ramp / 2 + 1
    # written values lie between the fill and the cover value
    assert values.min() >= 0.0 and values.max() <= vol.max()
