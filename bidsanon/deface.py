"""Anatomical MRI defacing with brain re-insertion.

The recipe is FieldTrip's (``ft_volumesegment`` -> ``imdilate`` -> ``ft_defacevolume`` ->
re-insert): find the brain, dilate it by a sphere of ``brain_margin_mm``, remove the face
(and the ears), and keep every voxel of the dilated brain exactly as it was. Three ways
to find the face:

``template``
    Affine registration (SimpleITK, Mattes mutual information, multi-resolution) of the
    image to the MNI152 head shipped in ``bidsanon/data/template``; the face, ear and
    brain masks defined there (``scripts/build_template_masks.py``) are mapped back.
``landmarks``
    A box in the head frame built from the sidecar's ``AnatomicalLandmarkCoordinates``
    (NAS, LPA, RPA), FieldTrip's ``cfg.rotate``/``cfg.scale``/``cfg.translate``.
``box``
    An explicit box in scanner or head coordinates.

Every method ends in the same brain protection, whose brain mask comes from the template
registration. All work is done on the on-disk (unscaled) voxel values, so voxels outside
the removed region are bit-identical and the header scaling is kept.
"""

from __future__ import annotations

import functools
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from . import nifti, schema
from .errors import InputError, PolicyError
from .records import Change, FileResult
from .schema import Key

TEMPLATE_DIR = Path(__file__).parent / "data" / "template"

#: Label bits of the template mask grid (one lookup maps all masks at once).
HEAD, BRAIN, FACE, EARS = 1, 2, 4, 8

#: MNI coordinates (mm) of the fiducials of the template head (fsaverage's fiducials
#: shipped with MNE; MNI305, within a few mm of MNI152). Used to start the registration
#: from an image's landmarks.
TEMPLATE_FIDUCIALS = {"NAS": (1.5, 85.1, -34.8), "LPA": (-80.6, -29.1, -41.3),
                      "RPA": (84.4, -28.5, -41.3)}

DEFAULT_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2",
                    "PDT2", "angio", "UNIT1", "MP2RAGE")
METHODS = ("auto", "template", "landmarks", "box")
_LANDMARK_NAMES = {"NAS": ("nas", "nasion", "nz"), "LPA": ("lpa", "left", "leftear", "lpf"),
                   "RPA": ("rpa", "right", "rightear", "rpf")}


def _three_numbers(value: Any) -> str | None:
    if len(value) != 3:
        return f"must have 3 numbers (x, y, z), got {len(value)}"
    return None


def _vector(default, doc, **kw) -> Key:
    return Key(list(default), doc, type=list, item=Key(0.0, "a number", type=float, **kw),
               check=_three_numbers)


POLICY: dict = {
    "enabled": Key(True, "Deface anatomical images whose suffix is listed in `suffixes`."),
    "suffixes": Key(list(DEFAULT_SUFFIXES),
                    "BIDS suffixes of the anatomical images to deface (every volume of a 4D "
                    "image gets the same mask). func/dwi are never defaced.",
                    item=Key("", "a BIDS suffix", type=str)),
    "method": Key("auto", "How the face is found: `template` (registration to the MNI152 "
                  "head), `landmarks` (box in the head frame of the sidecar's "
                  "AnatomicalLandmarkCoordinates), `box` (explicit box below), `auto` "
                  "(with landmarks: the landmark box plus the template masks when the "
                  "registration passes its check, else the box alone; without: "
                  "template).", choices=METHODS),
    "remove_ears": Key(True, "Also remove the outer ears (identifying in 3D renders), with "
                       "the template masks (methods template and auto)."),
    "brain_margin_mm": Key(5.0, "Radius (mm) of the sphere the brain mask is dilated by; "
                           "every voxel inside the dilated mask is kept exactly.",
                           min=0.0, max=30.0),
    "refine_brain": Key(True, "Grow the template brain mask into adjacent voxels of "
                        "brain-like intensity (within `refine_mm`), when the image's brain "
                        "and background intensities are well separated."),
    "refine_mm": Key(6.0, "How far (mm) the brain mask may grow by intensity.",
                     min=0.0, max=20.0),
    "fill": Key("value", "What the removed region becomes: `value` (fill_value) or `smooth` "
                "(the image smoothed with smooth_fwhm_mm, FieldTrip-style; keeps the "
                "head outline, weaker).", choices=("value", "smooth")),
    "fill_value": Key(0.0, "Value (in scaled units) written to removed voxels.", type=float),
    "smooth_fwhm_mm": Key(20.0, "FWHM (mm) of the smoothing for `fill: smooth`.",
                          min=1.0, max=100.0),
    "template": {
        "resolution_mm": Key(4.0, "Voxel size (mm) the registration runs at.",
                             min=2.0, max=8.0),
        "min_similarity": Key(0.10, "Smallest accepted entropy correlation coefficient "
                              "(0-1) between the template and the registered image; below "
                              "it the file fails (use method landmarks or box).",
                              min=0.0, max=1.0),
        "min_head_overlap": Key(0.85, "Smallest accepted Dice overlap of the template head "
                                "and the registered image's head (inside the image's field "
                                "of view).", min=0.0, max=1.0),
        "search_orientations": Key(True, "When the registration from the header's "
                                   "orientation fails its check, retry from the 23 other "
                                   "axis-aligned orientations (wrong or missing headers)."),
    },
    "landmarks": {
        "rotate": _vector((-45.0, 0.0, 0.0), "Rotation (degrees about the head frame's x, "
                          "y, z axes, applied in that order, about the box centre) of the "
                          "box removed by the landmarks method."),
        "scale": _vector((200.0, 150.0, 200.0), "Size (mm) of that box along its x, y, z "
                         "axes.", min=0.0),
        "translate": _vector((0.0, 120.0, -54.0), "Centre (mm) of that box in the head "
                             "frame (origin between the ears, x to RPA, y to NAS, z up)."),
    },
    "box": {
        "frame": Key("scanner", "Frame of the explicit box: `scanner` (the image's world "
                     "coordinates, mm) or `head` (the landmark head frame).",
                     choices=("scanner", "head")),
        "rotate": _vector((0.0, 0.0, 0.0), "Rotation (degrees about x, y, z) of the box."),
        "scale": _vector((0.0, 0.0, 0.0), "Size (mm) of the box; must be set for method "
                         "`box`.", min=0.0),
        "translate": _vector((0.0, 0.0, 0.0), "Centre (mm) of the box."),
    },
    "qc": {
        "enabled": Key(True, "Write QC images (private, next to the key) for every "
                       "defaced image."),
        "max_restored_ml": Key(40.0, "Flag an image in the report when the brain "
                               "re-insertion restored more than this volume (mL): the face "
                               "mask reached into the brain, check the QC images.",
                               min=0.0),
    },
}


@dataclass
class Registration:
    """An affine template registration and its quality numbers."""

    #: 4x4: image world (mm) -> template world (MNI mm)
    world_to_template: np.ndarray
    similarity: float  # entropy correlation coefficient, 0..1
    head_dice: float
    orientation: int = 0  # index of the starting orientation that won
    ok: bool = True


@dataclass
class DefaceResult:
    """What :func:`deface_image` returns.

    ``image`` is a new image of the input's class with the same dtype, affine and
    header scaling; ``removed`` the voxels set to the fill; ``protected`` the dilated
    brain mask (dilated around the region defacing acts on); ``restored_voxels`` how many
    voxels of the removal region were put back because they lie in ``protected``.
    """

    image: Any
    removed: np.ndarray
    protected: np.ndarray
    restored_voxels: int
    method: str
    #: voxels (3D positions) whose value actually changed (removed tissue, not air)
    changed_voxels: int = 0
    similarity: float = float("nan")
    head_dice: float = float("nan")
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    registration: Registration | None = None

    @property
    def removed_voxels(self) -> int:
        return int(self.removed.sum())

    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(abs(np.linalg.det(self.image.affine[:3, :3]))) / 1000.0


# --------------------------------------------------------------------------- policy

def policy_section(policy: dict | None) -> dict:
    """This module's section with every missing key filled from the defaults."""
    return schema.merge(schema.defaults(POLICY), policy or {})


def should_deface(suffix: str, policy_section: dict) -> bool:
    """Whether an anatomical image with this BIDS suffix is defaced."""
    sec = policy_section or {}
    if not sec.get("enabled", True):
        return False
    return suffix in sec.get("suffixes", DEFAULT_SUFFIXES)


# --------------------------------------------------------------------------- input

def load_image(path: str | Path):
    """Load a NIfTI (``.nii``/``.nii.gz``) or MGH (``.mgz``/``.mgh``) image.

    Raises :class:`InputError` naming the file when it is not a readable image.
    """
    path = Path(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for junk input
        raise InputError(f"not a readable NIfTI/MGH image ({type(exc).__name__}: "
                         f"{str(exc)[:120]})", path) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image, nib.MGHImage)):
        raise InputError(f"unsupported image type {type(img).__name__}; use NIfTI or MGH",
                         path)
    return img


def read_landmarks(sidecar: str | Path) -> dict[str, np.ndarray] | None:
    """NAS, LPA, RPA voxel coordinates from a sidecar's ``AnatomicalLandmarkCoordinates``.

    Returns None when the sidecar is missing or lacks any of the three.
    """
    sidecar = Path(sidecar)
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    coords = meta.get("AnatomicalLandmarkCoordinates") if isinstance(meta, dict) else None
    if not isinstance(coords, dict):
        return None
    return _pick_landmarks(coords)


def _pick_landmarks(coords: dict) -> dict[str, np.ndarray] | None:
    lower = {str(k).lower().replace("_", ""): v for k, v in coords.items()}
    out = {}
    for name, aliases in _LANDMARK_NAMES.items():
        for alias in (name.lower(),) + aliases:
            value = lower.get(alias)
            if value is not None:
                try:
                    arr = np.asarray(value, dtype=float).reshape(3)
                except (TypeError, ValueError):
                    return None
                if not np.all(np.isfinite(arr)):
                    return None
                out[name] = arr
                break
        else:
            return None
    return out


def sidecar_path(src: Path) -> Path:
    """The JSON sidecar next to an image (``.nii``/``.nii.gz``/``.mgz`` -> ``.json``)."""
    name = src.name
    for ext in (".nii.gz", ".nii", ".mgz", ".mgh"):
        if name.endswith(ext):
            return src.with_name(name[: -len(ext)] + ".json")
    return src.with_suffix(".json")


def raw_array(img) -> tuple[np.ndarray, float, float]:
    """The on-disk voxel values and their scaling (slope, intercept)."""
    obj = img.dataobj
    if nib.is_proxy(obj) and hasattr(obj, "get_unscaled"):
        slope = float(getattr(obj, "slope", 1.0))
        inter = float(getattr(obj, "inter", 0.0))
        return np.asanyarray(obj.get_unscaled()), slope, inter
    return np.asanyarray(obj), 1.0, 0.0


def _check_image(img, raw: np.ndarray, name: str) -> None:
    if raw.ndim not in (3, 4) or (raw.ndim == 4 and raw.shape[3] == 0):
        raise InputError(f"image has {raw.ndim} dimensions {tuple(raw.shape)}; defacing "
                         "needs a 3D or 4D volume", name)
    if min(raw.shape[:3]) < 8:
        raise InputError(f"image is too small to deface ({tuple(raw.shape)}); is it a "
                         "single slice or a localizer?", name)
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-6:
        raise InputError("image affine is singular or not finite; fix the header", name)
    first = raw if raw.ndim == 3 else raw[..., 0]
    if first.dtype.kind == "f" and not np.isfinite(first).any():
        raise InputError("image holds no finite values", name)
    if first.size == 0 or np.nanmax(first) == np.nanmin(first):
        raise InputError("image is empty (every voxel has the same value)", name)


# --------------------------------------------------------------------------- geometry

def _corners(shape) -> np.ndarray:
    return np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                     for k in (0, shape[2] - 1)], dtype=float)


def _apply(aff: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to (N, 3) points."""
    return pts @ aff[:3, :3].T + aff[:3, 3]


def _downsample(vol: np.ndarray, affine: np.ndarray, target_mm: float):
    """Block-average ``vol`` by integer factors towards ``target_mm`` voxels (cheap
    anti-aliasing before the resampling to the registration grid)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    f = np.maximum(1, np.floor(target_mm / zooms / 1.5)).astype(int)
    if np.all(f == 1):
        return vol.astype(np.float32, copy=False), affine
    n = np.array(vol.shape[:3]) // f
    v = vol[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]].astype(np.float32)
    v = v.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    scale = np.diag([*f, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = (f - 1) / 2.0
    return v, affine @ shift @ scale


def world_grid(vol: np.ndarray, affine: np.ndarray, res: float, bounds=None,
               order: int = 1, cval: float = 0.0):
    """Resample ``vol`` onto a world-aligned (RAS) grid of ``res`` mm voxels.

    ``bounds`` is ((xmin, ymin, zmin), (xmax, ymax, zmax)) in mm; by default the world
    bounding box of the volume. Returns the volume and its voxel -> world affine.
    """
    if bounds is None:
        w = _apply(affine, _corners(vol.shape))
        bounds = (w.min(0), w.max(0))
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    shape = tuple(int(np.floor((h - l) / res)) + 1 for l, h in zip(lo, hi))
    grid_aff = np.diag([res, res, res, 1.0])
    grid_aff[:3, 3] = lo
    m = np.linalg.inv(affine) @ grid_aff  # grid voxel -> source voxel
    out = ndi.affine_transform(vol.astype(np.float32, copy=False), m[:3, :3], m[:3, 3],
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
    """Intensity above which a voxel belongs to the head (half Otsu's threshold)."""
    v = vol[np.isfinite(vol)]
    v = v[v > np.percentile(v, 0.5)] if v.size else v
    if v.size == 0:
        return 0.0
    hi = np.percentile(v, 99.5)
    return 0.5 * _otsu(np.clip(v, None, hi))


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


# --------------------------------------------------------------------------- template

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
    small, aff = _downsample(data, img.affine, res)
    vol, grid = world_grid(small, aff, res)
    masks = {}
    for name in ("head", "brain", "face", "ear"):
        m = nib.load(TEMPLATE_DIR / f"{name}_mask.nii.gz")
        masks[name] = np.asanyarray(m.dataobj) > 0
        labels_affine = m.affine
    labels = (masks["head"] * HEAD | masks["brain"] * BRAIN | masks["face"] * FACE
              | masks["ear"] * EARS).astype(np.uint8)
    head_small, _ = world_grid(masks["head"].astype(np.float32), labels_affine, res,
                               bounds=(grid[:3, 3], _apply(grid, np.array([vol.shape]) - 1)[0]))
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
    small, small_aff = _downsample(vol, affine, res)
    moving, moving_aff = world_grid(small, small_aff, res)
    mhead = head_mask(moving)
    if mhead.sum() < 50:
        raise InputError("no head found in the image (too little signal above background)")
    c_mov = _apply(moving_aff, np.argwhere(mhead).mean(0)[None])[0]
    c_tmp = _apply(tmpl.affine, np.argwhere(tmpl.head).mean(0)[None])[0]

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
        reg.SetNumberOfThreads(1)  # deterministic sums, and one core as budgeted
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.5, 12345)
        reg.SetMetricFixedMask(fmask)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
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
        reg = method(([2, 1], [2.0 * tmpl.res, 0.0]))
    reg.SetInitialTransform(sim, inPlace=True)
    reg.Execute(fixed, mov)
    if quick:
        return _affine_to_matrix(sim)

    aff = sitk.AffineTransform(3)
    aff.SetCenter(sim.GetCenter())
    aff.SetMatrix(sim.GetMatrix())
    aff.SetTranslation(sim.GetTranslation())
    reg = method(([1], [0.0]))
    reg.SetInitialTransform(aff, inPlace=True)
    reg.Execute(fixed, mov)
    return _affine_to_matrix(aff)


def lookup_labels(shape, affine: np.ndarray, world_to_template: np.ndarray,
                  tmpl: Template) -> np.ndarray:
    """Template label bits at every image voxel (nearest neighbour; 0 outside)."""
    m = np.linalg.inv(tmpl.labels_affine) @ world_to_template @ affine
    lab = tmpl.labels
    lim = np.array(lab.shape) - 1
    out = np.zeros(shape[:3], dtype=np.uint8)
    j, k = np.meshgrid(np.arange(shape[1], dtype=np.float32),
                       np.arange(shape[2], dtype=np.float32), indexing="ij")
    base = [m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3)]
    for i in range(shape[0]):
        idx = [np.rint(base[r] + m[r, 0] * i).astype(np.int32) for r in range(3)]
        ok = np.ones(j.shape, dtype=bool)
        for r in range(3):
            ok &= (idx[r] >= 0) & (idx[r] <= lim[r])
        sl = out[i]
        sl[ok] = lab[idx[0][ok], idx[1][ok], idx[2][ok]]
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


# --------------------------------------------------------------------------- protection

def _bbox(mask: np.ndarray, pad) -> tuple[slice, ...] | None:
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


# --------------------------------------------------------------------------- deface

def _fill_raw(raw: np.ndarray, value: float, slope: float, inter: float):
    v = (value - inter) / (slope if slope else 1.0)
    if raw.dtype.kind in "iu":
        info = np.iinfo(raw.dtype)
        v = min(max(round(v), info.min), info.max)
    return raw.dtype.type(v)


def _smoothed(raw: np.ndarray, removed: np.ndarray, zooms, fwhm: float) -> np.ndarray:
    sigma = fwhm / 2.3548 / np.asarray(zooms, float)
    box = _bbox(removed, np.ceil(3 * sigma).astype(int))
    out = []
    vols = [raw] if raw.ndim == 3 else [raw[..., t] for t in range(raw.shape[3])]
    for v in vols:
        s = ndi.gaussian_filter(v[box].astype(np.float32), sigma)
        out.append(s[removed[box]])
    vals = np.stack(out, axis=-1) if raw.ndim == 4 else out[0]
    if raw.dtype.kind in "iu":
        info = np.iinfo(raw.dtype)
        vals = np.clip(np.rint(vals), info.min, info.max)
    return box, vals.astype(raw.dtype)


def _new_image(img, raw: np.ndarray, slope: float, inter: float):
    hdr = img.header.copy()
    new = type(img)(raw, img.affine, hdr)
    if isinstance(new, (nib.Nifti1Image, nib.Nifti2Image)):
        new.header.set_slope_inter(slope if slope != 1.0 or inter != 0.0 else None,
                                   inter if slope != 1.0 or inter != 0.0 else None)
        sform, scode = img.header.get_sform(coded=True)
        qform, qcode = img.header.get_qform(coded=True)
        if sform is not None:
            new.header.set_sform(sform, int(scode))
        if qform is not None:
            new.header.set_qform(qform, int(qcode))
    return new


def registration_volume(raw: np.ndarray) -> np.ndarray:
    """The 3D volume registration and refinement look at (mean over time for 4D)."""
    if raw.ndim == 3:
        return raw
    if raw.shape[3] == 1:
        return raw[..., 0]
    return raw.astype(np.float32).mean(axis=3)


def deface_image(img, *, method: str = "auto", landmarks: dict | None = None,
                 policy: dict | None = None, name: str = "image") -> DefaceResult:
    """Deface a nibabel image (NIfTI-1/2 or MGH, 3D or 4D); return a :class:`DefaceResult`.

    Parameters
    ----------
    img : nibabel image
        The input; never modified.
    method : str
        ``auto`` (landmarks if given, else template), ``template``, ``landmarks`` or
        ``box``; overrides ``policy["method"]`` unless ``"auto"`` is passed.
    landmarks : dict | None
        ``{"NAS": (i, j, k), "LPA": ..., "RPA": ...}`` in voxel coordinates.
    policy : dict | None
        The ``anat.deface`` policy section (missing keys take their defaults).
    name : str
        Name used in error messages.
    """
    t0 = time.perf_counter()
    sec = policy_section(policy)
    if method == "auto":
        method = sec["method"]
    if method not in METHODS:
        raise PolicyError(f"`anat.deface.method` must be one of {', '.join(METHODS)}; "
                          f"got `{method}`")
    if landmarks is not None and not isinstance(landmarks, dict):
        raise InputError("landmarks must be a mapping NAS/LPA/RPA -> voxel coordinates",
                         name)
    marks = _pick_landmarks(landmarks) if landmarks else None
    if landmarks and marks is None:
        raise InputError("landmarks need NAS, LPA and RPA with three numbers each", name)
    # auto with landmarks: the landmark box and, when the registration passes its check,
    # the template's face (and ear) masks as well; either alone leaves more face-like
    # relief for a detector than the two together
    combine = method == "auto" and marks is not None
    if method == "auto":
        method = "landmarks" if marks is not None else "template"
    if method == "landmarks" and marks is None:
        raise InputError("method `landmarks` needs NAS, LPA and RPA in the sidecar's "
                         "AnatomicalLandmarkCoordinates; use method `template`", name)

    try:
        raw, slope, inter = raw_array(img)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(f"cannot read the voxel data ({type(exc).__name__}: "
                         f"{str(exc)[:100]}); is the file truncated?", name) from None
    _check_image(img, raw, name)
    affine = img.affine.astype(float)
    shape = raw.shape[:3]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    vol = registration_volume(raw)
    world_marks = ({k: _apply(affine, v[None])[0] for k, v in marks.items()}
                   if marks is not None else None)
    warnings: list[str] = []

    tsec = sec["template"]
    init = landmark_init(world_marks) if world_marks is not None else None
    try:
        reg = register(vol, affine, res=float(tsec["resolution_mm"]),
                       min_similarity=float(tsec["min_similarity"]),
                       min_head_overlap=float(tsec["min_head_overlap"]),
                       search_orientations=bool(tsec["search_orientations"]),
                       init_world_to_template=init)
    except InputError as exc:
        raise InputError(exc.message + "; use method `box` with an explicit box", name) \
            from None
    tmpl = load_template(float(tsec["resolution_mm"]))
    if not reg.ok:
        msg = (f"template registration failed its quality check (similarity "
               f"{reg.similarity:.2f}, minimum {tsec['min_similarity']}; head overlap "
               f"{reg.head_dice:.2f}, minimum {tsec['min_head_overlap']})")
        if method == "template":
            raise InputError(msg + "; check the image, or use method `landmarks` (with "
                             "AnatomicalLandmarkCoordinates) or `box`", name)
        warnings.append(msg + "; the brain mask is the head eroded by 10 mm instead")
    labels = lookup_labels(shape, affine, reg.world_to_template, tmpl)
    if reg.ok:
        brain = (labels & BRAIN) > 0
    else:
        dist = ndi.distance_transform_edt(head_mask(vol.astype(np.float32)), sampling=zooms)
        brain = dist > 10.0

    template_masks = (labels & FACE) > 0
    if sec["remove_ears"]:
        template_masks |= (labels & EARS) > 0
    if method == "template":
        candidate = template_masks
    elif method == "landmarks":
        lsec = sec["landmarks"]
        candidate = box_mask(shape, affine, head_frame(world_marks), lsec["rotate"],
                             lsec["scale"], lsec["translate"])
        if combine and reg.ok:
            candidate |= template_masks
            method = "landmarks+template"
    else:
        bsec = sec["box"]
        if min(bsec["scale"]) <= 0:
            raise PolicyError("method `box` needs `anat.deface.box.scale` (three sizes in "
                              "mm, all > 0)")
        if bsec["frame"] == "head":
            if world_marks is None:
                raise InputError("box frame `head` needs NAS, LPA and RPA landmarks", name)
            frame = head_frame(world_marks)
        else:
            frame = np.eye(4)
        candidate = box_mask(shape, affine, frame, bsec["rotate"], bsec["scale"],
                             bsec["translate"])

    refine = float(sec["refine_mm"]) if sec["refine_brain"] else 0.0
    removed, protected, restored = protect(candidate, brain, vol, zooms,
                                           float(sec["brain_margin_mm"]), refine)
    out = raw.copy()
    if sec["fill"] == "smooth" and removed.any():
        box, vals = _smoothed(raw, removed, zooms, float(sec["smooth_fwhm_mm"]))
        sub = out[box]
        sub[removed[box]] = vals
    else:
        out[removed] = _fill_raw(raw, float(sec["fill_value"]), slope, inter)
    diff = out[removed] != raw[removed]
    changed = int(diff.any(axis=-1).sum() if diff.ndim == 2 else diff.sum())
    new = _new_image(img, out, slope, inter)
    return DefaceResult(image=new, removed=removed, protected=protected,
                        restored_voxels=restored, method=method, changed_voxels=changed,
                        similarity=reg.similarity, head_dice=reg.head_dice,
                        seconds=time.perf_counter() - t0, warnings=warnings,
                        registration=reg)


# --------------------------------------------------------------------------- handler

def handle(src: Path, dst: Path, ctx) -> FileResult:
    """Deface one anatomical image of the dataset (runner contract)."""
    src, dst = Path(src), Path(dst)
    sec = policy_section(ctx.section("anat", "deface"))
    img = load_image(src)
    marks = read_landmarks(sidecar_path(src))
    try:
        res = deface_image(img, method=sec["method"], landmarks=marks, policy=sec,
                           name=str(src))
    except InputError as exc:
        if exc.path is None:
            exc = InputError(exc.message, src)
        raise exc from None
    out = res.image
    changes: list[Change] = []
    if not isinstance(out, (nib.Nifti1Image, nib.Nifti2Image)):
        out = nib.Nifti1Image(np.asanyarray(out.dataobj), out.affine)
    changes.extend(nifti.scrub_image(out))
    tmp = dst.with_name(dst.name + ".partial")
    try:
        nifti.save_image(out, tmp)
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    ml = res.voxel_ml()
    changes.append(Change(field="voxels.face", action="remove", location=res.method,
                          old=None, new=f"{res.removed_voxels} voxels set to "
                          f"{sec['fill'] if sec['fill'] == 'smooth' else sec['fill_value']}"))
    result = FileResult(changes=changes, warnings=list(res.warnings))
    result.metrics = {"restored_voxels": float(res.restored_voxels),
                      "removed_voxels": float(res.removed_voxels),
                      "changed_voxels": float(res.changed_voxels),
                      "removed_ml": res.changed_voxels * ml,
                      "restored_ml": res.restored_voxels * ml,
                      "similarity": float(res.similarity),
                      "head_overlap": float(res.head_dice),
                      "seconds": float(res.seconds)}
    if res.restored_voxels * ml > float(sec["qc"]["max_restored_ml"]):
        result.warnings.append(
            f"brain re-insertion restored {res.restored_voxels * ml:.1f} mL (more than "
            f"{sec['qc']['max_restored_ml']} mL): the face mask reached the brain; "
            "check the QC images")
    if sec["qc"]["enabled"] and ctx.qc_dir is not None:
        from . import qc

        stem = ctx.rename(src.name).split(".")[0]
        result.qc.update(qc.write_qc(img, res, lambda n: ctx.qc_path(f"{stem}_{n}")))
    return result
