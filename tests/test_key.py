"""Key lifecycle: encryption, re-identification, incremental releases, withdrawal, safety."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from bidsanon.cli import main
from bidsanon.errors import InputError
from bidsanon.key import KeyData, SubjectEntry, read_key, write_key, write_private
from bidsanon.reidentify import Inverse, reidentify_text
from bidsanon.run import run_dataset
from bidsanon.formats.tsv import read_tsv
from conftest import DATA, copy_tree


def add_subject(root: Path, new: str, template: str = "01") -> None:
    shutil.copytree(root / f"sub-{template}", root / f"sub-{new}")
    for p in sorted((root / f"sub-{new}").rglob(f"*sub-{template}*"), reverse=True):
        p.rename(p.with_name(p.name.replace(f"sub-{template}", f"sub-{new}")))
    scans = root / f"sub-{new}" / f"sub-{new}_scans.tsv"
    scans.write_text(scans.read_text(encoding="utf-8-sig").replace(f"sub-{template}", f"sub-{new}"))
    with open(root / "participants.tsv", "a") as f:
        f.write(f"\nsub-{new}\tn/a\tn/a\tn/a")


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def dataset(tmp_path) -> Path:
    return copy_tree(DATA / "bids/ds000248", tmp_path / "in")


def test_encrypted_round_trip_and_wrong_passphrase(tmp_path):
    key = KeyData(subjects={"JSMITH01": SubjectEntry("Q7LABELX", -40000)})
    path = tmp_path / "k.json"
    write_key(path, key, passphrase="correct horse")
    raw = path.read_bytes()
    assert b"Q7LABELX" not in raw and b"JSMITH01" not in raw and key.secret.encode() not in raw
    assert read_key(path, "correct horse").subjects["JSMITH01"].label == "Q7LABELX"
    with pytest.raises(InputError, match="wrong passphrase"):
        read_key(path, "wrong")


def test_encrypted_run_via_environment(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BIDSANON_KEY_PASSPHRASE", "s3cret")
    key = tmp_path / "k.json"
    assert main(["run", str(dataset), str(tmp_path / "out"), "--key", str(key),
                 "--encrypt-key", "-q", "-j", "1"]) == 0
    assert b"bidsanon-key-encrypted" in key.read_bytes()
    assert main(["key", "info", str(key)]) == 0
    info = capsys.readouterr().out
    assert "(encrypted)" in info and "1 active" in info and read_key(key).secret not in info
    monkeypatch.setenv("BIDSANON_KEY_PASSPHRASE", "nope")
    assert main(["key", "info", str(key)]) == 2
    assert "wrong passphrase" in capsys.readouterr().err


def test_permissions_private_even_with_open_umask(tmp_path):
    old = os.umask(0)
    try:
        write_private(tmp_path / "k.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600


def test_reidentify_results_tsv(dataset, tmp_path, capsys):
    key = tmp_path / "k.json"
    run_dataset(dataset, tmp_path / "out", key_path=key, jobs=1, quiet=True)
    k = read_key(key)
    new = k.subjects["01"].label
    results = tmp_path / f"results_sub-{new}.tsv"
    shifted = (tmp_path / "out" / f"sub-{new}" / f"sub-{new}_scans.tsv")
    acq = read_tsv(shifted).column("acq_time")[0]
    results.write_text(f"participant_id\tscan_date\tpower\nsub-{new}\t{acq}\t0.5\n")
    assert main(["reidentify", "--key", str(key), "--dates", str(results)]) == 0
    out = tmp_path / "results_sub-01_reidentified.tsv"
    rows = read_tsv(out).rows
    assert rows == [["sub-01", "1921-08-16T19:01:10.720100Z", "0.5"]]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert main(["reidentify", "--key", str(key), "--subject", f"sub-{new}"]) == 0
    assert f"sub-{new} -> sub-01" in capsys.readouterr().out


def test_reidentify_text_lines_use_their_own_subject():
    key = KeyData(subjects={"A": SubjectEntry("X1", -10), "B": SubjectEntry("Y2", -20)})
    text = "sub-X1 2000-01-01\nsub-Y2 2000-01-01\n"
    assert reidentify_text(text, Inverse.from_key(key), dates=True) == \
        "sub-A 2000-01-11\nsub-B 2000-01-21\n"


def test_incremental_release_keeps_old_outputs(dataset, tmp_path):
    key = tmp_path / "k.json"
    run_dataset(dataset, tmp_path / "v1", key_path=key, jobs=1, quiet=True)
    first = read_key(key)
    add_subject(dataset, "02")
    add_subject(dataset, "03")
    run_dataset(dataset, tmp_path / "v2", key_path=key, jobs=2, quiet=True)
    second = read_key(key)
    old_label = first.subjects["01"].label
    assert (second.subjects["01"].label, second.subjects["01"].offset_days) == \
        (old_label, first.subjects["01"].offset_days)
    v1, v2 = hashes(tmp_path / "v1"), hashes(tmp_path / "v2")
    for rel, digest in v1.items():
        if f"sub-{old_label}" in rel or rel.startswith("sub-emptyroom"):
            assert v2[rel] == digest, rel
    assert {"02", "03"} <= set(second.subjects)
    assert len({e.label for e in second.subjects.values()}) == 3


def test_withdrawn_subject_removed_and_recorded(dataset, tmp_path, capsys):
    key = tmp_path / "k.json"
    add_subject(dataset, "02")
    run_dataset(dataset, tmp_path / "v1", key_path=key, jobs=1, quiet=True)
    label = read_key(key).subjects["02"].label
    shutil.rmtree(dataset / "sub-02")
    lines = (dataset / "participants.tsv").read_text().splitlines()
    (dataset / "participants.tsv").write_text("\n".join(l for l in lines if "sub-02" not in l))
    summary = run_dataset(dataset, tmp_path / "v2", key_path=key, jobs=1, quiet=True)
    k = read_key(key)
    assert k.subjects["02"].withdrawn and k.runs[-1]["withdrawn"] == ["02"]
    assert not list((tmp_path / "v2").glob(f"sub-{label}*"))
    assert f"sub-{label}" not in (tmp_path / "v2" / "participants.tsv").read_text()
    assert any("withdrawn" in w for w in summary.warnings)


def test_key_verify(dataset, tmp_path, capsys):
    key = tmp_path / "k.json"
    run_dataset(dataset, tmp_path / "out", key_path=key, jobs=1, quiet=True)
    assert main(["key", "verify", str(key), str(tmp_path / "out")]) == 0
    readme = tmp_path / "out" / "README"
    readme.write_text(readme.read_text() + "edited\n")
    (tmp_path / "out" / "extra.txt").write_text("x")
    assert main(["key", "verify", str(key), str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "changed since the run: README" in out and "not made by this run: extra.txt" in out


def test_key_refused_through_symlink_into_output(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    link = tmp_path / "key-link"
    link.symlink_to(out)
    code = main(["run", str(dataset), str(out), "--key", str(link / "k.json")])
    assert code == 2 and "inside the output dataset" in capsys.readouterr().err
    assert not (out / "k.json").exists()


def test_output_never_holds_key_path_source_path_or_secret(dataset, tmp_path):
    key = tmp_path / "private" / "k.json"
    key.parent.mkdir()
    run_dataset(dataset, tmp_path / "out", key_path=key, jobs=1, quiet=True)
    secret = read_key(key).secret
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            for needle in (str(key), str(dataset), secret, "private/k.json"):
                assert needle.encode() not in data, (p, needle)
