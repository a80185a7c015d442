"""Reading anatomical images, their landmarks and their on-disk voxel values."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bidsanon.errors import InputError
from bidsanon.deface.policy import LANDMARK_NAMES


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
    return pick_landmarks(coords)


def pick_landmarks(coords: dict) -> dict[str, np.ndarray] | None:
    lower = {str(k).lower().replace("_", ""): v for k, v in coords.items()}
    out = {}
    for name, aliases in LANDMARK_NAMES.items():
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


def check_image(img, raw: np.ndarray, name: str) -> None:
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


