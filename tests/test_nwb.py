"""NWB: the real iEEG NWB file of bids-examples (ieeg_epilepsyNWB), and an iEEG file
written by pynwb with known names, IDs, dates and free text."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.formats import classify, nwb
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

pynwb = pytest.importorskip("pynwb")

REAL = DATA / "ieeg" / "nwb" / "sub-01_ses-postimp_task-seizure_run-01_ieeg.nwb"
OFFSET = -36500
REL = "sub-01/ieeg/sub-01_task-seizure_ieeg.nwb"
OUT_REL = "sub-7XK2/ieeg/sub-7XK2_task-seizure_ieeg.nwb"
TZ = dt.timezone(dt.timedelta(hours=-5))
START = dt.datetime(2019, 5, 17, 14, 3, 22, tzinfo=TZ)
#: values the rewrite removes or scrubs away (the names are only in removed fields)
SECRETS = ["PID12345", "Doeson", "John Smith", "Example Hospital", "Smith Lab",
           "555-123-4567", "jane@example.org", "1961-07-14", "2019-05", "levetiracetam"]


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="7XK2", offset_days=OFFSET, policy=default_policy(),
                labels=Labels(subjects={"01": "7XK2"}), rel=REL, secret=b"k" * 32)
    args.update(kw)
    return TaskContext(**args)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """An iEEG NWB file written by pynwb with identifying metadata everywhere."""
    from pynwb.ecephys import ElectricalSeries
    from pynwb.file import Subject
    path = tmp_path_factory.mktemp("nwb") / "sub-01_task-seizure_ieeg.nwb"
    f = pynwb.NWBFile(
        session_description="seizure monitoring, contact jane@example.org",
        identifier="PID12345_2019-05-17", session_start_time=START,
        file_create_date=dt.datetime(2019, 5, 18, 9, 0, tzinfo=TZ),
        experimenter=["Dr. John Smith"], institution="Example Hospital", lab="Smith Lab",
        notes="patient Jane Doeson called 555-123-4567", surgery="implanted 2019-05-10",
        pharmacology="levetiracetam", related_publications=["doi:10.1000/xyz"],
        session_id="2019-05-17", experiment_description="epilepsy monitoring",
        subject=Subject(subject_id="PID12345", date_of_birth=dt.datetime(1961, 7, 14, tzinfo=TZ),
                        sex="F", species="Homo sapiens", age="P57Y",
                        description="Jane Doeson, right-handed"))
    device = f.create_device(name="amp", description="clinical amplifier")
    group = f.create_electrode_group(name="depth", description="left hippocampus depth",
                                     location="hippocampus", device=device)
    for i in range(4):
        f.add_electrode(x=1.0 * i, y=2.0, z=3.0, location=f"hippocampus contact {i}",
                        group=group, filtering="seen on 2019-05-17")
    region = f.create_electrode_table_region(list(range(4)), "all")
    data = np.random.default_rng(0).standard_normal((500, 4)).astype("float32")
    f.add_acquisition(ElectricalSeries(name="ieeg", data=data, electrodes=region, rate=250.0,
                                       description="intracranial EEG",
                                       comments="sent by jane@example.org"))
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(f)
    return path


def numeric(path: Path) -> dict:
    out = {}
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind not in "SOV":
                out[name] = (str(obj.dtype), obj.shape, obj[()].tobytes())
        f.visititems(visit)
    return out


def test_nwb_is_classified():
    assert classify(REL, False, default_policy())[0] == "nwb"


def test_written_file_identifying_fields_gone_and_data_identical(written, tmp_path):
    src = Path(shutil.copyfile(written, tmp_path / "in.nwb"))
    before = sha256_file(src)
    dst = tmp_path / "sub-7XK2_task-seizure_ieeg.nwb"
    result = nwb.handle(src, dst, make_ctx())
    assert sha256_file(src) == before
    raw = dst.read_bytes()
    assert [s for s in SECRETS if s.encode() in raw] == []
    assert numeric(src) == numeric(dst)  # data, timestamps, electrode positions: same bytes
    with pynwb.NWBHDF5IO(str(src), "r") as io_a, pynwb.NWBHDF5IO(str(dst), "r") as io_b:
        a, b = io_a.read(), io_b.read()
        assert np.array_equal(a.acquisition["ieeg"].data[:], b.acquisition["ieeg"].data[:])
        assert b.session_start_time == START + dt.timedelta(days=OFFSET)
        assert b.timestamps_reference_time == START + dt.timedelta(days=OFFSET)
        assert b.subject.subject_id == "7XK2"
        assert b.subject.date_of_birth is None and b.subject.age == "P57Y"
        assert b.subject.sex == "F" and b.subject.species == "Homo sapiens"
        assert b.experimenter is None and b.institution is None and b.lab is None
        assert b.notes is None and b.surgery is None and b.pharmacology is None
        assert b.identifier == nwb.pseudonym(make_ctx(), dst.name)
        assert "contact jane" not in b.session_description
        assert b.electrodes.to_dataframe()["location"].tolist() == \
            a.electrodes.to_dataframe()["location"].tolist()
        assert np.array_equal(b.electrodes.to_dataframe()[["x", "y", "z"]].values,
                              a.electrodes.to_dataframe()[["x", "y", "z"]].values)
    assert pynwb.validate(path=str(src)) == []
    assert pynwb.validate(path=str(dst)) == []  # still a valid NWB file (schema)
    old = {c.field: c.old for c in result.changes}
    assert old["subject_id"] == "PID12345" and "Example Hospital" in old["institution"]
    assert nwb.peek_dates(dst) == [dt.datetime(2019, 5, 17, 19, 3, 22)
                                   + dt.timedelta(days=OFFSET)]


def test_real_bids_example_file(tmp_path):
    dst = tmp_path / "sub-7XK2_task-seizure_ieeg.nwb"
    nwb.handle(REAL, dst, make_ctx())
    assert nwb.peek_dates(REAL) == [dt.datetime(2017, 4, 15, 12, 0)]
    assert nwb.peek_dates(dst) == [dt.datetime(2017, 4, 15, 12, 0) + dt.timedelta(days=OFFSET)]
    with pynwb.NWBHDF5IO(str(dst), "r") as io:
        b = io.read()
        assert b.subject.subject_id == "7XK2" and b.subject.date_of_birth is None
        assert b.institution is None and b.lab is None
        assert b.subject.species == "Mus musculus"
    assert pynwb.validate(path=str(dst)) == []
    raw = dst.read_bytes()
    for old in (b"2017-04-15", b"2016-12-01", b"institution1", b"experimenter1",
                b"080bd40e22b940c9887ad85719c289b5", b"2022-12-07"):
        assert old not in raw, old


def test_no_shift_writes_the_placeholder(tmp_path):
    dst = tmp_path / "out.nwb"
    nwb.handle(REAL, dst, make_ctx(offset_days=None))
    assert nwb.peek_dates(dst) == [dt.datetime(1900, 1, 1)]


def test_policy_keep_and_shift(written, tmp_path):
    policy = default_policy()
    policy["ieeg"]["nwb"].update(site="keep", free_text="scrub", birthdate="shift")
    dst = tmp_path / "out.nwb"
    nwb.handle(written, dst, make_ctx(policy=policy))
    with pynwb.NWBHDF5IO(str(dst), "r") as io:
        b = io.read()
        assert b.institution == "Example Hospital"
        assert "555-123-4567" not in b.notes and "called" in b.notes
        assert b.subject.date_of_birth == dt.datetime(1961, 7, 14, tzinfo=TZ) + \
            dt.timedelta(days=OFFSET)


def test_removed_text_inside_large_data_is_not_erased(written, tmp_path):
    """Removed values are zeroed in HDF5's free space, never inside stored data: a large
    dataset that happens to hold the same bytes keeps them."""
    src = Path(shutil.copyfile(written, tmp_path / "in.nwb"))
    block = np.frombuffer(b"PID12345" * (1 << 18), dtype="uint8")  # 2 MiB
    with h5py.File(src, "r+") as f:
        f["analysis"].create_dataset("bytes", data=block)
    dst = tmp_path / "out.nwb"
    nwb.handle(src, dst, make_ctx())
    with h5py.File(dst) as f:
        assert f["analysis/bytes"][()].tobytes() == block.tobytes()
        assert f["general/subject/subject_id"][()] == b"7XK2"
    assert numeric(src) == numeric(dst)


def test_ages_above_the_cap_are_capped(written, tmp_path):
    src = Path(shutil.copyfile(written, tmp_path / "in.nwb"))
    with h5py.File(src, "r+") as f:
        del f["general/subject/age"]
        f["general/subject"].create_dataset("age", data="P95Y6M",
                                            dtype=h5py.string_dtype("utf-8"))
    assert "nwb.age" in {f.rule for f in nwb.check_file(src, REL, default_policy())}
    dst = tmp_path / OUT_REL
    dst.parent.mkdir(parents=True)
    nwb.handle(src, dst, make_ctx())
    with pynwb.NWBHDF5IO(str(dst), "r") as io:
        assert io.read().subject.age == "P89Y"
    assert "nwb.age" not in {f.rule for f in nwb.check_file(dst, OUT_REL, default_policy())}


def test_check_finds_fields_in_raw_and_no_error_in_output(written, tmp_path):
    policy = default_policy()
    found = nwb.check_file(written, REL, policy)
    rules = {f.rule for f in found if f.severity == "error"}
    assert {"nwb.date", "nwb.subject-id", "nwb.birthdate", "nwb.free-text",
            "nwb.session-id", "nwb.electrode-text"} <= rules
    assert "nwb.site" in {f.rule for f in found}
    for f in found:
        assert not any(s.lower() in f.message.lower() for s in SECRETS), f.message
    for src in (written, REAL):
        out = tmp_path / src.stem / OUT_REL
        out.parent.mkdir(parents=True)
        nwb.handle(src, out, make_ctx())
        assert [f for f in nwb.check_file(out, OUT_REL, policy) if f.severity == "error"] == []


def test_corrupt_nwb_is_a_one_line_input_error(written, tmp_path):
    bad = tmp_path / "sub-01_task-seizure_ieeg.nwb"
    bad.write_bytes(written.read_bytes()[:6000])
    dst = tmp_path / "out.nwb"
    with pytest.raises(InputError) as err:
        nwb.handle(bad, dst, make_ctx())
    assert bad.name in str(err.value) and "\n" not in str(err.value)
    assert not dst.exists()
    assert [f.rule for f in nwb.check_file(bad, REL, default_policy())] == ["nwb.unreadable"]
    other = tmp_path / "x.nwb"
    with h5py.File(other, "w") as f:
        f.create_dataset("something", data=[1, 2, 3])
    with pytest.raises(InputError, match="not an NWB file"):
        nwb.handle(other, dst, make_ctx())


def test_later_dates_do_not_pass_dates_latest(tmp_path):
    # the bids-examples file was created (file_create_date 2022-12-07) five years after
    # its session started (2017-04-15): an offset that puts the session in 1921 would
    # put the creation date in 1926, after dates.latest (1925-12-31), and the run's gate
    # refused it. It gets the session's shifted start instead
    from bidsanon.check.rules import settings_for
    offset = (dt.date(1921, 1, 1) - dt.date(2017, 4, 15)).days
    dst = tmp_path / "sub-7XK2_task-seizure_ieeg.nwb"
    nwb.handle(REAL, dst, make_ctx(offset_days=offset))
    with h5py.File(dst, "r") as f:
        created = [v.decode() for v in np.ravel(f["file_create_date"][()])]
        start = f["session_start_time"][()].decode()
    assert created and all(c == start for c in created)
    assert start.startswith("1921-01-01")
    late = [x for x in nwb.check_file(dst, OUT_REL, default_policy())
            if x.rule == "nwb.date" and x.severity == "error"]
    assert late == [] and settings_for(default_policy()).latest == dt.date(1925, 12, 31)
