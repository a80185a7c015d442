"""The ``anat`` format: anatomical MRI (``anat/*.nii[.gz]`` with a defaced suffix)
defaced by :mod:`bidsanon.deface`, header scrubbed like any NIfTI.

An image that can show no face (a header-only placeholder, no finite value, a single
value) is not defaced: its header is scrubbed, its voxels are copied, and the run
reports a warning.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path, PurePosixPath

from bidsanon.deface import policy as deface_policy
from bidsanon.deface.policy import policy_section, should_deface
from bidsanon.errors import InputError
from bidsanon.formats import nifti, suffix_of
from bidsanon.records import Change, FileResult, Finding, markdown_table

#: The ``anat.deface`` section (kept in :mod:`bidsanon.deface.policy`, which loads no numpy).
POLICY = deface_policy.POLICY

#: What defacing changes besides the NIfTI header (:data:`nifti.FIELDS`).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("face", "voxels of the face (skin, nose, eyes, mouth)", "removed (fill value)"),
    ("ears", "voxels of the outer ears", "removed with `remove_ears`"),
    ("brain", "the dilated brain mask", "kept exactly (no voxel changes)"),
    *nifti.FIELDS,
)


def include(rel: str, policy: dict) -> bool:
    """Whether an image in ``anat/`` is defaced (its suffix is in ``anat.deface``)."""
    section = (policy.get("anat") or {}).get("deface") or {}
    return should_deface(suffix_of(PurePosixPath(rel).name), section)

def session_t1w(src: Path) -> Path | None:
    """The T1w image of the same subject and session next to ``src`` (the first in name
    order when there are several), or None."""
    def entities(name: str) -> tuple[str | None, str | None]:
        parts = dict(p.split("-", 1) for p in name.split("_") if "-" in p)
        return parts.get("sub"), parts.get("ses")

    want = entities(src.name)
    for cand in sorted(src.parent.glob("*_T1w.nii*")):
        if cand != src and cand.name.endswith((".nii", ".nii.gz")) \
                and entities(cand.name) == want:
            return cand
    return None


def handle(src: Path, dst: Path, ctx) -> FileResult:
    """Deface one anatomical image of the dataset."""
    import nibabel as nib
    import numpy as np

    from bidsanon.deface.image import load_image, read_landmarks, sidecar_path
    from bidsanon.deface.pipeline import deface_image
    from bidsanon.deface.registration import uses_intensity_registration
    src, dst = Path(src), Path(dst)
    sec = policy_section(ctx.section("anat", "deface"))
    is_nifti = src.name.endswith((".nii", ".nii.gz"))
    if is_nifti and nifti.is_header_only(src):
        return nifti.scrub_file(src, dst)  # a placeholder: nothing to deface
    img = load_image(src)
    marks = read_landmarks(sidecar_path(src))
    suffix = suffix_of(src.name)
    ref_path = None if uses_intensity_registration(suffix) else session_t1w(src)
    reference = None
    if ref_path is not None:
        try:
            reference = load_image(ref_path)
        except InputError:
            reference = None  # the T1w's own task reports it; this image goes on alone
    try:
        res = deface_image(img, method=sec["method"], landmarks=marks, policy=sec,
                           name=str(src), suffix=suffix, reference=reference)
    except InputError as exc:
        blank = blank_reason(img) if is_nifti else None
        if blank is not None:  # nothing to deface: copied, header scrubbed
            result = nifti.scrub_file(src, dst)
            result.warnings.append(f"{blank}, so it shows no face: not defaced; header "
                                   "scrubbed, voxels copied")
            return result
        if exc.path is None:
            exc = InputError(exc.message, src)
        raise exc from None
    out = res.image
    changes: list[Change] = []
    if not isinstance(out, (nib.Nifti1Image, nib.Nifti2Image)):
        out = nib.Nifti1Image(np.asanyarray(out.dataobj), out.affine)
    changes.extend(nifti.scrub_image(out))
    started = time.perf_counter()
    nifti.save_image(out, dst)
    stages = {**res.stages, "write": time.perf_counter() - started}
    ml = res.voxel_ml()
    changes.append(Change(field="voxels.face", action="remove", location=res.method,
                          old=None, new=f"{res.removed_voxels} voxels set to "
                          f"{sec['fill'] if sec['fill'] == 'smooth' else sec['fill_value']}"))
    result = FileResult(changes=changes, warnings=list(res.warnings))
    result.metrics = {"restored_voxels": float(res.restored_voxels),
                      "removed_voxels": float(res.removed_voxels),
                      "cover_voxels": float(res.cover.sum() if res.cover is not None else 0),
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
        from bidsanon.deface import qc

        started = time.perf_counter()
        stem = ctx.rename(src.name).split(".")[0]
        result.qc.update(qc.write_qc(img, res, lambda n: ctx.qc_path(f"{stem}_{n}")))
        stages["qc"] = time.perf_counter() - started
    # where a defaced image's time went, for the run summary (run.stage_times)
    result.metrics.update({f"seconds.{k}": round(v, 4) for k, v in stages.items()})
    return result


def blank_reason(img) -> str | None:
    """Why an image can show no face (no voxels, no finite value, a single value), or
    None when it has content (or its voxels cannot be read).

    Parameters
    ----------
    img : nibabel image
        The image, voxels read from its file on demand.

    Returns
    -------
    str or None
        E.g. ``"the image holds a single value"``.
    """
    import numpy as np
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, ValueError, MemoryError, zlib.error):
        return None
    if data.size == 0:
        return "the image has no voxels"
    if data.dtype.kind in "fc":
        finite = np.isfinite(data)
        if not finite.any():
            return "the image holds no finite value"
        data = data[finite]
    if data.min() == data.max():
        return "the image holds a single value"
    return None


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """The NIfTI header rules (the face rule is the check engine's: it renders heads)."""
    return nifti.check_file(path, rel, policy)


def peek_dates(path: Path) -> list:
    """Anatomical images hold no dates bidsanon reads."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` for ``docs/formats.md``."""
    return markdown_table(["part", "what it holds", "what bidsanon does"],
                          [[f"`{f}`", what, action] for f, what, action in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """nibabel: affine, shape and dtype identical, and every voxel identical except those
    set to the fill value (the removed face and ears) and the cover over the cut that
    adjoins them (:func:`bidsanon.verify.compare_image`)."""
    from bidsanon.verify import compare_image
    sec = policy_section(((policy or {}).get("anat") or {}).get("deface"))
    if sec["fill"] != "value":  # a smoothed region has no single value to recognise
        out = compare_image(Path(src), Path(dst), changed_only_to=float("nan"))
        return {**out, "note": "fill: smooth - voxels of the removed region not told apart"}
    return compare_image(Path(src), Path(dst), changed_only_to=float(sec["fill_value"]))
