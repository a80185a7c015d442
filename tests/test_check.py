"""bidsanon check: what it finds in the real inputs, nothing at error level in bidsanon's
outputs of the same datasets, faces before and after defacing, key values, the CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from bidsanon.check import Needles, check_dataset, scan_dataset
from bidsanon.cli import main
from bidsanon.errors import FindingsError, UsageError
from bidsanon.key import read_key
from bidsanon.policy import load_policy
from bidsanon.run import run_dataset
from conftest import DATA, copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"
SOURCES = {"ds000246": DATA / "bids/ds000246", "ds000248": DATA / "bids/ds000248",
           "eeg_matchingpennies": DATA / "bids/eeg_matchingpennies",
           "pet001": DATA / "bids/pet001", "example_dataset": EXAMPLE}

AEF1 = "sub-0001/meg/sub-0001_task-AEF_run-01_meg.ds"
NOISE = "sub-emptyroom/meg/sub-emptyroom_task-noise_run-01_meg.ds"
PET = "sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.nii.gz"
JS_ANAT = "sub-JS042/ses-20230415/anat/sub-JS042_ses-20230415_T1w"
MK_ANAT = "sub-MK117/ses-20230502/anat/sub-MK117_ses-20230502_T1w"
JS_MEG = "sub-JS042/ses-20230415/meg/sub-JS042_ses-20230415_task-rest_meg"
ER_MEG = "sub-emptyroom/ses-20230415/meg/sub-emptyroom_ses-20230415_task-noise_meg"
AB_EEG = "sub-AB203/ses-20230611/eeg/sub-AB203_ses-20230611_task-rest_eeg"
MK_EEG = "sub-MK117/ses-20230502/eeg/sub-MK117_ses-20230502_task-oddball_eeg"

#: What check must find in each input: (file, rule, severity).
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "ds000246": [
        ("sub-0001/meg/sub-0001_acq-NAS_photo.jpg", "photos.face", "warning"),
        ("sub-0001/meg/sub-0001_acq-LPA_photo.jpg", "photos.metadata", "error"),
        ("sub-0001/meg/sub-0001_headshape.pos", "headshape.dense-points", "warning"),
        (AEF1, "ctf.operator", "error"), (AEF1, "ctf.path", "error"),
        (AEF1, "ctf.uid", "error"), (AEF1, "ctf.date", "error"),
        (AEF1, "ctf.subject-id", "error"), (AEF1, "ctf.accession", "error"),
        (NOISE, "ctf.path", "error"), (NOISE, "ctf.date", "error"),
        ("sub-0001/meg/sub-0001_task-AEF_run-01_meg.json", "sidecar.deny-listed", "error"),
        ("sub-emptyroom/meg/sub-emptyroom_task-noise_run-01_meg.json",
         "sidecar.deny-listed", "error"),
        ("README", "text.url", "warning"),
        ("dataset_description.json", "text.url", "warning"),
    ],
    "ds000248": [("CHANGES", "text.date", "warning")],
    "eeg_matchingpennies": [
        ("README.md", "text.url", "warning"), ("CHANGES", "text.date", "warning"),
        ("dataset_description.json", "text.url", "warning"),
        ("code/format_v020_to_v030.py", "check.text-only", "info"),
        ("stimuli/left_hand.png", "check.copied-binary", "info"),
    ],
    "pet001": [
        ("sub-01/ses-01/anat/sub-01_ses-01_T1w.json", "sidecar.deny-listed", "error"),
        ("sub-01/ses-01/anat/sub-01_ses-01_T1w.nii", "nifti.unreadable", "warning"),
        (PET, "gzip.name", "error"), (PET, "gzip.mtime", "error"),
        (PET, "nifti.header-text", "error"),
    ],
    "example_dataset": [
        ("README", "text.email", "error"), ("README", "text.phone", "error"),
        ("README", "text.url", "warning"), ("CHANGES", "text.email", "error"),
        ("dataset_description.json", "text.email", "error"),
        ("participants.tsv", "participants.identifying-column", "error"),
        ("participants.tsv", "participants.age", "error"),
        ("participants.tsv", "participants.free-text", "warning"),
        ("participants.tsv", "text.phone", "error"),
        (f"{JS_ANAT}.json", "sidecar.deny-listed", "error"),
        (f"{JS_ANAT}.json", "sidecar.not-pseudonymized", "error"),
        (f"{JS_ANAT}.json", "sidecar.date", "error"),
        (f"{JS_ANAT}.nii.gz", "nifti.header-text", "error"),
        (f"{JS_ANAT}.nii.gz", "anat.face", "error"),
        (f"{MK_ANAT}.nii.gz", "anat.face", "error"),
        (f"{MK_ANAT}.json", "text.date", "warning"),
        (f"{JS_MEG}.fif", "fiff.machine-id", "error"), (f"{JS_MEG}.fif", "fiff.subject", "error"),
        (f"{JS_MEG}.fif", "fiff.experimenter", "error"), (f"{JS_MEG}.fif", "fiff.date", "error"),
        (f"{ER_MEG}.fif", "fiff.machine-id", "error"),
        (f"{AB_EEG}.edf", "edf.name", "error"), (f"{AB_EEG}.edf", "edf.date", "error"),
        (f"{MK_EEG}.vmrk", "brainvision.reference", "error"),
        (f"{MK_EEG}.json", "sidecar.date", "error"),
        ("sub-JS042/ses-20230415/sub-JS042_ses-20230415_scans.tsv", "scans.source", "error"),
        ("sub-JS042/ses-20230415/sub-JS042_ses-20230415_scans.tsv", "scans.acq-time", "error"),
        ("sub-JS042/sub-JS042_sessions.tsv", "scans.acq-time", "error"),
    ],
}


def found(result) -> set[tuple[str, str, str]]:
    return {(f.path, f.rule, f.severity) for f in result.findings}


@pytest.mark.parametrize("name", list(SOURCES))
def test_finds_what_the_inputs_hold(name):
    result = scan_dataset(SOURCES[name])
    missing = set(EXPECTED[name]) - found(result)
    assert not missing, missing
    assert set(result.files) >= {p for p, _, _ in EXPECTED[name]}
    if name == "ds000248":  # already de-identified upstream: dates shifted to 1921
        assert result.counts()["error"] == 0, result.findings


def test_example_findings_locate_the_values():
    result = scan_dataset(EXAMPLE, faces=False)
    by = {(f.path, f.rule, f.location): f for f in result.findings}
    name = by[(f"{JS_ANAT}.json", "sidecar.deny-listed", "PatientName")]
    assert name.value == "Jane^Smith" and "Jane" not in name.message  # kept privately
    assert by[("README", "text.email", "line 5")].severity == "error"
    assert ("participants.tsv", "participants.identifying-column", "birthday") in by
    assert any(p == f"{JS_ANAT}.nii.gz" and loc == "header aux_file" for p, _, loc in by)


# --------------------------------------------------------------------------- outputs


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """bidsanon's output of every dataset (the run's own gate off, so that this module's
    test, not the run, reports what is left) and its key."""
    base = tmp_path_factory.mktemp("outputs")
    policy = base / "no-gate.yaml"
    policy.write_text("run:\n  check: false\n  on_error: skip\n")
    out = {}
    for name, src in SOURCES.items():
        copy = copy_tree(src, base / name / "in")
        summary = run_dataset(copy, base / name / "out", policy_path=policy, jobs=1,
                              quiet=True)
        out[name] = (copy, summary.output, read_key(summary.key))
    return out


@pytest.mark.parametrize("name", list(SOURCES))
def test_nothing_at_error_level_in_bidsanon_output(outputs, name):
    _, out, key = outputs[name]
    result = scan_dataset(out, key=key)
    errors = [f for f in result.findings if f.severity == "error"]
    assert errors == []
    assert len(result.files) > 5


def test_key_values_found_in_the_input_not_the_output(outputs, tmp_path):
    src, out, key = outputs["example_dataset"]
    result = scan_dataset(src, key=key, faces=False)
    hits = {(f.path, f.rule) for f in result.findings if f.rule.startswith("key.")}
    assert (f"{JS_ANAT}.json", "key.original-label") in hits  # the name holds sub-JS042
    values = [f for f in result.findings if f.rule == "key.original-value"
              and f.path == f"{JS_ANAT}.json"]
    assert any(f.value == "Jane^Smith" for f in values)
    assert not any("Jane" in f.message for f in values)
    assert any(f.rule == "key.original-value" and f.path == f"{JS_MEG}.fif"
               for f in result.findings)  # found in the binary FIFF header too
    assert not [f for f in scan_dataset(out, key=key, faces=False).findings
                if f.rule.startswith("key.")]


def test_needles_search_names_and_decompressed_bytes(tmp_path):
    image = EXAMPLE / f"{JS_ANAT}.nii.gz"  # its aux_file header field holds "Jane Smith"
    few = Needles.compile(["sub-JS042"], ["Jane Smith"])
    aux_file = nib.Nifti1Header.template_dtype.fields["aux_file"][1]
    assert few.in_file(image) == {"Jane Smith": aux_file}
    assert few.in_name(f"{JS_ANAT}.json") == ["sub-JS042"]
    # more anchors than the per-anchor search handles: the token path must agree
    many = Needles.compile([f"sub-X{i:03d}" for i in range(40)], ["Jane Smith"])
    assert many.in_file(image) == few.in_file(image)
    # token boundaries: a longer word is not the value
    text = tmp_path / "notes.txt"
    text.write_bytes(gzip.compress(b"Jane Smithson; JANE SMITH."))
    assert few.in_file(text) == {"Jane Smith": 15}


def test_short_numeric_labels_match_only_as_labels(tmp_path):
    # eeg_ds003645s_hed_demo's sub-004 beh table: response times such as 1.003 and
    # stimuli such as u003.bmp hold the original label 003 of sub-003 only inside
    # other tokens; as a cell or a path part it is a label
    (table,) = (DATA / "bids/eeg_ds003645s_hed_demo/sub-004/ses-1/beh").glob("*_beh.tsv")
    needles = Needles.compile(["sub-003", "003"], [])
    assert b"\t1.003\t" not in table.read_bytes() and b"1.003\t" in table.read_bytes()
    assert needles.in_file(table) == {}
    cell = tmp_path / "ids.tsv"
    cell.write_bytes(table.read_bytes() + b"1.2\t003\tn/a\n")
    assert needles.in_file(cell) == {"003": len(table.read_bytes()) + 4}
    assert needles.in_name("stimuli/003.wav") == ["003"]
    assert needles.in_name("sub-X/func/sub-X_task-a_run-003_bold.nii") == []
    assert needles.in_name("sub-003/anat/sub-003_T1w.nii") == ["sub-003"]


def test_run_refuses_to_publish_what_check_finds(tmp_path):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "in")
    (src / "notes.dat").write_text("call the participant at jane.doe@example.org\n")
    policy = tmp_path / "p.yaml"
    policy.write_text("files:\n  copy: ['*.dat']\n")
    with pytest.raises(FindingsError, match="notes.dat"):
        run_dataset(src, tmp_path / "out", policy_path=policy, jobs=1, quiet=True)
    assert not (tmp_path / "out").exists()
    staged = tmp_path / ".out.bidsanon-work" / "staging" / "notes.dat"
    assert staged.is_file()
    findings = check_dataset(staged.parent)
    assert ("notes.dat", "text.email", "error") in {(f.path, f.rule, f.severity)
                                                    for f in findings}


# --------------------------------------------------------------------------- faces


def _shear(img, brain: np.ndarray, buffer_mm: float = 10.0):
    """A quickshear-style plane cut (RAS grid): the line along the first edge of the lower
    convex hull of the brain's sagittal profile, from its most anterior point, moved
    ``buffer_mm`` down; every voxel below it is zeroed. It leaves the orbits visible."""
    data = np.asanyarray(img.dataobj).copy()
    ys, zs = np.nonzero(brain.any(axis=0))
    order = np.lexsort((zs, -ys))
    hull: list[tuple[int, int]] = []
    for p in zip(ys[order], zs[order]):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    (y0, z0), (y1, z1) = hull[0], hull[1]
    line = z0 + (z1 - z0) / (y1 - y0) * (np.arange(data.shape[1]) - y0) \
        - buffer_mm / float(img.header.get_zooms()[2])
    data[:, np.arange(data.shape[2])[None, :] < line[:, None]] = 0
    return nib.Nifti1Image(data, img.affine)


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """A dataset of the two real heads as they are, defaced by bidsanon, and cut by a
    plane (quickshear-style)."""
    from bidsanon.deface import deface_image
    root = tmp_path_factory.mktemp("faces") / "ds"
    (root).mkdir()
    (root / "dataset_description.json").write_text('{"Name": "faces", "BIDSVersion": "1.9.0"}')
    sample = nib.as_closest_canonical(nib.load(DATA / "anat/sample/T1.mgz"))
    sample = nib.Nifti1Image(np.asanyarray(sample.dataobj), sample.affine)
    sample_brain = resample_from_to(nib.load(DATA / "anat/sample/brain.mgz"), sample, order=0)
    mni = nib.load(DATA / "anat/mni152/MNI152_T1_2mm.nii.gz")
    mni_brain = resample_from_to(nib.load(ROOT / "bidsanon/data/template/brain_mask.nii.gz"),
                                 mni, order=0)
    images = {
        "sample": sample, "mni": mni,
        "sampledefaced": deface_image(sample).image, "mnidefaced": deface_image(mni).image,
        "samplecut": _shear(sample, np.asanyarray(sample_brain.dataobj) > 0),
        "mnicut": _shear(mni, np.asanyarray(mni_brain.dataobj) > 0),
    }
    for label, img in images.items():
        folder = root / f"sub-{label}" / "anat"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine),
                 folder / f"sub-{label}_T1w.nii.gz")
    return root


def test_faces_found_before_and_not_after_defacing(heads, tmp_path):
    renders = tmp_path / "renders"
    result = scan_dataset(heads, render_dir=renders)
    faces = {f.path.split("/")[0] for f in result.findings if f.rule == "anat.face"}
    from bidsanon.deface.face import available_detectors

    expected = {"sub-sample", "sub-mni"}
    if "mtcnn" in available_detectors():
        # MTCNN (extra [mtcnn]) also finds the face the plane cut leaves in the orbits
        # (measured 2026-12-02); dlib's HOG and CNN do not; bidsanon's cover gives none
        expected |= {"sub-samplecut", "sub-mnicut"}
    assert faces == expected
    for f in result.findings:
        if f.rule == "anat.face":
            assert f.severity == "error" and f.location.startswith("render saved to ")
    saved = [Path(p) for paths in result.renders.values() for p in paths]
    assert len(saved) == 7 * len(expected)  # deface.face.VIEWPOINTS for each face
    for p in saved:
        assert p.parent == renders and p.read_bytes()[:4] == b"\x89PNG"
        assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_face_rule_follows_the_deface_policy(heads):
    policy = load_policy(overrides={"anat": {"deface": {"suffixes": ["T2w"]}}})
    result = scan_dataset(heads, policy=policy)
    assert not [f for f in result.findings if f.rule == "anat.face"]


def test_renders_refused_inside_the_dataset(heads):
    with pytest.raises(UsageError, match="inside the dataset"):
        scan_dataset(heads, render_dir=heads / "renders")


# --------------------------------------------------------------------------- rules


def test_dates_are_warnings_when_the_policy_does_not_shift(tmp_path):
    policy = load_policy(overrides={"dates": {"shift": "none"},
                                    "subjects": {"emptyroom": "drop"}})
    result = scan_dataset(EXAMPLE, policy=policy, faces=False)
    dated = [f for f in result.findings if f.rule in ("scans.acq-time", "sidecar.date",
                                                      "fiff.date", "edf.date")]
    assert dated and {f.severity for f in dated} == {"warning"}
    assert any(f.severity == "error" for f in result.findings)  # names are still errors


def test_every_file_is_accounted_for(tmp_path):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "ds")
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 64)
    (src / "sub-01" / "meg" / "recording.xyz").write_bytes(bytes(range(256)) * 4)
    (src / "sub-01" / "notes.unknown").write_text("PI: dr.who@example.org\n")
    os.symlink("/etc/hostname", src / "outside.txt")
    result = scan_dataset(src, faces=False)
    got = found(result)
    assert (".DS_Store", "check.junk", "warning") in got
    assert ("sub-01/meg/recording.xyz", "check.not-inspected", "warning") in got
    assert ("sub-01/notes.unknown", "check.text-only", "info") in got
    assert ("sub-01/notes.unknown", "text.email", "error") in got
    assert ("outside.txt", "check.symlink", "warning") in got


def test_nifti_extensions_and_text_in_brainvision_headers(tmp_path):
    src = copy_tree(DATA / "bids/eeg_matchingpennies", tmp_path / "ds")
    img = nib.load(DATA / "anat/mni152/MNI152_T1_2mm.nii.gz")
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"acquired for J. Doe"))
    (src / "sub-05" / "anat").mkdir()
    nib.save(img, src / "sub-05/anat/sub-05_acq-ext_angio.nii")  # .nii: no gzip header
    vhdr = src / "sub-05/eeg/sub-05_task-matchingpennies_eeg.vhdr"
    vhdr.write_text(vhdr.read_text() + "\n[Comment]\nrecorded by lab.tech@example.org\n")
    got = found(scan_dataset(src, faces=False))
    assert ("sub-05/anat/sub-05_acq-ext_angio.nii", "nifti.extensions", "error") in got
    assert ("sub-05/eeg/sub-05_task-matchingpennies_eeg.vhdr", "text.email", "error") in got


def test_participants_age_cap_follows_the_policy(tmp_path):
    src = copy_tree(DATA / "bids/eeg_matchingpennies", tmp_path / "ds")
    policy = load_policy(overrides={"tsv": {"participants": {"columns": {"age": {"cap": 26}}}}})
    ages = [f for f in scan_dataset(src, policy=policy, faces=False).findings
            if f.rule == "participants.age"]
    assert len(ages) == 1 and "3 ages above 26" in ages[0].message


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["check", str(DATA / "bids/ds000248")]) == 0
    assert main(["check", str(DATA / "bids/ds000248"), "--fail-on", "warning"]) == 1
    assert main(["check", str(EXAMPLE), "--no-faces"]) == 1
    out = capsys.readouterr().out
    assert "participants.tsv\n" in out and "FAILED (--fail-on error)" in out
    assert main(["check", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset folder not found" in err


def test_cli_writes_reports_outside_the_dataset_only(tmp_path, capsys):
    report = tmp_path / "check.json"
    code = main(["check", str(EXAMPLE), "--no-faces", "--format", "json", "-o", str(report)])
    assert code == 1
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["counts"]["error"] > 20
    assert "FAILED" in capsys.readouterr().err
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "ds")
    assert main(["check", str(src), "-o", str(src / "report.txt")]) == 2
    assert not (src / "report.txt").exists()


def test_cli_with_key_saves_face_renders_next_to_it(outputs, tmp_path, capsys):
    src, _, key = outputs["example_dataset"]
    key_path = tmp_path / "study_bidsanon-key.json"
    key_path.write_text(key.to_json())
    shutil.rmtree(tmp_path / "study_bidsanon-key_qc", ignore_errors=True)
    code = main(["check", str(src), "--key", str(key_path), "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert set(data["renders"]) == {f"{JS_ANAT}.nii.gz", f"{MK_ANAT}.nii.gz"}
    for paths in data["renders"].values():
        assert all(Path(p).parent == tmp_path / "study_bidsanon-key_qc" for p in paths)


def test_docs_list_every_rule_of_the_table():
    doc = (ROOT / "docs/check.md").read_text()
    from bidsanon.check import doc_table
    table = doc.split("<!-- table: check -->\n", 1)[1].split("<!-- /table -->", 1)[0]
    assert table == doc_table()


def test_face_checked_images_go_to_the_workers_first(tmp_path):
    """The face rule takes seconds per image and every other rule milliseconds: the
    images go out first, largest first, so the check does not end on one of them."""
    from bidsanon.check.engine import Scan, Settings, face_checked_first
    names = {"README": 10, "sub-01/anat/sub-01_T1w.nii.gz": 300,
             "sub-01/meg/sub-01_task-a_meg.fif": 5000, "sub-02/anat/sub-02_T2w.nii.gz": 900,
             "sub-02/func/sub-02_task-a_bold.nii.gz": 800}
    for rel, size in names.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    items = [(rel, False) for rel in names]
    settings = Settings.build(None)
    ordered, heavy = face_checked_first(items, tmp_path, Scan(settings, None, True))
    assert heavy == 2
    assert ordered[:2] == [("sub-02/anat/sub-02_T2w.nii.gz", False),
                           ("sub-01/anat/sub-01_T1w.nii.gz", False)]
    assert ordered[2:] == [i for i in items if "anat" not in i[0]]  # the rest as they were
    assert face_checked_first(items, tmp_path, Scan(settings, None, False)) == (items, 0)
