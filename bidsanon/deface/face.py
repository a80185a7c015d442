"""Surface renders of the head and a face detector on them.

:func:`render_head` looks at the head from the front (or a side) in world space: the
first voxel above the head threshold along each ray, with sub-voxel depth, shaded from
its normal. :func:`detect_faces` runs dlib's HOG frontal-face detector on such a render
(``dlib.get_frontal_face_detector()``: no model file). On real heads it finds the face;
on heads defaced by a plane cut it finds none, where OpenCV's Haar cascades fire on the
exposed orbits (see docs/deface.md). ``bidsanon check`` reuses :func:`check_file`.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from bidsanon.errors import InputError
from bidsanon.records import Finding

VIEWS = ("front", "left", "right")
#: How far (mm) the head's outline is continued below the field of view when the image
#: cuts the head (the MNI152 template stops at the nose): without it the detector sees
#: half a face. It can only make detection more sensitive.
EXTEND_MM = 60.0
PAD_MM = 30.0
#: Side (mm, rounded to whole voxels) of the blocks that tell each ray where the head
#: can start (its first hit is searched from there; :func:`depth_map`).
BLOCK_MM = 4.0
LIGHT = (0.0, 1.0, 1.0)  # 45 degrees above the viewing direction


@dataclass(frozen=True)
class FaceBox:
    """A detection on a render: pixel box and dlib's score (> 0 is a face)."""

    left: int
    top: int
    right: int
    bottom: int
    score: float


#: dlib's HOG frontal face detector as its serialiser writes it (bidsanon/data/dlib):
#: read in 1 ms, where ``dlib.get_frontal_face_detector()`` takes 0.23 s to decode it.
HOG_MODEL = Path(__file__).resolve().parents[1] / "data" / "dlib" / "frontal_face_detector.svm"


_hog = threading.local()


def _detector():
    """This thread's HOG detector. dlib's ``run`` releases the GIL and a detector shared
    by two threads crashes (double free) or returns wrong boxes, e.g. in a Dask worker
    running check tasks in several threads; reading one from the file costs 1 ms."""
    det = getattr(_hog, "detector", None)
    if det is None:
        import dlib

        if HOG_MODEL.is_file():
            det = dlib.fhog_object_detector(str(HOG_MODEL))
        else:
            det = dlib.get_frontal_face_detector()
        _hog.detector = det
    return det


@dataclass(frozen=True)
class _ArrayImage:
    """An array and its affine where an image is expected (:func:`_volume`)."""

    dataobj: np.ndarray
    affine: np.ndarray


def _volume(img) -> tuple[np.ndarray, np.ndarray]:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"cannot render a {data.ndim}D image")
    return data, np.asarray(img.affine, float)


def _view_axes(view: str, lo: np.ndarray, hi: np.ndarray, res: float):
    """Grid (column, depth, up) -> world affine and grid shape for a view."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    if view == "front":  # looking at the face: subject's right on the image's left
        axes = ((-1, 0, 0), (0, -1, 0), (0, 0, 1))
        start = (x1, y1, z0)
        extent = (x1 - x0, y1 - y0, z1 - z0)
    elif view == "left":  # looking at the left side: face on the image's left
        axes = ((0, -1, 0), (1, 0, 0), (0, 0, 1))
        start = (x0, y1, z0)
        extent = (y1 - y0, x1 - x0, z1 - z0)
    elif view == "right":
        axes = ((0, 1, 0), (-1, 0, 0), (0, 0, 1))
        start = (x1, y0, z0)
        extent = (y1 - y0, x1 - x0, z1 - z0)
    else:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    aff = np.eye(4)
    aff[:3, :3] = np.array(axes, float).T * res
    aff[:3, 3] = start
    shape = tuple(int(e // res) + 1 for e in extent)
    return aff, shape


def _component_sizes(lab: np.ndarray, n: int) -> np.ndarray:
    """Voxel counts of labels 1..n of a label image, counted a slab at a time: one
    ``np.bincount`` of a 1 mm head converts its int32 labels to a fresh 109 MB int64
    array (0.03 s warm, up to 0.28 s of page faults on a fresh one)."""
    flat = lab.reshape(-1)
    sizes = np.zeros(n + 1, np.intp)
    step = 1 << 18
    for i in range(0, flat.size, step):
        sizes += np.bincount(flat[i:i + step], minlength=n + 1)
    return sizes[1:]


def _head_only(vol: np.ndarray, thr: float, inplace: bool = False) -> np.ndarray:
    """``vol`` with every above-threshold speck but the largest (the head) set to the
    background, so noise in the air casts no surface. Done on the (small) source grid;
    ``inplace`` changes ``vol`` itself (an array of the caller's own)."""
    above = vol > thr
    lab, n = ndi.label(above)
    if n <= 1:
        return vol
    sizes = _component_sizes(lab, n)
    out = vol if inplace else vol.copy()
    # putmask, not a boolean-index assignment: 0.23 -> 0.13 s for this on a 1 mm head
    np.putmask(out, above & (lab != int(np.argmax(sizes)) + 1), min(float(vol.min()), 0.0))
    return out


@dataclass(frozen=True)
class HeadVolume:
    """A head ready for ray casting (:func:`head_volume`): the same for every view, so
    the views of one image prepare it once."""

    vol: np.ndarray  # smoothed intensities (or the mask), specks in the air removed
    affine: np.ndarray  # vol voxel -> world
    threshold: float  # head/air value of ``vol``
    centre: np.ndarray  # world centre of the image's field of view (views turn about it)
    #: voxel box (first, last) holding every voxel above ``threshold``, grown by one
    #: voxel: no interpolated sample outside it is above the threshold
    box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    #: centres (voxels of ``vol``) of the blocks of about :data:`BLOCK_MM` holding a
    #: voxel above ``threshold``; no sample farther than ``block_reach`` voxels from
    #: every centre (in some axis) is above the threshold
    blocks: np.ndarray | None = None
    block_reach: float = 0.0


def head_volume(img, res: float = 1.0, threshold: float | None = None,
                mask=None) -> HeadVolume:
    """Read, smooth and threshold an image once for :func:`depth_map` at ``res`` mm.

    ``mask`` (a boolean volume on the image grid) replaces the intensity threshold
    when given.
    """
    from bidsanon.deface.geometry import apply_affine, corners, downsample, head_threshold

    data, affine = _volume(img)
    centre = apply_affine(affine, corners(data.shape)).mean(0)
    if mask is not None:
        vol = np.array(mask, dtype=np.float32)  # a copy: _head_only changes it
        thr = 0.5
    else:
        # int16/uint8 voxels as stored: the filter computes in float64, where they are
        # their float32 copy's values, and writes float32
        data, affine = downsample(data, affine, 2.0 * res, keep_exact=True)
        zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        vol = ndi.gaussian_filter(data, np.maximum(0.7 * res / zooms, 0.3), output=np.float32)
        thr = head_threshold(vol) if threshold is None else threshold
    vol = _head_only(vol, thr, inplace=True)
    above = vol > thr
    box = None
    if above.any():
        first, last = [], []
        for ax in range(3):
            idx = np.nonzero(above.any(axis=tuple(a for a in range(3) if a != ax)))[0]
            first.append(max(int(idx[0]) - 1, 0))
            last.append(min(int(idx[-1]) + 1, vol.shape[ax] - 1))
        box = (tuple(first), tuple(last))
    return HeadVolume(vol, affine, float(thr), centre, box,
                      *_occupied_blocks(above, affine, box))


def _occupied_blocks(above: np.ndarray, affine: np.ndarray, box=None
                     ) -> tuple[np.ndarray, float]:
    """Centres (voxel coordinates) of the cubes of about :data:`BLOCK_MM` holding a True
    voxel, and how far (voxels, in each axis) from its centre a sample can be above the
    threshold (half the cube and the one voxel trilinear interpolation reaches).

    ``box`` (first, last voxel holding every True voxel, as :attr:`HeadVolume.box`)
    limits the search to the blocks that meet it; the lattice of blocks stays the
    whole volume's."""
    zoom = float(np.sqrt((affine[:3, :3] ** 2).sum(0)).min())
    block = max(1, round(BLOCK_MM / zoom))
    first = np.zeros(3, int)
    if box is not None:
        first = np.array(box[0]) // block * block
        above = above[tuple(slice(f, last + 1) for f, last in zip(first, box[1]))]
    a = np.pad(above, [(0, -n % block) for n in above.shape])
    n = [s // block for s in a.shape]
    # one axis at a time: numpy reduces a middle axis of a C-ordered array 10x faster
    # than the three block axes of a 6D view at once
    occ = (a.reshape(n[0], block, -1).any(axis=1)
           .reshape(n[0], n[1], block, -1).any(axis=2)
           .reshape(n[0], n[1], n[2], block).any(axis=3))
    centres = (np.argwhere(occ) + first // block) * float(block) + (block - 1) / 2.0
    return centres, (block + 1) / 2.0


def depth_map(img, view: str = "front", res: float = 1.0, threshold: float | None = None,
              mask=None, pose: np.ndarray | None = None):
    """First hit of the head along the view direction.

    Returns (depth in mm, hit mask), both (columns, rows-from-bottom) at ``res`` mm, and
    whether each column is cut by the field of view at its lowest hit. ``img`` is an
    image or its :class:`HeadVolume`; ``mask`` (a boolean volume on the image grid)
    replaces the intensity threshold when given; ``pose`` (4x4, world -> world) turns
    the head before it is looked at.

    The rays are cast on a grid of ``2 * res`` (the volume is smoothed at that scale, so
    nothing finer exists) and the sub-voxel depth is interpolated to ``res``: a quarter
    of the samples of a ``res`` grid in each of the three directions.
    """
    from bidsanon.deface.geometry import apply_affine, corners

    hv = img if isinstance(img, HeadVolume) else head_volume(img, res, threshold, mask)
    vol, thr = hv.vol, hv.threshold
    affine = hv.affine if pose is None else pose @ hv.affine
    step = 2.0 * res
    w = apply_affine(affine, corners(vol.shape))
    grid, shape = _view_axes(view, w.min(0), w.max(0), step)
    shape = np.array(shape)
    # the rays are sampled only where the head can be hit (its box, one sample more on
    # every side), on the same lattice as the whole grid, so the result is the same
    depth = np.zeros((shape[0], shape[2]))
    hit = np.zeros((shape[0], shape[2]), dtype=bool)
    cut = np.zeros(shape[0], dtype=bool)
    if hv.box is None:
        return _refine(depth, hit, cut)
    lo_v, hi_v = np.array(hv.box[0], float), np.array(hv.box[1], float)
    box_corners = np.array([[(lo_v, hi_v)[b][a] for a, b in enumerate(bits)]
                            for bits in np.ndindex(2, 2, 2)])
    g = apply_affine(np.linalg.inv(grid) @ affine, box_corners)  # grid index coordinates
    lo = np.clip(np.floor(g.min(0)).astype(int) - 1, 0, shape - 1)
    hi = np.clip(np.ceil(g.max(0)).astype(int) + 1, 0, shape - 1)
    sub = hi - lo + 1
    shift = np.eye(4)
    shift[:3, 3] = lo
    m = np.linalg.inv(affine) @ grid @ shift  # sub-grid index -> vol voxel
    k_s, v0, v1 = _first_hits(hv, m, tuple(sub))
    hit_s = k_s >= 0
    k_s = np.where(hit_s, k_s, 0)
    k = k_s + lo[1]  # depth index on the whole grid
    km = np.clip(k - 1, 0, None)
    v0 = np.where(np.isfinite(v0), v0, 0.0)
    frac = np.clip((thr - v0) / np.maximum(v1 - v0, 1e-6), 0.0, 1.0)
    d_s = np.where(k > 0, km + frac, 0.0) * step
    c0, c1, r0, r1 = lo[0], hi[0] + 1, lo[2], hi[2] + 1
    depth[c0:c1, r0:r1] = np.where(hit_s, d_s, 0.0)
    hit[c0:c1, r0:r1] = hit_s
    # columns whose lowest hit sits on the edge of the field of view
    cols = np.nonzero(hit_s.any(axis=1))[0]
    low = np.argmax(hit_s[cols], axis=1)
    below = _sample(vol, m, np.stack([cols, k_s[cols, low], np.maximum(low - 1, 0)]))
    cut[cols + c0] = (low + r0 == 0) | ~np.isfinite(below)
    return _refine(depth, hit, cut)


def _sample(vol: np.ndarray, m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``vol`` at grid indices ``idx`` (3, N), ``m`` grid index ->
    voxel; NaN outside the volume (as the rays' samples)."""
    xyz = m[:3, :3] @ idx.reshape(3, -1).astype(float) + m[:3, 3:4]
    return ndi.map_coordinates(vol, xyz, order=1, cval=np.nan).reshape(idx.shape[1:])


def _first_hits(hv: HeadVolume, m: np.ndarray, shape: tuple[int, int, int]):
    """First sample above the threshold along each ray (axis 1) of a grid of ``shape``
    (``m``: grid index -> voxel of ``hv.vol``): its depth index (-1: no hit) and the
    samples before and at it, as if every sample of the grid were taken.

    A sample can only be above the threshold within one voxel of a voxel above it, so
    each ray starts just in front of the nearest occupied block of ``hv.blocks`` that
    can reach it and stops at its first hit; rays no block reaches are misses."""
    n_c, n_d, n_r = shape
    k_s = np.full((n_c, n_r), -1)
    v0 = np.zeros((n_c, n_r), np.float32)
    v1 = np.zeros((n_c, n_r), np.float32)
    blocks, reach = hv.blocks, hv.block_reach
    if blocks is None:  # a HeadVolume made by hand
        blocks, reach = _occupied_blocks(hv.vol > hv.threshold, hv.affine)
    if not len(blocks):
        return k_s, v0, v1
    inv = np.linalg.inv(m[:3, :3])
    g = (blocks - m[:3, 3]) @ inv.T  # block centres in grid indices
    reach = reach * np.abs(inv).sum(axis=1)  # their half-extent along each grid axis
    ci = np.clip(np.floor(g[:, 0]).astype(int), 0, n_c - 1)
    ri = np.clip(np.floor(g[:, 2]).astype(int), 0, n_r - 1)
    front = np.full((n_c, n_r), np.inf)
    np.minimum.at(front, (ci, ri), g[:, 1] - reach[1])
    size = (2 * int(np.ceil(reach[0])) + 3, 2 * int(np.ceil(reach[2])) + 3)
    front = ndi.minimum_filter(front, size=size, mode="constant", cval=np.inf)
    cs, rs = np.nonzero(np.isfinite(front) & (front < n_d))
    start = np.clip(np.floor(front[cs, rs]).astype(int) - 1, 0, n_d - 1)
    width = 8
    while cs.size:
        d = start[:, None] + np.arange(width)
        idx = np.stack([np.broadcast_to(cs[:, None], d.shape), d,
                        np.broadcast_to(rs[:, None], d.shape)])
        vals = _sample(hv.vol, m, idx).astype(np.float32, copy=False)
        vals[d >= n_d] = np.nan
        above = vals > hv.threshold
        found = above.any(axis=1)
        j = np.argmax(above, axis=1)
        f = np.nonzero(found)[0]
        k_s[cs[f], rs[f]] = start[f] + j[f]
        v1[cs[f], rs[f]] = vals[f, j[f]]
        v0[cs[f], rs[f]] = vals[f, np.maximum(j[f] - 1, 0)]
        # the next window starts at this one's last sample (below the threshold)
        go = ~found & (start + width < n_d)
        cs, rs, start = cs[go], rs[go], start[go] + width - 1
        width = min(2 * width, 64)
    return k_s, v0, v1


def _refine(depth: np.ndarray, hit: np.ndarray, cut: np.ndarray):
    """Depth map, hit mask and cut columns of a ``2 * res`` grid brought to ``res``."""
    shape = (2 * depth.shape[0] - 1, 2 * depth.shape[1] - 1)
    far = depth[hit].max() if hit.any() else 0.0
    filled = np.where(hit, depth, far)
    fine = ndi.zoom(filled, (shape[0] / depth.shape[0], shape[1] / depth.shape[1]),
                    order=1, grid_mode=False)
    fine_hit = ndi.zoom(hit.astype(np.float32), (shape[0] / hit.shape[0],
                                                 shape[1] / hit.shape[1]),
                        order=1, grid_mode=False) > 0.5
    fine_cut = np.repeat(cut, 2)[: shape[0]]
    return np.where(fine_hit, fine, 0.0), fine_hit, fine_cut


def shade(depth: np.ndarray, hit: np.ndarray, cut: np.ndarray | None = None,
          res: float = 1.0) -> np.ndarray:
    """Shaded uint8 picture (rows top = superior) of a depth map."""
    if cut is not None and cut.any():
        pad = int(EXTEND_MM / res)
        low = np.argmax(hit, axis=1)
        d2 = np.zeros((depth.shape[0], depth.shape[1] + pad))
        h2 = np.zeros(d2.shape, dtype=bool)
        d2[:, pad:], h2[:, pad:] = depth, hit
        for c in np.nonzero(cut)[0]:
            d2[c, : pad + low[c]] = depth[c, low[c]]
            h2[c, : pad + low[c]] = True
        depth, hit = d2, h2
    if not hit.any():
        return np.zeros(depth.T.shape, dtype=np.uint8)
    far = depth[hit].max() + 5.0
    d = ndi.gaussian_filter(np.where(hit, depth, far), 1.0 / res) / res
    gx, gz = np.gradient(d)
    n = np.stack([gx, gz, np.ones_like(d)])
    n /= np.linalg.norm(n, axis=0)
    light = np.asarray(LIGHT, float) / np.linalg.norm(LIGHT)
    lam = np.clip(np.tensordot(light, n, axes=1), 0.0, 1.0)
    near = (d - d[hit].min()) / max(float(np.ptp(d[hit])), 1.0)
    lam = lam * (1.0 - 0.5 * near)  # depth cue: nearer is brighter
    out = 255.0 * (0.15 + 0.85 * lam)
    out[~hit] = 0.0
    pic = out.T[::-1].astype(np.uint8)
    pad = int(PAD_MM / res)
    return np.pad(pic, pad)


def render_head(img, view: str = "front", res: float = 1.0, threshold: float | None = None,
                mask=None) -> np.ndarray:
    """Shaded surface render of the head seen from ``view`` (uint8, rows top = up).

    Parameters
    ----------
    img : nibabel image or HeadVolume
        3D or 4D (the first volume is rendered); any orientation, world space is used.
        A :class:`HeadVolume` is used as prepared (``threshold`` and ``mask`` ignored).
    view : str
        ``front``, ``left`` or ``right``.
    res : float
        Pixel size in mm (1 mm suits dlib's detector for adult heads).
    threshold : float | None
        Head/air intensity threshold (default: half of Otsu's threshold).
    mask : ndarray | None
        Render this boolean volume (image grid) instead of thresholding.
    """
    depth, hit, cut = depth_map(img, view, res, threshold, mask)
    return shade(depth, hit, cut, res)


def crop_to_head(pic: np.ndarray, margin: int, align: int = 8
                 ) -> tuple[np.ndarray, int, int]:
    """The part of a render that holds the head (non-zero pixels) and ``margin`` pixels
    of background around it, its corner moved out to a multiple of ``align`` so the
    detectors' 8-pixel cells fall where they fall on the whole render. Returns the crop
    and its (row, column) offset. The detectors pay per pixel; the background they skip
    is black, the same as the zeros they pad with."""
    rows = np.nonzero(pic.any(axis=1))[0]
    cols = np.nonzero(pic.any(axis=0))[0]
    if rows.size == 0:
        return pic, 0, 0
    r0 = max(int(rows[0]) - margin, 0) // align * align
    c0 = max(int(cols[0]) - margin, 0) // align * align
    r1 = min(int(rows[-1]) + margin + 1, pic.shape[0])
    c1 = min(int(cols[-1]) + margin + 1, pic.shape[1])
    return np.ascontiguousarray(pic[r0:r1, c0:c1]), r0, c0


def detect_faces(img_or_render, upsample: tuple[int, ...] = (0, 1),
                 threshold: float = 0.0, res: float = 1.0) -> list[FaceBox]:
    """Faces found by dlib's HOG frontal detector on a render of ``res`` mm pixels (or
    an image's front render), at each of the ``upsample`` levels; scores above
    ``threshold``.

    The whole render is scanned: cropping it to the head moves the detector's image
    pyramid and changed scores by up to 0.8 (measured on 6 heads x 7 views), enough to
    turn a plane-cut head's -0.05 into a detection."""
    pic = img_or_render
    if not isinstance(pic, np.ndarray):
        pic = render_head(img_or_render, "front")
    pic = np.ascontiguousarray(pic, dtype=np.uint8)
    out = []
    for up in upsample:
        dets, scores, _ = _detector().run(pic, int(up), float(threshold))
        for d, s in zip(dets, scores):  # dlib maps boxes back to the input's pixels
            if s > threshold:
                out.append(FaceBox(d.left(), d.top(), d.right(), d.bottom(), float(s)))
    return out


def has_face(img, views: tuple[str, ...] = ("front",)) -> bool:
    """Whether a face is detected on the head render from any of ``views``."""
    return any(detect_faces(render_head(img, v)) for v in views)


def check_file(path: Path, rel: str) -> list[Finding]:
    """Findings for ``bidsanon check``: ``anat.face`` when a face is detected on the
    front render of an anatomical image, ``anat.unreadable`` when it cannot be read."""
    from bidsanon.deface.image import load_image

    try:
        img = load_image(path)
        boxes = detect_faces(render_head(img, "front"))
    except (InputError, ValueError, MemoryError) as exc:
        return [Finding(rel, "anat.unreadable", "warning",
                        f"cannot render the head to look for a face: {exc}")]
    if not boxes:
        return []
    best = max(b.score for b in boxes)
    return [Finding(rel, "anat.face", "error",
                    f"a face is visible on a 3D render of the head (detector score "
                    f"{best:.2f}); deface the image", location="front render")]


# --------------------------------------------------------------------------- multi-view

#: The viewpoints of the multi-view face test: name -> (yaw, pitch) in degrees. Yaw
#: turns the head about the vertical axis (positive: its left cheek comes into view),
#: pitch about the left-right axis (positive: seen from above).
VIEWPOINTS: dict[str, tuple[float, float]] = {
    "front": (0.0, 0.0), "yaw+30": (30.0, 0.0), "yaw-30": (-30.0, 0.0),
    "yaw+60": (60.0, 0.0), "yaw-60": (-60.0, 0.0), "pitch+20": (0.0, 20.0),
    "pitch-20": (0.0, -20.0),
}
#: The detectors of the multi-view test. ``hog`` is always there; ``cnn`` needs the
#: ``face_recognition_models`` wheel and ``mtcnn`` torch (extra ``bidsanon[mtcnn]``): :func:`available_detectors` says which are installed.
DETECTORS = ("hog", "cnn", "mtcnn")


def render_view(img, yaw: float = 0.0, pitch: float = 0.0, res: float = 1.0,
                back: bool = False) -> np.ndarray:
    """Front render of the head turned by ``yaw`` and ``pitch`` (degrees) about its centre.

    Parameters
    ----------
    img : nibabel image or HeadVolume
        3D or 4D (first volume); a :class:`HeadVolume` (prepared at ``res``) saves
        preparing the volume again for each view.
    yaw, pitch : float
        Rotation about the vertical (z) and left-right (x) world axes.
    res : float
        Pixel size (mm).
    back : bool
        Render the back of the head instead (the head turned by 180 degrees more): the
        negative control of a face test.

    Returns
    -------
    numpy.ndarray
        The uint8 render (rows top = up).
    """
    from bidsanon.deface.geometry import rotation_matrix

    hv = img if isinstance(img, HeadVolume) else head_volume(img, res)
    if yaw == 0.0 and pitch == 0.0 and not back:
        return render_head(hv, "front", res)
    rot = rotation_matrix((pitch, 0.0, yaw + (180.0 if back else 0.0)))
    turn = np.eye(4)
    turn[:3, :3] = rot
    turn[:3, 3] = hv.centre - rot @ hv.centre
    return shade(*depth_map(hv, "front", res, pose=turn), res)


#: dlib's CNN face model in the ``face_recognition_models`` wheel (found without
#: importing the package: its ``__init__`` needs ``pkg_resources``, which setuptools 81
#: and newer no longer ship, so in a fresh venv the import fails).
CNN_MODEL = ("models", "mmod_human_face_detector.dat")


@functools.lru_cache(maxsize=1)
def _cnn_detector():
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(next(iter(spec.submodule_search_locations))).joinpath(*CNN_MODEL)
    if not model.is_file():
        return None
    import dlib

    return dlib.cnn_face_detection_model_v1(str(model))


def cnn_available() -> bool:
    """Whether dlib's CNN face detector (the ``face_recognition_models`` wheel) is here."""
    return _cnn_detector() is not None


#: Pixel size (mm) the CNN detector looks at. Its sliding window is 80 px, an adult face
#: on a 1.6 mm render ~85 px: the same detections as on a 1 mm render (the sample head's
#: 7 views score within 0.05) for 40 % of the pixels, and its time grows with pixels.
CNN_PIXEL_MM = 1.6
#: Background (mm) the CNN sees around the head (:func:`crop_to_head`).
CNN_MARGIN_MM = 20.0


def detect_faces_cnn(pic: np.ndarray, upsample: int = 0, threshold: float = 0.0,
                     res: float = 1.0) -> list[FaceBox]:
    """Faces found by dlib's CNN (MMOD) detector on a render of ``res`` mm pixels; []
    when it is absent.

    The render is first scaled to :data:`CNN_PIXEL_MM` pixels; boxes are given in the
    render's own pixels. Scores are the detector's confidences (above ``threshold``).
    """
    det = _cnn_detector()
    if det is None:
        return []
    zoom = min(1.0, res / CNN_PIXEL_MM)
    small = pic if zoom == 1.0 else ndi.zoom(np.asarray(pic, np.float32), zoom, order=1)
    small = np.ascontiguousarray(np.clip(small, 0, 255), dtype=np.uint8)
    # the head and CNN_MARGIN_MM around it: a third fewer pixels on the 7 views
    small, r0, c0 = crop_to_head(small, int(round(CNN_MARGIN_MM / CNN_PIXEL_MM)))
    out = []
    for d in det(small, int(upsample)):
        if d.confidence > threshold:
            r = d.rect
            out.append(FaceBox(*(int(round(v / zoom)) for v in
                                 (r.left() + c0, r.top() + r0, r.right() + c0,
                                  r.bottom() + r0)),
                               float(d.confidence)))
    return out


#: Smallest face (mm across) MTCNN looks for: its image pyramid starts where a face of
#: this size fills its 12 px window. A newborn's face is about 80 mm wide; the library's
#: default (20 px) would add pyramid levels for faces of 20 mm on a 1 mm render.
MTCNN_MIN_FACE_MM = 40.0


def mtcnn_available() -> bool:
    """Whether MTCNN can run here (torch installed: extra ``bidsanon[mtcnn]``)."""
    from bidsanon.deface import mtcnn

    return mtcnn.available()


def detect_faces_mtcnn(pic: np.ndarray, threshold: float = 0.0,
                       res: float = 1.0) -> list[FaceBox]:
    """Faces found by MTCNN (:mod:`bidsanon.deface.mtcnn`) on a render of ``res`` mm
    pixels; [] when torch is absent.

    Boxes are in the render's pixels; the score is MTCNN's face probability (its last
    stage only reports faces above 0.7), kept when above ``threshold``.
    """
    from bidsanon.deface import mtcnn

    if not mtcnn.available():
        return []
    found = mtcnn.detect(pic, min_face=max(12, int(round(MTCNN_MIN_FACE_MM / res))))
    return [FaceBox(*(round(float(v)) for v in row[:4]), float(row[4]))
            for row in found if float(row[4]) > threshold]


def available_detectors() -> tuple[str, ...]:
    """The :data:`DETECTORS` installed here (``hog`` always)."""
    have = {"hog": True, "cnn": cnn_available(), "mtcnn": mtcnn_available()}
    return tuple(d for d in DETECTORS if have[d])


def detect(pic: np.ndarray, detector: str, threshold: float = 0.0,
           res: float = 1.0) -> list[FaceBox]:
    """Faces by one of :data:`DETECTORS` on a render of ``res`` mm pixels, scores above
    ``threshold`` ([] for a detector that is not installed)."""
    if detector == "hog":
        return detect_faces(pic, threshold=threshold, res=res)
    if detector == "cnn":
        return detect_faces_cnn(pic, threshold=threshold, res=res)
    if detector == "mtcnn":
        return detect_faces_mtcnn(pic, threshold=threshold, res=res)
    raise ValueError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")


def multi_view_faces(img, views: dict[str, tuple[float, float]] | None = None,
                     detectors: tuple[str, ...] | None = None, res: float = 1.0,
                     affine: np.ndarray | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], list[FaceBox]]]:
    """Render the head from every viewpoint and run every detector on each render.

    Parameters
    ----------
    img : nibabel image or numpy.ndarray
        3D or 4D (the first volume is used); an array needs ``affine``.
    views : dict | None
        Viewpoint name -> (yaw, pitch) degrees; default :data:`VIEWPOINTS`.
    detectors : tuple of str | None
        Default: every installed detector (:func:`available_detectors`). A named
        detector that is not installed finds nothing.
    res : float
        Pixel size (mm) of the renders.
    affine : numpy.ndarray | None
        Voxel -> world (mm) affine of an array ``img``.

    Returns
    -------
    pics : dict
        View -> uint8 render.
    hits : dict
        (view, detector) -> list of :class:`FaceBox`.
    """
    views = VIEWPOINTS if views is None else views
    detectors = available_detectors() if detectors is None else detectors
    if isinstance(img, np.ndarray):
        if affine is None:
            raise ValueError("an array needs its affine")
        img = _ArrayImage(img, np.asarray(affine, float))
    from threadpoolctl import threadpool_limits

    # the casts' small matrix products ((3, 3) by (3, N)) go to BLAS, whose threads made
    # them up to 30x slower on a busy 2-core machine; the renders are the same bit for
    # bit (7 heads x 7 views)
    with threadpool_limits(1, user_api="blas"):
        hv = head_volume(img, res)  # read, smoothed and thresholded once for every view
        pics = {v: render_view(hv, *views[v], res=res) for v in views}
    hits = {(v, d): detect(pics[v], d, res=res) for v in pics for d in detectors}
    return pics, hits


def iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w * h)
    area = lambda x: float((x.right - x.left) * (x.bottom - x.top))  # noqa: E731
    return inter / max(area(a) + area(b) - inter, 1.0)
