"""Read-back verification: every output opened with the field's own reader and compared
with its input, so that a run proves that nothing was lost.

Format modules call these helpers from their ``verify(src, dst)`` (the format
contract); :func:`dataset` opens the whole staged output as a user would (pybids
``BIDSLayout`` and ``mne_bids.read_raw_bids``). A difference raises
:class:`VerificationError` naming the file and what differs, never a value.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Callable

from bidsanon.errors import EXIT_FINDINGS, BidsanonError
from bidsanon.fileio import sha256_file


class VerificationError(BidsanonError):
    """An output differs from its input in what must be kept (data, timing, structure)."""

    exit_code = EXIT_FINDINGS


def same_bytes(src: Path, dst: Path) -> dict:
    """Byte-identical copies (SHA-256)."""
    if sha256_file(src) != sha256_file(dst):
        raise VerificationError("the copy's bytes differ from the input's", dst)
    return {"reader": "sha256", "checked": ["bytes"]}


def parses_json(dst: Path) -> dict:
    """The output is valid JSON."""
    try:
        json.loads(Path(dst).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"the output is not valid JSON ({type(exc).__name__})",
                                dst) from None
    return {"reader": "json", "checked": ["parses"]}


def _quiet_mne():
    import mne
    mne.set_log_level("ERROR")
    return mne


def compare_raw(read: Callable, src: Path, dst: Path, reader: str,
                annotations: bool = True) -> dict:
    """Open input and output with an MNE reader and compare what must be kept.

    Sample data (exactly), channel names, types and sampling rate, the number of samples,
    and the annotations' onsets and durations. Data are compared in blocks of about 10 s
    so memory stays bounded.
    """
    import numpy as np
    _quiet_mne()
    try:
        a = read(src)
    except Exception:  # noqa: BLE001 - an input MNE cannot read is not verifiable by it
        return {"reader": reader, "checked": [], "skipped": "MNE cannot read the input"}
    try:
        b = read(dst)
    except Exception as exc:  # noqa: BLE001 - the output must open where the input did
        raise VerificationError(f"{reader} cannot read the output ({type(exc).__name__})",
                                dst) from None
    checks = []
    if a.ch_names != b.ch_names:
        raise VerificationError("channel names differ from the input's", dst)
    if a.get_channel_types() != b.get_channel_types():
        raise VerificationError("channel types differ from the input's", dst)
    if a.info["sfreq"] != b.info["sfreq"]:
        raise VerificationError("the sampling rate differs from the input's", dst)
    if a.n_times != b.n_times:
        raise VerificationError(f"{b.n_times} samples, the input has {a.n_times}", dst)
    checks += ["channel names", "channel types", "sampling rate", "samples"]
    step = max(1, int(10 * a.info["sfreq"]))
    for start in range(0, a.n_times, step):
        stop = min(a.n_times, start + step)
        x, y = a.get_data(start=start, stop=stop), b.get_data(start=start, stop=stop)
        if not np.array_equal(x, y, equal_nan=True):
            bad = int(np.argwhere(~((x == y) | (np.isnan(x) & np.isnan(y))))[0][1]) + start
            raise VerificationError(f"sample data differ from the input's (first at "
                                    f"sample {bad})", dst)
    checks.append("data")
    if annotations:
        ao, bo = a.annotations, b.annotations
        if len(ao) != len(bo):
            raise VerificationError(f"{len(bo)} annotations, the input has {len(ao)}", dst)
        if not (np.array_equal(ao.onset, bo.onset) and np.array_equal(ao.duration,
                                                                      bo.duration)):
            raise VerificationError("annotation onsets or durations differ from the "
                                    "input's", dst)
        checks.append("annotation onsets and durations")
    return {"reader": reader, "checked": checks}


def compare_image(src: Path, dst: Path, changed_only_to: float | None = None) -> dict:
    """Open both images with nibabel: affine, shape, dtype and scaling equal; voxels equal
    everywhere, or (defacing) different only where the output holds ``changed_only_to``
    (the fill value of the removed region) or in a region of differing voxels connected
    to such a voxel (the cover over the cut). An isolated change -- a brain voxel, a
    sample -- is a failure."""
    import nibabel as nib
    import numpy as np
    try:
        a = nib.load(src)
    except Exception:  # noqa: BLE001 - placeholders and non-images are not verifiable
        return {"reader": "nibabel", "checked": [], "skipped": "nibabel cannot read the input"}
    try:
        b = nib.load(dst)
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"nibabel cannot read the output ({type(exc).__name__})",
                                dst) from None
    if a.shape != b.shape:
        raise VerificationError(f"shape {b.shape} differs from the input's {a.shape}", dst)
    if not np.allclose(a.affine, b.affine, rtol=0, atol=1e-6):
        raise VerificationError("the affine differs from the input's", dst)
    if a.get_data_dtype() != b.get_data_dtype():
        raise VerificationError("the data type differs from the input's", dst)
    if changed_only_to is not None and np.isnan(changed_only_to):
        return {"reader": "nibabel", "checked": ["shape", "affine", "dtype"]}
    try:
        x = np.asanyarray(a.dataobj)
    except (EOFError, OSError, ValueError):  # a header-only placeholder: no voxels
        return {"reader": "nibabel", "checked": ["shape", "affine", "dtype"],
                "skipped": "the input has no voxel data"}
    y = np.asanyarray(b.dataobj)
    if x.size == 0:
        return {"reader": "nibabel", "checked": ["shape", "affine", "dtype"]}
    differ = ~((x == y) | (np.isnan(x) & np.isnan(y))) if x.dtype.kind == "f" else x != y
    if changed_only_to is None:
        if differ.any():
            raise VerificationError(f"{int(differ.sum())} voxels differ from the input's", dst)
        return {"reader": "nibabel", "checked": ["shape", "affine", "dtype", "voxels"]}
    kept = differ & (y != changed_only_to)
    if kept.any() and x.ndim >= 3:
        # defacing's cover (bidsanon.deface.surface) writes other values behind the cut,
        # always next to the filled region: a differing voxel is accepted when it is
        # connected through differing voxels (26-neighbourhood) to one holding the fill
        from scipy import ndimage as ndi

        def spatial(mask):  # any volume of a 4D image
            return mask.reshape(mask.shape[:3] + (-1,)).any(axis=3)

        lab, n = ndi.label(spatial(differ), np.ones((3, 3, 3), dtype=bool))
        filled = np.zeros(n + 1, dtype=bool)
        filled[lab[spatial(differ & (y == changed_only_to))]] = True
        filled[0] = True
        kept = spatial(kept) & ~filled[lab]
    if kept.any():
        raise VerificationError(f"{int(kept.sum())} voxels outside the removed region "
                                "differ from the input's", dst)
    return {"reader": "nibabel", "checked": ["shape", "affine", "dtype",
                                             "voxels outside the removed region"
                                             " and its cover"],
            "changed_voxels": int(differ.sum())}


#: BIDS datatypes whose recordings ``mne_bids.read_raw_bids`` opens.
MNE_DATATYPES = ("meg", "eeg", "ieeg", "nirs")


def dataset(root: Path, recordings: list[str]) -> dict:
    """Open a staged output as a user would: pybids ``BIDSLayout`` (with validation) and
    ``mne_bids.read_raw_bids`` for each of ``recordings`` (outputs, relative to ``root``,
    that MNE read back in the per-file verification).

    Returns what was opened; raises :class:`VerificationError` naming the first
    recording that does not open.
    """
    import warnings

    from bids import BIDSLayout
    root = Path(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layout = BIDSLayout(root, validate=True, derivatives=False)
    except Exception as exc:  # noqa: BLE001 - pybids raises many kinds
        raise VerificationError(f"pybids cannot open the output as a BIDS dataset "
                                f"({type(exc).__name__})", root) from None
    opened = []
    for rel in sorted(recordings):
        parts = PurePosixPath(rel).parts
        if parts[0] in ("sourcedata", "derivatives", "code"):
            continue
        if not parts[-1].startswith("sub-") and len(parts) > 1 and \
                parts[-2].startswith("sub-"):
            rel = "/".join(parts[:-1])  # a folder recording (BTi/4D): its files inside
        if rel not in opened and _mne_bids_open(root, root / rel):
            opened.append(rel)
    return {"pybids": len(layout.get(return_type="filename")), "read_raw_bids": opened}


def _mne_bids_open(root: Path, path: Path) -> bool:
    """Open one recording with mne_bids.read_raw_bids; False when MNE cannot read its
    format at all (the per-file check already said so)."""
    import warnings

    from mne_bids import BIDSPath, get_bids_path_from_fname, read_raw_bids
    _quiet_mne()
    try:
        bp = get_bids_path_from_fname(path)
        # a 4D/BTi recording is a folder; mne-bids names its extension ".pdf"
        ext = ".pdf" if path.is_dir() and not bp.extension else bp.extension
        bp = BIDSPath(**{**bp.entities, "root": root, "datatype": bp.datatype,
                         "suffix": bp.suffix, "extension": ext})
    except Exception:  # noqa: BLE001 - not a BIDS recording name mne-bids knows
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_raw_bids(bp, verbose="ERROR")
    except (NotImplementedError, ValueError) as exc:
        if "extension" in str(exc).lower() or "not supported" in str(exc).lower():
            return False
        raise VerificationError(f"mne_bids.read_raw_bids cannot open the recording "
                                f"({type(exc).__name__})", path) from None
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"mne_bids.read_raw_bids cannot open the recording "
                                f"({type(exc).__name__})", path) from None
    return True


def same_decompressed(src: Path, dst: Path) -> dict:
    """gzip streams whose decompressed bytes are identical (headers may differ)."""
    import gzip
    import hashlib
    digests = []
    for p in (src, dst):
        h = hashlib.sha256()
        with gzip.open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digests.append(h.hexdigest())
    if digests[0] != digests[1]:
        raise VerificationError("the decompressed bytes differ from the input's", dst)
    return {"reader": "gzip", "checked": ["decompressed bytes"]}
