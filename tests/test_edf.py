"""EDF/EDF+/BDF: real and generated files with known names, birth dates and annotations."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import mne
import numpy as np
import pyedflib
import pytest
from conftest import DATA

from bidsanon.formats import edf
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.labels import Labels

REAL = DATA / "eeg" / "edf" / "test_reduced.edf"
#: pyedflib's wheel ships EDF+/BDF+ files whose headers hold a patient name, code,
#: birth date, technician and equipment (pyedflib, BSD licence); copied at test time.
PYEDFLIB_DATA = Path(pyedflib.__file__).parent / "tests" / "data"
OFFSET = -36500


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="7XK2", offset_days=OFFSET,
                labels=Labels(subjects={"01": "7XK2"}), rel="sub-01/eeg/sub-01_eeg.edf")
    args.update(kw)
    return TaskContext(**args)


@pytest.fixture
def generator_edf(tmp_path) -> Path:
    return Path(shutil.copyfile(PYEDFLIB_DATA / "test_generator.edf", tmp_path / "in.edf"))


@pytest.fixture
def generator_bdf(tmp_path) -> Path:
    return Path(shutil.copyfile(PYEDFLIB_DATA / "test_generator.bdf", tmp_path / "in.bdf"))


@pytest.fixture(scope="module")
def exported_edf(tmp_path_factory) -> Path:
    """An EDF+ written by MNE-Python (edfio) with a known name, birth date and notes."""
    path = tmp_path_factory.mktemp("export") / "known.edf"
    info = mne.create_info(["Fz", "Cz", "Pz"], 256.0, "eeg")
    data = np.random.default_rng(0).standard_normal((3, 256 * 20)) * 1e-5
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_meas_date(dt.datetime(2019, 5, 17, 14, 3, 22, tzinfo=dt.timezone.utc))
    raw.info["subject_info"] = {"his_id": "PID12345", "first_name": "Jane",
                                "last_name": "Doeson", "birthday": dt.date(1961, 7, 14),
                                "sex": 2}
    notes = ["stimulus", "Jane Doeson called 555-123-4567 from jane@example.org",
             "seen by Dr Smith on 17/05/2019"]
    raw.set_annotations(mne.Annotations([1.0, 2.5, 7.25], [0.0, 0.5, 0.0], notes,
                                        orig_time=raw.info["meas_date"]))
    mne.export.export_raw(path, raw, fmt="edf", verbose=False)
    return path


def edf_date(value: dt.date) -> str:
    return f"{value.day:02d}-{value:%b}-{value.year}".upper()


def data_records(path: Path, without_annotations: bool = False) -> bytes:
    """The data records; optionally with the annotation signals' bytes removed."""
    header = edf.read_header(path)
    body = path.read_bytes()[header.header_bytes:]
    if not without_annotations:
        return body
    keep = []
    for k in range(header.n_records):
        record = body[k * header.record_size:(k + 1) * header.record_size]
        pos = 0
        for sl in header.annotation_slices():
            keep.append(record[pos:sl.start])
            pos = sl.stop
        keep.append(record[pos:])
    return b"".join(keep)


def leaks(path: Path, secrets: list[bytes]) -> list[bytes]:
    data = path.read_bytes().lower()
    return [s for s in secrets if s.lower() in data]


def test_generator_edf_header_and_data(generator_edf, tmp_path):
    before = sha256_file(generator_edf)
    dst = tmp_path / "sub-7XK2_eeg.edf"
    result = edf.handle(generator_edf, dst, make_ctx())
    assert sha256_file(generator_edf) == before
    head = dst.read_bytes()[:256]
    assert head[8:88].decode().rstrip() == "7XK2 M X X"  # sex kept by default
    assert head[88:168].decode().rstrip() == "Startdate X X X X"
    assert head[168:184] == b"01.01.8512.57.02"
    assert dst.stat().st_size == generator_edf.stat().st_size
    assert data_records(dst) == data_records(generator_edf)  # bit-identical records
    assert leaks(dst, [b"abcxyz99", b"Hans", b"Muller", b"1969", b"Spotty", b"Dr._X",
                       b"2011", b"APR"]) == []
    a = mne.io.read_raw_edf(generator_edf, preload=True, verbose="error")
    b = mne.io.read_raw_edf(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert b.info["meas_date"] == dt.datetime(1985, 1, 1, 12, 57, 2, tzinfo=dt.timezone.utc)
    assert b.info["subject_info"]["his_id"] == "7XK2"
    assert "birthday" not in b.info["subject_info"]
    with pyedflib.EdfReader(str(dst)) as f:  # EDFlib accepts the placeholder date
        assert f.getPatientCode() == "7XK2"
    shift = next(c for c in result.changes if c.field == "startdate")
    assert shift.old == "2011-04-04T12:57:02"
    assert shift.new == (dt.datetime(2011, 4, 4, 12, 57, 2) + dt.timedelta(days=OFFSET)).isoformat()
    assert "Hans_Muller" in next(c.old for c in result.changes if c.field == "patient")


def test_clip_keeps_the_shifted_date_in_the_startdate_subfield(generator_edf, tmp_path):
    dst = tmp_path / "out.edf"
    policy = {"eeg": {"edf": {"date_fallback": "clip", "birthdate": "shift",
                              "sex": "blank", "equipment": "keep"}}}
    edf.handle(generator_edf, dst, make_ctx(policy=policy))
    shifted = dt.datetime(2011, 4, 4, 12, 57, 2) + dt.timedelta(days=OFFSET)
    born = dt.date(1969, 6, 30) + dt.timedelta(days=OFFSET)
    head = dst.read_bytes()[:256].decode()
    assert head[8:88].rstrip() == f"7XK2 X {edf_date(born)} X"
    assert head[88:168].rstrip() == f"Startdate {edf_date(shifted)} X X test_generator"
    assert head[168:184] == shifted.strftime("01.01.85%H.%M.%S")
    raw = mne.io.read_raw_edf(dst, verbose="error")
    assert raw.info["meas_date"] == shifted.replace(tzinfo=dt.timezone.utc)
    assert edf.peek_dates(dst) == [shifted]


def test_dates_in_edf_range_are_written_directly(generator_edf, tmp_path):
    dst = tmp_path / "out.edf"
    edf.handle(generator_edf, dst, make_ctx(offset_days=-3650))
    new = dt.datetime(2011, 4, 4, 12, 57, 2) - dt.timedelta(days=3650)
    assert dst.read_bytes()[168:184] == new.strftime("%d.%m.%y%H.%M.%S").encode()
    assert mne.io.read_raw_edf(dst, verbose="error").info["meas_date"] == \
        new.replace(tzinfo=dt.timezone.utc)


def test_no_shift_planned_and_drop_times(generator_edf, tmp_path):
    dst = tmp_path / "out.edf"
    edf.handle(generator_edf, dst, make_ctx(offset_days=None,
                                            policy={"dates": {"drop_times": True}}))
    assert dst.read_bytes()[168:184] == b"01.01.8500.00.00"
    assert dst.read_bytes()[88:168].rstrip() == b"Startdate X X X X"


def test_exported_edf_annotations_scrubbed_at_same_length(exported_edf, tmp_path):
    dst = tmp_path / "out.edf"
    result = edf.handle(exported_edf, dst, make_ctx())
    assert dst.stat().st_size == exported_edf.stat().st_size
    assert data_records(dst, True) == data_records(exported_edf, True)
    assert leaks(dst, [b"PID12345", b"Jane", b"Doeson", b"1961", b"JUL", b"2019",
                       b"555-123-4567", b"example.org"]) == []
    a = mne.io.read_raw_edf(exported_edf, preload=True, verbose="error")
    b = mne.io.read_raw_edf(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert np.allclose(a.annotations.onset, b.annotations.onset)
    assert np.allclose(a.annotations.duration, b.annotations.duration)
    assert b.annotations.description[0] == "stimulus"
    assert "[name removed]" in b.annotations.description[1]
    assert "2019" not in b.annotations.description[2]
    assert result.metrics["annotations_changed"] == 2
    assert {c.field for c in result.changes} >= {"patient", "startdate", "annotation"}


@pytest.mark.parametrize("mode", ["keep", "blank"])
def test_annotation_modes(exported_edf, tmp_path, mode):
    dst = tmp_path / "out.edf"
    edf.handle(exported_edf, dst, make_ctx(policy={"eeg": {"edf": {"annotations": mode}}}))
    texts = edf.read_annotation_texts(dst)
    if mode == "keep":
        assert texts == edf.read_annotation_texts(exported_edf)
        assert data_records(dst) == data_records(exported_edf)
    else:
        assert texts == []
        raw = mne.io.read_raw_edf(dst, verbose="error")
        assert len(raw.annotations) == 0 or set(raw.annotations.description) == {""}


def test_bdf(generator_bdf, tmp_path):
    dst = tmp_path / "out.bdf"
    edf.handle(generator_bdf, dst, make_ctx())
    assert data_records(dst) == data_records(generator_bdf)
    a = mne.io.read_raw_bdf(generator_bdf, preload=True, verbose="error")
    b = mne.io.read_raw_bdf(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert b.info["subject_info"]["his_id"] == "7XK2"


def test_real_edf(tmp_path):
    dst = tmp_path / "out.edf"
    before = sha256_file(REAL)
    edf.handle(REAL, dst, make_ctx())
    assert sha256_file(REAL) == before
    a = mne.io.read_raw_edf(REAL, preload=True, verbose="error")
    b = mne.io.read_raw_edf(dst, preload=True, verbose="error")
    assert np.array_equal(a.get_data(), b.get_data())
    assert list(a.annotations.description) == list(b.annotations.description)
    assert b"2014" not in dst.read_bytes()[:256]
    assert [f for f in edf.check_file(dst, "sub-7XK2/eeg/x.edf") if f.severity == "error"] == []


def test_check_file_reads_the_table(generator_edf, exported_edf):
    rules = {f.rule for f in edf.check_file(generator_edf, "sub-01/eeg/x.edf")}
    assert {"edf.subject-id", "edf.name", "edf.birthdate", "edf.recording-id",
            "edf.date", "edf.free-text"} <= rules
    assert "edf.annotation-text" in {f.rule for f in edf.check_file(exported_edf, "x")}
    assert rules <= {f.rule for f in edf.FIELDS}  # every rule comes from the table


@pytest.mark.parametrize("damage,message", [
    (lambda raw: raw[:-100], "the header says"),
    (lambda raw: raw[:200], "truncated"),
    (lambda raw: b"Hello, not an EDF" + raw[17:], "not an EDF/BDF file"),
    (lambda raw: raw[:184] + b"abc     " + raw[192:], "header size is not a number"),
])
def test_bad_files_fail_cleanly(generator_edf, tmp_path, damage, message):
    bad = tmp_path / "bad.edf"
    bad.write_bytes(damage(generator_edf.read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=message) as exc:
        edf.handle(bad, out / "x.edf", make_ctx())
    assert "bad.edf" in str(exc.value)
    assert list(out.iterdir()) == []
    assert edf.check_file(bad, "x")[0].rule == "edf.unreadable"


def test_doc_table_is_in_formats_doc():
    doc = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert edf.doc_table() in doc
    assert all(f.action in edf.ACTIONS for f in edf.FIELDS)


def test_check_takes_a_placeholder_name_for_no_name():
    # bids-examples emg_ConcurrentIndependentUnits: the patient field holds "Anonymous"
    # as its name (and a real-looking birth date)
    from bidsanon.formats.edf import check_file
    path = DATA / "eeg" / "edf" / "sub-01_task-jumping_recording-bipolar_emg.edf"
    found = {f.rule: f for f in check_file(path, "sub-01/emg/" + path.name)}
    assert found["edf.name"].severity == "info" and "placeholder" in found["edf.name"].message
    assert found["edf.birthdate"].severity == "error"
