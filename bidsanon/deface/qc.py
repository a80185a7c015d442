"""QC pictures of a defaced image.

For every defaced image: mid-sagittal and axial slices before and after, with the removed
region (red) and the protected brain mask (cyan) outlined, and a front render of the head
after defacing. Pictures of the original show the face: they are private and go next to
the key (``ctx.qc_path``), never into the output dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

REMOVED_RGB = (255, 40, 40)
PROTECTED_RGB = (0, 220, 255)
#: The new surface written over the cut and the ears (:mod:`bidsanon.deface.surface`).
COVER_RGB = (255, 210, 0)
TARGET_MM = 1.0  # slice pixels are resampled to this size in world space


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask)


def _plane(vol: np.ndarray, aff: np.ndarray, origin, u, v, nu: int, nv: int, order: int,
           res: float) -> np.ndarray:
    """Sample ``vol`` on the plane origin + i*res*u + j*res*v (rows i, columns j).

    ``vol`` is float32 (intensities) or uint8 (a mask, ``order=0``: its own values),
    converted once by the caller, not here for each plane."""
    ii, jj = np.mgrid[0:nu, 0:nv].astype(np.float64)
    pts = (np.asarray(origin, float)[:, None, None] + res * (ii * np.asarray(u)[:, None, None]
                                                           + jj * np.asarray(v)[:, None, None]))
    inv = np.linalg.inv(aff)
    vox = np.tensordot(inv[:3, :3], pts, axes=1) + inv[:3, 3][:, None, None]
    return ndi.map_coordinates(vol, vox, order=order, cval=0.0)


def slice_panels(img, new_img, removed: np.ndarray, protected: np.ndarray,
                 res: float = TARGET_MM, cover: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    """RGB panels: ``sagittal``/``axial``, each before | after, masks outlined (the
    removed region red, the protected brain cyan, the ``cover`` written over the cut
    yellow)."""
    from bidsanon.deface.geometry import apply_affine, corners, mask_centre

    aff = np.asarray(img.affine, float)
    before = np.asanyarray(img.dataobj)
    after = np.asanyarray(new_img.dataobj)
    if before.ndim == 4:
        before, after = before[..., 0], after[..., 0]
    w = apply_affine(aff, corners(before.shape))
    lo, hi = w.min(0), w.max(0)
    ext = hi - lo
    if removed.any():
        c = apply_affine(aff, mask_centre(removed)[None])[0]
    else:
        c = (lo + hi) / 2
    mid_x = (lo[0] + hi[0]) / 2
    planes = {
        # rows from top (superior) down, columns from posterior to anterior
        "sagittal": ((mid_x, lo[1], hi[2]), (0, 0, -1), (0, 1, 0), ext[2], ext[1]),
        # rows from anterior down to posterior, columns from subject's right to left
        "axial": ((hi[0], hi[1], c[2]), (0, -1, 0), (-1, 0, 0), ext[1], ext[0]),
    }
    out = {}
    scale = float(np.percentile(before[::2, ::2, ::2], 99.5)) or 1.0
    # each volume converted once for both planes; a bool mask is read as uint8 (a view)
    as_mask = lambda m: np.asarray(m, dtype=bool).view(np.uint8)  # noqa: E731
    removed, protected = as_mask(removed), as_mask(protected)
    cover = as_mask(cover) if cover is not None and cover.any() else None
    before, after = before.astype(np.float32, copy=False), after.astype(np.float32, copy=False)
    for name, (origin, u, v, eu, ev) in planes.items():
        nu, nv = int(eu / res) + 1, int(ev / res) + 1
        pics = []
        rem = _plane(removed, aff, origin, u, v, nu, nv, 0, res) > 0.5
        pro = _plane(protected, aff, origin, u, v, nu, nv, 0, res) > 0.5
        cov = (_plane(cover, aff, origin, u, v, nu, nv, 0, res) > 0.5
               if cover is not None else None)
        for vol in (before, after):
            g = _plane(vol, aff, origin, u, v, nu, nv, 1, res)
            g = np.clip(g / scale * 255.0, 0, 255).astype(np.uint8)
            rgb = np.repeat(g[..., None], 3, axis=-1)
            rgb[_outline(pro)] = PROTECTED_RGB
            rgb[_outline(rem)] = REMOVED_RGB
            if cov is not None:
                rgb[_outline(cov)] = COVER_RGB
            pics.append(rgb)
        gap = np.zeros((nu, 4, 3), dtype=np.uint8)
        out[name] = np.concatenate([pics[0], gap, pics[1]], axis=1)
    return out


def save_png(rgb: np.ndarray, path: str | Path) -> None:
    """Write a PNG (deterministic: no time stamp)."""
    from PIL import Image

    Image.fromarray(rgb).save(path, format="PNG")


def contour_figure(result, path: str | Path) -> None:
    """The defaced image in three planes (nilearn ``plot_anat``, as in fMRIPrep and MRIQC
    reports) with the removed region (red), the protected brain (cyan) and the cover
    written over the cut (yellow) as contours."""
    import matplotlib
    matplotlib.use("Agg")  # no display: figures are written to files only
    import nibabel as nib
    from matplotlib import pyplot as plt
    from nilearn import plotting

    from bidsanon.deface.geometry import mask_centre

    image = result.image
    if image.ndim == 4:
        image = image.slicer[..., 0]
    affine = image.affine
    removed = nib.Nifti1Image(result.removed.astype(np.uint8), affine)
    protected = nib.Nifti1Image(result.protected.astype(np.uint8), affine)
    cover = nib.Nifti1Image(result.cover.astype(np.uint8), affine)
    image, removed, protected, cover = _axis_aligned(image, removed, protected, cover)
    cut = None  # through the middle of the removed region, where the face was
    if result.removed.any():
        centre = mask_centre(result.removed)
        cut = tuple(float(c) for c in affine[:3, :3] @ centre + affine[:3, 3])
    display = plotting.plot_anat(image, display_mode="ortho", cut_coords=cut,
                                 draw_cross=False, annotate=False, dim=-0.5)
    try:
        if result.removed.any():
            display.add_contours(removed, levels=[0.5], colors=["#ff2828"], linewidths=1.5)
        if result.protected.any():
            display.add_contours(protected, levels=[0.5], colors=["#00dcff"], linewidths=1.0)
        if result.cover.any():
            display.add_contours(cover, levels=[0.5], colors=["#ffd200"], linewidths=1.0)
        display.savefig(str(path), dpi=90)
    finally:
        display.close()
        plt.close("all")


def _axis_aligned(image, *masks, res: float = 1.5):
    """``image`` (trilinear) and ``masks`` (nearest) on one world-aligned grid of ``res``
    mm when the image's axes are oblique, else unchanged.

    nilearn resamples an oblique image (most scanner images) itself before plotting, with
    cubic splines on the whole volume, once per contour layer too: 10 of the 23 s the
    QC pictures of a 1 mm Prisma head took. On a 1.5 mm grid (the figure shows about
    1.2 mm a pixel at 90 dpi) the three resamplings take a tenth of that.
    """
    import nibabel as nib

    from bidsanon.deface.geometry import world_grid

    rot = np.asarray(image.affine[:3, :3], float)
    if np.count_nonzero(np.abs(rot) > 1e-6 * np.abs(rot).max()) == 3:
        return (image, *masks)  # a permuted/flipped diagonal: nilearn only reorders it
    vol, grid = world_grid(np.asanyarray(image.dataobj), image.affine, res)
    out = [nib.Nifti1Image(vol, grid)]
    for m in masks:
        mv, _ = world_grid(np.asanyarray(m.dataobj), m.affine, res, order=0)
        out.append(nib.Nifti1Image((mv > 0.5).astype(np.uint8), grid))
    return tuple(out)


def write_qc(img, result, path_for: Callable[[str], Path | None]) -> dict[str, str]:
    """Write the QC pictures of one :class:`~bidsanon.deface.DefaceResult`.

    ``path_for(name)`` gives the private path of a picture (or None to skip it).
    Returns name -> path of what was written.
    """
    from bidsanon.deface.face import VIEWPOINTS, head_volume, render_head, render_view

    written = {}
    panels = slice_panels(img, result.image, result.removed, result.protected,
                          cover=result.cover)
    head = head_volume(result.image)  # prepared once for the four renders
    panels["render_front"] = render_head(head, "front")
    for view in ("yaw+60", "yaw-60", "pitch-20"):  # where the cut and the ears show
        panels[f"render_{view}"] = render_view(head, *VIEWPOINTS[view])
    for name, pic in panels.items():
        path = path_for(f"deface_{name}.png")
        if path is None:
            continue
        save_png(pic, path)
        written[name] = str(path)
    path = path_for("deface_contours.png")
    if path is not None:
        contour_figure(result, path)
        written["contours"] = str(path)
    return written
