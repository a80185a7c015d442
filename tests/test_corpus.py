"""Small datasets of the BIDS examples (tests/data/bids, see tests/data/README.md), one
or more per datatype, de-identified end to end: the output publishes, the BIDS
validator reports no error code the input does not have, and no original subject label
is left in an output name or byte. ``benchmarks/corpus.py`` does the same over the
whole bids-examples corpus (docs/corpus.md)."""

from __future__ import annotations

import hashlib
import json

import pytest

from bidsanon.run import run_dataset
from conftest import DATA, copy_tree, label_leaks, subject_labels, validator_errors

BIDS = DATA / "bids"

#: The selection and the datatypes each one brings. ds000246, ds000248,
#: eeg_matchingpennies and pet001 (MEG, EEG, PET) run in tests/test_run.py;
#: ieeg_filtered_speech and eeg_ds003645s_hed_demo in their own tests below.
CORPUS = {
    "qmri_megre": "anat",
    "volume_timing": "func",
    "qmri_mp2rageme": "anat, fmap",
    "genetics_ukbb": "anat, dwi, func",
    "2d_mb_pcasl": "anat, fmap, perf",
    "pheno004": "anat, phenotype (a participant without a folder)",
    "pet006": "pet",
    "micr_SEM": "micr",
    "eyetracking_binocular": "beh (eye-tracking physio)",
    "fnirs_tapping": "nirs",
    "motion_systemvalidation": "motion",
    "ieeg_motorMiller2007": "anat, ieeg (electrodes in a non-standard space)",
    "mri_chunk": "anat (header-only placeholder images, numeric label 001)",
    "micr_XPCTzarr": "micr (a donor ID in dataset_description.json)",
}

DATATYPES = ("anat", "func", "dwi", "fmap", "perf", "meg", "eeg", "ieeg", "nirs", "pet",
             "micr", "motion", "beh")


def test_selection_covers_every_datatype():
    found = {p.name for p in BIDS.glob("*/sub-*/**/*") if p.is_dir()}
    assert set(DATATYPES) <= found
    assert any(BIDS.glob("*/phenotype/*.tsv"))
    assert set(CORPUS) <= {p.name for p in BIDS.iterdir()}


@pytest.mark.parametrize("name", list(CORPUS))
def test_example_dataset_end_to_end(name, tmp_path):
    src = copy_tree(BIDS / name, tmp_path / "in")
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published and not summary.failed
    # every recording publishes: none is left out for want of a handler
    assert [rel for rel, why in summary.excluded if "no handler" in why] == []
    assert label_leaks(out, subject_labels(src)) == []
    # every published file was read back by its format's reader before publishing
    key = json.loads(summary.key.read_text())
    assert key["files"] and all(f["verified"].get("reader") for f in key["files"])
    before = validator_errors(src)
    after = validator_errors(out)
    assert {c: n for c, n in after.items() if c not in before} == {}


def test_excluded_recording_takes_its_companions(tmp_path):
    # fnirs_tapping's SNIRF files excluded by the study's policy: their sidecars,
    # channels, events and scans.tsv rows must leave with them, each with the reason
    src = copy_tree(BIDS / "fnirs_tapping", tmp_path / "in")
    out = tmp_path / "out"
    policy = tmp_path / "policy.yaml"
    policy.write_text("files:\n  exclude: ['*_nirs.snirf']\n")
    summary = run_dataset(src, out, quiet=True, jobs=1, policy_path=policy)
    assert summary.published
    why = dict(summary.excluded)
    subjects = sorted(p.name for p in src.glob("sub-*"))
    for sub in subjects:
        data = f"{sub}/nirs/{sub}_task-tapping_nirs.snirf"
        assert why[data] == "matched by files.exclude"
        for companion in ("nirs.json", "channels.tsv", "events.tsv"):
            rel = f"{sub}/nirs/{sub}_task-tapping_{companion}"
            assert why[rel] == f"belongs to an excluded file ({why[data]})"
    assert not list(out.rglob("*_nirs.json")) and not list(out.rglob("*_channels.tsv"))
    assert not list(out.rglob("*_events.tsv"))
    scans = sorted(out.rglob("*_scans.tsv"))
    assert len(scans) == len(subjects)
    for table in scans:  # the header stays, the row of the SNIRF file is gone
        assert table.read_text().splitlines() == ["filename\tacq_time"]
    # what is not of that recording stays: the optode positions of the session
    assert len(list(out.rglob("*_optodes.tsv"))) == len(subjects)


def test_failed_file_takes_its_sidecar_and_scans_row(tmp_path):
    # pet001's T1w.nii is an HTML page: with run.on_error: skip it fails, and its
    # sidecar and scans.tsv row must not be published without it
    src = copy_tree(BIDS / "pet001", tmp_path / "in")
    ses = src / "sub-01" / "ses-01"
    (ses / "sub-01_ses-01_scans.tsv").write_text(
        "filename\tacq_time\n"
        "anat/sub-01_ses-01_T1w.nii\t2017-01-01T10:00:00\n"
        "pet/sub-01_ses-01_trc-CIMBI36_pet.nii.gz\t2017-01-01T11:00:00\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("run:\n  on_error: skip\n")
    out = tmp_path / "out"
    summary = run_dataset(src, out, policy_path=policy, quiet=True, jobs=1)
    assert summary.published
    why = dict(summary.excluded)
    assert why["sub-01/ses-01/anat/sub-01_ses-01_T1w.nii"] == "failed (run.on_error: skip)"
    assert why["sub-01/ses-01/anat/sub-01_ses-01_T1w.json"] == \
        "belongs to a failed file (run.on_error: skip)"
    assert not list(out.rglob("*_T1w.*"))
    (scans,) = out.rglob("*_scans.tsv")
    rows = scans.read_text().splitlines()
    assert len(rows) == 2
    assert rows[1].split("\t")[0].startswith("pet/")
    assert rows[1].split("\t")[0].endswith("_trc-CIMBI36_pet.nii.gz")
    # the key's record of the rewritten table matches what was published
    key = json.loads(summary.key.read_text())
    entry = next(f for f in key["files"] if f["output"].endswith("_scans.tsv"))
    assert entry["output_sha256"] == hashlib.sha256(scans.read_bytes()).hexdigest()
    assert validator_errors(out).keys() <= validator_errors(src).keys()


def test_participant_without_folder_is_relabelled(tmp_path):
    # pheno004 lists sub-03 in participants.tsv and phenotype/ but has no sub-03 folder
    src = copy_tree(BIDS / "pheno004", tmp_path / "in")
    assert not (src / "sub-03").exists()
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published
    key = json.loads(summary.key.read_text())
    new = {orig: entry["label"] for orig, entry in key["subjects"].items()}
    assert sorted(new) == ["01", "02", "03"] and new["03"] != "03"

    def ids(rel: str) -> list[str]:
        lines = (out / rel).read_text().splitlines()
        i = lines[0].split("\t").index("participant_id")
        return [ln.split("\t")[i] for ln in lines[1:]]
    assert ids("participants.tsv") == sorted(f"sub-{new[s]}" for s in ("01", "02", "03"))
    for table in ("phenotype/ace.tsv", "phenotype/demographics.tsv"):
        assert ids(table) == sorted(f"sub-{new[s]}" for s in ("01", "03"))


def test_header_only_images_are_copied_with_a_warning(tmp_path):
    # mri_chunk's T1w chunks are NIfTI headers without voxel data (the bids-examples
    # placeholder convention): nothing to deface, so the header is scrubbed and copied
    import gzip
    src = copy_tree(BIDS / "mri_chunk", tmp_path / "in")
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published and not summary.failed
    images = sorted(src.rglob("*_T1w.nii.gz"))
    assert len(images) == 2
    warned = [w for w in summary.warnings if "header-only NIfTI" in w]
    assert sorted(w.split(":")[0] for w in warned) == \
        sorted(p.relative_to(src).as_posix() for p in images)
    published = sorted(out.rglob("*_T1w.nii.gz"))
    assert len(published) == 2
    for before, after in zip(images, published):
        assert len(gzip.decompress(after.read_bytes())) == \
            len(gzip.decompress(before.read_bytes()))


def test_stimuli_renamed_with_every_reference(tmp_path):
    # ieeg_filtered_speech names its stimuli after the subjects (stimuli/cm4_audio.wav)
    # and its events.tsv refer to them in stim_file: both get the new label
    src = copy_tree(BIDS / "ieeg_filtered_speech", tmp_path / "in")
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published
    labels = subject_labels(src)
    new = {o: e["label"] for o, e in json.loads(summary.key.read_text())["subjects"].items()}
    stimuli = sorted(p.name for p in (out / "stimuli").iterdir())
    assert stimuli == sorted(f"{new[x]}_audio.wav" for x in labels)
    referenced = set()
    for table in out.rglob("*_events.tsv"):
        lines = table.read_text().splitlines()
        i = lines[0].split("\t").index("stim_file")
        referenced |= {ln.split("\t")[i] for ln in lines[1:]} - {"n/a"}
    assert referenced and referenced <= set(stimuli)
    assert label_leaks(out, labels) == []
    # the photos are excluded; the electrodes they share a coordinate file with stay
    assert len(list(out.rglob("*_electrodes.tsv"))) == len(labels)
    before = validator_errors(src)
    assert {c: n for c, n in validator_errors(out).items() if c not in before} == {}


def test_numbers_equal_to_numeric_labels_stay(tmp_path):
    # eeg_ds003645s_hed_demo has subjects 002-004 and response times such as 1.003 in
    # its beh/ tables: a number is not a label, the run keeps it and its gate passes
    src = copy_tree(BIDS / "eeg_ds003645s_hed_demo", tmp_path / "in")
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published and summary.findings is not None
    assert not [f for f in summary.findings if f.severity == "error"]
    outputs = {f["source"]: f["output"] for f in json.loads(summary.key.read_text())["files"]}
    (before,) = src.glob("sub-004/ses-1/beh/*_beh.tsv")
    after = out / outputs[before.relative_to(src).as_posix()]
    assert "1.003\t" in before.read_text()
    assert after.read_text() == before.read_text()


def test_donor_id_scrubbed_from_dataset_description(tmp_path):
    # micr_XPCTzarr's participants.tsv names the body donor (participant_name) and
    # dataset_description.json's HowToAcknowledge repeats it
    src = copy_tree(BIDS / "micr_XPCTzarr", tmp_path / "in")
    lines = (src / "participants.tsv").read_text().splitlines()
    donor = lines[1].split("\t")[lines[0].split("\t").index("participant_name")]
    assert donor in (src / "dataset_description.json").read_text()
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published
    assert "HowToAcknowledge" in json.loads((out / "dataset_description.json").read_text())
    for p in out.rglob("*"):
        assert p.is_dir() or donor.encode() not in p.read_bytes(), p


def test_dataset_whose_every_file_fails_publishes_without_participants(tmp_path):
    # pet001 without its PET recording: the only data file left is an HTML page saved
    # as T1w.nii; with run.on_error: skip it fails, no subject is left, and a
    # participants.tsv without rows (which the validator refuses) is not published
    src = copy_tree(BIDS / "pet001", tmp_path / "in")
    import shutil
    shutil.rmtree(src / "sub-01" / "ses-01" / "pet")
    policy = tmp_path / "policy.yaml"
    policy.write_text("run:\n  on_error: skip\n")
    out = tmp_path / "out"
    summary = run_dataset(src, out, policy_path=policy, quiet=True, jobs=1)
    assert summary.published
    assert len(summary.failed) == 1 and "sub-01_ses-01_T1w.nii" in summary.failed[0]
    assert not list(out.glob("sub-*")) and not (out / "participants.tsv").exists()
    assert dict(summary.excluded)["participants.tsv"].startswith("no participant is left")
    assert validator_errors(out).keys() <= validator_errors(src).keys()
