"""``bidsanon fiff`` (mne_anonymize-compatible command line) on the real FIFF test files."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.formats import fiff
from bidsanon.cli import main as cli_main
from bidsanon.cli.fiff import AnonymizedName, default_output, parse_date, run_jobs


def main(argv):
    return cli_main(["fiff", *argv])

mne.set_log_level("ERROR")
FIF = DATA / "meg" / "fiff"
RAW = "141027_cropped_90Hz_raw.fif"
MEAS = (1414419178, 25607)  # its FIFF_MEAS_DATE
UTC = dt.timezone.utc


@pytest.fixture
def work(tmp_path) -> Path:
    for name in (RAW, "ct_sparse.fif", "triux_bmlhus_erm_raw_sss.fif"):
        shutil.copyfile(FIF / name, tmp_path / name)
    return tmp_path


def values(path: Path) -> dict[str, object]:
    return {f.rule.field: f.value for f in fiff.scan(path)}


def test_default_output_name():
    assert default_output("/a/x_raw.fif") == Path("/a/x_raw_anonymized.fif")
    assert default_output("x_raw.fif.gz") == Path("x_raw_anonymized.fif.gz")
    assert default_output("x.dat") == Path("x.dat_anonymized.fif")


@pytest.mark.parametrize("text", ["20000101", "01012000", "2000-01-01", "01.01.2000"])
def test_both_documented_date_formats(text):
    assert parse_date(text) == dt.date(2000, 1, 1)


def test_ambiguous_and_invalid_dates():
    assert parse_date("19121012") == dt.date(1912, 10, 12)  # 19-12-1012 is out of range
    assert parse_date("13121999") == dt.date(1999, 12, 13)
    for bad in ("2000011", "31022000", "01011800", "yesterday"):
        with pytest.raises(Exception, match="not a date|outside|ambiguous"):
            parse_date(bad)


def test_defaults_like_mne_anonymize(work, capsys):
    assert main(["-i", str(work / RAW)]) == 0
    out = work / "141027_cropped_90Hz_raw_anonymized.fif"
    assert ": 11 field(s) changed" in capsys.readouterr().out and out.exists()
    v = values(out)
    assert v["meas_date"] == (946684800, 0)  # 2000-01-01 00:00:00 UTC
    assert v["subject_birthday"] == dt.date(2000, 1, 1).toordinal() + 1721425
    assert v["subject_first_name"] == v["experimenter"] == "mne_anonymize"
    assert v["subject_sex"] == 1 and v["project_name"] == "noise"  # kept without --brute
    assert (FIF / RAW).read_bytes() == (work / RAW).read_bytes()  # input kept
    a, b = mne.io.read_raw_fif(work / RAW), mne.io.read_raw_fif(out)
    assert np.array_equal(a.get_data(), b.get_data())


def test_options_md_sb_his_brute(work):
    out = work / "o.fif"
    assert main(["-i", str(work / RAW), "-o", str(out), "--md", "01021990", "--sb",
                 "19850312", "--his", "P-7", "-b", "-s"]) == 0
    v = values(out)
    assert v["meas_date"] == (int(dt.datetime(1990, 2, 1, tzinfo=UTC).timestamp()), 0)
    info = mne.io.read_info(out)
    assert info["subject_info"]["birthday"] == dt.date(1985, 3, 12)
    assert (info["subject_info"]["sex"], info["subject_info"]["weight"]) == (0, 0.0)
    assert info["proj_name"] == "mne_anonymize" and info["proj_id"] == 0


def test_offsets_subtract_days(work):
    out = work / "o.fif"
    assert main(["-i", str(work / RAW), "-o", str(out), "--mdo", "35", "--sbo", "10",
                 "-s"]) == 0
    v = values(out)
    assert v["meas_date"] == (MEAS[0] - 35 * 86400, MEAS[1])
    assert v["parent_block_id"][0] == (0, 0)
    info = mne.io.read_info(out)
    assert info["subject_info"]["birthday"] == dt.date(2010, 3, 13) - dt.timedelta(days=10)


def test_same_output_for_both_date_spellings(work):
    a, b = work / "a.fif", work / "b.fif"
    assert main(["-i", str(work / RAW), "-o", str(a), "--md", "20000101", "-s"]) == 0
    assert main(["-i", str(work / RAW), "-o", str(b), "--md", "01012000", "-s"]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_verbose_masks_old_values(work, capsys):
    assert main(["-i", str(work / RAW), "-v"]) == 0
    out = capsys.readouterr().out
    assert "fiff.subject_first_name" in out and "*** -> mne_anonymize" in out
    assert "Room" not in out and "neuromag" not in out
    assert main(["-i", str(work / RAW), "-v", "--show-values"]) == 0
    assert "Room -> mne_anonymize" in capsys.readouterr().out


def test_silent_prints_nothing(work, capsys):
    assert main(["-i", str(work / RAW), "-s"]) == 0
    assert capsys.readouterr() == ("", "")


def test_mne_environment_flag(tmp_path):
    """A file with MNE environment tags: kept by default (as mne_anonymize), replaced
    with --mne_environment."""
    import struct

    def tag(kind, typ, data=b"", nxt=0):
        return struct.pack(">iiii", kind, typ, len(data), nxt) + data

    src = tmp_path / "env.fif"
    src.write_bytes(tag(100, 31, struct.pack(">5i", 1, 2, 3, 1_500_000_000, 0))
                    + tag(104, 3, struct.pack(">i", 358))
                    + tag(3550, 10, b"/home/jane/meg") + tag(105, 3, struct.pack(">i", 358))
                    + tag(108, 0, b"", -1))
    assert main(["-i", str(src), "-o", str(tmp_path / "a.fif"), "-s"]) == 0
    assert values(tmp_path / "a.fif")["mne_working_dir"] == "/home/jane/meg"
    assert main(["-i", str(src), "-o", str(tmp_path / "b.fif"), "--mne_environment",
                 "-s"]) == 0
    assert values(tmp_path / "b.fif")["mne_working_dir"] == "mne_anonymize"


def test_several_inputs_in_parallel(work, capsys):
    names = [RAW, "ct_sparse.fif", "triux_bmlhus_erm_raw_sss.fif"]
    assert main([a for n in names for a in ("-i", str(work / n))] + ["--mdo", "30000"]) == 0
    printed = capsys.readouterr().out
    for n in names:
        out = default_output(work / n)
        assert out.exists() and str(out) in printed
        assert all(v[0] == (0, 0) for k, v in values(out).items() if k.endswith("_id")
                   and isinstance(v, tuple))


def test_threads_give_the_serial_results_in_order(work):
    """Several files in threads: the outputs and results of one thread, in input order;
    a corrupt file in the middle gets its one-line error and no output."""
    (work / "bad.fif").write_bytes((FIF / RAW).read_bytes()[:5000])
    names = [RAW, "ct_sparse.fif", "bad.fif", "triux_bmlhus_erm_raw_sss.fif"] * 2
    settings = fiff.Settings(meas_offset_days=-30000, rename=AnonymizedName())
    got = {}
    for threads in (1, 3):
        jobs = [(work / n, work / f"t{threads}_{i}_{default_output(n)}")
                for i, n in enumerate(names)]
        results = run_jobs(jobs, settings, threads)
        got[threads] = [(None if r is None else [c.field for c in r.changes], error,
                         dst.read_bytes() if dst.exists() else None)
                        for (_, dst), (r, error) in zip(jobs, results)]
    assert got[1] == got[3]
    for (fields, error, data), name in zip(got[3], names):
        assert (fields is None) == (name == "bad.fif") == bool(error) == (data is None)
        assert name != "bad.fif" or "bad.fif" in error
    assert got[3][0][0] and got[3][0][0] == got[3][4][0]


def test_threads_pass_on_an_unexpected_error(work, monkeypatch):
    """An error that is no input error stops the other threads after their file and
    reaches the caller; nothing half-written is left."""
    real = fiff.anonymize_file

    def failing(src, dst, settings):
        if Path(src).name == "ct_sparse.fif":
            raise RuntimeError("boom")
        return real(src, dst, settings)

    monkeypatch.setattr(fiff, "anonymize_file", failing)
    jobs = [(work / n, work / f"{i}_{default_output(n)}")
            for i, n in enumerate([RAW, "ct_sparse.fif", RAW, RAW])]
    with pytest.raises(RuntimeError, match="boom"):
        run_jobs(jobs, fiff.Settings(), 2)
    assert not list(work.glob(".*.tmp"))


def test_single_input_options_refused_with_several(work, capsys):
    code = main(["-i", str(work / RAW), "-i", str(work / "ct_sparse.fif"), "-o",
                 str(work / "x.fif")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "-o" in err
    assert not (work / "x.fif").exists()
    assert main(["-i", str(work / RAW), "--md", "20000101", "--mdo", "3"]) == 2


def test_in_place_needs_confirmation(work, monkeypatch, capsys):
    src = work / RAW
    before = src.read_bytes()
    monkeypatch.setattr("builtins.input", lambda prompt="": "n")
    assert main(["-i", str(src), "-o", str(src)]) == 2
    assert src.read_bytes() == before and sorted(p.name for p in work.iterdir()) == sorted(
        [RAW, "ct_sparse.fif", "triux_bmlhus_erm_raw_sss.fif"])
    monkeypatch.setattr("builtins.input", lambda prompt="": "y")
    assert main(["-i", str(src), "-o", str(src), "-s"]) == 0
    assert src.read_bytes() != before and values(src)["experimenter"] == "mne_anonymize"
    assert np.array_equal(mne.io.read_raw_fif(src).get_data(),
                          mne.io.read_raw_fif(FIF / RAW).get_data())


def test_in_place_with_force_and_no_terminal(work):
    src = work / "ct_sparse.fif"
    # no answer on stdin: not overwritten
    proc = subprocess.run([sys.executable, "-m", "bidsanon", "fiff", "-i", str(src), "-o",
                           str(src)], input="", capture_output=True, text=True)
    assert proc.returncode == 2 and src.read_bytes() == (FIF / "ct_sparse.fif").read_bytes()
    assert main(["-i", str(src), "--out", str(src), "--avoid_delete_confirmation", "-s"]) == 0
    assert values(src)["file_id"][0] == (0, 0)


def test_delete_input_after(work, monkeypatch):
    src = work / RAW
    monkeypatch.setattr("builtins.input", lambda prompt="": "no")
    assert main(["-i", str(src), "-d", "-s"]) == 0
    assert src.exists() and default_output(src).exists()
    default_output(src).unlink()
    assert main(["-i", str(src), "-vbdf", "--mdo", "35"]) == 0  # combined short flags
    assert not src.exists() and default_output(src).exists()
    assert main(["-i", str(work / "ct_sparse.fif"), "--delete_input_file", "--ad",
                 "-s"]) == 0
    assert not (work / "ct_sparse.fif").exists()


def test_corrupt_input_one_line_exit_2_no_output(tmp_path, capsys):
    data = (FIF / RAW).read_bytes()
    src = tmp_path / "bad_raw.fif"
    src.write_bytes(data[:len(data) // 2])
    assert main(["-i", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad_raw.fif (byte " in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad_raw.fif"]
    assert main(["-i", str(tmp_path / "missing.fif")]) == 2


@pytest.mark.parametrize("case", ["cycle", "truncated data", "size past end"])
def test_hand_made_corrupt_files(case, tmp_path, capsys):
    from test_fiff import corrupt_cases

    src = tmp_path / "bad_raw.fif"
    src.write_bytes(corrupt_cases()[case][0])
    assert main(["-i", str(src), "-s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad_raw.fif (byte " in err
    assert [p.name for p in tmp_path.iterdir()] == ["bad_raw.fif"]


def test_split_set_opens_under_anonymized_names(tmp_path):
    info = mne.create_info(["EEG 001", "EEG 002"], 1000.0, "eeg")
    info["subject_info"] = {"first_name": "Jane", "last_name": "Doe"}
    raw = mne.io.RawArray(np.random.default_rng(1).standard_normal((2, 300_000)), info)
    raw.save(tmp_path / "rec_raw.fif", split_size="2MB")
    parts = sorted(tmp_path.glob("rec_raw*.fif"))
    assert len(parts) >= 2
    args = [a for p in parts for a in ("-i", str(p))]
    assert main(args + ["-s"]) == 0
    out = mne.io.read_raw_fif(tmp_path / "rec_raw_anonymized.fif")
    assert out.n_times == 300_000
    first = mne.io.read_raw_fif(tmp_path / "rec_raw.fif")
    assert np.array_equal(out.get_data(), first.get_data())
    assert out.info["subject_info"]["first_name"] == "mne_anonymize"


def test_gzip_through_the_command(tmp_path):
    src = tmp_path / "x_raw.fif.gz"
    src.write_bytes(gzip.compress((FIF / RAW).read_bytes()))
    assert main(["-i", str(src), "-s"]) == 0
    out = tmp_path / "x_raw_anonymized.fif.gz"
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    assert np.array_equal(mne.io.read_raw_fif(out).get_data(),
                          mne.io.read_raw_fif(FIF / RAW).get_data())


def test_version_and_module_entry_point(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bidsanon fiff ")
    proc = subprocess.run([sys.executable, "-m", "bidsanon", "fiff", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--measurement_date_offset" in proc.stdout
    assert main([]) == 2  # -i is required: one line, exit 2


#: The children import this checkout, and their piped stdout is block-buffered (what
#: reaches the pipe at the end is what the exit flushed).
_ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _program(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    """``python -m bidsanon ...`` (the console script's path: :func:`console`), piped."""
    return subprocess.run([sys.executable, "-m", "bidsanon", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, env=_ENV, **kw)


def test_program_exit_code_and_flushed_output(work, capsys, monkeypatch):
    """The program ends without the interpreter's shutdown (``os._exit``) after a
    ``fiff`` run: its exit code and every line it printed to the pipes, in order, are
    the ones :func:`main` gives in process."""
    names = [RAW, "ct_sparse.fif", "triux_bmlhus_erm_raw_sss.fif"]
    bad = work / "bad_raw.fif"
    bad.write_bytes((FIF / RAW).read_bytes()[:5000])
    argv = ["fiff", "-v", *(a for n in [*names, "bad_raw.fif"] for a in ("-i", n))]
    proc = _program(argv, work)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad_raw.fif (byte " in proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(" -> ")[0] for line in lines if not line.startswith(" ")] == names
    changed = sum(int(line.split(": ")[-1].split(" ")[0]) for line in lines
                  if not line.startswith(" "))
    assert changed > 0 and len(lines) == len(names) + changed  # -v: one line per field
    for n in names:
        default_output(work / n).unlink()
    monkeypatch.chdir(work)
    assert cli_main(argv) == 2
    inproc = capsys.readouterr()
    assert (proc.stdout, proc.stderr) == (inproc.out, inproc.err)
    assert _program(["fiff", "-s", "-i", names[1]], work).returncode == 0
    assert _program(["fiff", "--version"], work).stdout.startswith("bidsanon fiff ")
    usage = _program(["fiff"], work)  # -i is required
    assert usage.returncode == 2 and "the following arguments are required" in usage.stderr


def test_program_exits_the_usual_way_when_shutdown_has_work(work):
    """An ``atexit`` callback (logging, temporary folders, coverage register one) still
    runs: the shortcut is taken only when the shutdown has nothing but memory to free."""
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('atexit ran', flush=True))\n"
             "sys.argv = ['bidsanon', 'fiff', '-i', sys.argv[1]]\n"
             "from bidsanon.cli import console\n"
             "console()\n")
    proc = subprocess.run([sys.executable, "-c", probe, "ct_sparse.fif"], check=False, cwd=work,
                          capture_output=True, text=True, env=_ENV)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "atexit ran"
    assert "ct_sparse.fif -> ct_sparse_anonymized.fif:" in proc.stdout


def test_annotations_option(work):
    """A real recording with an annotation naming its subject: kept by default (as
    mne_anonymize), scrubbed or blanked with --annotations; onsets and durations and
    several inputs in parallel (worker threads share the settings) unchanged."""
    raw = mne.io.read_raw_fif(work / RAW).crop(0, 5).load_data()
    with raw.info._unlock():
        raw.info["subject_info"] = dict(first_name="Hanne", last_name="Kjaer")
    raw.set_annotations(mne.Annotations([0.5, 2.25], [0.1, 1.0],
                                        ["BAD_Kjaer coughed", "call +45 3545 1234"]))
    src = work / "named_raw.fif"
    raw.save(src)
    raw = mne.io.read_raw_fif(src)
    assert len(raw.annotations) == 2
    kept = work / "kept_raw.fif"
    assert main(["-i", str(src), "-o", str(kept), "-s"]) == 0
    assert list(mne.io.read_raw_fif(kept).annotations.description) == [
        "BAD_Kjaer coughed", "call +45 3545 1234"]
    copy = work / "copy_raw.fif"
    shutil.copyfile(src, copy)
    assert main(["-i", str(src), "-i", str(copy), "--annotations", "scrub", "-s"]) == 0
    for out in (work / "named_raw_anonymized.fif", work / "copy_raw_anonymized.fif"):
        got = mne.io.read_raw_fif(out).annotations
        assert list(got.description) == ["BAD_[name removed] coughed", "call [phone removed]"]
        assert got.onset.tobytes() == raw.annotations.onset.tobytes()
        assert got.duration.tobytes() == raw.annotations.duration.tobytes()
        assert b"kjaer" not in out.read_bytes().lower()
    blank = work / "blank_raw.fif"
    assert main(["-i", str(src), "-o", str(blank), "--annotations", "blank", "-s"]) == 0
    assert list(mne.io.read_raw_fif(blank).annotations.description) == [
        "BAD_annotation", "annotation"]
