"""Compressed TSV recordings (physio, physioevents, stim, eye tracking) and copied gzip
files: real bids-examples files whose gzip headers store the original file name and the
compression time."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pytest
from conftest import DATA, copy_tree, validator_issues

from bidsanon.check.engine import Scan, check_path
from bidsanon.check.rules import settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import gzip_bytes, gzip_header_info, sha256_file
from bidsanon.formats import classify, copy, physio
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

PHYSIO = DATA / "physio"
DS210 = PHYSIO / "ds210"
REST = DS210 / "sub-01" / "func" / "sub-01_task-rest_run-01_physio.tsv.gz"
STIM = PHYSIO / "synthetic" / "sub-01_ses-01_task-nback_run-01_stim.tsv.gz"
EYE = PHYSIO / "eyetracking_eeg_ds007338" / \
    "sub-EP10_ses-01_task-dots_run-01_recording-eye1_physioevents.tsv.gz"
SAMPLES = {"physio": REST, "stim": STIM, "physioevents": EYE}


def make_ctx(rel: str, policy: dict | None = None) -> TaskContext:
    return TaskContext(subject="01", new_subject="Q7XK", offset_days=-36400,
                       policy=policy or default_policy(),
                       labels=Labels(subjects={"01": "Q7XK", "EP10": "Z9PL"}), rel=rel,
                       secret=b"k" * 32)


def scan_findings(path: Path, rel: str) -> list:
    found, _ = check_path(path, rel, Scan(settings=settings_for(default_policy()),
                                          faces=False))
    return found


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_classified_as_physio_not_copied(kind):
    rel = f"sub-01/func/{SAMPLES[kind].name}"
    assert classify(rel, False, default_policy())[0] == "physio"


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_gzip_header_emptied_and_data_identical(kind, tmp_path):
    src = SAMPLES[kind]
    rel = f"sub-01/func/{src.name}"
    digest = sha256_file(src)
    name, mtime, _ = gzip_header_info(src)
    assert mtime != 0  # the real files store their compression time
    dst = tmp_path / src.name
    result = physio.handle(src, dst, make_ctx(rel))
    assert gzip_header_info(dst) == (None, 0, None)
    assert gzip.decompress(dst.read_bytes()) == gzip.decompress(src.read_bytes())
    assert sha256_file(src) == digest
    removed = {c.field: c.old for c in result.changes}
    assert "gzip.mtime" in removed
    if name:
        assert removed["gzip.name"] == name


def test_check_finds_the_gzip_header_in_raw_and_nothing_in_output(tmp_path):
    rel = "sub-01/func/" + REST.name
    raw = {f.rule for f in scan_findings(REST, rel) if f.severity == "error"}
    assert raw == {"gzip.name", "gzip.mtime"}
    dst = tmp_path / REST.name
    physio.handle(REST, dst, make_ctx(rel))
    assert [f for f in scan_findings(dst, rel) if f.severity == "error"] == []


def _with_lines(tmp_path: Path, lines: list[str]) -> Path:
    """The real eye-tracking events with extra message lines appended."""
    path = tmp_path / EYE.name
    text = gzip.decompress(EYE.read_bytes()) + "".join(lines).encode("utf-8")
    path.write_bytes(gzip.compress(text, mtime=1700000000))
    return path


def test_text_cells_scrubbed_numbers_kept(tmp_path):
    msg = ["12.5\t0\tmessage\tcall jane@example.org about sub-EP10\t1250\n",
           "13.5\t0\tmessage\t2019-05-17T10:00:00\t1350\n"]
    src = _with_lines(tmp_path, msg)
    rel = "sub-EP10/ses-01/eeg/" + EYE.name
    found = physio.check_file(src, rel, default_policy())
    assert {"text.email", "tsv.date"} <= {f.rule for f in found}
    assert not any("jane@" in f.message or "2019" in f.message for f in found)
    dst = tmp_path / "out.tsv.gz"
    ctx = TaskContext(subject="EP10", new_subject="Z9PL", offset_days=-36400,
                      policy=default_policy(), labels=Labels(subjects={"EP10": "Z9PL"}),
                      rel=rel, secret=b"k" * 32)
    result = physio.handle(src, dst, ctx)
    out = gzip.decompress(dst.read_bytes()).decode("utf-8")
    original = gzip.decompress(EYE.read_bytes()).decode("utf-8")
    assert out.startswith(original)  # the real lines: text cells without identifiers
    added = out[len(original):].splitlines()
    assert "jane@example.org" not in out and "EP10" not in out
    assert "sub-Z9PL" in added[0]
    shifted = dt.datetime(2019, 5, 17, 10) + dt.timedelta(days=-36400)
    assert added[1].split("\t")[3] == shifted.isoformat()
    for new, old in zip(added, msg):  # numeric cells byte for byte
        cells, before = new.split("\t"), old.rstrip("\n").split("\t")
        assert [cells[i] for i in (0, 1, 4)] == [before[i] for i in (0, 1, 4)]
    assert {c.field for c in result.changes} >= {"column 4", "gzip.mtime"}
    assert [f for f in physio.check_file(dst, rel, default_policy())
            if f.severity == "error"] == []


def test_text_cells_kept_when_the_policy_says_so(tmp_path):
    src = _with_lines(tmp_path, ["12.5\t0\tmessage\tcall jane@example.org\t1250\n"])
    policy = default_policy()
    policy["tsv"]["physio"]["text_cells"] = "keep"
    dst = tmp_path / "out.tsv.gz"
    physio.handle(src, dst, make_ctx("sub-01/eeg/x_physioevents.tsv.gz", policy))
    assert gzip.decompress(dst.read_bytes()) == gzip.decompress(src.read_bytes())
    assert gzip_header_info(dst) == (None, 0, None)


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "bad-crc"])
def test_corrupt_input_is_a_one_line_error(damage, tmp_path):
    data = REST.read_bytes()
    bad = tmp_path / REST.name
    if damage == "truncated":
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "not-gzip":
        bad.write_bytes(b"<html>not found</html>\n")
    else:
        bad.write_bytes(data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:])
    with pytest.raises(InputError) as err:
        physio.handle(bad, tmp_path / "out.tsv.gz", make_ctx("sub-01/func/" + REST.name))
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "out.tsv.gz").exists()
    if damage != "not-gzip":
        assert any(f.rule == "physio.unreadable" and f.severity == "error"
                   for f in physio.check_file(bad, "x_physio.tsv.gz", default_policy()))


def test_copied_gzip_gets_an_empty_header(tmp_path):
    """A file the policy copies (files.copy) that is gzip: same bytes decompressed."""
    src = tmp_path / "stimuli" / "movie_timing.txt.gz"
    src.parent.mkdir()
    shutil.copyfile(STIM, src)
    rel = "stimuli/movie_timing.txt.gz"
    assert classify(rel, False, default_policy())[0] == "copy"
    dst = tmp_path / "out.txt.gz"
    result = copy.handle(src, dst, make_ctx(rel))
    assert gzip_header_info(dst) == (None, 0, None)
    assert gzip.decompress(dst.read_bytes()) == gzip.decompress(STIM.read_bytes())
    assert {c.field for c in result.changes} == {"gzip.name", "gzip.mtime"}
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(STIM.read_bytes()[:100])
    with pytest.raises(InputError):
        copy.handle(bad, tmp_path / "bad-out.txt.gz", make_ctx(rel))


def test_copied_file_that_is_not_gzip_is_copied_exactly(tmp_path):
    src = tmp_path / "sub-01_dwi.bval"
    src.write_bytes(b"0 1000 1000 1000\n")
    dst = tmp_path / "out.bval"
    copy.handle(src, dst, make_ctx("sub-01/dwi/sub-01_dwi.bval"))
    assert dst.read_bytes() == src.read_bytes()
    already = tmp_path / "clean.tsv.gz"
    already.write_bytes(gzip_bytes(b"1\t2\n"))
    copy.handle(already, tmp_path / "clean-out.tsv.gz", make_ctx("x"))
    assert (tmp_path / "clean-out.tsv.gz").read_bytes() == already.read_bytes()


def test_run_publishes_physio_without_gzip_names(tmp_path):
    from bidsanon.run import run_dataset
    src = copy_tree(DS210, tmp_path / "in")
    before = sha256_file(src)
    run_dataset(src, tmp_path / "out", quiet=True, jobs=1)
    assert sha256_file(src) == before
    outs = list((tmp_path / "out").rglob("*_physio.tsv.gz"))
    assert len(outs) == 1
    assert gzip_header_info(outs[0]) == (None, 0, None)
    assert gzip.decompress(outs[0].read_bytes()) == gzip.decompress(REST.read_bytes())
    assert "sub-01" not in str(outs[0].relative_to(tmp_path / "out"))
    codes = {i["code"] for i in validator_issues(src)}
    assert {"GZIP_HEADER_MTIME", "GZIP_HEADER_FILENAME"} <= codes  # the real input
    codes = {i["code"] for i in validator_issues(tmp_path / "out")}
    assert not {"GZIP_HEADER_MTIME", "GZIP_HEADER_FILENAME"} & codes


@pytest.mark.parametrize("block, numeric", [
    (b"-290\t-2609\n-286\t-2576\n", True), (b"1e-5\tn/a\r\n-3.5\t\n", True),
    (b"inf\t-inf\tNaN\n", True), (b"-1.5e+03\t+2\n", True),
    (b"2019-05-17\t1\n", False), (b"555-123-4567\n", False), (b"17.05.2019\n", False),
    (b"555.123.4567\n", False), (b"1\tblink\n", False), (b"\xef\xbb\xbf1\n", False)])
def test_only_blocks_of_numbers_skip_the_cell_scrub(block, numeric):
    """The fast path copies a block unchanged only when no cell of it could be
    scrubbed: dates and phone numbers have no letters but are not numbers."""
    assert physio.numeric_block(block) is numeric


def test_real_recording_is_all_numbers():
    data = gzip.decompress(REST.read_bytes())
    assert physio.numeric_block(data)  # so it streams through without the cell scrub
    assert not physio.numeric_block(gzip.decompress(EYE.read_bytes()))
