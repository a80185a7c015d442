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
#: eeg_matchingpennies and pet001 (MEG, EEG, PET) run in tests/test_run.py.
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
