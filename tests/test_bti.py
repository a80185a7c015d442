"""BTi/4D (c,rf*, config, hs_file): real files in, MNE-readable de-identified files out."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.formats import bti, classify
from bidsanon.key import KeyData
from bidsanon.plan import build_plan
from bidsanon.policy import default_policy

SIM = DATA / "meg" / "bti" / "4Dsim"
NAMES = ("c,rfDC", "config", "hs_file")
OFFSET = -36500
#: Identifying strings known to be in the real files: a user name, the site, the host.
SECRETS = {"c,rfDC": [b"eeich"], "config": [b"eeich", b"Juelich-II", b"btiwd01"],
           "hs_file": []}
FAKE_PATH = b"/home/jdoe/data/DOE^JANE/01%01%19@10:00/1/c,rfDC"


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="X7K2", offset_days=OFFSET,
                policy=default_policy(), rel="sub-01/meg/sub-01_task-x_meg/c,rfDC")
    args.update(kw)
    return TaskContext(**args)


def with_fake_path(src: Path, dst: Path) -> Path:
    """A copy of the data file whose process file name is a full 4D database path."""
    lay, data = bti.layout(src)
    raw = bytearray(data)
    _, offset, size = next(t for t in lay.texts if t[0] == "process.filename")
    raw[offset:offset + size] = FAKE_PATH.ljust(size, b"\x00")
    start, size, at = next(s for s in lay.structs if s[0] <= offset < s[0] + s[1])
    struct.pack_into(">I", raw, start + at, bti.checksum(raw, start, size, at))
    dst.write_bytes(bytes(raw))
    return dst


def anonymize(src_dir: Path, out: Path, ctx: TaskContext) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return {name: bti.handle(src_dir / name, out / name, ctx) for name in NAMES}


def read(folder: Path, head_shape: bool = True) -> mne.io.BaseRaw:
    return mne.io.read_raw_bti(str(folder / "c,rfDC"), str(folder / "config"),
                               str(folder / "hs_file") if head_shape else None,
                               verbose="error")


def test_fields_gone_checksums_valid_and_mne_reads_identical_data(tmp_path):
    work = tmp_path / "in"
    shutil.copytree(SIM, work)
    with_fake_path(SIM / "c,rfDC", work / "c,rfDC")
    before = {n: (work / n).read_bytes() for n in NAMES}
    results = anonymize(work, tmp_path / "out", make_ctx())
    for name in NAMES:
        assert (work / name).read_bytes() == before[name], "the input was modified"
        out = (tmp_path / "out" / name).read_bytes()
        assert len(out) == len(before[name])
        for secret in SECRETS[name]:
            assert secret in before[name] and secret not in out, (name, secret)
        lay, _ = bti.layout(tmp_path / "out" / name)
        for start, size, at in lay.structs:  # every checksum still holds
            assert struct.unpack_from(">I", out, start + at)[0] == bti.checksum(
                out, start, size, at), (name, start)
        assert not results[name].warnings
    out_data = (tmp_path / "out" / "c,rfDC").read_bytes()
    assert b"jdoe" not in out_data and b"DOE^JANE" not in out_data
    assert b"c,rfDC\x00" in out_data  # the file name without its directories
    a, b = read(work), read(tmp_path / "out")
    assert a.ch_names == b.ch_names
    assert np.array_equal(a.get_data(), b.get_data())
    assert b.info["meas_date"] == a.info["meas_date"] + dt.timedelta(days=OFFSET)
    assert b.info["meas_date"].year < 1925


def test_only_identifying_bytes_change_in_the_data_file(tmp_path):
    dst = tmp_path / "c,rfDC"
    bti.handle(SIM / "c,rfDC", dst, make_ctx())
    lay, before = bti.layout(SIM / "c,rfDC")
    after = dst.read_bytes()
    mask = np.ones(len(after), bool)
    for _, offset, size in lay.texts:
        mask[offset:offset + size] = False
    for _, offset, _ in lay.times:
        mask[offset:offset + 4] = False
    for start, _, at in lay.structs:
        mask[start + at:start + at + 4] = False
    assert np.array_equal(np.frombuffer(after, np.uint8)[mask],
                          np.frombuffer(before, np.uint8)[mask])
    assert after != before


def test_head_shape_follows_the_headshape_policy(tmp_path):
    raw_in = read(SIM)
    n_in = len(raw_in.info["dig"])
    for action, expect in (("keep", n_in), ("fiducials", 3)):
        ctx = make_ctx()
        ctx.policy["files"]["headshape"]["action"] = action
        out = tmp_path / action
        anonymize(SIM, out, ctx)
        raw = read(out)
        assert len(raw.info["dig"]) == expect
        assert np.array_equal(raw.get_data(), raw_in.get_data())
    assert n_in > 1000
    policy = default_policy()
    policy["files"]["headshape"]["action"] = "drop"
    rel = "sub-01/meg/sub-01_task-x_meg/hs_file"
    assert classify(rel, False, policy) == (None, "digitised head shape (files.headshape)")


def test_placeholder_date_when_not_shifting(tmp_path):
    out = tmp_path / "out"
    anonymize(SIM, out, make_ctx(offset_days=None))
    assert bti.peek_dates(out / "c,rfDC")[0].date() == dt.date(1970, 1, 1)
    assert bti.peek_dates(SIM / "c,rfDC") == [dt.datetime(2019, 3, 14, 13, 20, 14)]
    for name in NAMES:
        found = bti.check_file(out / name, f"sub-X7K2/meg/x_meg/{name}", default_policy())
        assert [f for f in found if f.severity == "error"] == []


def test_check_finds_the_fields_in_raw_and_nothing_in_the_output(tmp_path):
    work = tmp_path / "in"
    shutil.copytree(SIM, work)
    with_fake_path(SIM / "c,rfDC", work / "c,rfDC")
    policy = default_policy()
    rules = {n: {f.rule for f in bti.check_file(work / n, f"sub-01/meg/x_meg/{n}", policy)}
             for n in NAMES}
    assert {"bti.user", "bti.date", "bti.path"} <= rules["c,rfDC"]
    assert {"bti.user", "bti.date", "bti.host", "bti.institution", "bti.path"} <= rules["config"]
    assert {"bti.date", "bti.head-points"} <= rules["hs_file"]
    for n in NAMES:
        text = " ".join(f.message + f.location for f in
                        bti.check_file(work / n, f"sub-01/meg/x_meg/{n}", policy)).encode()
        for secret in SECRETS[n] + [b"jdoe", b"DOE^JANE"]:
            assert secret not in text
    anonymize(work, tmp_path / "out", make_ctx())
    for n in NAMES:
        found = bti.check_file(tmp_path / "out" / n, f"sub-X7K2/meg/x_meg/{n}", policy)
        assert [f for f in found if f.severity in ("error", "warning")] == []


@pytest.mark.parametrize("name,cut", [("c,rfDC", 4), ("c,rfDC", 200000), ("config", 60),
                                      ("config", 20000), ("hs_file", 100), ("hs_file", 5000)])
def test_corrupt_or_truncated_file_is_a_one_line_input_error(name, cut, tmp_path):
    bad = tmp_path / name
    data = (SIM / name).read_bytes()
    bad.write_bytes(data[-cut:] if name == "c,rfDC" and cut > 8 else data[:cut])
    with pytest.raises(InputError) as exc:
        bti.handle(bad, tmp_path / "out", make_ctx())
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    assert bti.check_file(bad, f"sub-01/meg/x_meg/{name}", None)[0].rule == "bti.unreadable"


def test_registry_takes_4d_files_of_meg_folders_only():
    policy = default_policy()
    folder = "sub-01/ses-1/meg/sub-01_ses-1_task-x_run-1_meg/"
    assert classify(folder + "c,rfDC", False, policy)[0] == "bti"
    assert classify(folder + "e,rfhp1.0Hz,COH", False, policy)[0] == "bti"
    assert classify(folder + "config", False, policy)[0] == "bti"
    assert classify(folder + "hs_file", False, policy)[0] == "bti_headshape"
    assert classify("config", False, policy)[0] is None  # a top-level file named config
    assert classify("sub-01/meg/config.json", False, policy)[0] == "sidecar"


def test_planner_gives_a_4d_folder_to_the_format(tmp_path):
    root = tmp_path / "ds"
    folder = root / "sub-01" / "meg" / "sub-01_task-rest_meg"
    shutil.copytree(SIM, folder)
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    plan = build_plan(root, default_policy(), KeyData())
    handlers = {t.rel.rsplit("/", 1)[-1]: t.handler for t in plan.tasks
                if "_meg/" in t.rel}
    assert handlers == {"c,rfDC": "bti", "config": "bti", "hs_file": "bti_headshape"}


def test_an_unrecognised_checksum_is_left_and_reported(tmp_path):
    lay, data = bti.layout(SIM / "config")
    raw = bytearray(data)
    start, _, at = lay.structs[0]  # the config header, which the site name changes
    struct.pack_into(">I", raw, start + at, 12345)
    work = tmp_path / "config"
    work.write_bytes(bytes(raw))
    (tmp_path / "out").mkdir()
    result = bti.handle(work, tmp_path / "out" / "config", make_ctx())
    assert any("checksum" in w for w in result.warnings)
    assert struct.unpack_from(">I", (tmp_path / "out" / "config").read_bytes(),
                              start + at)[0] == 12345
