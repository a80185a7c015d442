"""SNIRF: real files of the MNE testing data (written by MNE-NIRS, and by Gowerlabs'
lumomat), with known names, IDs and dates written into copies."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import h5py
import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.formats import classify, snirf
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

HERE = DATA / "nirs" / "snirf"
MNE_NIRS = HERE / "20220217_nirx_15_3_recording.snirf"  # variable-length strings, DateOfBirth
LUMO = HERE / "lumomat-1-1-0.snirf"  # vendor tags (groupName, groupID), aux channels
OFFSET = -36500
REL = "sub-01/nirs/sub-01_task-tapping_nirs.snirf"
OUT_REL = "sub-7XK2/nirs/sub-7XK2_task-tapping_nirs.snirf"
SECRETS = ["PID12345", "Doeson", "Jane", "jane@example.org", "1961-07-14", "C003N",
           "2020-08-18"]


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="7XK2", offset_days=OFFSET, policy=default_policy(),
                labels=Labels(subjects={"01": "7XK2"}), rel=REL)
    args.update(kw)
    return TaskContext(**args)


def fake(src: Path, dst: Path) -> Path:
    """A copy with a subject ID, names and birth date as MNE-Python writes them, and an
    e-mail address in a stimulus name."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        tags = f["nirs/metaDataTags"]
        for name, value in (("SubjectID", "PID12345"), ("firstName", "Jane"),
                            ("lastName", "Doeson"), ("DateOfBirth", "1961-07-14")):
            if name in tags:
                del tags[name]
            tags.create_dataset(name, data=[value.encode()])
        del f["nirs/stim1/name"]
        f["nirs/stim1"].create_dataset("name", data=b"jane@example.org")
    return dst


@pytest.fixture(params=[MNE_NIRS, LUMO], ids=["mne-nirs", "lumomat"])
def raw(request, tmp_path) -> Path:
    (tmp_path / "in").mkdir()
    return fake(request.param, tmp_path / "in" / "sub-01_task-tapping_nirs.snirf")


def datasets(path: Path) -> dict[str, bytes]:
    """Every non-text dataset's bytes (the data the rewrite must not touch)."""
    out = {}
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind not in "SO":
                out[name] = (str(obj.dtype), obj.shape, obj[()].tobytes())
        f.visititems(visit)
    return out


def test_snirf_is_classified():
    assert classify(REL, False, default_policy())[0] == "snirf"


def test_identifying_tags_gone_and_data_identical(raw, tmp_path):
    before = sha256_file(raw)
    dst = tmp_path / "sub-7XK2_task-tapping_nirs.snirf"
    result = snirf.handle(raw, dst, make_ctx())
    assert sha256_file(raw) == before
    data = dst.read_bytes()
    assert [s for s in SECRETS if s.encode() in data] == []
    assert datasets(raw) == datasets(dst)  # every numeric dataset byte for byte
    a = mne.io.read_raw_snirf(raw, preload=True, verbose="error")
    b = mne.io.read_raw_snirf(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data(), equal_nan=True)
    assert a.ch_names == b.ch_names
    assert np.array_equal(a.annotations.onset, b.annotations.onset)
    assert b.info["subject_info"]["his_id"] == "7XK2"
    assert "last_name" not in b.info["subject_info"]
    assert "birthday" not in b.info["subject_info"]
    if a.info["meas_date"].year > 2000:  # lumomat stores "unknown"
        assert b.info["meas_date"] == a.info["meas_date"] + dt.timedelta(days=OFFSET)
    old = {c.field: c.old for c in result.changes}
    assert old["SubjectID"] == "PID12345" and old["lastName"] == "Doeson"


def test_vendor_tags_removed_by_default_and_kept_on_request(tmp_path):
    dst = tmp_path / "out.snirf"
    snirf.handle(LUMO, dst, make_ctx())
    with h5py.File(dst) as f:
        tags = set(f["nirs/metaDataTags"])
    assert "groupName" not in tags and "groupID" not in tags
    assert {"ManufacturerName", "Model", "saturationFlags", "LengthUnit"} <= tags
    policy = default_policy()
    policy["nirs"]["snirf"]["tags"] = "keep"
    snirf.handle(LUMO, dst, make_ctx(policy=policy))
    with h5py.File(dst) as f:
        assert f["nirs/metaDataTags/groupName"][()] == b"C003N"


def test_no_shift_writes_the_placeholder_date(tmp_path):
    dst = tmp_path / "out.snirf"
    snirf.handle(MNE_NIRS, dst, make_ctx(offset_days=None))
    assert snirf.peek_dates(dst) == [dt.datetime(1900, 1, 1, 14, 26, 39)]
    b = mne.io.read_raw_snirf(dst, verbose="error")
    assert b.info["meas_date"] == dt.datetime(1900, 1, 1, 14, 26, 39, tzinfo=dt.timezone.utc)


def test_birthdate_shift_keeps_the_age(tmp_path):
    policy = default_policy()
    policy["nirs"]["snirf"]["birthdate"] = "shift"
    dst = tmp_path / "out.snirf"
    snirf.handle(fake(MNE_NIRS, tmp_path / "in.snirf"), dst, make_ctx(policy=policy))
    b = mne.io.read_raw_snirf(dst, verbose="error")
    assert b.info["subject_info"]["birthday"] == dt.date(1961, 7, 14) + dt.timedelta(days=OFFSET)


def test_peek_dates_reads_the_measurement_date():
    assert snirf.peek_dates(MNE_NIRS) == [dt.datetime(2020, 8, 18, 14, 26, 39)]
    assert snirf.peek_dates(LUMO) == []  # "unknown"


def test_check_finds_tags_in_raw_and_no_error_in_output(raw, tmp_path):
    policy = default_policy()
    found = snirf.check_file(raw, REL, policy)
    rules = {f.rule for f in found if f.severity == "error"}
    assert {"snirf.subject-id", "snirf.name", "snirf.birthdate", "snirf.stim-name"} <= rules
    for f in found:
        assert not any(s.lower() in f.message.lower() for s in SECRETS), f.message
    out = tmp_path / OUT_REL
    out.parent.mkdir(parents=True)
    snirf.handle(raw, out, make_ctx())
    assert [f for f in snirf.check_file(out, OUT_REL, policy) if f.severity == "error"] == []


def test_corrupt_snirf_is_a_one_line_input_error(tmp_path):
    bad = tmp_path / "sub-01_task-tapping_nirs.snirf"
    bad.write_bytes(MNE_NIRS.read_bytes()[:5000])
    dst = tmp_path / "out.snirf"
    with pytest.raises(InputError) as err:
        snirf.handle(bad, dst, make_ctx())
    assert bad.name in str(err.value) and "\n" not in str(err.value)
    assert not dst.exists()
    assert [f.rule for f in snirf.check_file(bad, REL, default_policy())] == ["snirf.unreadable"]
    text = tmp_path / "x.snirf"
    text.write_text("not hdf5")
    with pytest.raises(InputError, match="x.snirf"):
        snirf.handle(text, dst, make_ctx())


def test_an_hdf5_file_that_is_not_snirf_is_an_input_error(tmp_path):
    other = tmp_path / "x.snirf"
    with h5py.File(other, "w") as f:
        f.create_dataset("something", data=[1, 2, 3])
    with pytest.raises(InputError, match="not a SNIRF file"):
        snirf.handle(other, tmp_path / "out.snirf", make_ctx())
