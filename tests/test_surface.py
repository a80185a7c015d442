"""The new surface over the cut (bidsanon.deface.surface), on synthetic volumes with a
known answer; the real heads are in test_deface and test_face_battery."""

from __future__ import annotations

import numpy as np

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


def test_pinnae_takes_a_thin_fin_and_keeps_the_head():
    shape = (60, 60, 60)
    head = ball(shape, (30, 30, 30), 20)
    fin = np.zeros(shape, dtype=bool)
    fin[49:56, 28:31, 20:40] = True  # 3 voxels thick, standing off the side
    vol = np.where(head | fin, 100.0, 0.0).astype(np.float32)
    zone = np.zeros(shape, dtype=bool)
    zone[40:, :, :] = True
    core = np.zeros(shape, dtype=bool)
    got = surface.pinnae(vol, core, zone, np.ones(3), 50.0, 4.0)
    assert (got & fin & ~head).sum() >= 0.9 * (fin & ~head).sum()
    assert (got & head).sum() < 0.02 * head.sum()  # the body's surface stays
    assert not (got & ~zone).any()


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
