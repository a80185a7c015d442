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

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from bidsanon.errors import InputError, PolicyError
from bidsanon.deface.registration import Registration, BRAIN, EARS, FACE, face_plane, register_via, landmark_init, load_template, lookup_labels, register, register_head_shape, uses_intensity_registration, SHAPE_SIMILARITY_SHARE
from bidsanon.deface.policy import METHODS, policy_section
from bidsanon.deface.image import check_image, pick_landmarks, raw_array
from bidsanon.deface.geometry import apply_affine, box_mask, head_frame, head_mask, head_threshold
from bidsanon.deface.protection import bbox, block_any, dilate_ball, protect
from bidsanon.deface.surface import ear_patch, new_surface, ramp_width, touching


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
    #: the voxels of the cover over the cut (:func:`~bidsanon.deface.surface.new_surface`)
    cover: np.ndarray | None = None
    #: seconds (wall) of each stage: ``read`` (the voxels), ``registration``, ``masks``
    #: (template labels, ears, brain protection), ``cover`` (the new surface, the fill)
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def changed_mask(self) -> np.ndarray:
        """Every voxel defacing wrote: the removed region and the cover over the cut."""
        return self.removed if self.cover is None else self.removed | self.cover

    @property
    def removed_voxels(self) -> int:
        return int(self.removed.sum())

    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(abs(np.linalg.det(self.image.affine[:3, :3]))) / 1000.0




# --------------------------------------------------------------------------- deface

def _fill_raw(raw: np.ndarray, value: float, slope: float, inter: float):
    v = (value - inter) / (slope if slope else 1.0)
    if raw.dtype.kind in "iu":
        info = np.iinfo(raw.dtype)
        v = min(max(round(v), info.min), info.max)
    return raw.dtype.type(v)


def _smoothed(raw: np.ndarray, removed: np.ndarray, zooms, fwhm: float) -> np.ndarray:
    sigma = fwhm / 2.3548 / np.asarray(zooms, float)
    box = bbox(removed, np.ceil(3 * sigma).astype(int))
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


def _via_reference(vol, affine, reference, knobs: dict, search: bool):
    """The registration through the session's T1w (``reference``), or None when the T1w
    cannot be placed or the rigid step fails its check."""
    try:
        ref_raw, _, _ = raw_array(reference)
    except (EOFError, OSError, ValueError, zlib.error):
        return None
    ref_vol = registration_volume(ref_raw).astype(np.float32)
    ref_aff = reference.affine.astype(float)
    ref_reg = register(ref_vol, ref_aff, **knobs, search_orientations=search)
    if not ref_reg.ok:
        return None
    via = register_via(vol.astype(np.float32), affine, ref_vol, ref_aff, ref_reg, **knobs)
    return via if via.ok else None


def deface_image(img, *, method: str = "auto", landmarks: dict | None = None,
                 policy: dict | None = None, name: str = "image",
                 suffix: str | None = None, reference=None) -> DefaceResult:
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
    suffix : str | None
        The image's BIDS suffix: T1-weighted ones (and ``None``) are registered on their
        intensities, every other contrast (T2w, PDw, FLAIR, angio, ...) on the shape of
        the head (:func:`~bidsanon.deface.registration.register_head_shape`).
    reference : nibabel image | None
        For those other contrasts: the same session's T1w. It is registered to the
        template as its own defacing does (deterministic, so the same transform) and the
        image rigidly to it (:func:`~bidsanon.deface.registration.register_via`); when
        either fails its check, the head-shape registration is used, with a warning.

    Returns
    -------
    DefaceResult
        The defaced image (same class, dtype, affine and scaling), the removed and
        protected masks, and the registration's quality numbers.
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
    marks = pick_landmarks(landmarks) if landmarks else None
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
    check_image(img, raw, name)
    stages: dict[str, float] = {}

    def lap(stage: str) -> None:  # the seconds since the last lap (or the start)
        stages[stage] = time.perf_counter() - t0 - sum(stages.values())
    lap("read")
    affine = img.affine.astype(float)
    shape = raw.shape[:3]
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    vol = registration_volume(raw)
    world_marks = ({k: apply_affine(affine, v[None])[0] for k, v in marks.items()}
                   if marks is not None else None)
    warnings: list[str] = []

    tsec = sec["template"]
    init = landmark_init(world_marks) if world_marks is not None else None
    try:
        how = register if uses_intensity_registration(suffix) else register_head_shape
        knobs = dict(res=float(tsec["resolution_mm"]),
                     min_similarity=float(tsec["min_similarity"]),
                     min_head_overlap=float(tsec["min_head_overlap"]))
        reg = None
        if reference is not None and how is not register:
            reg = _via_reference(vol, affine, reference, knobs,
                                 bool(tsec["search_orientations"]))
            if reg is None:
                warnings.append("the session's T1w could not place this image (its own "
                                "or the rigid registration failed its check); "
                                "registered on the head's shape instead")
        if reg is None:
            reg = how(vol, affine, **knobs,
                      search_orientations=bool(tsec["search_orientations"]),
                      init_world_to_template=init)
    except InputError as exc:
        raise InputError(exc.message + "; use method `box` with an explicit box", name) \
            from None
    lap("registration")
    tmpl = load_template(float(tsec["resolution_mm"]))
    if not reg.ok:
        min_sim = float(tsec["min_similarity"]) * (
            1.0 if how is register else SHAPE_SIMILARITY_SHARE)
        msg = (f"template registration failed its quality check (similarity "
               f"{reg.similarity:.2f}, minimum {min_sim:g}; head overlap "
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

    thr = head_threshold(vol[::2, ::2, ::2])  # a sample: the percentiles barely move
    ears = np.zeros(shape, dtype=bool)
    ear_fills: list[tuple[np.ndarray, float]] = []
    if sec["remove_ears"] and method != "box" and (reg.ok or method == "template"):
        axis = lateral_axis(reg.world_to_template @ affine)
        centre = _centre_along(brain, axis)
        for side in ear_sides(labels, zooms):
            outward = 1 if _centre_along(side, axis) > centre else -1
            rem, fill, value = ear_patch(vol, side, axis, outward, zooms, thr,
                                         float(sec["ear_margin_mm"]))
            ears |= rem & ~candidate
            ear_fills.append((fill & ~candidate, value))
        candidate |= ears
    refine = float(sec["refine_mm"]) if sec["refine_brain"] else 0.0
    # the intensity growth stays clear of the template's face region by more than the
    # margin, or the margin carries it onto the eyelids (T1w orbital fat is brain-like)
    no_growth = (dilate_ball(template_masks, NO_GROWTH_MM, zooms)
                 if reg.ok and refine > 0 else None)
    removed, protected, restored = protect(candidate, brain, vol, zooms,
                                           float(sec["brain_margin_mm"]), refine,
                                           reach_mm=ramp_width(zooms), no_growth=no_growth)
    lap("masks")
    layer = np.zeros(shape, dtype=bool)
    if sec["cover"] and sec["fill"] == "value" and reg.ok and method != "box":
        fill_raw = float(_fill_raw(raw, float(sec["fill_value"]), slope, inter))
        # where a pinna was, the scalp is the surface: the cover is the face's only
        layer, values = new_surface(vol, removed & ~ears, protected, affine,
                                    face_plane(reg.world_to_template), thr, fill=fill_raw)
        removed = removed & ~layer
    for i, (fill, value) in enumerate(ear_fills):
        # kept voxels are never written, and each covered pit adjoins the removed pinna
        # (what the read-back verification accepts as part of the defacing)
        ear_fills[i] = (touching(fill & ~protected & ~removed & ~layer, removed & ears),
                        value)
    out = raw.copy()
    if sec["fill"] == "smooth" and removed.any():
        box, vals = _smoothed(raw, removed, zooms, float(sec["smooth_fwhm_mm"]))
        sub = out[box]
        sub[removed[box]] = vals
    else:
        out[removed] = _fill_raw(raw, float(sec["fill_value"]), slope, inter)
    if layer.any():
        if raw.dtype.kind in "iu":
            info = np.iinfo(raw.dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        values = values.astype(raw.dtype)
        out[layer] = values[:, None] if raw.ndim == 4 else values
    for fill, value in ear_fills:
        if fill.any():
            out[fill] = _fill_raw(raw, float(value), 1.0, 0.0)  # vol is in raw units
            layer = layer | fill
    touched = removed | layer
    diff = out[touched] != raw[touched]
    changed = int(diff.any(axis=-1).sum() if diff.ndim == 2 else diff.sum())
    new = _new_image(img, out, slope, inter)
    lap("cover")
    return DefaceResult(image=new, removed=removed, protected=protected,
                        restored_voxels=restored, method=method, changed_voxels=changed,
                        similarity=reg.similarity, head_dice=reg.head_dice,
                        seconds=time.perf_counter() - t0, warnings=warnings,
                        registration=reg, cover=layer, stages=stages)


#: How far (mm) beyond the template's face region the brain refinement may not grow.
NO_GROWTH_MM = 7.0


def ear_sides(labels: np.ndarray, zooms) -> list[np.ndarray]:
    """The template's ear mask on the image grid, one mask per side (the two largest
    parts, found on a ~4 mm grid)."""
    ears = (labels & EARS) > 0
    f = np.maximum(1, np.floor(4.0 / np.asarray(zooms, float))).astype(int)
    lab, n = ndi.label(block_any(ears, f))
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    out = []
    for k in np.argsort(sizes)[::-1][:2]:
        small = bbox(lab == k + 1, (0, 0, 0))
        box = tuple(slice(sl.start * fa, min(sl.stop * fa, n_ax))
                    for sl, fa, n_ax in zip(small, f, ears.shape))
        side = np.zeros(ears.shape, dtype=bool)
        side[box] = ears[box]
        out.append(side)
    return out


def lateral_axis(voxel_to_template: np.ndarray) -> int:
    """The voxel axis closest to the template's left-right axis."""
    m = np.asarray(voxel_to_template, float)[:3, :3]
    return int(np.argmax(np.abs(m[0]) / np.maximum(np.linalg.norm(m, axis=0), 1e-12)))


def _centre_along(mask: np.ndarray, axis: int) -> float:
    hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
    return float(hit.mean()) if hit.size else mask.shape[axis] / 2.0


