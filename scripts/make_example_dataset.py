"""Build example_dataset/: a small BIDS dataset full of FAKE identifying data on top of
real recordings from tests/data (see example_dataset/README for attribution).

Run from the repository root: ``python scripts/make_example_dataset.py``. Every name,
birthday, address, e-mail and phone number below is invented.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
OUT = ROOT / "example_dataset"

SUBJECTS = {  # label: (name, birthday, age, sex, hand, session date, notes)
    "JS042": ("Jane Smith", "1931-03-12", 92, "F", "R", "20230415",
              "claustrophobic; call Jane at +1 617 555 0142"),
    "MK117": ("Mark Kowalski", "1988-11-02", 34, "M", "L", "20230502",
              "referred by Dr. Helen Ortiz"),
    "AB203": ("Anna Berg", "1995-07-30", 27, "F", "R", "20230611",
              "lives at 12 Elm Street, Springfield"),
}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")


def dcm2niix_sidecar(label: str, date: str, series: str) -> dict:
    name, birthday, age, sex, *_ = SUBJECTS[label]
    iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    return {
        "Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "Siemens",
        "ManufacturersModelName": "Prisma_fit", "InstitutionName": "Springfield General Hospital",
        "InstitutionalDepartmentName": "Neuroradiology",
        "InstitutionAddress": "Hospital Road 1, Springfield, 01103, US",
        "DeviceSerialNumber": "167024", "StationName": "MRC35217",
        "PatientName": name.replace(" ", "^"), "PatientID": "MRN-" + {"JS042": "0412977", "MK117": "1170383", "AB203": "2031164"}[label],
        "PatientBirthDate": birthday, "PatientSex": sex, "PatientAge": f"{age:03d}Y",
        "PatientWeight": 71, "PatientSize": 1.72, "AccessionNumber": "A2023-0415-77",
        "ReferringPhysicianName": "Ortiz^Helen", "StudyID": "4471",
        "ProcedureStepDescription": f"Brain_{name.split()[1]}_research",
        "StudyDescription": "NeuroLab^MEG study", "SeriesDescription": series,
        "ProtocolName": series, "ImageComments": f"scanned by tech J. Doe for {name}",
        "AcquisitionDateTime": f"{iso}T09:30:12.500000", "AcquisitionTime": "09:30:12.500000",
        "StudyInstanceUID": "1.3.12.2.1107.5.2.43.167024.30000023041508301234500000011",
        "SeriesInstanceUID": "1.3.12.2.1107.5.2.43.167024.2023041509301250000000012",
        "EchoTime": 0.00226, "RepetitionTime": 2.3, "InversionTime": 0.9, "FlipAngle": 8,
        "ConversionSoftware": "dcm2niix", "ConversionSoftwareVersion": "v1.0.20230411",
    }


def t1_from_mgz(src: Path, dst: Path, label: str, date: str) -> None:
    img = nib.load(src)
    data = np.asanyarray(img.dataobj).astype(np.uint8)
    out = nib.Nifti1Image(data, img.affine)
    out.header["descrip"] = f"TE=2.3;Time={date}.093012".encode()
    out.header["aux_file"] = SUBJECTS[label][0].encode()[:23]
    out.header.set_qform(img.affine, code=1)
    out.header.set_sform(img.affine, code=1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(out, dst)


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    write_json(OUT / "dataset_description.json", {
        "Name": "NeuroLab Springfield MEG/EEG example (fake identifying data)",
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["bidsanon developers"],
        "HowToAcknowledge": "Contact the PI Dr. Helen Ortiz (helen.ortiz@springfield-neurolab.org).",
    })
    (OUT / "README").write_text(
        "# NeuroLab Springfield example dataset\n\n"
        "FAKE identifying data on real recordings, for trying bidsanon.\n"
        "Recorded at Springfield General Hospital for subjects JS042, MK117 and AB203.\n"
        "Questions: helen.ortiz@springfield-neurolab.org, phone +1 (617) 555-0199,\n"
        "lab page http://springfield-neurolab.org/~hortiz/study.html\n\n"
        "Data sources (real recordings; the identifying fields around them are invented):\n"
        "MEG/EEG files from the MNE-Python testing data, the T1w of sub-JS042 from the MNE\n"
        "sample subject, the T1w of sub-MK117 is the ICBM/MNI152 template (FSL; free use and\n"
        "redistribution with its copyright notice kept).\n", encoding="utf-8")
    (OUT / "CHANGES").write_text("1.0.0 2023-07-01\n  - Initial release by helen.ortiz@springfield-neurolab.org\n",
                                 encoding="utf-8")
    rows = [["participant_id", "name", "birthday", "age", "sex", "hand", "notes"]]
    for label, (name, birthday, age, sex, hand, _date, notes) in SUBJECTS.items():
        rows.append([f"sub-{label}", name, birthday, str(age), sex, hand, notes])
    rows.append(["sub-emptyroom"] + ["n/a"] * 6)
    write_tsv(OUT / "participants.tsv", rows)
    write_json(OUT / "participants.json", {
        "name": {"Description": "full name"}, "birthday": {"Description": "date of birth"},
        "age": {"Description": "age at first session", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "hand": {"Description": "handedness", "Levels": {"R": "right", "L": "left"}},
        "notes": {"Description": "free-text notes of the research assistant"},
    })

    # sub-JS042: real head MRI with a face + Neuromag MEG + empty room
    s, d = "JS042", SUBJECTS["JS042"][5]
    base = OUT / f"sub-{s}" / f"ses-{d}"
    t1 = base / "anat" / f"sub-{s}_ses-{d}_T1w.nii.gz"
    t1_from_mgz(DATA / "anat/sample/T1.mgz", t1, s, d)
    write_json(t1.with_name(t1.name.replace(".nii.gz", ".json")), dcm2niix_sidecar(s, d, "t1_mprage_sag_p2"))
    meg = base / "meg" / f"sub-{s}_ses-{d}_task-rest_meg.fif"
    meg.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "meg/fiff/141027_cropped_90Hz_raw.fif", meg)
    write_json(meg.with_name(meg.name.replace(".fif", ".json")), {
        "TaskName": "rest", "Manufacturer": "Elekta", "SamplingFrequency": 1000,
        "PowerLineFrequency": 50, "DewarPosition": "upright", "SoftwareFilters": "n/a",
        "DigitizedLandmarks": True, "DigitizedHeadPoints": True,
        "InstitutionName": "Springfield General Hospital",
        "InstitutionAddress": "Hospital Road 1, Springfield", "DeviceSerialNumber": "10-221",
        "AssociatedEmptyRoom": f"sub-emptyroom/ses-{d}/meg/sub-emptyroom_ses-{d}_task-noise_meg.fif",
        "AcquisitionDateTime": f"{d[:4]}-{d[4:6]}-{d[6:]}T10:42:05",
        "SubjectArtefactDescription": "Jane Smith moved a lot after 5 min",
    })
    write_tsv(base / f"sub-{s}_ses-{d}_scans.tsv", [
        ["filename", "acq_time", "source"],
        [f"anat/sub-{s}_ses-{d}_T1w.nii.gz", f"{d[:4]}-{d[4:6]}-{d[6:]}T09:30:12", "SMITH_JANE_19310312/T1_MPRAGE"],
        [f"meg/sub-{s}_ses-{d}_task-rest_meg.fif", f"{d[:4]}-{d[4:6]}-{d[6:]}T10:42:05", "jsmith_rest.fif"],
    ])
    write_tsv(OUT / f"sub-{s}" / f"sub-{s}_sessions.tsv", [
        ["session_id", "acq_time"], [f"ses-{d}", f"{d[:4]}-{d[4:6]}-{d[6:]}T09:30:12"]])
    er = OUT / "sub-emptyroom" / f"ses-{d}" / "meg" / f"sub-emptyroom_ses-{d}_task-noise_meg.fif"
    er.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DATA / "meg/fiff/triux_bmlhus_erm_raw_sss.fif", er)
    write_json(er.with_name(er.name.replace(".fif", ".json")), {
        "TaskName": "noise", "Manufacturer": "Elekta", "SamplingFrequency": 1000,
        "PowerLineFrequency": 50, "DewarPosition": "upright", "SoftwareFilters": "n/a",
        "DigitizedLandmarks": False, "DigitizedHeadPoints": False,
        "AcquisitionDateTime": f"{d[:4]}-{d[4:6]}-{d[6:]}T08:05:00"})
    write_tsv(er.parent.parent / f"sub-emptyroom_ses-{d}_scans.tsv", [
        ["filename", "acq_time"], [f"meg/{er.name}", f"{d[:4]}-{d[4:6]}-{d[6:]}T08:05:00"]])

    # sub-MK117: MNI152 head + BrainVision EEG
    s, d = "MK117", SUBJECTS["MK117"][5]
    base = OUT / f"sub-{s}" / f"ses-{d}"
    t1 = base / "anat" / f"sub-{s}_ses-{d}_T1w.nii.gz"
    t1.parent.mkdir(parents=True, exist_ok=True)
    img = nib.load(DATA / "anat/mni152/MNI152_T1_2mm.nii.gz")
    img.header["descrip"] = f"Time={d}.101500 Mark Kowalski".encode()
    nib.save(img, t1)
    write_json(t1.with_name(t1.name.replace(".nii.gz", ".json")), dcm2niix_sidecar(s, d, "T1w MK 2023-05-02"))
    eeg_dir = base / "eeg"
    eeg_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{s}_ses-{d}_task-oddball_eeg"
    src = DATA / "eeg/brainvision"
    shutil.copyfile(src / "test_NO.eeg", eeg_dir / f"{stem}.eeg")
    for ext in ("vhdr", "vmrk"):
        text = (src / f"test_NO.{ext}").read_text(encoding="latin-1")
        text = text.replace("test_NO.eeg", f"{stem}.eeg").replace("test_NO.vmrk", f"{stem}.vmrk")
        (eeg_dir / f"{stem}.{ext}").write_text(text, encoding="latin-1")
    write_json(eeg_dir / f"{stem}.json", {
        "TaskName": "oddball", "EEGReference": "FCz", "SamplingFrequency": 1000,
        "PowerLineFrequency": 50, "SoftwareFilters": "n/a",
        "InstitutionName": "Springfield General Hospital", "DeviceSerialNumber": "BP-02331",
        "RecordingDate": f"{d[:4]}-{d[4:6]}-{d[6:]}"})
    write_tsv(base / f"sub-{s}_ses-{d}_scans.tsv", [
        ["filename", "acq_time"],
        [f"anat/sub-{s}_ses-{d}_T1w.nii.gz", f"{d[:4]}-{d[4:6]}-{d[6:]}T10:15:00"],
        [f"eeg/{stem}.vhdr", f"{d[:4]}-{d[4:6]}-{d[6:]}T11:20:00"]])

    # sub-AB203: EDF EEG
    s, d = "AB203", SUBJECTS["AB203"][5]
    base = OUT / f"sub-{s}" / f"ses-{d}"
    edf = base / "eeg" / f"sub-{s}_ses-{d}_task-rest_eeg.edf"
    edf.parent.mkdir(parents=True, exist_ok=True)
    raw = bytearray((DATA / "eeg/edf/test_reduced.edf").read_bytes())
    raw[8:88] = b"AB203 F 30-JUL-1995 Anna_Berg".ljust(80)
    raw[88:168] = b"Startdate 11-JUN-2023 EEG-2023-611 tech_JDoe Springfield_EEG1".ljust(80)
    raw[168:184] = b"11.06.2314.05.00"
    edf.write_bytes(bytes(raw))
    write_json(edf.with_name(edf.name.replace(".edf", ".json")), {
        "TaskName": "rest", "EEGReference": "Cz", "SamplingFrequency": 256,
        "PowerLineFrequency": 50, "SoftwareFilters": "n/a",
        "InstitutionName": "Springfield General Hospital"})
    write_tsv(base / f"sub-{s}_ses-{d}_scans.tsv", [
        ["filename", "acq_time"], [f"eeg/{edf.name}", f"{d[:4]}-{d[4:6]}-{d[6:]}T14:05:00"]])


if __name__ == "__main__":
    main()
