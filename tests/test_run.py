"""End to end: `bidsanon run` on example_dataset and on the BIDS examples."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bidsanon.cli import main
from bidsanon.key import read_key
from bidsanon.run import run_dataset
from bidsanon.formats.sidecars import IDENTIFYING_KEYS
from bidsanon.formats.tsv import read_tsv
from conftest import DATA, copy_tree, find_validator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"
BIDS_EXAMPLES = ["ds000246", "ds000248", "eeg_matchingpennies", "pet001"]
TEXT_SUFFIXES = (".json", ".tsv", ".txt", ".md", ".vhdr", ".vmrk", ".bidsignore", ".cls",
                 ".mrk", ".infods", ".acq", ".hist", ".pos", "README", "CHANGES", "LICENSE")

#: Fake identifying values planted in example_dataset (scripts/make_example_dataset.py).
PLANTED = ["JS042", "MK117", "AB203", "Jane", "Smith", "Kowalski", "Anna Berg", "Anna_Berg",
           "1931-03-12", "1988-11-02", "1995-07-30", "Springfield", "helen.ortiz",
           "555-0199", "555 0142", "MRN-", "MRC35217", "167024", "Ortiz", "2023-04-15",
           "20230415", "2023-05-02", "20230502", "20230611", "springfield-neurolab",
           "A2023-0415-77", "claustrophobic", "Elm Street", "tech_JDoe"]


def tree_hash(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def is_text(path: Path) -> bool:
    return path.name.endswith(TEXT_SUFFIXES) or path.name in TEXT_SUFFIXES


def file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def leaks(output: Path, needles: list[str], text_only: bool = False) -> list[str]:
    """Every (file, needle) where an original value appears in a name or in the bytes."""
    found = []
    # a subject label is a whole entity value: sub-08 is not inside a new label sub-08K2
    patterns = [re.compile(re.escape(n.lower().encode())
                           + (rb"(?![a-z0-9])" if n.startswith("sub-") else b""))
                for n in needles]
    for p in sorted(output.rglob("*")):
        rel = p.relative_to(output).as_posix()
        for n, rx in zip(needles, patterns):
            if rx.search(rel.lower().encode()):
                found.append(f"{rel}: name contains {n!r}")
        if p.is_file() and (is_text(p) or not text_only):
            data = file_bytes(p).lower()
            for n, rx in zip(needles, patterns):
                if rx.search(data):
                    found.append(f"{rel}: contains {n!r}")
    return found


def validate(path: Path, ignore: tuple[str, ...] = ()) -> list[dict]:
    exe = find_validator()
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
    proc = subprocess.run([exe, "--format", "json", str(path)], capture_output=True, text=True,
                          timeout=300)
    report = json.loads(proc.stdout)
    return [i for i in report["issues"]["issues"]
            if i["severity"] == "error" and i["code"] not in ignore]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("example")
    src = copy_tree(EXAMPLE, base / "in")
    before = tree_hash(src)
    summary = run_dataset(src, base / "out", jobs=2, quiet=True)
    return src, base / "out", summary, before


def test_example_published_with_key_outside(example_run):
    src, out, summary, _ = example_run
    assert summary.published and not summary.failed
    assert summary.key == out.parent / "out_bidsanon-key.json"
    assert stat.S_IMODE(summary.key.stat().st_mode) == 0o600
    assert not any(out.parent.glob(".out.bidsanon-work"))
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bidsanon"
    assert str(src) not in json.dumps(desc)


def test_example_input_unchanged(example_run):
    src, _, _, before = example_run
    assert tree_hash(src) == before


def test_example_no_planted_value_anywhere(example_run):
    _, out, _, _ = example_run
    assert leaks(out, PLANTED) == []


def test_example_key_maps_everything(example_run):
    src, out, summary, _ = example_run
    key = read_key(summary.key)
    assert set(key.subjects) == {"JS042", "MK117", "AB203"}
    assert str(summary.key) not in "".join(p.read_text(errors="ignore") for p in out.rglob("*.json"))
    for entry in key.files:
        assert (out / entry["output"]).exists()
        assert entry["verified"]["reader"]  # every file read back before publishing
        assert len(entry["source_sha256"]) == len(entry["output_sha256"]) == 64
        assert (src / entry["source"]).exists()
    assert "Jane Smith" in key.originals or "Jane^Smith" in key.originals
    assert key.secret not in "".join(p.read_text(errors="ignore") for p in out.rglob("*")
                                     if p.is_file() and is_text(p))


def test_example_dates_keep_their_differences(example_run):
    src, out, summary, _ = example_run
    key = read_key(summary.key)
    entry = key.subjects["JS042"]
    ses = entry.sessions["20230415"]
    new = out / f"sub-{entry.label}" / f"ses-{ses}" / f"sub-{entry.label}_ses-{ses}_scans.tsv"
    old = src / "sub-JS042/ses-20230415/sub-JS042_ses-20230415_scans.tsv"
    t_old = [dt.datetime.fromisoformat(x) for x in read_tsv(old).column("acq_time")]
    t_new = [dt.datetime.fromisoformat(x) for x in read_tsv(new).column("acq_time")]
    assert t_new[1] - t_new[0] == t_old[1] - t_old[0]
    assert t_new[0] - t_old[0] == dt.timedelta(days=entry.offset_days)
    assert all(t.year <= 1925 for t in t_new)
    assert "source" not in read_tsv(new).columns


def test_example_participants(example_run):
    _, out, summary, _ = example_run
    table = read_tsv(out / "participants.tsv")
    assert table.columns == ["participant_id", "age", "sex", "hand"]
    assert max(int(a) for a in table.column("age") if a != "n/a") <= 89
    assert table.column("participant_id") == sorted(table.column("participant_id"))
    desc = json.loads((out / "participants.json").read_text())
    assert set(desc) == {"age", "sex", "hand"}
    # three participants cannot be 5-anonymous: measured, reported, nothing generalised
    assert summary.privacy and summary.privacy[0].startswith("participants.tsv: k = 1 -> 1")
    assert any("k-anonymity target k=5 is not reached" in w for w in summary.warnings)
    assert "k-anonymity:" in summary.text()


def test_example_passes_bids_validator(example_run):
    _, out, _, _ = example_run
    assert validate(out) == []


def test_second_run_with_key_is_identical(example_run, tmp_path):
    src, out, summary, _ = example_run
    key = tmp_path / "key.json"
    shutil.copyfile(summary.key, key)
    os.chmod(key, 0o600)
    again = run_dataset(src, tmp_path / "out2", key_path=key, jobs=1, quiet=True)
    assert again.published
    assert tree_hash(tmp_path / "out2") == tree_hash(out)
    assert {s: (e.label, e.offset_days) for s, e in read_key(key).subjects.items()} == \
        {s: (e.label, e.offset_days) for s, e in read_key(summary.key).subjects.items()}


#: Files of the BIDS examples that are broken in the examples themselves.
BROKEN = {"pet001": ["sub-01/ses-01/anat/sub-01_ses-01_T1w.nii"]}  # an HTML page, not NIfTI


@pytest.mark.parametrize("name", BIDS_EXAMPLES)
def test_bids_examples(name, tmp_path):
    src = copy_tree(DATA / "bids" / name, tmp_path / "in")
    before = tree_hash(src)
    policy = tmp_path / "policy.yaml"
    policy.write_text("run:\n  on_error: skip\n")
    summary = run_dataset(src, tmp_path / "out", policy_path=policy, quiet=True, jobs=1)
    out = tmp_path / "out"
    assert summary.published
    assert [f.split(": ")[0].removeprefix(str(src) + "/") for f in summary.failed] == \
        BROKEN.get(name, [])
    assert tree_hash(src) == before
    # originals: subject labels, deny-listed sidecar values, acquisition dates
    needles = [f"sub-{p.name[4:]}" for p in src.glob("sub-*") if p.name != "sub-emptyroom"]
    for p in src.rglob("*.json"):
        data = json.loads(p.read_text(encoding="utf-8-sig"))
        if isinstance(data, dict):
            needles += [v for k, v in data.items() if k in IDENTIFYING_KEYS
                        and IDENTIFYING_KEYS[k][0] in ("remove", "shift", "pseudonymize")
                        and isinstance(v, str) and len(v) >= 4]
    for p in src.rglob("*_scans.tsv"):
        needles += [v[:10] for v in read_tsv(p).column("acq_time") if v != "n/a"]
    assert leaks(out, sorted(set(needles)), text_only=True) == []
    # the examples' data files are empty placeholders (and pet001's frame timing is
    # inconsistent): the output may not have a validator error the input does not have
    input_errors = {i["code"] for i in validate(src)}
    assert validate(out, ignore=tuple(input_errors)) == []


def test_dry_run_writes_nothing(tmp_path, capsys):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "in")
    assert main(["run", str(src), str(tmp_path / "out"), "--dry-run"]) == 0
    assert "[scans] sub-01/sub-01_scans.tsv" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("case", ["output-in-input", "key-in-output", "key-in-input",
                                  "same", "not-bids", "foreign-output"])
def test_refusals(tmp_path, capsys, case):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "in")
    out, key = tmp_path / "out", tmp_path / "key.json"
    if case == "output-in-input":
        out = src / "derivatives" / "anon"
    elif case == "key-in-output":
        key = out / "key.json"
    elif case == "key-in-input":
        key = src / "key.json"
    elif case == "same":
        out = src
    elif case == "not-bids":
        (src / "dataset_description.json").unlink()
    elif case == "foreign-output":
        out.mkdir()
        (out / "thesis.pdf").write_text("precious")
    code = main(["run", str(src), str(out), "--key", str(key)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not key.exists()
    if case == "foreign-output":
        assert (out / "thesis.pdf").read_text() == "precious"
    elif case != "same":
        assert not (out / "dataset_description.json").exists()


def test_invalid_json_stops_run_with_one_line(tmp_path, capsys):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "in")
    (src / "sub-01/meg/sub-01_coordsystem.json").write_text('{"a": ')
    code = main(["run", str(src), str(tmp_path / "out"), "-j", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "sub-01_coordsystem.json" in err and "invalid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_on_error_skip_reports_and_continues(tmp_path):
    src = copy_tree(DATA / "bids/ds000248", tmp_path / "in")
    (src / "sub-01/meg/sub-01_coordsystem.json").write_text('{"a": ')
    policy = tmp_path / "p.yaml"
    policy.write_text("run:\n  on_error: skip\n")
    summary = run_dataset(src, tmp_path / "out", policy_path=policy, jobs=1, quiet=True)
    assert summary.published and len(summary.failed) == 1
    assert not list((tmp_path / "out").rglob("*coordsystem.json"))


def test_images_without_content_are_copied_not_defaced(tmp_path):
    # ieeg_visual's two T1w images (bids-examples): one holds only NaN, the other one
    # value everywhere. They show no face: each is published with its voxels as they
    # are and its header scrubbed, and the run warns instead of failing
    import nibabel as nib
    import numpy as np
    src = tmp_path / "in"
    src.mkdir()
    (src / "dataset_description.json").write_text(
        json.dumps({"Name": "blank images", "BIDSVersion": "1.10.0"}))
    for s in ("01", "02"):
        anat = src / f"sub-{s}" / "ses-01" / "anat"
        anat.mkdir(parents=True)
        for f in (DATA / "anat" / "ieeg_visual").glob(f"sub-{s}_*"):
            shutil.copy(f, anat / f.name)
    out = tmp_path / "out"
    summary = run_dataset(src, out, quiet=True, jobs=1)
    assert summary.published and not summary.failed
    why = sorted(w.split(": ", 1)[1].split(",")[0] for w in summary.warnings
                 if "shows no face" in w)
    assert why == ["the image holds a single value", "the image holds no finite value"]
    outputs = {f["source"]: f["output"] for f in json.loads(summary.key.read_text())["files"]}
    for before in sorted(src.rglob("*_T1w.nii.gz")):
        after = out / outputs[before.relative_to(src).as_posix()]
        a, b = nib.load(before), nib.load(after)
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj),
                              equal_nan=True)
        assert np.allclose(a.affine, b.affine) and not b.header.extensions
        assert b.header["descrip"].item() == b""


@pytest.mark.parametrize("background", [False, True])
def test_the_staged_dataset_opens_beside_the_final_check(tmp_path, background):
    """pybids opens the staged dataset in a thread while the workers check it (or
    first, with no workers); a dataset that does not open fails the run either way,
    once the check is done."""
    from bidsanon.run import open_dataset
    from bidsanon.verify import VerificationError
    good = tmp_path / "good"
    (good / "sub-01" / "anat").mkdir(parents=True)
    (good / "dataset_description.json").write_text(
        json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    (good / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    ran = []
    with open_dataset(good, [], background=background) as opened:
        ran.append("check")
    assert ran == ["check"] and opened.result()["pybids"] >= 2
    with open_dataset(good, None, background=background) as opened:  # verify: false
        pass
    assert opened.result() is None
    bad = tmp_path / "bad"
    bad.mkdir()  # no dataset_description.json: pybids refuses it
    with pytest.raises(VerificationError, match="pybids cannot open"):
        with open_dataset(bad, [], background=background):
            ran.append("check of the bad one")
    # beside the check it fails after it; with no workers before it
    assert (ran[-1] == "check of the bad one") == background


def test_stage_times_break_a_run_down_by_defacing_stage_and_handler():
    from bidsanon.run import DEFACE_STAGES, stage_lines, stage_times
    head = {"out": "sub-A/anat/sub-A_T1w.nii.gz", "handler": "anat", "seconds": 10.0,
            "metrics": {f"seconds.{s}": float(i + 1) for i, s in enumerate(DEFACE_STAGES)}}
    other = {**head, "out": "sub-B/anat/sub-B_T1w.nii.gz", "seconds": 8.0}
    fiff = {"out": "sub-A/meg/sub-A_meg.fif", "handler": "fiff", "seconds": 0.004,
            "metrics": {}}
    checked = {head["out"]: 3.0, other["out"]: 5.0, fiff["out"]: 0.01, "README": 0.002}
    st = stage_times([head, other, fiff], checked)
    assert st["defaced_images"] == 2
    assert st["deface.registration"] == 4.0 and st["deface.qc"] == 12.0  # both images
    assert st["check.defaced_images"] == 8.0 and st["check.other_files"] == 0.012
    assert st["handler.anat"] == 18.0 and st["handler.fiff"] == 0.004
    lines = stage_lines(st)
    assert lines[0].startswith("  time per defaced image (s): read 1.0, registration 2.0")
    assert lines[0].endswith("final check 4.0")
    assert "anat 18.00" in lines[1] and "fiff 0.00" in lines[1]
    # no defaced image: only the handlers' line
    assert len(stage_lines(stage_times([fiff], {}))) == 1 and stage_lines({}) == []
