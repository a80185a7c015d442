"""The ``anat.deface`` policy section and which images are defaced (no heavy imports: the policy schema reads it)."""

from __future__ import annotations

from typing import Any

from bidsanon import schema
from bidsanon.schema import Key


DEFAULT_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2",
                    "PDT2", "angio", "UNIT1", "MP2RAGE")
METHODS = ("auto", "template", "landmarks", "box")
LANDMARK_NAMES = {"NAS": ("nas", "nasion", "nz"), "LPA": ("lpa", "left", "leftear", "lpf"),
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
    "remove_ears": Key(True, "Also remove the outer ears whole (identifying in 3D renders), "
                       "near the template's ear masks (methods template and auto, and "
                       "landmarks when the registration passes its check)."),
    "ear_margin_mm": Key(6.0, "With `remove_ears`: how far (mm) beyond the template's ear "
                         "mask, seen from the side, the scalp is replaced by a smooth patch "
                         "fitted to the scalp around it (the patch also grows over any "
                         "part of the pinna standing off the scalp nearby); the pinna "
                         "outside the patch is removed whole and the concha and the ear "
                         "canal's mouth under it are covered.", min=0.0, max=30.0),
    "cover": Key(True, "Close the cut with a flat cover: the template's face plane, "
                 "moved forward just over the protected voxels the removal exposes, inside "
                 "the head's outline, written with one bright value (the 90th percentile "
                 "of the removed tissue) on a 2 mm ramp. The orbits, nasal cavity and "
                 "sinuses the cut opens, and the brain margin's part of the orbits, are "
                 "then covered, so no render shows them. Needs the template registration "
                 "and `fill: value`.", type=bool),
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


