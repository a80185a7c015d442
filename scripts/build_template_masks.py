#!/usr/bin/env python
"""Build the template-space masks that ``bidsanon.deface`` maps onto each image.

Run from the repository root::

    python scripts/build_template_masks.py [--preview DIR]

Inputs: ``bidsanon/data/template/MNI152_T1_2mm.nii.gz`` (FSL's MNI152 whole-head
template, see NOTICE.md) and nilearn's packaged MNI152 brain mask. Outputs, in the same
folder, uint8 masks on one grid that extends the template's field of view downwards and
forwards (the template stops at the nose; subjects' chins and noses lie below/in front):

``head_mask.nii.gz``
    The template head (intensity threshold, holes filled, largest component). Used to
    initialise and check the registration.
``brain_mask.nii.gz``
    nilearn's MNI152 brain mask (ICBM 2009a), resampled to this grid and dilated by
    ``BRAIN_PAD_MM`` to absorb the small differences between the two MNI152 versions.
``face_mask.nii.gz``
    Everything anterior-inferior of a plane that contains the left-right axis and passes
    through ``BROW`` and ``THROAT`` (MNI coordinates, mm), minus the brain mask dilated by
    ``CLEARANCE_MM``. This takes the eyes, nose, mouth, cheeks and chin.
``ear_mask.nii.gz``
    Per side, the box ``EAR_BOX`` (lateral of ``|x| >= EAR_MIN_X``) minus the brain mask
    dilated by ``EAR_CLEARANCE_MM`` (brain + skull + scalp), which leaves the pinna.

Every number that shapes a mask is a named constant below, so a reviewer can check them
against the preview images (``--preview``) and rebuild.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from bidsanon.deface.registration import FACE_PLANE

HERE = Path(__file__).resolve().parent.parent / "bidsanon" / "data" / "template"
TEMPLATE = HERE / "MNI152_T1_2mm.nii.gz"

VOXEL_MM = 2.0
#: Extent of the mask grid in MNI mm (x, y, z): min, max; far beyond the template (which covers
#: x -90..90, y -126..90, z -72..108) so that chins, noses and necks of tilted heads fall inside.
GRID_MIN = (-110.0, -150.0, -260.0)
GRID_MAX = (110.0, 200.0, 120.0)

#: Head: voxels above this fraction of the template's Otsu threshold.
HEAD_THRESHOLD = 0.5
BRAIN_PAD_MM = 6.0

#: Face plane: through the brow (in front of the frontal pole, just above the
#: eyebrows) and the throat (below the chin, in front of the spine); the face side is
#: the one that holds NOSE_SIDE.
BROW, THROAT, NOSE_SIDE = (FACE_PLANE[k] for k in ("brow", "throat", "nose_side"))
CLEARANCE_MM = 6.0

#: Ear box, per side (|x| from EAR_MIN_X to the grid edge), y and z ranges in mm.
EAR_MIN_X = 50.0
EAR_Y = (-60.0, 20.0)
EAR_Z = (-70.0, 20.0)
EAR_CLEARANCE_MM = 15.0


def grid_affine() -> np.ndarray:
    """RAS affine of the mask grid (voxel -> MNI mm)."""
    aff = np.eye(4)
    aff[:3, :3] *= VOXEL_MM
    aff[:3, 3] = GRID_MIN
    return aff


def grid_shape() -> tuple[int, int, int]:
    return tuple(int(round((hi - lo) / VOXEL_MM)) + 1 for lo, hi in zip(GRID_MIN, GRID_MAX))


def world_coords(shape, aff) -> np.ndarray:
    """(3, nx, ny, nz) MNI coordinates of every voxel of the grid."""
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    return (aff[:3, :3] @ ijk + aff[:3, 3:]).reshape((3,) + tuple(shape))


def resample_nearest(img: nib.Nifti1Image, shape, aff) -> np.ndarray:
    """Nearest-neighbour resampling of ``img`` onto the mask grid (0 outside)."""
    xyz = world_coords(shape, aff).reshape(3, -1)
    inv = np.linalg.inv(img.affine)
    vox = inv[:3, :3] @ xyz + inv[:3, 3:]
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return ndi.map_coordinates(data, vox, order=0, cval=0).reshape(shape)


def largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def dilate_mm(mask: np.ndarray, mm: float) -> np.ndarray:
    """Dilation by a sphere of ``mm`` (Euclidean distance on the 2 mm grid)."""
    if mm <= 0:
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=VOXEL_MM) <= mm


def head_mask(template: nib.Nifti1Image, shape, aff) -> np.ndarray:
    from skimage.filters import threshold_otsu

    data = np.asanyarray(template.dataobj).astype(np.float32)
    head = data > HEAD_THRESHOLD * threshold_otsu(data)
    head = largest_component(head)
    head = ndi.binary_closing(head, iterations=2)
    for k in range(head.shape[2]):  # fill the mouth, sinuses and ear canals slice by slice
        head[:, :, k] = ndi.binary_fill_holes(head[:, :, k])
    head = ndi.binary_fill_holes(head)
    tmp = nib.Nifti1Image(head.astype(np.uint8), template.affine)
    return resample_nearest(tmp, shape, aff) > 0


def brain_mask(shape, aff) -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    brain = resample_nearest(load_mni152_brain_mask(resolution=1), shape, aff) > 0
    brain = ndi.binary_fill_holes(brain)
    return dilate_mm(brain, BRAIN_PAD_MM)


def face_mask(brain: np.ndarray, shape, aff) -> np.ndarray:
    xyz = world_coords(shape, aff)
    a, b, c = (np.array(p) for p in (BROW, THROAT, NOSE_SIDE))
    normal = np.cross(b - a, (1.0, 0.0, 0.0))
    if np.dot(c - a, normal) < 0:
        normal = -normal
    side = np.tensordot(normal, xyz - a[:, None, None, None], axes=1)
    return (side > 0) & ~dilate_mm(brain, CLEARANCE_MM)


def ear_mask(brain: np.ndarray, shape, aff) -> np.ndarray:
    x, y, z = world_coords(shape, aff)
    box = ((np.abs(x) >= EAR_MIN_X) & (y >= EAR_Y[0]) & (y <= EAR_Y[1])
           & (z >= EAR_Z[0]) & (z <= EAR_Z[1]))
    return box & ~dilate_mm(brain, EAR_CLEARANCE_MM)


def save(mask: np.ndarray, aff: np.ndarray, name: str) -> None:
    img = nib.Nifti1Image(mask.astype(np.uint8), aff)
    img.header.set_qform(aff, code=4)  # MNI152
    img.header.set_sform(aff, code=4)
    img.header["descrip"] = b"bidsanon template mask"
    from bidsanon.formats.nifti import save_image

    save_image(img, HERE / name)


def preview(out: Path, template, masks: dict[str, np.ndarray], aff) -> None:
    """Mid-sagittal, axial and coronal slices with the masks outlined (for review)."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    shape = masks["head"].shape
    t = resample_nearest(template, shape, aff)
    t = np.clip(t / np.percentile(t, 99.5) * 255, 0, 255)
    colors = {"head": (80, 80, 255), "brain": (255, 60, 60), "face": (60, 255, 60),
              "ears": (255, 200, 0)}
    inv = np.linalg.inv(aff)
    i0, j0, k0 = (inv[:3, :3] @ np.array([0.0, 20.0, -30.0]) + inv[:3, 3]).round().astype(int)
    i_ear = int(round((inv[0, 0] * 70 + inv[0, 3])))
    cuts = {"sagittal": lambda v: v[shape[0] // 2].T[::-1],
            "sagittal_ear": lambda v: v[i_ear].T[::-1],
            "coronal": lambda v: v[:, j0].T[::-1, ::-1],
            "axial": lambda v: v[:, :, k0].T[::-1, ::-1]}
    out.mkdir(parents=True, exist_ok=True)
    for name, cut in cuts.items():
        rgb = np.repeat(cut(t)[..., None], 3, axis=-1)
        for key, color in colors.items():
            rgb[find_boundaries(cut(masks[key]), mode="inner")] = color
        Image.fromarray(rgb.astype(np.uint8)).resize(
            (rgb.shape[1] * 3, rgb.shape[0] * 3), Image.NEAREST).save(out / f"masks_{name}.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preview", type=Path, help="folder for review PNGs")
    args = parser.parse_args(argv)
    template = nib.load(TEMPLATE)
    shape, aff = grid_shape(), grid_affine()
    head = head_mask(template, shape, aff)
    brain = brain_mask(shape, aff)
    face = face_mask(brain, shape, aff)
    ears = ear_mask(brain, shape, aff)
    masks = {"head": head, "brain": brain, "face": face, "ears": ears}
    for name, mask in masks.items():
        save(mask, aff, f"{'ear' if name == 'ears' else name}_mask.nii.gz")
        print(f"{name:6s} {int(mask.sum()):8d} voxels ({mask.sum() * VOXEL_MM ** 3 / 1000:.0f} mL)")
    if args.preview:
        preview(args.preview, template, masks, aff)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
