"""CTF .ds folders: real datasets in, MNE-readable anonymized datasets out."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA, copy_tree

from bidsanon.formats import ctf
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.labels import Labels

SOM = DATA / "meg" / "ctf" / "somMDYO-18av.ds"
DS246 = DATA / "bids" / "ds000246"
RUN1 = DS246 / "sub-0001" / "meg" / "sub-0001_task-AEF_run-01_meg.ds"
RUN2 = DS246 / "sub-0001" / "meg" / "sub-0001_task-AEF_run-02_meg.ds"
NOISE = DS246 / "sub-emptyroom" / "meg" / "sub-emptyroom_task-noise_run-01_meg.ds"
OFFSET = -36500  # 2013 -> 1913, 2000 -> 1900
LABELS = Labels(subjects={"0001": "7XK2", "01": "7XK2", "emptyroom": "emptyroom"})

#: Identifying strings known to be in the inputs (names, operators, paths, dates, UIDs).
SOM_SECRETS = [b"Giroud", b"AD SM LG OD", b"somMDYO", b"DYSTONIE", b"meglx1",
               b"13/04/2000", b"21/11/2000", b"Somesthesie", b"Salpetriere"]
DS246_SECRETS = [b"S01_", b"EAB", b"20131218", b"18/12/2013", b"18-Dec-2013", b"2013",
                 b"/home/meg", b"Tutorial Audio", b"M044_4408", b"2.16.124.113589",
                 b"sub-0001", b"tutorial_AEF_stim", b"24-Oct-2017"]


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="0001", new_subject="7XK2", offset_days=OFFSET, labels=LABELS,
                rel="sub-0001/meg/x_meg.ds")
    args.update(kw)
    return TaskContext(**args)


def leaks(folder: Path, secrets: list[bytes]) -> list[tuple[str, bytes]]:
    """Every (file, secret) where a secret occurs in an output file's bytes or name."""
    found = []
    for p in sorted(folder.rglob("*")):
        data = p.read_bytes() if p.is_file() else b""
        for s in secrets:
            if s in data or s.decode() in p.name:
                found.append((p.relative_to(folder).as_posix(), s))
    return found


def res4_field(path: Path, name: str) -> str:
    f = next(x for x in ctf.FIELDS if x.name == name and x.file == "res4")
    raw = path.read_bytes()[f.offset:f.offset + f.length]
    return raw.split(b"\0", 1)[0].decode("latin-1")


def ws1_string(path: Path, name: str) -> str:
    raw = path.read_bytes()
    hits = ctf._ws1_items(raw, name, 10)
    assert hits, f"{name} not found in {path.name}"
    start, end, _ = hits[0]
    return raw[start:end].decode("latin-1")


@pytest.fixture(scope="module")
def som_out(tmp_path_factory) -> tuple[Path, object]:
    before = sha256_file(SOM)
    dst = tmp_path_factory.mktemp("som") / "sub-7XK2_task-som_meg.ds"
    result = ctf.handle(SOM, dst, make_ctx(subject="01"))
    assert sha256_file(SOM) == before  # the input is never modified
    return dst, result


def test_complete_dataset_reads_in_mne_with_identical_data(som_out):
    dst, _ = som_out
    raw_in = mne.io.read_raw_ctf(SOM, verbose="error")
    raw_out = mne.io.read_raw_ctf(dst, verbose="error")
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())
    assert raw_out.ch_names == raw_in.ch_names
    assert raw_out.info["meas_date"] == raw_in.info["meas_date"] + dt.timedelta(days=OFFSET)
    assert raw_out.info["meas_date"].year <= 1925
    assert raw_out.info["subject_info"]["his_id"] == "7XK2"
    assert raw_out.info["experimenter"] is None
    # data bytes copied exactly, header the same size
    assert sha256_file(dst / "sub-7XK2_task-som_meg.meg4") == sha256_file(SOM / "somMDYO-18av.meg4")
    assert (dst / "sub-7XK2_task-som_meg.res4").stat().st_size == \
        (SOM / "somMDYO-18av.res4").stat().st_size


def test_res4_fields_hold_anonymized_values(som_out):
    dst, result = som_out
    res4 = dst / "sub-7XK2_task-som_meg.res4"
    assert res4_field(res4, "nf_subject_id") == "7XK2"
    assert res4_field(res4, "nf_operator") == ""
    assert res4_field(res4, "nf_run_title") == ""  # free_text: blank
    assert res4_field(res4, "nf_run_name") == "sub-7XK2_task-som_meg"
    assert res4_field(res4, "data_date") == "08/05/1900"
    assert res4_field(res4, "data_time") == "10:35"
    # the bytes after the NUL of each field are zeroed (the input had "10:35\0" "50")
    f = next(x for x in ctf.FIELDS if x.name == "data_time")
    assert res4.read_bytes()[f.offset + 5:f.offset + f.length] == b"\0" * (f.length - 5)
    # everything outside the table's fields is unchanged
    a, b = bytearray((SOM / "somMDYO-18av.res4").read_bytes()), bytearray(res4.read_bytes())
    for x in ctf.FIELDS:
        if x.file == "res4" and x.layout == "fixed":
            a[x.offset:x.offset + x.length] = b[x.offset:x.offset + x.length]
    rdlen = struct.unpack(">i", a[1836:1840])[0]
    a[1844:1844 + rdlen] = b[1844:1844 + rdlen]
    assert a == b
    old = {c.field: c.old for c in result.changes}
    assert old["res4.nf_subject_id"] == "Mme Giroud"  # originals go to the key


def test_complete_dataset_leaks_nothing_and_removes_history(som_out):
    dst, result = som_out
    assert leaks(dst, SOM_SECRETS) == []
    names = sorted(p.name for p in dst.iterdir())
    assert names == ["BadChannels", "ClassFile.cls", "params.avg",
                     "sub-7XK2_task-som_meg.hc", "sub-7XK2_task-som_meg.meg4",
                     "sub-7XK2_task-som_meg.res4"]
    cls = (dst / "ClassFile.cls").read_text()
    assert cls.splitlines()[1] == "sub-7XK2_task-som_meg.ds"
    assert "08/05/1900" in (dst / "params.avg").read_text()
    removed = {c.old for c in result.changes if c.action == "remove"}
    assert removed == {"processing.cfg", "somMDYO-18av.hist", "somMDYO-18av.newds"}
    findings = ctf.check_file(dst, "sub-7XK2/meg/sub-7XK2_task-som_meg.ds")
    assert [f for f in findings if f.severity == "error"] == []


@pytest.mark.parametrize("src,subject,new_name", [
    (RUN1, "0001", "sub-7XK2_task-AEF_run-01_meg.ds"),
    (RUN2, "0001", "sub-7XK2_task-AEF_run-02_meg.ds"),
    (NOISE, "emptyroom", "sub-emptyroom_task-noise_run-01_meg.ds"),
])
def test_bids_example_headers(tmp_path, src, subject, new_name):
    before = sha256_file(src)
    dst = tmp_path / new_name
    new_subject = LABELS.subject(subject)
    result = ctf.handle(src, dst, make_ctx(subject=subject, new_subject=new_subject))
    assert sha256_file(src) == before
    assert leaks(dst, DS246_SECRETS) == []
    stem = new_name[:-3]
    for p in src.iterdir():
        if p.name.startswith(src.name[:-3] + "."):
            ext = p.name[len(src.name) - 3:]
            kept = not any(p.name.endswith(e) for e in (".hist", ".newds"))
            assert (dst / (stem + ext)).exists() == kept, ext
    for gone in ("ChannelGroupSet.cfg", "default.de", "params.dsc", "processing.cfg"):
        assert not (dst / gone).exists()
    # zero-byte placeholders stay empty files
    assert (dst / f"{stem}.res4").stat().st_size == 0
    assert (dst / f"{stem}.meg4").stat().st_size == 0
    infods = dst / f"{stem}.infods"
    assert ws1_string(infods, "_PATIENT_ID") == new_subject
    assert ws1_string(infods, "_PATIENT_BIRTHDATE") == ""
    assert ws1_string(infods, "_DATASET_OPERATORNAME") == ""
    created_in = ws1_string(src / f"{src.name[:-3]}.infods", "_DATASET_CREATORDATETIME")
    created = dt.datetime.strptime(created_in, "%Y%m%d%H%M%S") + dt.timedelta(days=OFFSET)
    assert ws1_string(infods, "_DATASET_CREATORDATETIME") == created.strftime("%Y%m%d%H%M%S")
    assert ws1_string(infods, "_PATIENT_UID") == ws1_string(infods, "_DATASET_PATIENTUID")
    assert ws1_string(infods, "_PATIENT_UID").startswith("2.25.")
    acq = dst / f"{stem}.acq"
    start, end, _ = ctf._ws1_items(acq.read_bytes(), "_genRes", 3)[0]
    blob = acq.read_bytes()[start:end]
    assert blob[1712 - 8:1712 - 8 + len(new_subject)] == new_subject.encode()
    assert b"EAB" not in blob and b"18/12/2013" not in blob
    assert ctf.peek_dates(dst) and max(ctf.peek_dates(dst)).year <= 1925
    assert [f for f in ctf.check_file(dst, f"sub-{new_subject}/meg/{new_name}")
            if f.severity == "error"] == []
    assert {c.field for c in result.changes} >= {"_PATIENT_UID", "_genRes.nf_subject_id"}


def test_patient_uid_is_the_same_for_every_run_of_a_subject(tmp_path):
    uids = []
    for src in (RUN1, RUN2):
        dst = tmp_path / src.name.replace("sub-0001", "sub-7XK2")
        ctf.handle(src, dst, make_ctx())
        infods = next(dst.glob("*.infods"))
        uids.append((ws1_string(infods, "_PATIENT_UID"), ws1_string(infods, "_DATASET_UID")))
    assert uids[0][0] == uids[1][0]  # one patient
    assert uids[0][1] != uids[1][1]  # two datasets
    dst = tmp_path / "other-key" / "sub-7XK2_task-AEF_run-01_meg.ds"
    dst.parent.mkdir()
    ctf.handle(RUN1, dst, make_ctx(secret=b"another key"))
    assert ws1_string(next(dst.glob("*.infods")), "_PATIENT_UID") != uids[0][0]


def test_check_finds_the_identifying_fields_of_the_inputs():
    rules = {(f.rule, f.location)
             for f in ctf.check_file(RUN1, "sub-0001/meg/" + RUN1.name) if f.severity == "error"}
    for expected in [("ctf.operator", "_DATASET_OPERATORNAME"), ("ctf.uid", "_PATIENT_UID"),
                     ("ctf.date", "_DATASET_CREATORDATETIME"), ("ctf.path", "PATH OF DATASET"),
                     ("ctf.subject-id", "nf_subject_id"), ("ctf.path", "_PROCEDURE_LOCATION"),
                     ("ctf.date", "_genRes: data_time")]:  # date and time swapped there
        assert any(r == expected[0] and expected[1] in loc for r, loc in rules), expected
    som = ctf.check_file(SOM, "sub-01/meg/somMDYO-18av.ds")
    assert {"ctf.subject-id", "ctf.operator", "ctf.date", "ctf.history-file"} <= {
        f.rule for f in som}


def test_policy_keep_history_scrubs_it(tmp_path):
    dst = tmp_path / "sub-emptyroom_task-noise_run-01_meg.ds"
    ctx = make_ctx(subject="emptyroom", new_subject="emptyroom",
                   policy={"meg": {"ctf": {"remove_files": [], "free_text": "scrub"}}})
    ctf.handle(NOISE, dst, ctx)
    hist = (dst / "sub-emptyroom_task-noise_run-01_meg.hist").read_text()
    shifted = [(dt.date(*d) + dt.timedelta(days=OFFSET)).strftime("%d-%b-%Y")
               for d in ((2013, 12, 18), (2017, 10, 24))]
    assert f"{shifted[0]} 08:02" in hist and shifted[1] in hist
    assert "EAB" not in hist and "S01_Noise" not in hist
    assert "Title: Standard system noise collection" in hist  # scrub keeps plain text
    assert (dst / "default.de").exists() and (dst / "params.dsc").exists()
    assert leaks(dst, [b"20131218", b"/home/meg", b"S01_"]) == []
    findings = ctf.check_file(dst, "sub-emptyroom/meg/" + dst.name)
    assert "ctf.history-file" in {f.rule for f in findings}


def test_policy_variants_and_placeholder_date(tmp_path):
    policy = {"meg": {"ctf": {"free_text": "keep", "birthdate": "shift", "sex": "blank",
                              "placeholder_date": "1901-02-03"}},
              "dates": {"drop_times": True}}
    dst = tmp_path / "a" / "sub-7XK2_task-AEF_run-01_meg.ds"
    dst.parent.mkdir()
    ctf.handle(RUN1, dst, make_ctx(policy=policy))
    infods = next(dst.glob("*.infods"))
    assert ws1_string(infods, "_DATASET_PROCSTEPTITLE") == "Tutorial Audio Stimulation"
    born = dt.date(1900, 1, 1) + dt.timedelta(days=OFFSET)
    assert ws1_string(infods, "_PATIENT_BIRTHDATE") == f"{born:%Y%m%d}000000"
    created = dt.date(2013, 12, 18) + dt.timedelta(days=OFFSET)
    assert ws1_string(infods, "_DATASET_CREATORDATETIME") == f"{created:%Y%m%d}000000"
    raw = infods.read_bytes()
    start, end, _ = ctf._ws1_items(raw, "_PATIENT_SEX", 5)[0]
    assert struct.unpack(">i", raw[start:end])[0] == 2
    # no shifting planned: every date becomes the placeholder
    dst = tmp_path / "b" / "sub-7XK2_task-som_meg.ds"
    dst.parent.mkdir()
    ctf.handle(SOM, dst, make_ctx(offset_days=None, policy=policy))
    raw = mne.io.read_raw_ctf(dst, verbose="error")
    assert raw.info["meas_date"] == dt.datetime(1901, 2, 3, tzinfo=dt.timezone.utc)
    assert res4_field(dst / "sub-7XK2_task-som_meg.res4", "nf_run_title") == "Somesthesie"


#: A MarkerFile.mrk in the layout of ds000246's, with markers inside somMDYO's one trial.
MARKERS = """PATH OF DATASET:
/home/meg/MEG_data/20131218/S01_AEF_20131218_01.ds


NUMBER OF MARKERS:
1


CLASSGROUPID:
3
NAME:
button
COMMENT:
pressed when Jane Doeson asked
COLOR:
red
EDITABLE:
No
CLASSID:
1
NUMBER OF SAMPLES:
2
LIST OF SAMPLES:
TRIAL NUMBER\t\tTIME FROM SYNC POINT (in seconds)
                  +0\t\t\t\t               +0.0100000000
                  +0\t\t\t\t               +0.0500000000


"""


def test_sub_dataset_stale_inner_names_and_markers(tmp_path):
    src = copy_tree(SOM, tmp_path / "in" / "sub-01_task-som_meg.ds")  # folder renamed only
    (src / "MarkerFile.mrk").write_text(MARKERS)
    hz = src / "hz.ds"
    hz.mkdir()
    shutil.copyfile(SOM / "somMDYO-18av.res4", hz / "hz.res4")
    shutil.copyfile(SOM / "somMDYO-18av.meg4", hz / "hz.meg4")
    (hz / "hz.hist").write_text("DATE:\n13-Apr-2000 10:35\n")
    (src / "unknown.bin").write_bytes(b"\0\1\2" * 1000)  # a format nobody documents
    dst = tmp_path / "sub-7XK2_task-som_meg.ds"
    result = ctf.handle(src, dst, make_ctx(subject="01"))
    assert (dst / "unknown.bin").read_bytes() == (src / "unknown.bin").read_bytes()
    assert any("unknown.bin" in w for w in result.warnings)
    assert "ctf.uninspected" in {f.rule for f in ctf.check_file(dst, "sub-7XK2/meg/x.ds")}
    assert (dst / "sub-7XK2_task-som_meg.res4").is_file()  # inner names follow the folder
    assert (dst / "hz.ds" / "hz.res4").is_file() and not (dst / "hz.ds" / "hz.hist").exists()
    assert res4_field(dst / "hz.ds" / "hz.res4", "nf_subject_id") == "7XK2"
    assert leaks(dst, SOM_SECRETS + [b"/home/meg", b"S01_AEF", b"Doeson"]) == []
    raw = mne.io.read_raw_ctf(dst, verbose="error")
    assert raw.info["subject_info"]["his_id"] == "7XK2"
    ref = copy_tree(SOM, tmp_path / "ref" / SOM.name)  # the same input, readable by MNE
    (ref / "MarkerFile.mrk").write_text(MARKERS)
    before = mne.io.read_raw_ctf(ref, verbose="error").annotations
    assert len(raw.annotations) == len(before) > 0  # markers still read by MNE-Python
    assert np.array_equal(raw.annotations.onset, before.onset)
    assert list(raw.annotations.description) == list(before.description)


def _broken_copy(tmp_path: Path, data: bytes) -> Path:
    src = copy_tree(SOM, tmp_path / "in" / "somMDYO-18av.ds")
    (src / "somMDYO-18av.res4").write_bytes(data)
    return src


@pytest.mark.parametrize("cut,message", [
    (lambda raw: raw[:1000], "truncated .res4"),
    (lambda raw: b"NOTCTF\0\0" + raw[8:], "not a CTF .res4"),
    (lambda raw: raw[:1836] + struct.pack(">i", 10**8) + raw[1840:2000], "truncated .res4"),
])
def test_bad_res4_fails_cleanly(tmp_path, cut, message):
    src = _broken_copy(tmp_path, cut((SOM / "somMDYO-18av.res4").read_bytes()))
    dst = tmp_path / "out" / "sub-7XK2_task-som_meg.ds"
    dst.parent.mkdir()
    with pytest.raises(InputError, match=message) as exc:
        ctf.handle(src, dst, make_ctx())
    assert "somMDYO-18av.res4" in str(exc.value)
    assert list(dst.parent.iterdir()) == []  # nothing half-written, no temporary folder


def test_peek_dates_reads_headers():
    assert ctf.peek_dates(SOM) == [dt.datetime(2000, 4, 13, 10, 35)]
    # the .res4 is an empty placeholder: the date comes from the .acq copy of its header;
    # the .infods creation/modification times are not acquisition dates (they are shifted
    # by the same offset, but do not choose it: NOISE's were written four years later)
    assert ctf.peek_dates(RUN1) == [dt.datetime(2013, 12, 18, 9, 42)]
    assert ctf.peek_dates(NOISE) == [dt.datetime(2013, 12, 18, 8, 2)]


def test_doc_table_is_in_formats_doc():
    doc = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert ctf.doc_table() in doc
    for f in ctf.FIELDS:
        assert f.action in ctf.ACTIONS


def test_dates_after_the_acquisition_are_not_moved_past_dates_latest(tmp_path):
    """NOISE's .infods was created four years after the recording: the offset that puts
    the recording in 1925 would put the creation in 1929, which the final check refuses.
    The acquisition date moves by the offset; the later dates are set to dates.latest
    and reported."""
    (acquired,) = ctf.peek_dates(NOISE)
    offset = (dt.date(1925, 6, 1) - acquired.date()).days
    src_infods = NOISE / "sub-emptyroom_task-noise_run-01_meg.infods"
    stamps = {name: ws1_string(src_infods, name) for name in (
        "_DATASET_CREATORDATETIME", "_DATASET_LASTMODIFIEDDATETIME")}
    assert all(dt.datetime.strptime(s[:8], "%Y%m%d").year == 2017 for s in stamps.values())
    dst = tmp_path / "sub-emptyroom_task-noise_run-01_meg.ds"
    ctx = make_ctx(subject="emptyroom", new_subject="emptyroom", offset_days=offset,
                   policy={"dates": {"latest": "1925-12-31"}})
    result = ctf.handle(NOISE, dst, ctx)
    infods = dst / "sub-emptyroom_task-noise_run-01_meg.infods"
    assert ctf.peek_dates(dst) == [acquired + dt.timedelta(days=offset)]  # from the .acq
    for name in ("_DATASET_CREATORDATETIME", "_DATASET_LASTMODIFIEDDATETIME"):
        assert ws1_string(infods, name) == "19251231235959"
        (change,) = [c for c in result.changes if c.field == name]
        assert (change.action, change.old) == ("replace", stamps[name])
    (warning,) = [w for w in result.warnings if "dates.latest" in w]
    assert warning.startswith("2 date(s) other than the acquisition date")
    assert [f for f in ctf.check_file(dst, "sub-emptyroom/meg/" + dst.name)
            if f.severity == "error"] == []
    # without dates.latest in the policy (or with dates not shifted), nothing is capped
    (tmp_path / "b").mkdir()
    late = ctf.handle(NOISE, tmp_path / "b" / dst.name, make_ctx(
        subject="emptyroom", new_subject="emptyroom", offset_days=offset))
    created = dt.datetime.strptime(stamps["_DATASET_CREATORDATETIME"], "%Y%m%d%H%M%S")
    assert ws1_string(tmp_path / "b" / dst.name / infods.name,
                      "_DATASET_CREATORDATETIME") == \
        (created + dt.timedelta(days=offset)).strftime("%Y%m%d%H%M%S")
    assert not late.warnings
