"""``bidsanon deface IN -o OUT``: deface one anatomical MRI (NIfTI or MGH).

The face (and by default the ears) is removed; every voxel within ``brain_margin_mm`` of
the brain is kept bit for bit. Landmarks are read from the JSON sidecar next to IN when
it has ``AnatomicalLandmarkCoordinates``. QC pictures show the original face: write them
only to a private folder (``--qc-dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bidsanon.errors import EXIT_OK, BidsanonError, UsageError

_EXTS = (".nii.gz", ".nii", ".mgz", ".mgh")


HELP = "deface one anatomical MRI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``deface`` options to ``parser``."""
    a = parser.add_argument
    a("input", type=Path, metavar="IN", help="image to deface (.nii, .nii.gz, .mgz, .mgh)")
    a("-o", "--out", type=Path, required=True, metavar="OUT",
      help="defaced image (.nii, .nii.gz, .mgz or .mgh); must differ from IN")
    a("--method", choices=("auto", "template", "landmarks", "box"),
      help="how to find the face (default: the policy's, `auto`: landmarks from the "
           "sidecar when present, else template registration)")
    a("--policy", type=Path, metavar="FILE",
      help="policy YAML; its `anat: deface:` section is used")
    a("--qc-dir", type=Path, metavar="DIR",
      help="write QC pictures (they show the face: keep them private) to DIR")
    a("--brain-margin", type=float, metavar="MM",
      help="dilate the protected brain mask by MM millimetres (default 5)")
    a("--keep-ears", action="store_true", help="do not remove the outer ears")
    a("--no-sidecar", action="store_true",
      help="ignore the JSON sidecar's AnatomicalLandmarkCoordinates")
    a("--quiet", "-q", action="store_true", help="print nothing on success")


def _policy_section(args: argparse.Namespace) -> dict:
    from bidsanon import deface
    from bidsanon import schema

    sec: dict = {}
    if args.policy is not None:
        try:
            from bidsanon.policy import load_policy
        except ImportError:  # pragma: no cover - stand-alone use without the policy module
            load_policy = None
        if load_policy is not None:
            sec = load_policy(args.policy)["anat"]["deface"]
        else:
            import yaml

            data = yaml.safe_load(args.policy.read_text(encoding="utf-8")) or {}
            sec = (data.get("anat") or {}).get("deface") or {}
            schema.validate(sec, deface.POLICY, source=str(args.policy), prefix="anat.deface.")
    sec = deface.policy_section(sec)
    if args.method:
        sec["method"] = args.method
    if args.brain_margin is not None:
        if not 0 <= args.brain_margin <= 30:
            raise UsageError("--brain-margin must be between 0 and 30 mm")
        sec["brain_margin_mm"] = args.brain_margin
    if args.keep_ears:
        sec["remove_ears"] = False
    return sec


def _output_kind(path: Path) -> str:
    name = path.name.lower()
    for ext in _EXTS:
        if name.endswith(ext):
            return ext
    raise UsageError(f"output must end in {', '.join(_EXTS)}: {path}")


def save(img, dst: Path) -> None:
    """Write ``img`` to ``dst`` (NIfTI or MGH by extension), deterministically and
    atomically (a partial file is removed on failure)."""
    import nibabel as nib

    from bidsanon import fileio
    from bidsanon.formats import nifti

    kind = _output_kind(dst)
    if kind in (".nii", ".nii.gz"):
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            img = nib.Nifti1Image(img.dataobj, img.affine)
        nifti.save_image(img, dst)
    else:
        if not isinstance(img, nib.MGHImage):
            img = nib.MGHImage(img.dataobj, img.affine)
        data = img.to_bytes()
        fileio.write_bytes_atomic(dst, fileio.gzip_bytes(data) if kind == ".mgz" else data)


def run(args: argparse.Namespace) -> int:
    """Deface ``args.input`` into ``args.out``; return the exit code."""
    import nibabel as nib

    from bidsanon import deface
    from bidsanon.formats import nifti
    from bidsanon.deface import qc

    src, dst = args.input, args.out
    if not src.is_file():
        raise UsageError(f"input not found: {src}")
    _output_kind(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError("OUT must differ from IN (the input is never modified)")
    if not dst.parent.is_dir():
        raise UsageError(f"output folder does not exist: {dst.parent}")
    sec = _policy_section(args)
    img = deface.load_image(src)
    marks = None if args.no_sidecar else deface.read_landmarks(deface.sidecar_path(src))
    try:
        res = deface.deface_image(img, method=sec["method"], landmarks=marks, policy=sec,
                                  name=str(src))
    except BidsanonError as exc:
        if exc.path is None:
            exc.path = str(src)
        raise
    out = res.image
    if isinstance(out, (nib.Nifti1Image, nib.Nifti2Image)):
        nifti.scrub_image(out)
    save(out, dst)
    written = {}
    if args.qc_dir is not None:
        args.qc_dir.mkdir(parents=True, exist_ok=True)
        stem = src.name.split(".")[0]
        written = qc.write_qc(img, res, lambda n: args.qc_dir / f"{stem}_{n}")
    if not args.quiet:
        ml = res.voxel_ml()
        print(f"{dst}: {res.method}, removed {res.changed_voxels * ml:.0f} mL of non-zero voxels "
              f"({res.removed_voxels} voxels set to the fill), brain re-insertion restored "
              f"{res.restored_voxels} ({res.restored_voxels * ml:.1f} mL), similarity "
              f"{res.similarity:.2f}, head overlap {res.head_dice:.2f}, "
              f"{res.seconds:.1f} s", file=sys.stderr)
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for name, path in written.items():
            print(f"QC {name}: {path}", file=sys.stderr)
    return EXIT_OK
