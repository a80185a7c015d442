"""One offset per subject, chosen from acquisition dates only, end to end on real FIFF.

The MNE sample subject's MaxFilter-processed file holds a 2002 measurement beside block
IDs stamped 1970-01-03 .. 1970-01-11, a 2015 file ID and processing date and a 2000
cross-talk date: `bidsanon run` used to refuse it (the dates span more than fits
between dates.earliest and dates.latest; with `dates.shift: fixed`, the 1970 IDs leave
the FIFF range). Now it publishes: every date moves by the subject's one offset where
the result can be stored, and the others are set to the nearest allowed date and
reported in the key's changes and the run's warnings.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.errors import InputError
from bidsanon.formats import fiff
from bidsanon.formats.fiff import tags as ft
from bidsanon.formats.tsv import read_tsv
from bidsanon.key import read_key
from bidsanon.plan import collect_dates, walk
from bidsanon.policy import load_policy
from bidsanon.run import run_dataset

SSS = DATA / "meg" / "fiff" / "sample_audvis_trunc_raw_sss.fif.gz"
DAY = 86400
UTC = dt.timezone.utc
POLICIES = {"random": "", "fixed": "dates:\n  shift: fixed\n"}


def write_policy(tmp_path: Path, name: str) -> Path | None:
    if not POLICIES[name]:
        return None
    path = tmp_path / f"{name}.yaml"
    path.write_text(POLICIES[name])
    return path


def bids_dataset(root: Path, fif: bytes, task: str, acq_time: str | None = None) -> Path:
    """A one-subject MEG dataset around ``fif`` (with a scans.tsv when ``acq_time``)."""
    meg = root / "sub-01" / "meg"
    meg.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "dates", "BIDSVersion": "1.9.0"}))
    (root / "participants.tsv").write_text("participant_id\nsub-01\n")
    name = f"sub-01_task-{task}_meg"
    (meg / f"{name}.fif").write_bytes(fif)
    (meg / f"{name}.json").write_text(json.dumps(
        {"TaskName": task, "SamplingFrequency": 600.614990234375, "PowerLineFrequency": 60}))
    if acq_time:
        (root / "sub-01" / "sub-01_scans.tsv").write_text(
            f"filename\tacq_time\nmeg/{name}.fif\t{acq_time}\n")
    return root


def times(path: Path) -> list[tuple[str, str, tuple[int, int], int]]:
    """(field, block, (secs, usecs), byte position) of every ID and date tag, in file
    order."""
    out = []
    for f in fiff.scan(path):
        if f.rule.action == "id":
            out.append((f.rule.field, f.block, f.value[1:], f.pos))
        elif f.rule.action == "date":
            out.append((f.rule.field, f.block, f.value, f.pos))
    return out


def expected(old: tuple[int, int], offset: int, high: int) -> tuple[int, int]:
    """A date moved by ``offset`` days, or the nearest allowed value when the result
    is not storable (FIFF int32 seconds) or falls after dates.latest (``high``)."""
    target = old[0] + offset * DAY
    if fiff.MIN_SECS <= target <= high:
        return target, old[1]
    return (fiff.MIN_SECS if target < fiff.MIN_SECS else high), 0


def published(tmp_path: Path, src: Path, policy: str):
    out = tmp_path / "out"
    summary = run_dataset(src, out, policy_path=write_policy(tmp_path, policy), quiet=True,
                          jobs=1)
    assert summary.published, summary.text()
    key = read_key(summary.key)
    (entry,) = key.subjects.values()
    (fif_out,) = (out / f"sub-{entry.label}" / "meg").glob("*.fif")
    (record,) = [r for r in key.files if r["handler"] == "fiff"]
    return summary, entry.offset_days, fif_out, record, out


def test_acquisition_dates_only_choose_the_offset(tmp_path):
    """The planner sees the measurement date and acq_time, not the 1970 block IDs,
    the 2015 processing date or the 2000 cross-talk date of the same file."""
    src = bids_dataset(tmp_path / "in", gzip.decompress(SSS.read_bytes()), "audvis",
                       "2002-12-03T19:01:10")
    policy = load_policy(None)
    items, _, _ = walk(src, policy)
    dates = collect_dates(src, items, policy)
    assert sorted(dates["01"][None]) == [dt.datetime(2002, 12, 3, 19, 1, 10),
                                         dt.datetime(2002, 12, 3, 19, 1, 10, 720100)]
    other = [t for f, b, t, _ in times(src / "sub-01/meg/sub-01_task-audvis_meg.fif")
             if not ft.no_date(*t) and (f, b) != ("meas_date", "meas/meas_info")]
    years = {fiff._secs_to_dt(*t).year for t in other}
    assert {1970, 2000, 2015} <= years  # the dates that used to refuse the file


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_maxfilter_file_publishes_every_date_moved_by_one_offset(tmp_path, policy):
    src = bids_dataset(tmp_path / "in", gzip.decompress(SSS.read_bytes()), "audvis",
                       "2002-12-03T19:01:10")
    fif_in = src / "sub-01/meg/sub-01_task-audvis_meg.fif"
    summary, offset, fif_out, record, out = published(tmp_path, src, policy)
    if policy == "fixed":
        assert offset == load_policy(None)["dates"]["fixed_offset_days"]
    latest = dt.date.fromisoformat(load_policy(None)["dates"]["latest"])
    high = (latest - dt.date(1970, 1, 1)).days * DAY + DAY - 1

    before, after = times(fif_in), times(fif_out)
    assert [(f, b) for f, b, _, _ in before] == [(f, b) for f, b, _, _ in after]
    changes = {(c["field"], c["location"]): c for c in record["changes"]}
    moved, replaced = 0, []
    for (field, block, old, pos), (_, _, new, _) in zip(before, after):
        if ft.no_date(*old):
            assert new == old
            continue
        assert new == expected(old, offset, high), (field, block)
        if new == (old[0] + offset * DAY, old[1]):
            moved += 1
        else:
            where = f"{block} (byte {pos})"
            assert changes[f"fiff.{field}", where]["action"] == "replace"
            replaced.append(where)
    assert moved >= 2 and replaced  # the measurement date moved; the 1970 IDs did not fit
    assert any(fiff._secs_to_dt(*o).year == 1970 for f, b, o, p in before
               if f"{b} (byte {p})" in replaced)
    (warning,) = [w for w in summary.warnings if "nearest date allowed" in w]
    assert warning.startswith("sub-01/meg/") and f"{len(replaced)} date(s)" in warning
    for where in replaced[:5]:  # the warning names the first five, the key all
        assert f" in {where}" in warning
    assert record["warnings"] == [warning.split(": ", 1)[1]]

    # what MNE reads: measurement date and processing history moved by the same offset
    info_in, info_out = (mne.io.read_info(p, verbose="error") for p in (fif_in, fif_out))
    assert info_out["meas_date"] == info_in["meas_date"] + dt.timedelta(days=offset)
    hist_in, hist_out = info_in["proc_history"][0], info_out["proc_history"][0]
    assert tuple(hist_out["date"]) == expected(tuple(hist_in["date"]), offset, high)
    assert hist_out["block_id"]["machid"].tolist() == [0, 0]
    assert fiff._secs_to_dt(*hist_out["date"]).date() <= latest
    raw_in, raw_out = (mne.io.read_raw_fif(p, verbose="error") for p in (fif_in, fif_out))
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())
    # the scans table's acq_time moved by the same offset
    (scans,) = out.glob("sub-*/sub-*_scans.tsv")
    (acq,) = read_tsv(scans).column("acq_time")
    assert dt.datetime.fromisoformat(acq) == dt.datetime(2002, 12, 3, 19, 1, 10) + \
        dt.timedelta(days=offset)


@pytest.fixture(scope="module")
def mne_raw(tmp_path_factory) -> bytes:
    """A FIFF written by MNE-Python: a 1960s birthday, a 2019 measurement, a project
    name holding a first name."""
    info = mne.create_info(["MEG 001", "EEG 001", "STI 014"], 250.0, ["mag", "eeg", "stim"])
    info["subject_info"] = dict(id=7, first_name="Jane", last_name="Doe",
                                birthday=dt.date(1964, 7, 21), sex=2, hand=1)
    with info._unlock():
        info["meas_date"] = dt.datetime(2019, 6, 3, 9, 30, 15, 250000, tzinfo=UTC)
        info["proj_name"] = "jane_pilot"
    raw = mne.io.RawArray(np.random.default_rng(1).standard_normal((3, 2500)), info,
                          verbose="error")
    path = tmp_path_factory.mktemp("mne") / "birthday_raw.fif"
    raw.save(path, verbose="error")
    return path.read_bytes()


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_mne_written_birthday_moves_by_the_offset(tmp_path, mne_raw, policy):
    src = bids_dataset(tmp_path / "in", mne_raw, "rest")
    fif_in = src / "sub-01/meg/sub-01_task-rest_meg.fif"
    summary, offset, fif_out, record, _ = published(tmp_path, src, policy)
    info_in, info_out = (mne.io.read_info(p, verbose="error") for p in (fif_in, fif_out))
    born_in = info_in["subject_info"]["birthday"]
    born_out = info_out["subject_info"]["birthday"]
    assert born_in == dt.date(1964, 7, 21)
    assert born_out == born_in + dt.timedelta(days=offset)
    assert info_out["meas_date"] == info_in["meas_date"] + dt.timedelta(days=offset)
    assert info_out["meas_date"].date() <= dt.date(1925, 12, 31)
    # the age at measurement is kept, and nothing needed replacing
    assert info_out["meas_date"].date() - born_out == info_in["meas_date"].date() - born_in
    assert not [w for w in summary.warnings if "nearest date allowed" in w]
    birthday = [c for c in record["changes"] if c["field"] == "fiff.subject_birthday"]
    assert [c["action"] for c in birthday] == ["shift"]
    # the dataset policy replaces the project name (mne_anonymize would keep it)
    assert info_out["proj_name"] == "mne_anonymize"
    assert info_out["subject_info"]["first_name"] == "mne_anonymize"
    assert info_out["subject_info"]["last_name"] == "mne_anonymize"


def test_a_measurement_date_that_cannot_fit_still_stops_the_run(tmp_path):
    """Only the acquisition date refuses the file: a fixed offset that moves the 2002
    measurement before 1901-12-13 cannot be stored in FIFF."""
    src = bids_dataset(tmp_path / "in", gzip.decompress(SSS.read_bytes()), "audvis")
    policy = tmp_path / "far.yaml"
    policy.write_text("dates:\n  shift: fixed\n  fixed_offset_days: -40000\n")
    with pytest.raises(InputError, match=r"sub-01_task-audvis_meg\.fif.*measurement date "
                                         r"by -40000 days leaves the FIFF date range") as exc:
        run_dataset(src, tmp_path / "out", policy_path=policy, quiet=True, jobs=1)
    assert "byte 2955079" in str(exc.value)  # FIFF_MEAS_DATE of the measurement info
    assert "2002" not in str(exc.value)  # where and what, not the value
    assert not (tmp_path / "out").exists()
