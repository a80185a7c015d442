"""Affine registration of a head to the MNI152 template shipped in ``bidsanon/data/template`` and the mapping of its masks."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from bidsanon.errors import InputError
from bidsanon.deface.geometry import (apply_affine, downsample, head_mask, mask_centre,
                                      world_grid)


TEMPLATE_DIR = Path(__file__).parent.parent / "data" / "template"

#: Label bits of the template mask grid (one lookup maps all masks at once).
HEAD, BRAIN, FACE, EARS = 1, 2, 4, 8

#: MNI coordinates (mm) of the fiducials of the template head (fsaverage's fiducials
#: shipped with MNE; MNI305, within a few mm of MNI152). Used to start the registration
#: from an image's landmarks.
TEMPLATE_FIDUCIALS = {"NAS": (1.5, 85.1, -34.8), "LPA": (-80.6, -29.1, -41.3),
                      "RPA": (84.4, -28.5, -41.3)}

#: The template's face plane (MNI mm): through the brow (in front of the frontal pole,
#: just above the eyebrows) and the throat (below the chin, in front of the spine); the
#: face side is the one that holds ``nose_side``. ``scripts/build_template_masks.py``
#: builds the face mask from it; defacing moves it forward to lay the new surface.
FACE_PLANE = {"brow": (0.0, 76.0, -4.0), "throat": (0.0, 20.0, -80.0),
              "nose_side": (0.0, 120.0, -60.0)}


def face_plane(world_to_template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face plane in image world mm: a point on it and its unit normal towards the
    face (the normal of the template plane carried by the inverse transpose)."""
    a, b, c = (np.array(FACE_PLANE[k], float) for k in ("brow", "throat", "nose_side"))
    normal = np.cross(b - a, (1.0, 0.0, 0.0))
    if np.dot(c - a, normal) < 0:
        normal = -normal
    t2w = np.linalg.inv(world_to_template)
    point = t2w[:3, :3] @ a + t2w[:3, 3]
    n = world_to_template[:3, :3].T @ normal
    return point, n / np.linalg.norm(n)


#: Seed of the metric's random sampling: the same image gives the same sample points, so
#: the same registration, on every run and machine (outputs are checksummed in the key).
SAMPLING_SEED = 12345

#: Knobs of the intensity registration (:func:`register`): the share of the template
#: head's voxels the metric samples, the optimizer's smallest step (physical-shift
#: scaled, mm), the similarity stage's shrink factors and the iteration limits. Measured
#: on six real heads (docs/performance.md): 20 % sampling, a 0.003 mm last step and the
#: similarity stage on the half grid only move the template head by at most 0.75 mm from
#: the former 50 % / 0.001 mm / two-level settings -- less than changing the sampling
#: seed does (0.94 mm) -- for a quarter of the time.
TUNING = {"sampling": 0.2, "min_step": 3e-3, "sim_shrink": (2,), "iterations": 150,
          "affine_iterations": 150}


# --------------------------------------------------------------------------- template

@dataclass
class Registration:
    """An affine template registration and its quality numbers."""

    #: 4x4: image world (mm) -> template world (MNI mm)
    world_to_template: np.ndarray
    similarity: float  # entropy correlation coefficient, 0..1
    head_dice: float
    orientation: int = 0  # index of the starting orientation that won
    ok: bool = True


@dataclass(frozen=True)
class Template:
    """The template head at registration resolution and the mask label grid."""

    image: np.ndarray  # world-aligned volume at ``res`` mm
    affine: np.ndarray
    head: np.ndarray  # head mask on that grid
    labels: np.ndarray  # uint8 bits HEAD|BRAIN|FACE|EARS on the mask grid
    labels_affine: np.ndarray
    res: float


@functools.lru_cache(maxsize=4)
def load_template(res: float = 4.0) -> Template:
    """The shipped template resampled to ``res`` mm and its mask labels (cached)."""
    img = nib.load(TEMPLATE_DIR / "MNI152_T1_2mm.nii.gz")
    data = np.asanyarray(img.dataobj).astype(np.float32)
    small, aff = downsample(data, img.affine, res)
    vol, grid = world_grid(small, aff, res)
    labels = None
    for name, bit in (("head", HEAD), ("brain", BRAIN), ("face", FACE), ("ear", EARS)):
        m = nib.load(TEMPLATE_DIR / f"{name}_mask.nii.gz")
        mask = np.asanyarray(m.dataobj) > 0
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.uint8)
            head = mask
        labels[mask] |= np.uint8(bit)
        labels_affine = m.affine
    head_small, _ = world_grid(head.astype(np.float32), labels_affine, res,
                               bounds=(grid[:3, 3], apply_affine(grid, np.array([vol.shape]) - 1)[0]))
    return Template(vol, grid, head_small > 0.5, labels, labels_affine, res)


def _to_sitk(vol: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    img.SetSpacing([float(affine[0, 0])] * 3)
    img.SetOrigin([float(v) for v in affine[:3, 3]])
    return img  # world-aligned grid: identity direction, RAS mm as physical space


def _axis_rotations() -> list[np.ndarray]:
    """The 24 proper rotations that map axes onto axes, identity first."""
    mats = []
    for perm in ((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2)):
        for signs in np.array(np.meshgrid([1, -1], [1, -1], [1, -1])).T.reshape(-1, 3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                mats.append(m)
    mats.sort(key=lambda m: -np.trace(m))
    return mats


def _affine_to_matrix(tx) -> np.ndarray:
    """4x4 matrix of a SimpleITK affine-like transform (fixed -> moving points)."""
    a = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    out = np.eye(4)
    out[:3, :3] = a
    out[:3, 3] = t + c - a @ c
    return out


def similarity_numbers(tmpl: Template, moving: np.ndarray, moving_aff: np.ndarray,
                       moving_head: np.ndarray, t2m: np.ndarray) -> tuple[float, float]:
    """(entropy correlation coefficient, head Dice) of a registration.

    Both are computed on the template grid, inside the part of it that the moving
    image's field of view covers, so a cropped image is not penalised for what it lacks.
    """
    m = np.linalg.inv(moving_aff) @ t2m @ tmpl.affine  # template voxel -> moving voxel
    warped = ndi.affine_transform(moving, m[:3, :3], m[:3, 3], output_shape=tmpl.image.shape,
                                  order=1, cval=np.nan)
    head = ndi.affine_transform(moving_head.astype(np.float32), m[:3, :3], m[:3, 3],
                                output_shape=tmpl.image.shape, order=1, cval=np.nan)
    inside = np.isfinite(warped)
    region = inside & tmpl.head  # inside the head only: the head/air edge is easy to match
    if region.sum() < 100:
        return 0.0, 0.0
    a, b = tmpl.image[region], warped[region]
    hist, _, _ = np.histogram2d(a, b, bins=16)
    p = hist / hist.sum()
    px, py = p.sum(1), p.sum(0)

    def ent(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hx, hy, hxy = ent(px), ent(py), ent(p.ravel())
    ecc = 2.0 * (hx + hy - hxy) / max(hx + hy, 1e-9)
    th = tmpl.head[inside]
    mh = head[inside] > 0.5
    dice = 2.0 * float((th & mh).sum()) / max(float(th.sum() + mh.sum()), 1.0)
    return ecc, dice


def register(vol: np.ndarray, affine: np.ndarray, *, res: float = 4.0,
             min_similarity: float = 0.10, min_head_overlap: float = 0.85,
             search_orientations: bool = True,
             init_world_to_template: np.ndarray | None = None) -> Registration:
    """Affine registration of a 3D volume (voxel -> world ``affine``) to the template.

    Starts from the centres of mass of the two heads with the header's orientation
    (or ``init_world_to_template``); if the result fails the quality check and
    ``search_orientations`` is on, retries from the other 23 axis-aligned orientations
    and keeps the best. ``ok`` tells whether the best passed the check.
    """
    tmpl = load_template(res)
    small, small_aff = downsample(vol, affine, res)
    moving, moving_aff = world_grid(small, small_aff, res)
    mhead = head_mask(moving)
    if mhead.sum() < 50:
        raise InputError("no head found in the image (too little signal above background)")
    c_mov = apply_affine(moving_aff, mask_centre(mhead)[None])[0]
    c_tmp = apply_affine(tmpl.affine, mask_centre(tmpl.head)[None])[0]

    starts: list[np.ndarray] = []
    if init_world_to_template is not None:
        starts.append(np.linalg.inv(init_world_to_template))
    for rot in _axis_rotations():
        t2m = np.eye(4)  # template point -> moving point
        t2m[:3, :3] = rot
        t2m[:3, 3] = c_mov - rot @ c_tmp
        starts.append(t2m)
    n_first = 2 if init_world_to_template is not None else 1

    def attempt(idx: int, t2m0: np.ndarray, quick: bool = False) -> Registration:
        t2m = _run_registration(tmpl, moving, moving_aff, t2m0, c_tmp, quick=quick)
        ecc, dice = similarity_numbers(tmpl, moving, moving_aff, mhead, t2m)
        ok = bool(ecc >= min_similarity and dice >= min_head_overlap) and not quick
        return Registration(np.linalg.inv(t2m), ecc, dice, idx, ok=ok)

    def better(a: Registration, b: Registration | None) -> bool:
        return b is None or (a.ok, a.similarity + a.head_dice) > (b.ok, b.similarity
                                                                   + b.head_dice)

    best = None
    for idx in range(n_first):
        reg = attempt(idx, starts[idx])
        if better(reg, best):
            best = reg
        if best.ok:
            return best
    if search_orientations:
        # a quick coarse registration from every other orientation, then the full one
        # from the two most similar: a wrong or missing header still finds the head
        quick = [attempt(idx, starts[idx], quick=True) for idx in range(n_first, len(starts))]
        quick.sort(key=lambda r: -(r.similarity + r.head_dice))
        for q in quick[:2]:
            reg = attempt(q.orientation, starts[q.orientation])
            if better(reg, best):
                best = reg
            if best.ok:
                break
    return best


def _run_registration(tmpl: Template, moving: np.ndarray, moving_aff: np.ndarray,
                      t2m0: np.ndarray, center: np.ndarray, quick: bool = False) -> np.ndarray:
    """Similarity then affine registration from ``t2m0``; returns template -> moving.

    ``quick``: only the similarity stage at twice the grid spacing, few iterations (to
    rank starting orientations)."""
    import SimpleITK as sitk

    fixed = _to_sitk(tmpl.image, tmpl.affine)
    mov = _to_sitk(moving, moving_aff)
    fmask = _to_sitk(ndi.binary_dilation(tmpl.head, iterations=2).astype(np.uint8),
                     tmpl.affine)
    fmask = sitk.Cast(fmask, sitk.sitkUInt8)

    def method(levels, iterations=150):
        reg = sitk.ImageRegistrationMethod()
        # one thread and one work unit: the metric's partial sums are added in an order
        # that depends on neither the machine's cores nor ITK's global default, so the
        # result is bit-identical everywhere (tests/test_determinism.py)
        reg.SetNumberOfThreads(1)
        reg.SetNumberOfWorkUnits(1)
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(TUNING["sampling"], SAMPLING_SEED)
        reg.SetMetricFixedMask(fmask)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=TUNING["min_step"], numberOfIterations=iterations,
            relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(levels[0])
        reg.SetSmoothingSigmasPerLevel(levels[1])
        reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(True)
        return reg

    sim = sitk.Similarity3DTransform()
    sim.SetCenter([float(v) for v in center])
    rot = t2m0[:3, :3]
    sim.SetMatrix([float(v) for v in rot.ravel()])
    sim.SetTranslation([float(v) for v in (t2m0[:3, 3] + rot @ center - center)])
    if quick:
        reg = method(([2], [2.0 * tmpl.res]), iterations=40)
    else:
        shrink = list(TUNING["sim_shrink"])
        sig = [2.0 * tmpl.res if f > 1 else 0.0 for f in shrink]
        reg = method((shrink, sig), iterations=TUNING["iterations"])
    reg.SetInitialTransform(sim, inPlace=True)
    reg.Execute(fixed, mov)
    if quick:
        return _affine_to_matrix(sim)

    aff = sitk.AffineTransform(3)
    aff.SetCenter(sim.GetCenter())
    aff.SetMatrix(sim.GetMatrix())
    aff.SetTranslation(sim.GetTranslation())
    reg = method(([1], [0.0]), iterations=TUNING["affine_iterations"])
    reg.SetInitialTransform(aff, inPlace=True)
    reg.Execute(fixed, mov)
    return _affine_to_matrix(aff)


def lookup_labels(shape, affine: np.ndarray, world_to_template: np.ndarray,
                  tmpl: Template) -> np.ndarray:
    """Template label bits at every image voxel (nearest neighbour; 0 outside)."""
    m = np.linalg.inv(tmpl.labels_affine) @ world_to_template @ affine
    lab = tmpl.labels
    # one voxel of zeros around the labels: an index clipped to -1 or n lands there
    pad = np.zeros(tuple(np.array(lab.shape) + 2), dtype=np.uint8)
    pad[1:-1, 1:-1, 1:-1] = lab
    flat = pad.ravel()
    lim = np.array(lab.shape)
    stride = (pad.shape[1] * pad.shape[2], pad.shape[2], 1)
    out = np.empty(shape[:3], dtype=np.uint8)
    j, k = np.meshgrid(np.arange(shape[1], dtype=np.float32),
                       np.arange(shape[2], dtype=np.float32), indexing="ij")
    base = [m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3)]
    idx = np.empty(j.shape, dtype=np.intp)
    tmp = np.empty(j.shape, dtype=np.float64)
    for i in range(shape[0]):
        idx[...] = 0
        for r in range(3):
            np.add(base[r], m[r, 0] * i, out=tmp)
            np.rint(tmp, out=tmp)
            np.clip(tmp, -1, lim[r], out=tmp)
            tmp += 1
            idx += tmp.astype(np.intp) * stride[r]
        np.take(flat, idx, out=out[i])
    return out


def landmark_init(world_landmarks: dict[str, np.ndarray]) -> np.ndarray:
    """Similarity transform (image world -> template) matching the three fiducials."""
    src = np.array([world_landmarks[k] for k in ("NAS", "LPA", "RPA")], float)
    dst = np.array([TEMPLATE_FIDUCIALS[k] for k in ("NAS", "LPA", "RPA")], float)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, 1, d]) @ vt
    scale = (s * [1, 1, d]).sum() / max((a ** 2).sum(), 1e-9)
    out = np.eye(4)
    out[:3, :3] = scale * r
    out[:3, 3] = md - scale * r @ ms
    return out




# --------------------------------------------------------------------------- any contrast

#: BIDS suffixes registered by their intensities (MI against the T1 template); every
#: other contrast is registered on the shape of its head (see :func:`register_head_shape`).
T1_LIKE_SUFFIXES = ("T1w", "inplaneT1", "UNIT1", "MP2RAGE")


def uses_intensity_registration(suffix: str | None) -> bool:
    """Whether images with this BIDS suffix are registered on their intensities."""
    return suffix is None or suffix in T1_LIKE_SUFFIXES


def _shape_map(head: np.ndarray, res: float, width_mm: float = 8.0) -> np.ndarray:
    """A smooth, contrast-free picture of a head mask: tanh of the signed distance (mm)
    to the skin, +1 deep inside, -1 far outside."""
    inside = ndi.distance_transform_edt(head) * res
    outside = ndi.distance_transform_edt(~head) * res
    return np.tanh((inside - outside) / width_mm).astype(np.float32)


#: Quality threshold of a shape registration, as a share of ``min_similarity``. The
#: entropy correlation coefficient (mutual information, so any contrast) of a head placed
#: by its skin surface alone is lower than after intensity registration: measured 0.085
#: (real PD-weighted head), 0.076 (sample T1), 0.047 (a real T2w slab from the eyes up,
#: correctly placed), against 0.014 for a noisy ellipsoid.
SHAPE_SIMILARITY_SHARE = 0.4


def register_head_shape(vol: np.ndarray, affine: np.ndarray, *, res: float = 4.0,
                        min_similarity: float = 0.10, min_head_overlap: float = 0.85,
                        search_orientations: bool = True,
                        init_world_to_template: np.ndarray | None = None) -> Registration:
    """Contrast-independent affine registration of a head to the template.

    Registers the smooth signed-distance maps of the two head masks (the skin surface,
    see :func:`_shape_map`) with mean squares, restricted to the image's field of view,
    so a T2w, PD-weighted, FLAIR or angio head is placed as reliably as a T1w. The
    quality check is :func:`register`'s (head Dice, and the entropy correlation
    coefficient, which being mutual information does not depend on the contrast), with
    the similarity threshold scaled by ``SHAPE_SIMILARITY_SHARE``.

    Parameters
    ----------
    vol, affine : numpy.ndarray
        3D volume and its voxel -> world affine.
    res : float
        Registration grid (mm).
    min_similarity, min_head_overlap : float
        The quality check's thresholds (``ok`` is False below either).
    search_orientations : bool
        Also try the 23 other axis-aligned starting orientations when the header's
        fails the check.
    init_world_to_template : numpy.ndarray | None
        An extra first start (e.g. from landmarks).

    Returns
    -------
    Registration
        The best registration found and its quality numbers.
    """
    import SimpleITK as sitk

    tmpl = load_template(res)
    small, small_aff = downsample(vol, affine, res)
    moving, moving_aff = world_grid(small, small_aff, res, cval=np.nan)
    fov = np.isfinite(moving)
    moving = np.where(fov, moving, 0.0).astype(np.float32)
    mhead = head_mask(moving)
    if mhead.sum() < 50:
        raise InputError("no head found in the image (too little signal above background)")
    fixed = _to_sitk(_shape_map(tmpl.head, res), tmpl.affine)
    mov = _to_sitk(_shape_map(mhead, res), moving_aff)
    # only the image's field of view is compared: a slab or a cropped neck is not a miss
    mmask = sitk.Cast(_to_sitk(ndi.binary_erosion(fov, iterations=1).astype(np.uint8),
                               moving_aff), sitk.sitkUInt8)
    c_mov = apply_affine(moving_aff, mask_centre(mhead)[None])[0]
    c_tmp = apply_affine(tmpl.affine, mask_centre(tmpl.head)[None])[0]

    starts: list[np.ndarray] = []
    if init_world_to_template is not None:
        starts.append(np.linalg.inv(init_world_to_template))
    for rot in _axis_rotations():
        t2m = np.eye(4)
        t2m[:3, :3] = rot
        t2m[:3, 3] = c_mov - rot @ c_tmp
        starts.append(t2m)
    n_first = 2 if init_world_to_template is not None else 1

    def run(t2m0: np.ndarray, quick: bool) -> np.ndarray:
        def method(levels, iterations):
            reg = sitk.ImageRegistrationMethod()
            reg.SetNumberOfThreads(1)
            reg.SetMetricAsMeanSquares()
            reg.SetMetricSamplingStrategy(reg.NONE)
            reg.SetMetricMovingMask(mmask)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(
                learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel(levels[0])
            reg.SetSmoothingSigmasPerLevel(levels[1])
            reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(True)
            return reg

        sim = sitk.Similarity3DTransform()
        sim.SetCenter([float(v) for v in c_tmp])
        rot = t2m0[:3, :3]
        sim.SetMatrix([float(v) for v in rot.ravel()])
        sim.SetTranslation([float(v) for v in (t2m0[:3, 3] + rot @ c_tmp - c_tmp)])
        reg = method(([2], [res]), 40) if quick else method(([2, 1], [res, 0.0]), 200)
        reg.SetInitialTransform(sim, inPlace=True)
        reg.Execute(fixed, mov)
        # a similarity only: a free affine fitted to a skin surface alone shears into
        # wrong minima (the surface says little about the inner anatomy's axes)
        return _affine_to_matrix(sim)

    def attempt(idx: int, quick: bool = False) -> Registration:
        t2m = run(starts[idx], quick)
        sim, dice = similarity_numbers(tmpl, moving, moving_aff, mhead, t2m)
        ok = bool(sim >= min_similarity * SHAPE_SIMILARITY_SHARE
                  and dice >= min_head_overlap) and not quick
        return Registration(np.linalg.inv(t2m), sim, dice, idx, ok=ok)

    def score(r: Registration) -> tuple:
        return (r.ok, r.similarity + r.head_dice)

    best = None
    for idx in range(n_first):
        reg = attempt(idx)
        if best is None or score(reg) > score(best):
            best = reg
        if best.ok:
            return best
    if search_orientations:
        quick = [attempt(idx, quick=True) for idx in range(n_first, len(starts))]
        quick.sort(key=lambda r: -(r.similarity + r.head_dice))
        for q in quick[:2]:
            reg = attempt(q.orientation)
            if score(reg) > score(best):
                best = reg
            if best.ok:
                break
    return best


# --------------------------------------------------------------------------- via the T1w

def register_via(vol: np.ndarray, affine: np.ndarray, ref_vol: np.ndarray,
                 ref_affine: np.ndarray, ref: Registration, *, res: float = 4.0,
                 min_similarity: float = 0.10, min_head_overlap: float = 0.85
                 ) -> Registration:
    """Place an image on the template through another image of the same head that is
    already placed (the session's T1w, ``ref``): a rigid registration of the image to
    that one (Mattes mutual information, so any pair of contrasts; from the scanner's
    own alignment of the two), composed with ``ref``.

    Rigid is what two images of one head in one session differ by; it is far more
    robust than placing a T2w or PDw on a T1w template. The result is checked like a
    shape registration (head overlap, and the template similarity at
    :data:`SHAPE_SIMILARITY_SHARE` of ``min_similarity``, since the contrasts differ).
    Deterministic: one thread, seeded sampling.
    """
    import SimpleITK as sitk

    grids = []
    for v, a in ((ref_vol, ref_affine), (vol, affine)):
        small, small_aff = downsample(v, a, res)
        grids.append(world_grid(small, small_aff, res))
    (fvol, faff), (mvol, maff) = grids
    fixed, moving = _to_sitk(fvol, faff), _to_sitk(mvol, maff)
    fmask = sitk.Cast(_to_sitk(head_mask(fvol).astype(np.uint8), faff), sitk.sitkUInt8)
    euler = sitk.Euler3DTransform()
    centre = apply_affine(faff, (np.array(fvol.shape)[None] - 1) / 2.0)[0]
    euler.SetCenter([float(c) for c in centre])
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)
    reg.SetNumberOfWorkUnits(1)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.5, SAMPLING_SEED)
    reg.SetMetricFixedMask(fmask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=TUNING["min_step"], numberOfIterations=200,
        relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0 * res, 0.0])
    reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(True)
    reg.SetInitialTransform(euler, inPlace=True)
    reg.Execute(fixed, moving)
    ref_to_img = _affine_to_matrix(euler)  # reference world -> image world
    w2t = ref.world_to_template @ np.linalg.inv(ref_to_img)
    tmpl = load_template(res)
    sim, dice = similarity_numbers(tmpl, mvol, maff, head_mask(mvol), np.linalg.inv(w2t))
    ok = bool(ref.ok and dice >= min_head_overlap
              and sim >= min_similarity * SHAPE_SIMILARITY_SHARE)
    return Registration(w2t, sim, dice, ref.orientation, ok=ok)
