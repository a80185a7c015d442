"""Face battery: multi-view renders x the detectors that ship in wheels, on real heads.

The detectors: dlib HOG, dlib CNN (``face_recognition_models``) and MTCNN
(:mod:`bidsanon.deface.mtcnn`, torch): the ``test`` extra installs all three, and
:func:`test_every_detector_runs` fails when one is missing, so none is silently left out.

Positive controls: a (head, view, detector) counts only when the detector finds the face
on the original's render. Negative controls: renders of the back of every head set each
detector's threshold (above its best score there). After defacing, a detection counts
when it beats the threshold and its box overlaps the original's box in the same view
(IoU >= 0.3). Also measured: the share of the original eye/nose/mouth skin (template
face mask below the orbital roof, MNI z < -5 mm) left unchanged.
"""

from __future__ import annotations

import functools

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA
from scipy import ndimage as ndi

from bidsanon import deface
from bidsanon.deface import face
from bidsanon.deface import registration as reg
from bidsanon.deface.geometry import apply_affine, head_mask

HEADS = {"sample-T1": (DATA / "anat" / "sample" / "T1.mgz", "T1w"),
         "mni152-T1": (DATA / "anat" / "mni152" / "MNI152_T1_2mm.nii.gz", "T1w"),
         "chris-T1": (DATA / "anat" / "chris" / "chris_t1.nii.gz", "T1w"),
         "chris-PD": (DATA / "anat" / "chris" / "chris_PD.nii.gz", "PDw"),
         "niivue-T2w": (DATA / "anat" / "niivue" / "T2w.nii.gz", "T2w")}
DETECTORS = face.available_detectors()


@functools.lru_cache(maxsize=None)
def thresholds() -> dict[str, float]:
    """Per detector: its best score on the back of any head (at least 0)."""
    out = {d: 0.0 for d in DETECTORS}
    for path, _ in HEADS.values():
        back = face.render_view(nib.load(path), back=True)
        for d in DETECTORS:
            for b in face.detect(back, d, threshold=-1.0):
                out[d] = max(out[d], b.score)
    return out


def skin_kept(img, res) -> float:
    """Share of the original eye/nose/mouth skin voxels left unchanged."""
    labels = reg.lookup_labels(img.shape, img.affine, res.registration.world_to_template,
                               reg.load_template(4.0))
    vol = np.asanyarray(img.dataobj).astype(np.float32)
    head = head_mask(vol)
    skin = head & ~ndi.binary_erosion(head, iterations=2)
    ijk = np.argwhere(skin & ((labels & reg.FACE) > 0))
    mni = apply_affine(res.registration.world_to_template @ img.affine, ijk)
    ijk = ijk[mni[:, 2] < -5.0]
    changed = vol != np.asanyarray(res.image.dataobj).astype(np.float32)
    return float((~changed[tuple(ijk.T)]).mean()) if len(ijk) else float("nan")


@functools.lru_cache(maxsize=None)
def battery(name: str) -> dict:
    path, suffix = HEADS[name]
    img = nib.load(path)
    thr = thresholds()
    _, before = face.multi_view_faces(img, detectors=DETECTORS)
    res = deface.deface_image(img, suffix=suffix, name=path.name)
    _, after = face.multi_view_faces(res.image, detectors=DETECTORS)
    rows = {}
    for (view, det), boxes in before.items():
        pos = [b for b in boxes if b.score > thr[det]]
        if not pos:
            rows[(view, det)] = ("no positive control", None)
            continue
        ref = max(pos, key=lambda b: b.score)
        hits = [b for b in after[(view, det)]
                if b.score > thr[det] and face.iou(b, ref) >= 0.3]
        rows[(view, det)] = (f"{ref.score:.2f}", max((b.score for b in hits), default=None))
    return {"rows": rows, "kept": skin_kept(img, res)}


def table(name: str) -> str:
    b = battery(name)
    lines = [f"{name}: eye/nose/mouth skin kept {b['kept']:.1%}"]
    for (view, det), (before, after) in b["rows"].items():
        lines.append(f"  {view:9s} {det}: before {before}, after "
                     f"{'none' if after is None else f'{after:.2f} COUNTED'}")
    return "\n".join(lines)


def test_every_detector_runs():
    assert DETECTORS == face.DETECTORS


@pytest.mark.parametrize("name", HEADS)
def test_face_battery(name):
    b = battery(name)
    print(table(name))
    controls = [k for k, (before, _) in b["rows"].items() if before != "no positive control"]
    counted = [k for k, (before, after) in b["rows"].items() if after is not None]
    assert b["kept"] < 0.05, table(name)
    assert controls, f"no detector finds the face of {name} on any view:\n{table(name)}"
    assert not counted, table(name)
