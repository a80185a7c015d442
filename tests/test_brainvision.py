"""BrainVision headers: real files and a recording written here with known identifiers."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.formats import brainvision as bv
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.labels import Labels

REAL = DATA / "eeg" / "brainvision" / "test_NO.vhdr"
PENNIES = DATA / "bids" / "eeg_matchingpennies" / "sub-05" / "eeg"
OFFSET = -36500
START = dt.datetime(2019, 5, 17, 14, 3, 22, 123456)

VHDR = """Brain Vision Data Exchange Header File Version 1.0
; Data created by the Vision Recorder

[Common Infos]
Codepage={codepage}
DataFile=sub-05_task-rest_eeg.eeg
MarkerFile=sub-05_task-rest_eeg.vmrk
DataFormat=BINARY
DataOrientation=MULTIPLEXED
NumberOfChannels=3
SamplingInterval=2000

[Binary Infos]
BinaryFormat=INT_16

[Channel Infos]
Ch1=Fz,,0.1,µV
Ch2=Cz,,0.1,µV
Ch3=Pz,,0.1,µV

[Comment]

A m p l i f i e r  S e t u p
============================
Number of channels: 3
Recorded by Jane Doeson (jane.doeson@example.org, +44 20 7946 0958) for sub-05, café
Data Electrodes Selected Impedance Measurement Range: 0 - 5 kOhm
Impedance [kOhm] at 16:45:21 :
Fz:          2
Cz:          3
Pz:          4
"""

VMRK = """Brain Vision Data Exchange Marker File, Version 1.0

[Common Infos]
Codepage={codepage}
DataFile=sub-05_task-rest_eeg.eeg

[Marker Infos]
Mk1=New Segment,,1,1,0,{start}
Mk2=Stimulus,S  1,100,1,0
Mk3=Comment,Jane Doeson asked for a break\\1 call 555-867-5309,250,1,0
Mk4=Response,R  2,300,1,0
"""


def write_recording(folder: Path, codepage: str = "UTF-8", newline: str = "\n",
                    encoding: str = "utf-8") -> Path:
    """A small BrainVision recording with a name, e-mail, phone, date and label."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / "sub-05_task-rest_eeg"
    for suffix, text in ((".vhdr", VHDR), (".vmrk", VMRK)):
        body = text.format(codepage=codepage, start=START.strftime("%Y%m%d%H%M%S%f"))
        stem.with_suffix(suffix).write_bytes(body.replace("\n", newline).encode(encoding))
    data = np.random.default_rng(1).integers(-3000, 3000, (500, 3), dtype="<i2")
    stem.with_suffix(".eeg").write_bytes(data.tobytes())
    return stem.with_suffix(".vhdr")


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="05", new_subject="7XK2", offset_days=OFFSET,
                labels=Labels(subjects={"05": "7XK2"}))
    args.update(kw)
    return TaskContext(**args)


def anonymize(vhdr: Path, out: Path, ctx: TaskContext) -> Path:
    """Run the handler on .vhdr and .vmrk and copy the .eeg as the runner does."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for suffix in (".vhdr", ".vmrk"):
        src = vhdr.with_suffix(suffix)
        results.append(bv.handle(src, out / ctx.rename(src.name), ctx))
    shutil.copyfile(vhdr.with_suffix(".eeg"), out / ctx.rename(vhdr.with_suffix(".eeg").name))
    return out / ctx.rename(vhdr.name), results


def test_generated_recording(tmp_path):
    vhdr = write_recording(tmp_path / "in")
    before = {p.name: sha256_file(p) for p in vhdr.parent.iterdir()}
    # names in free text are only found through a study's own patterns
    policy = {"text": {"extra_patterns": {"staff": "Jane Doeson"}}}
    out, results = anonymize(vhdr, tmp_path / "out", make_ctx(policy=policy))
    assert {p.name: sha256_file(p) for p in vhdr.parent.iterdir()} == before
    assert out.name == "sub-7XK2_task-rest_eeg.vhdr"
    a = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    b = mne.io.read_raw_brainvision(out, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert b.info["meas_date"] == (START + dt.timedelta(days=OFFSET)).replace(
        tzinfo=dt.timezone.utc)
    assert np.allclose(a.annotations.onset, b.annotations.onset)
    assert list(b.annotations.description)[:1] == list(a.annotations.description)[:1]
    assert b.impedances["Fz"]["imp"] == 2.0  # the impedance table still parses
    data = out.read_bytes() + out.with_suffix(".vmrk").read_bytes()
    for secret in (b"Jane", b"Doeson", b"example.org", b"7946", b"867-5309", b"sub-05",
                   b"16:45:21", b"2019"):
        assert secret not in data, secret
    assert "café".encode() in out.read_bytes()  # other text and the codepage are kept
    assert b"Impedance [kOhm] at 00:00:00 :" in out.read_bytes()
    vmrk = out.with_suffix(".vmrk").read_text()
    assert "DataFile=sub-7XK2_task-rest_eeg.eeg" in vmrk
    assert "Mk2=Stimulus,S  1,100,1,0" in vmrk
    assert "Mk3=Comment,,250,1,0" in vmrk  # free text typed during the recording
    assert "Recorded by [staff removed] ([email removed], [phone removed]) for sub-7XK2" \
        in out.read_text()
    changes = [c for r in results for c in r.changes]
    assert {"DataFile", "MarkerFile", "Comment", "Impedance time", "New Segment date",
            "Marker description"} <= {c.field for c in changes}
    assert bv.peek_dates(vhdr) == [START]
    assert bv.peek_dates(out) == [START + dt.timedelta(days=OFFSET)]
    for p in (out, out.with_suffix(".vmrk")):
        assert [f for f in bv.check_file(p, f"sub-7XK2/eeg/{p.name}")
                if f.severity != "info"] == []


def test_ansi_crlf_and_policies(tmp_path):
    vhdr = write_recording(tmp_path / "in", codepage="ANSI", newline="\r\n",
                           encoding="cp1252")
    policy = {"eeg": {"brainvision": {"comment": "blank", "markers": "scrub",
                                      "placeholder_date": "19000102030405000000"}}}
    out, _ = anonymize(vhdr, tmp_path / "out", make_ctx(offset_days=None, policy=policy))
    raw_text = out.read_bytes()
    assert b"\r\n" in raw_text and b"\n" not in raw_text.replace(b"\r\n", b"")
    assert raw_text.rstrip().endswith(b"[Comment]")
    vmrk = out.with_suffix(".vmrk").read_bytes().decode("cp1252")
    assert r"Mk3=Comment,Jane Doeson asked for a break\1 call [phone removed],250" in vmrk
    assert "Mk2=Stimulus,S  1,100,1,0" in vmrk  # codes kept
    b = mne.io.read_raw_brainvision(out, verbose="error")
    assert b.info["meas_date"] == dt.datetime(1900, 1, 2, 14, 3, 22, 123456,
                                              tzinfo=dt.timezone.utc)


def test_keep_policies_leave_text(tmp_path):
    vhdr = write_recording(tmp_path / "in")
    policy = {"eeg": {"brainvision": {"comment": "keep", "markers": "keep",
                                      "impedance_times": "keep"}}}
    out, _ = anonymize(vhdr, tmp_path / "out", make_ctx(policy=policy))
    assert b"Jane Doeson" in out.read_bytes() and b"16:45:21" in out.read_bytes()
    rules = {f.rule for f in bv.check_file(out, "x")}
    assert {"brainvision.comment", "brainvision.time"} <= rules
    marker_findings = bv.check_file(out.with_suffix(".vmrk"), "x")
    assert ("brainvision.marker-text", "warning") in {(f.rule, f.severity)
                                                      for f in marker_findings}


def test_real_recording(tmp_path):
    out, results = anonymize(REAL, tmp_path / "out",
                             make_ctx(subject=None, labels=Labels()))
    # the .vmrk pointed at "shortrecording2.eeg", a file that does not exist
    vmrk = out.with_suffix(".vmrk").read_bytes()
    assert vmrk.startswith(b"\xef\xbb\xbfBrain Vision") and b"\r\n" in vmrk
    assert b"DataFile=test_NO.eeg" in vmrk and b"shortrecording2" not in vmrk
    assert b"Mk1=New Segment,,1,1,0,00000000000000000000" in vmrk  # empty date kept
    a = mne.io.read_raw_brainvision(REAL, preload=True, verbose="error")
    b = mne.io.read_raw_brainvision(out, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert bv.check_file(REAL.with_suffix(".vmrk"), "x")[0].rule == "brainvision.reference"


def test_bids_example_references_follow_labels(tmp_path):
    out, _ = anonymize(PENNIES / "sub-05_task-matchingpennies_eeg.vhdr", tmp_path, make_ctx())
    text = out.read_text()
    assert "DataFile=sub-7XK2_task-matchingpennies_eeg.eeg" in text
    assert "MarkerFile=sub-7XK2_task-matchingpennies_eeg.vmrk" in text
    assert "sub-05" not in text and "sub-05" not in out.with_suffix(".vmrk").read_text()


@pytest.mark.parametrize("suffix,content,message", [
    (".vhdr", b"Some other file\r\n[Common Infos]\r\n", "not a BrainVision header"),
    (".vmrk", b"Brain Vision Data Exchange Header File Version 1.0\n", "marker file"),
    (".vhdr", b"", "not a BrainVision header"),
])
def test_bad_headers_fail_cleanly(tmp_path, suffix, content, message):
    src = tmp_path / f"bad{suffix}"
    src.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=message) as exc:
        bv.handle(src, out / f"x{suffix}", make_ctx())
    assert f"bad{suffix}" in str(exc.value)
    assert list(out.iterdir()) == []


def test_doc_table_is_in_formats_doc():
    doc = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert bv.doc_table() in doc
    assert all(f.action in bv.ACTIONS for f in bv.FIELDS)
