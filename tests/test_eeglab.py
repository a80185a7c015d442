"""EEGLAB .set/.fdt: real MNE testing data files (MATLAB v5 with embedded data, v5 with
an .fdt, v7.3/HDF5), with known identifying values written into copies."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import h5py
import mne
import numpy as np
import pytest
import scipy.io
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.formats import classify, eeglab
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

HERE = DATA / "eeg" / "eeglab"
V5_EMBEDDED = HERE / "test_raw_2021.set"  # EEGLAB 2021: one variable per field, data inside
V5_FDT = HERE / "test_raw_chanloc.set"  # EEG struct, data in test_raw_chanloc.fdt
V73 = HERE / "test_raw_hdf5.set"  # MATLAB v7.3, data inside
OFFSET = -36500
REL = "sub-01/eeg/sub-01_task-rest_eeg.set"
OUT_REL = "sub-7XK2/eeg/sub-7XK2_task-rest_eeg.set"
FAKE = {"subject": "PID12345", "setname": "Jane Doeson jane@example.org",
        "filepath": "/home/jdoeson/study", "comments": "Patient Jane Doeson, 555-123-4567"}
SECRETS = ["PID12345", "Doeson", "jane@example.org", "jdoeson", "555-123-4567"]


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="7XK2", offset_days=OFFSET, policy=default_policy(),
                labels=Labels(subjects={"01": "7XK2"}), rel=REL)
    args.update(kw)
    return TaskContext(**args)


def all_texts_v5(path: Path) -> list[str]:
    """Every text in a MATLAB v5 file (the file is compressed: bytes cannot be searched)."""
    mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    out: list[str] = []

    def walk(v):
        if isinstance(v, np.ndarray):
            if v.dtype.kind == "U":
                out.extend(str(x) for x in v.ravel())
            elif v.dtype.names:
                for name in v.dtype.names:
                    for item in v[name].flat:
                        walk(item)
            elif v.dtype.kind == "O":
                for item in v.flat:
                    walk(item)

    for k, v in mat.items():
        if not k.startswith("__"):
            walk(v)
    return out


def fake_v5(src: Path, dst: Path) -> Path:
    """A copy of a v5 set with a subject code, names, a folder, an e-mail in an event."""
    mat = scipy.io.loadmat(src, squeeze_me=False, struct_as_record=True)
    out = {k: v for k, v in mat.items() if not k.startswith("__")}
    root = out["EEG"][0, 0] if "EEG" in out else out
    for name, value in FAKE.items():
        root[name] = np.array([value])
    root["event"]["type"].flat[0] = np.array(["jane@example.org"])
    scipy.io.savemat(dst, out, long_field_names=True, oned_as="row")
    data = bytearray(dst.read_bytes())
    data[:116] = src.read_bytes()[:116]  # the real file's header, with its save date
    dst.write_bytes(bytes(data))
    return dst


def h5_char(group, name: str, value: str) -> None:
    """Write a MATLAB v7.3 char row (as MATLAB does: uint16 codes, shape (n, 1))."""
    if name in group:
        del group[name]
    ds = group.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype="uint16"))
    ds.attrs["MATLAB_class"] = np.bytes_(b"char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)


def fake_v73(dst: Path) -> Path:
    shutil.copyfile(V73, dst)
    with h5py.File(dst, "r+") as f:
        for name, value in FAKE.items():
            h5_char(f["EEG"], name, value)
    return dst


@pytest.fixture
def v5(tmp_path) -> Path:
    (tmp_path / "in5").mkdir()
    return fake_v5(V5_EMBEDDED, tmp_path / "in5" / "sub-01_task-rest_eeg.set")


@pytest.fixture(scope="module")
def v73_pair(tmp_path_factory) -> tuple[Path, Path, str, object]:
    """(fake-identified v7.3 input, its output at OUT_REL, the input's digest before,
    the result); handled once: reading a 271-channel v7.3 file field by field is slow."""
    root = tmp_path_factory.mktemp("v73")
    (root / "in").mkdir()
    src = fake_v73(root / "in" / "sub-01_task-rest_eeg.set")
    before = sha256_file(src)
    dst = root / "out" / OUT_REL
    dst.parent.mkdir(parents=True)
    result = eeglab.handle(src, dst, make_ctx())
    return src, dst, before, result


def test_set_and_fdt_are_eeglab_not_unknown():
    policy = default_policy()
    assert classify("sub-01/eeg/sub-01_task-a_eeg.set", False, policy)[0] == "eeglab"
    assert classify("sub-01/eeg/sub-01_task-a_eeg.fdt", False, policy)[0] == "eeglab"


def test_v5_embedded_identifying_fields_replaced_data_identical(v5, tmp_path):
    before = sha256_file(v5)
    dst = tmp_path / "sub-7XK2_task-rest_eeg.set"
    result = eeglab.handle(v5, dst, make_ctx())
    assert sha256_file(v5) == before
    texts = " ".join(all_texts_v5(dst)).lower()
    assert [s for s in SECRETS if s.lower() in texts] == []
    assert "/home/edvz" not in texts and "pop_loadset" not in texts  # real folder, history
    mat = scipy.io.loadmat(dst, squeeze_me=True)
    assert mat["subject"] == "7XK2"
    assert mat["filename"] == dst.name
    assert mat["datfile"] == "sub-7XK2_task-rest_eeg.fdt"
    assert isinstance(mat["etc"], np.ndarray) and mat["etc"].size == 0
    a = mne.io.read_raw_eeglab(v5, preload=True, verbose="error")
    b = mne.io.read_raw_eeglab(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert a.ch_names == b.ch_names
    assert np.array_equal(a.annotations.onset, b.annotations.onset)
    assert list(b.annotations.description)[1:] == list(a.annotations.description)[1:]
    assert "jane@example.org" not in b.annotations.description[0]
    src_data = scipy.io.loadmat(v5)["data"]
    assert np.array_equal(scipy.io.loadmat(dst)["data"], src_data)
    assert scipy.io.loadmat(dst)["data"].dtype == src_data.dtype
    old = {c.field: c.old for c in result.changes}
    assert old["subject"] == "PID12345" and old["filepath"] == "/home/jdoeson/study"
    header = dst.read_bytes()[:116].decode("ascii")
    assert header.startswith("MATLAB 5.0 MAT-file")
    assert eeglab.peek_dates(v5) == [dt.datetime(2021, 2, 16, 21, 8, 22)]
    assert eeglab.peek_dates(dst) == [dt.datetime(2021, 2, 16, 21, 8, 22)
                                      + dt.timedelta(days=OFFSET)]


def test_a_save_date_still_after_latest_once_shifted_is_dropped(v5, tmp_path):
    dst = tmp_path / "out.set"
    eeglab.handle(v5, dst, make_ctx(offset_days=-365))
    assert eeglab.peek_dates(dst) == []


def test_v5_with_fdt_points_to_the_renamed_data_file(tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = Path(shutil.copyfile(V5_FDT, src_dir / "sub-01_task-rest_eeg.set"))
    fdt = Path(shutil.copyfile(V5_FDT.with_suffix(".fdt"), src_dir / "sub-01_task-rest_eeg.fdt"))
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "sub-7XK2_task-rest_eeg.set"
    ctx = make_ctx()
    eeglab.handle(src, dst, ctx)
    eeglab.handle(fdt, dst.with_suffix(".fdt"), ctx)
    assert dst.with_suffix(".fdt").read_bytes() == V5_FDT.with_suffix(".fdt").read_bytes()
    eeg = scipy.io.loadmat(dst, squeeze_me=True, struct_as_record=False)["EEG"]
    assert eeg.data == eeg.datfile == "sub-7XK2_task-rest_eeg.fdt"
    assert np.size(eeg.filepath) == 0 or eeg.filepath == ""
    texts = " ".join(all_texts_v5(dst))
    # the real file's folders, plugin fields (EEG.main: analysis folders of a user, the
    # participant's number) and comment naming the original file
    for real in ("/Users/alex", "/Users/MH", "mhommelsen", "203029"):
        assert real not in texts, real
    assert eeg.chaninfo.filename == "standard-10-5-cap385.elp"  # the folder only is removed
    # the original, read where MNE finds its data file
    a = mne.io.read_raw_eeglab(V5_FDT, preload=True, verbose="error")
    b = mne.io.read_raw_eeglab(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert a.ch_names == b.ch_names
    pa, pb = a.get_montage().get_positions(), b.get_montage().get_positions()
    assert all(np.array_equal(pa["ch_pos"][k], pb["ch_pos"][k]) for k in pa["ch_pos"])


@pytest.mark.slow
def test_v73_rewritten_in_place_data_bytes_identical(v73_pair):
    v73, dst, before, _ = v73_pair
    assert sha256_file(v73) == before
    raw = dst.read_bytes()
    for secret in [*SECRETS, "DART", "S3201", "18.09.12"]:  # fakes, and the real file's own
        assert secret.encode("utf-16-le") not in raw and secret.encode() not in raw, secret
    changed = {"subject", "setname", "filepath", "comments", "filename", "datfile", "history",
               "etc", "event", "urevent", "condition", "group", "session"}
    with h5py.File(v73) as a, h5py.File(dst) as b:
        assert "".join(chr(c) for c in b["EEG/subject"][()].ravel()) == "7XK2"
        compared = 0
        for name in a["EEG"]:
            if name in changed or not isinstance(a["EEG"][name], h5py.Dataset):
                continue
            x, y = a["EEG"][name], b["EEG"][name]
            if x.dtype == h5py.ref_dtype:  # cells: compare what the references point to
                x = [a[r][()] for r in x[()].ravel()]
                y = [b[r][()] for r in y[()].ravel()]
                assert all(np.array_equal(p, q) for p, q in zip(x, y)) and len(x) == len(y)
            else:
                assert np.array_equal(x[()], y[()]) and x.dtype == y.dtype, name
            compared += 1
        assert compared > 20
        assert a["EEG/data"][()].tobytes() == b["EEG/data"][()].tobytes()
    ra = mne.io.read_raw_eeglab(v73, preload=True, verbose="error")
    rb = mne.io.read_raw_eeglab(dst, preload=True, verbose="error")
    assert np.array_equal(ra.get_data(), rb.get_data())
    assert list(ra.annotations.description) == list(rb.annotations.description)
    assert dst.read_bytes()[:10] == b"MATLAB 7.3"
    assert eeglab.peek_dates(dst)[0] == dt.datetime(2017, 7, 31, 10, 52, 38) + \
        dt.timedelta(days=OFFSET)


def test_epochs_written_by_mne_event_texts_scrubbed_in_events_and_epochs(tmp_path):
    """An epoched set as MNE-Python exports it (eeglabio): event types repeat in
    `EEG.epoch(i).eventtype` cells."""
    pytest.importorskip("eeglabio")
    info = mne.create_info(["Fz", "Cz", "Pz"], 256.0, "eeg")
    data = np.random.default_rng(0).standard_normal((6, 3, 128)) * 1e-5
    events = np.array([[i * 200, 0, 1 + i % 2] for i in range(6)])
    epochs = mne.EpochsArray(data, info, events=events, verbose=False,
                             event_id={"jane@example.org": 1, "rest": 2})
    src = tmp_path / "sub-01_task-rest_eeg.set"
    epochs.export(src, fmt="eeglab", verbose=False)
    found = eeglab.check_file(src, REL, default_policy())
    where = {f.location for f in found if f.rule == "eeglab.event-text"}
    assert "EEG.event(1).type" in where
    assert any(w.startswith("EEG.epoch.eventtype") for w in where)
    dst = tmp_path / "sub-7XK2_task-rest_eeg.set"
    eeglab.handle(src, dst, make_ctx())
    assert not any("jane@example.org" in t for t in all_texts_v5(dst))
    a = mne.read_epochs_eeglab(src, verbose="error")
    b = mne.read_epochs_eeglab(dst, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert np.array_equal(a.events, b.events)
    assert b.event_id["rest"] == a.event_id["rest"] and "jane@example.org" not in b.event_id
    assert [f for f in eeglab.check_file(dst, OUT_REL, default_policy())
            if f.severity == "error"] == []


def test_without_date_shift_the_header_date_is_dropped(v5, tmp_path):
    dst = tmp_path / "out.set"
    eeglab.handle(v5, dst, make_ctx(offset_days=None))
    assert eeglab.peek_dates(v5) and eeglab.peek_dates(dst) == []
    assert b"Created on" not in dst.read_bytes()[:116]


def test_policy_keep_and_scrub(v5, tmp_path):
    policy = default_policy()
    policy["eeg"]["eeglab"].update(comments="scrub", etc="keep", history="keep")
    dst = tmp_path / "out.set"
    eeglab.handle(v5, dst, make_ctx(policy=policy))
    mat = scipy.io.loadmat(dst, squeeze_me=True)
    assert "555-123-4567" not in mat["comments"] and "Patient" in mat["comments"]
    assert "pop_loadset" in mat["history"]
    assert mat["etc"].size > 0


@pytest.mark.slow
def test_check_finds_fields_in_raw_and_no_error_in_output(v5, v73_pair, tmp_path):
    policy = default_policy()
    out5 = tmp_path / "out5" / OUT_REL
    out5.parent.mkdir(parents=True)
    eeglab.handle(v5, out5, make_ctx())
    for src, out in ((v5, out5), v73_pair[:2]):
        found = eeglab.check_file(src, REL, policy)
        rules = {f.rule for f in found if f.severity == "error"}
        assert {"eeglab.subject-id", "eeglab.path", "eeglab.setname", "eeglab.date"} <= rules
        for f in found:
            assert not any(s.lower() in f.message.lower() for s in SECRETS), f.message
        errors = [f for f in eeglab.check_file(out, OUT_REL, policy) if f.severity == "error"]
        assert errors == []
    assert "eeglab.event-text" in {f.rule for f in eeglab.check_file(v5, REL, policy)}


def test_check_finds_plugin_fields_and_folders_in_a_real_file(tmp_path):
    policy = default_policy()
    found = eeglab.check_file(V5_FDT, REL, policy)
    assert {("eeglab.extra-field", "EEG.main"), ("eeglab.path", "EEG.chaninfo.filename")} <= \
        {(f.rule, f.location) for f in found}
    out = tmp_path / OUT_REL
    out.parent.mkdir(parents=True)
    eeglab.handle(V5_FDT, out, make_ctx())
    assert [f for f in eeglab.check_file(out, OUT_REL, policy) if f.severity == "error"] == []
    assert "eeglab.extra-field" not in {f.rule for f in eeglab.check_file(out, OUT_REL, policy)}


@pytest.mark.parametrize("source", [V5_EMBEDDED, V73], ids=["v5", "v7.3"])
def test_truncated_set_is_a_one_line_input_error(source, tmp_path):
    bad = tmp_path / "sub-01_task-rest_eeg.set"
    bad.write_bytes(source.read_bytes()[:4000])
    dst = tmp_path / "out.set"
    with pytest.raises(InputError) as err:
        eeglab.handle(bad, dst, make_ctx())
    assert bad.name in str(err.value) and "\n" not in str(err.value)
    assert not dst.exists()
    assert "eeglab.unreadable" in {f.rule for f in eeglab.check_file(bad, REL, default_policy())}


def test_not_a_mat_file_is_an_input_error(tmp_path):
    bad = tmp_path / "x.set"
    bad.write_bytes(b"this is not a MAT-file" * 20)
    with pytest.raises(InputError, match="x.set"):
        eeglab.handle(bad, tmp_path / "out.set", make_ctx())
