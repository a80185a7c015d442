"""MEF 3.0 sessions: metadata, index and data rewritten with CRCs recomputed, pymef reads
the same samples; records and video excluded; encrypted sessions refused."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.formats import classify, mef3
from bidsanon.key import KeyData
from bidsanon.labels import Labels
from bidsanon.plan import build_plan
from bidsanon.policy import default_policy

pymef = pytest.importorskip("pymef.mef_session")

#: Written by pymef 1.4.8: 2 channels of 2048 samples (8 blocks each), a session-level
#: note; fake subject names, ID, location, descriptions and GMT offset, unencrypted.
SESSION = DATA / "ieeg" / "mef3" / "sub-01_task-rest_ieeg.mefd"
#: The same kind of session with sections 2 and 3 encrypted (passwords pass1/pass2).
ENCRYPTED = DATA / "ieeg" / "mef3" / "encrypted" / "sub-01_task-rest_ieeg.mefd"
SECRETS = [b"Jane", b"Roe", b"FAKE-123", b"Fake General Hospital", b"Fake left"]
#: The layout of bids-examples' xeeg_hed_score MEF 3.0 session (its files are empty).
EXAMPLE = ("sub-ieegModulator/ses-ieeg01/ieeg/"
           "sub-ieegModulator_ses-ieeg01_task-photicstim_run-01_ieeg.mefd")
CHANNELS = ("RA1", "RA10", "RZ16")
OFFSET = -36500


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="X7K2", offset_days=OFFSET, policy=default_policy(),
                labels=Labels(subjects={"01": "X7K2"}), secret=b"s" * 32)
    args.update(kw)
    return TaskContext(**args)


def rewrite(src: Path, out: Path, ctx: TaskContext) -> dict:
    """Hand every time-series file of a session to the format, as the planner does."""
    results = {}
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f"sub-01/ieeg/{src.name}/{f.relative_to(src).as_posix()}"
        if classify(rel, False, ctx.policy)[0] != "mef3":
            continue
        dst = out / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        results[f.relative_to(src).as_posix()] = mef3.handle(f, dst, ctx)
    return results


def crcs_hold(path: Path) -> bool:
    data = path.read_bytes()
    header, body = struct.unpack_from("<II", data, 0)
    ok = header == mef3.crc32(data[4:1024])
    if path.suffix == ".tdat":
        pos, blocks = 1024, []
        while pos < len(data):
            size = struct.unpack_from("<I", data, pos + 36)[0]
            blocks.append(struct.unpack_from("<I", data, pos)[0]
                          == mef3.crc32(data[pos + 4:pos + size]))
            pos += size
        return ok and all(blocks) and body == mef3.crc32(data[1024:], init=0)
    return ok and body == mef3.crc32(data[1024:])


def test_fields_gone_crcs_valid_and_pymef_reads_identical_samples(tmp_path):
    out = tmp_path / "sub-X7K2_task-rest_ieeg.mefd"
    before = {p: p.read_bytes() for p in SESSION.rglob("*") if p.is_file()}
    results = rewrite(SESSION, out, make_ctx())
    assert {p: p.read_bytes() for p in SESSION.rglob("*") if p.is_file()} == before
    assert len(results) == 6  # 2 channels x (tmet, tidx, tdat)
    for f in (p for p in out.rglob("*.t*") if p.is_file()):
        data = f.read_bytes()
        assert len(data) == len(before[SESSION / f.relative_to(out)])
        for secret in SECRETS + [b"sub-01"]:
            assert secret not in data, (f.name, secret)
        assert crcs_hold(f), f.name
    a, b = pymef.MefSession(str(SESSION), None), pymef.MefSession(str(out), None)
    for channel in ("LH1", "LH2"):
        x = a.read_ts_channels_sample(channel, [None, None])
        y = b.read_ts_channels_sample(channel, [None, None])
        assert len(x) == 2048 and np.array_equal(x, y)
    meta = b.session_md["time_series_channels"]["LH1"]["section_3"]
    assert meta["subject_ID"][0] == b"X7K2"
    assert meta["subject_name_1"][0] == b"" and meta["recording_location"][0] == b""
    start_in = a.read_ts_channel_basic_info()[0]["start_time"][0]
    start_out = b.read_ts_channel_basic_info()[0]["start_time"][0]
    begin = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(start_out))
    # the offset reaches before 1970, which MEF readers cannot decode: the placeholder
    assert begin.date() == dt.date(1970, 1, 2)
    assert (start_in - start_out) % 86_400_000_000 == 0  # the time of day is kept
    assert any("before 1970" in w for w in results["LH1.timd/LH1-000000.segd/"
                                                  "LH1-000000.tmet"].warnings)


def test_an_offset_that_stays_after_1970_moves_every_time_by_it(tmp_path):
    out = tmp_path / "x.mefd"
    rewrite(SESSION, out, make_ctx(offset_days=-1000))
    a, b = pymef.MefSession(str(SESSION), None), pymef.MefSession(str(out), None)
    for key in ("start_time", "end_time"):
        ta = a.read_ts_channel_basic_info()[1][key][0]
        tb = b.read_ts_channel_basic_info()[1][key][0]
        assert tb == ta - 1000 * 86_400_000_000
    assert np.array_equal(a.read_ts_channels_sample("LH2", [None, None]),
                          b.read_ts_channels_sample("LH2", [None, None]))


def test_uuids_are_replaced_consistently(tmp_path):
    out = tmp_path / "x.mefd"
    rewrite(SESSION, out, make_ctx())
    level = {f.name: f.read_bytes()[820:836] for f in out.rglob("LH1-000000.t*")}
    original = {f.name: f.read_bytes()[820:836] for f in SESSION.rglob("LH1-000000.t*")}
    assert len(set(level.values())) == 1 and len(set(original.values())) == 1
    assert set(level.values()) != set(original.values())
    again = tmp_path / "again.mefd"
    rewrite(SESSION, again, make_ctx())
    assert {f.name: f.read_bytes()[820:868] for f in (p for p in again.rglob("*.t*") if p.is_file())} == \
        {f.name: f.read_bytes()[820:868] for f in (p for p in out.rglob("*.t*") if p.is_file())}


def test_check_finds_the_fields_in_raw_and_nothing_in_the_output(tmp_path):
    policy = default_policy()
    rel = "sub-01/ieeg/sub-01_task-rest_ieeg.mefd/LH1.timd/LH1-000000.segd/LH1-000000.tmet"
    raw = mef3.check_file(SESSION / "LH1.timd/LH1-000000.segd/LH1-000000.tmet", rel, policy)
    rules = {f.rule for f in raw}
    assert {"mef3.name", "mef3.subject-id", "mef3.location", "mef3.date",
            "mef3.description"} <= rules
    text = " ".join(f.message + f.location for f in raw).encode()
    assert not any(s in text for s in SECRETS)
    out = tmp_path / "sub-X7K2_task-rest_ieeg.mefd"
    rewrite(SESSION, out, make_ctx())
    for f in (p for p in out.rglob("*.t*") if p.is_file()):
        rel = f"sub-X7K2/ieeg/{out.name}/{f.relative_to(out).as_posix()}"
        assert [x for x in mef3.check_file(f, rel, policy)
                if x.severity in ("error", "warning")] == [], f.name


def test_encrypted_session_is_a_one_line_error(tmp_path):
    src = next(ENCRYPTED.rglob("*.tmet"))
    with pytest.raises(InputError, match="encrypted") as exc:
        mef3.handle(src, tmp_path / "out.tmet", make_ctx())
    assert str(src) in str(exc.value) and "\n" not in str(exc.value)
    found = mef3.check_file(src, "sub-01/ieeg/x.mefd/LH1.timd/LH1-000000.segd/"
                            "LH1-000000.tmet", default_policy())
    assert any("encrypted" in f.message for f in found)


@pytest.mark.parametrize("name,damage", [("tmet", "truncate"), ("tdat", "truncate"),
                                         ("tidx", "truncate"), ("tmet", "flip"),
                                         ("tdat", "flip"), ("tidx", "flip")])
def test_corrupt_file_is_a_one_line_input_error(name, damage, tmp_path):
    work = tmp_path / "in.mefd"
    shutil.copytree(SESSION, work)
    f = next(work.rglob(f"LH1-000000.{name}"))
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        data = data[:len(data) - 20] if name != "tmet" else data[:900]
    else:
        data[len(data) - 30] ^= 0xFF  # inside the body: its CRC no longer matches
    f.write_bytes(bytes(data))
    with pytest.raises(InputError) as exc:
        mef3.handle(f, tmp_path / f"out.{name}", make_ctx())
    assert str(f) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / f"out.{name}").exists()


def make_dataset(root: Path) -> list[str]:
    """A dataset shaped like bids-examples' MEF 3.0 example, plus the pymef session."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "mef", "BIDSVersion": "1.9.0"}')
    rels = []
    for ch in CHANNELS:
        seg = root / EXAMPLE / f"{ch}.timd" / f"{ch}-000001.segd"
        seg.mkdir(parents=True)
        for ext in ("tdat", "tidx", "tmet"):
            (seg / f"{ch}-000001.{ext}").write_bytes(b"")
            rels.append(f"{EXAMPLE}/{ch}.timd/{ch}-000001.segd/{ch}-000001.{ext}")
    real = root / "sub-01" / "ieeg" / SESSION.name
    shutil.copytree(SESSION, real)
    rels += sorted(p.relative_to(root).as_posix() for p in real.rglob("*") if p.is_file())
    return rels


def test_mefd_is_no_longer_copied_by_default():
    assert not any("mefd" in p for p in default_policy()["files"]["copy"])


def test_planner_rewrites_time_series_and_excludes_records(tmp_path):
    rels = make_dataset(tmp_path / "ds")
    plan = build_plan(tmp_path / "ds", default_policy(), KeyData())
    handlers = {t.rel: t.handler for t in plan.tasks}
    excluded = dict(plan.excluded)
    for rel in rels:
        if rel.endswith((".rdat", ".ridx")):
            assert "records" in excluded[rel] and rel not in handlers
        elif rel.startswith("sub-01/"):
            assert handlers[rel] == "mef3"
        else:  # bids-examples' empty placeholders
            assert handlers[rel] == "empty"


@pytest.mark.parametrize("unknown", ["exclude", "copy"])
def test_exclude_leaves_every_file_of_a_session_out(tmp_path, unknown):
    rels = make_dataset(tmp_path / "ds")
    policy = default_policy()
    policy["ieeg"]["mef3"]["action"] = "exclude"
    policy["files"]["unknown"] = unknown
    plan = build_plan(tmp_path / "ds", policy, KeyData())
    excluded = dict(plan.excluded)
    for rel in rels:
        assert rel in excluded and "MEF 3.0" in excluded[rel], rel
    assert not {t.rel for t in plan.tasks} & set(rels)


def test_copy_keeps_records_unchanged(tmp_path):
    policy = default_policy()
    policy["ieeg"]["mef3"]["action"] = "copy"
    rel = "sub-01/ieeg/sub-01_task-rest_ieeg.mefd/sub-01_task-rest_ieeg.rdat"
    assert classify(rel, False, policy)[0] == "mef3_other"
    src = SESSION / "sub-01_task-rest_ieeg.rdat"
    result = mef3.handle(src, tmp_path / "x.rdat", make_ctx(policy=policy))
    assert (tmp_path / "x.rdat").read_bytes() == src.read_bytes()
    assert "not de-identified" in result.warnings[0]
    assert classify(rel, False, default_policy())[0] is None
