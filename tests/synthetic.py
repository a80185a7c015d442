"""A synthetic BIDS dataset of many subjects made from the real files in tests/data
(used by the scaling tests and by benchmarks/bench_scale.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

DATA = Path(__file__).parent / "data"
FIRST = ["Adaeze", "Bjorn", "Chiara", "Dmitri", "Esperanza", "Fumiko", "Gunnar", "Hadiza"]
LAST = ["Okonkwo", "Lindqvist", "Bertolucci", "Petrov", "Villanueva", "Tanaka", "Haugen"]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # a hard link is a regular file inside the dataset: no copy cost
    except OSError:
        shutil.copyfile(src, dst)


def make_dataset(root: Path, n_subjects: int, with_fiff: bool = False) -> Path:
    """Write ``n_subjects`` subjects of 10 files each (plus the top-level files)."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "synthetic", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    (root / "README").write_text("Synthetic dataset; contact lab@example.org\n")
    cache = root.parent / f".{root.name}-cache"
    cache.mkdir(exist_ok=True)
    bold = cache / "bold.nii.gz"
    if not bold.exists():
        img = nib.load(DATA / "anat/sample/T1.mgz")
        data = np.asanyarray(img.dataobj).astype(np.int16)[..., None].repeat(2, axis=3)
        out = nib.Nifti1Image(data, img.affine)
        out.header["descrip"] = b"TE=30;Time=20230415.101010"
        nib.save(out, bold)
    rows = ["participant_id\tage\tsex\tname"]
    for i in range(n_subjects):
        sub = f"S{i:05d}"
        date = f"2023{1 + i % 12:02d}{1 + i % 28:02d}"
        iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        base = root / f"sub-{sub}" / f"ses-{date}"
        for d in ("anat", "func", "meg"):
            (base / d).mkdir(parents=True)
        stem = f"sub-{sub}_ses-{date}"
        (base / "anat" / f"{stem}_T1w.json").write_text(json.dumps(
            {"PatientName": f"Person^{sub}", "InstitutionName": "Springfield",
             "AcquisitionDateTime": f"{iso}T09:00:00", "EchoTime": 0.003}))
        _link_or_copy(bold, base / "func" / f"{stem}_task-rest_bold.nii.gz")
        (base / "func" / f"{stem}_task-rest_bold.json").write_text(json.dumps(
            {"TaskName": "rest", "RepetitionTime": 2.0, "StationName": "MRC1"}))
        (base / "func" / f"{stem}_task-rest_events.tsv").write_text(
            "onset\tduration\ttrial_type\n1.0\t0.5\tgo\n2.0\t0.5\tstop\n")
        (base / "meg" / f"{stem}_task-rest_meg.json").write_text(json.dumps(
            {"TaskName": "rest", "SamplingFrequency": 1000, "PowerLineFrequency": 50,
             "DewarPosition": "upright", "SoftwareFilters": "n/a",
             "DigitizedLandmarks": False, "DigitizedHeadPoints": False}))
        (base / "meg" / f"{stem}_task-rest_channels.tsv").write_text(
            "name\ttype\tunits\tdescription\nMEG0111\tMEGMAG\tT\tn/a\n")
        (base / "meg" / f"{stem}_coordsystem.json").write_text(json.dumps(
            {"MEGCoordinateSystem": "ElektaNeuromag", "MEGCoordinateUnits": "m"}))
        if with_fiff:
            _link_or_copy(DATA / "meg/fiff/141027_cropped_90Hz_raw.fif",
                          base / "meg" / f"{stem}_task-rest_meg.fif")
        else:
            (base / "meg" / f"{stem}_task-rest_events.tsv").write_text(
                "onset\tduration\tvalue\n0.1\t0\t1\n")
        (base / f"{stem}_scans.tsv").write_text(
            f"filename\tacq_time\nfunc/{stem}_task-rest_bold.nii.gz\t{iso}T10:00:00\n")
        (root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv").write_text(
            f"session_id\tacq_time\nses-{date}\t{iso}T09:00:00\n")
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
        rows.append(f"sub-{sub}\t{20 + i % 70}\t{'MF'[i % 2]}\t{first} {last}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root
