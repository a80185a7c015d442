"""Anatomical MRI defacing with brain re-insertion.

- :mod:`~bidsanon.deface.policy`: the ``anat.deface`` section and which images are defaced;
- :mod:`~bidsanon.deface.image`: reading images, landmarks and on-disk voxel values;
- :mod:`~bidsanon.deface.geometry`: voxel/world geometry, head masks, head-frame boxes;
- :mod:`~bidsanon.deface.registration`: affine registration to the MNI152 template;
- :mod:`~bidsanon.deface.protection`: the brain mask whose voxels never change;
- :mod:`~bidsanon.deface.pipeline`: :func:`deface_image`, the whole method;
- :mod:`~bidsanon.deface.face`: head renders and the face detector (QC and ``check``);
- :mod:`~bidsanon.deface.qc`: the QC images.

Names are imported on first use, so reading the policy section does not load numpy.
"""

from __future__ import annotations

import importlib

#: public name -> submodule
_API = {
    "POLICY": "policy", "DEFAULT_SUFFIXES": "policy", "METHODS": "policy",
    "policy_section": "policy", "should_deface": "policy",
    "load_image": "image", "read_landmarks": "image", "sidecar_path": "image",
    "box_mask": "geometry", "head_frame": "geometry", "rotation_matrix": "geometry",
    "head_mask": "geometry", "world_grid": "geometry",
    "register": "registration", "load_template": "registration",
    "deface_image": "pipeline", "DefaceResult": "pipeline", "Registration": "registration",
}

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"bidsanon.deface.{_API[name]}"), name)
    raise AttributeError(f"module 'bidsanon.deface' has no attribute {name!r}")
