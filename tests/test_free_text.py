"""Free text that leaked on real data (issue 19): a name in a FIFF annotation, phone
numbers in international format in the README, the FIFF project name repeated in
dataset_description.json. The run must publish and none of the values may survive."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA
from test_text import NOT_PHONES, PHONES

from bidsanon.check.engine import check_dataset
from bidsanon.key import read_key
from bidsanon.report import build_html, replaced_values
from bidsanon.run import run_dataset

mne.set_log_level("ERROR")
FIF = DATA / "meg" / "fiff" / "141027_cropped_90Hz_raw.fif"

#: Fake identifying values planted around a real recording.
SUBJECT = ("Birgitte", "Norgaard")
EXPERIMENTER = "Soren Kierkegaard"
PROJECT = "AUHcohort2019"  # the cohort's name: FIFF project name and the dataset's Name
SITE = "Rigshospitalet"
ANNOTATIONS = ["BAD_Birgitte coughed", "Norgaard asked for a break", "blink"]


def _raw_with_identifiers(path: Path) -> mne.io.Raw:
    raw = mne.io.read_raw_fif(FIF).crop(0, 4).load_data()
    with raw.info._unlock():
        raw.info["subject_info"] = dict(first_name=SUBJECT[0], last_name=SUBJECT[1])
        raw.info["experimenter"] = EXPERIMENTER
        raw.info["proj_name"] = PROJECT
        raw.info["device_info"] = dict(type="TRIUX", site=SITE)
    raw.set_annotations(mne.Annotations([0.5, 1.25, 3.0], [0.25, 0.0, 0.1], ANNOTATIONS))
    raw.save(path)
    return mne.io.read_raw_fif(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, mne.io.Raw]:
    root = tmp_path_factory.mktemp("in") / "ds"
    meg = root / "sub-01" / "meg"
    meg.mkdir(parents=True)
    raw = _raw_with_identifiers(meg / "sub-01_task-rest_meg.fif")
    (meg / "sub-01_task-rest_meg.json").write_text(json.dumps(
        {"TaskName": "rest", "SamplingFrequency": raw.info["sfreq"],
         "PowerLineFrequency": 50, "DewarPosition": "upright"}))
    (meg / "sub-01_task-rest_events.tsv").write_text(
        "onset\tduration\tsample\ttrial_type\n12.5\t0.0\t1201\tstim\n"
        "13.75\t0.0\t2402\tstim\n")
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": f"{PROJECT}: resting MEG", "BIDSVersion": "1.9.0",
        "Acknowledgements": f"Thanks to {EXPERIMENTER} and the staff of {SITE}.",
        "HowToAcknowledge": f"Cite the {PROJECT} cohort paper.",
        "Funding": [f"{SITE} research fund"], "EthicsApprovals": [f"{PROJECT} H-1-2019"],
        "ReferencesAndLinks": ["https://doi.org/10.1016/j.neuroimage.2013.12.123"]}))
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t34\n")
    lines = [f"Questions: call {p}, or write." for p in PHONES]
    lines += [f"numeric data: {n}" for n in NOT_PHONES]
    (root / "README").write_text(f"# {PROJECT}\n\nRecorded at {SITE} by {EXPERIMENTER}.\n\n"
                                 + "\n".join(lines) + "\n")
    return root, raw


@pytest.fixture(scope="module")
def published(dataset, tmp_path_factory) -> tuple[Path, Path]:
    root, _ = dataset
    work = tmp_path_factory.mktemp("out")
    out, key = work / "out", work / "key.json"
    # the FIFF project name is kept by default (mne_anonymize replaces it only with
    # --brute): a study whose project name is its cohort's name replaces it
    policy = work / "policy.yaml"
    policy.write_text("meg:\n  fiff:\n    fields: {project_name: replace}\n")
    run_dataset(root, out, key_path=key, policy_path=policy, quiet=True)
    return out, key


def _everything(output: Path) -> list[tuple[str, bytes]]:
    out = []
    for p in sorted(output.rglob("*")):
        data = p.read_bytes() if p.is_file() else b""
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        out.append((p.relative_to(output).as_posix(), data))
    return out


def test_none_of_the_values_survives(published):
    out, _ = published
    needles = [*SUBJECT, EXPERIMENTER, *EXPERIMENTER.split(), PROJECT, SITE, *PHONES]
    found = [(rel, n) for rel, data in _everything(out) for n in needles
             if n.lower() in rel.lower() or n.lower().encode("latin-1") in data.lower()]
    assert found == []


def test_annotations_scrubbed_onsets_and_durations_exact(dataset, published):
    _, raw_in = dataset
    out, _ = published
    (fif,) = out.glob("sub-*/meg/sub-*_task-rest_meg.fif")  # the subject is relabelled
    raw = mne.io.read_raw_fif(fif)
    assert raw.annotations.onset.tobytes() == raw_in.annotations.onset.tobytes()
    assert raw.annotations.duration.tobytes() == raw_in.annotations.duration.tobytes()
    assert list(raw.annotations.description) == [
        "BAD_[removed] coughed", "[removed] asked for a break", "blink"]
    assert np.array_equal(raw.get_data(), raw_in.get_data())


def test_numeric_negatives_untouched(published):
    out, _ = published
    readme = (out / "README").read_text()
    for n in NOT_PHONES:
        assert f"numeric data: {n}\n" in readme
    assert readme.count("[phone removed]") == len(PHONES)
    (events,) = out.glob("sub-*/meg/sub-*_task-rest_events.tsv")
    events = events.read_text()
    assert "12.5\t0.0\t1201\tstim" in events and "13.75\t0.0\t2402\tstim" in events


def test_dataset_description_scrubbed_and_listed_in_report(published):
    out, key_path = published
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["Name"] == "[removed]: resting MEG"
    assert desc["Acknowledgements"] == "Thanks to [removed] and the staff of [removed]."
    assert desc["ReferencesAndLinks"] == ["https://doi.org/10.1016/j.neuroimage.2013.12.123"]
    key = read_key(key_path)
    rows = {(value.lower(), kind) for value, kind, _, _ in replaced_values(key)}
    assert {(PROJECT.lower(), "known identifying value"), (SITE.lower(), "known identifying value"),
            ("+45 3545 1234", "phone number")} <= rows
    html = build_html(key)
    assert "Replaced in free text" in html
    assert PROJECT not in html and SITE not in html and "3545 1234" not in html
    assert "A•••" in html and "R•••" in html  # listed, masked


def test_collected_values_feed_the_check_key(dataset, published):
    """The key records the collected values, so `bidsanon check --key` searches for
    them: it finds them in the input and nothing in the output."""
    root, _ = dataset
    out, key_path = published
    key = read_key(key_path)
    assert {PROJECT, SITE, EXPERIMENTER, *SUBJECT} <= set(key.originals)
    paths = {f.path for f in check_dataset(root, key=key, faces=False)
             if f.rule == "key.original-value"}
    assert {"dataset_description.json", "README", "sub-01/meg/sub-01_task-rest_meg.fif"} \
        <= paths
    assert not [f for f in check_dataset(out, key=key, faces=False)
                if f.rule.startswith("key.")]


def test_check_finds_the_phone_numbers_and_not_the_numeric_data(dataset):
    root, _ = dataset
    lines = (root / "README").read_text().splitlines()
    hits = [f for f in check_dataset(root, faces=False)
            if f.path == "README" and f.rule == "text.phone"]
    flagged = {int(f.location.removeprefix("line ")) for f in hits}
    assert {lines[i - 1] for i in flagged} == {f"Questions: call {p}, or write."
                                                for p in PHONES}


def _edf_with_header(path: Path, patient: str, recording: str) -> None:
    data = bytearray((DATA / "eeg" / "edf" / "test_reduced.edf").read_bytes())
    data[8:88] = patient.ljust(80).encode("ascii")
    data[88:168] = recording.ljust(80).encode("ascii")
    path.write_bytes(bytes(data))


def test_header_fields_of_ctf_edf_and_sidecars_are_collected(tmp_path):
    """Real CTF and EDF headers (the CTF subject ID holds a name; fake names and codes
    planted in the EDF) and an institution sidecar key feed the known values."""
    import shutil

    from bidsanon.plan import collect_identifiers, header_identifiers
    from bidsanon.policy import default_policy
    root = tmp_path / "ds"
    (root / "sub-01" / "meg").mkdir(parents=True)
    (root / "sub-01" / "eeg").mkdir(parents=True)
    ds = root / "sub-01" / "meg" / "sub-01_task-som_meg.ds"
    shutil.copytree(DATA / "meg" / "ctf" / "somMDYO-18av.ds", ds)
    for p in ds.glob("somMDYO-18av.*"):
        p.rename(ds / p.name.replace("somMDYO-18av", ds.stem))
    _edf_with_header(root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf",
                     "MCH-0234128 F 02-MAY-1951 Haagen_Smit",
                     "Startdate 29-APR-2014 PSG-4711 Oddvar_Brenna X")
    (root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.json").write_text(json.dumps(
        {"InstitutionName": "Odense Universitetshospital", "TaskName": "rest"}))
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    items = [(p.relative_to(root).as_posix(), p.is_dir()) for p in root.rglob("*")
             if ".ds/" not in p.relative_to(root).as_posix()]
    policy = default_policy()
    fields = {(fmt, k): v for fmt, k, v in header_identifiers(root, items, policy)}
    assert fields[("ctf", "nf_subject_id")] == "Mme Giroud"
    assert fields[("edf", "patient.name")] == "Haagen Smit"
    assert fields[("edf", "recording.technician")] == "Oddvar Brenna"
    known = set(collect_identifiers(root, items, policy))
    assert {"Mme Giroud", "Giroud", "Haagen Smit", "Haagen", "Smit", "MCH-0234128",
            "PSG-4711", "Oddvar Brenna", "Brenna", "Odense Universitetshospital"} <= known
    # the task label "som" and generic values never become known values
    assert not {"som", "x", "X"} & known
