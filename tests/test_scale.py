"""Scale: Dask LocalCluster equality, kill-and-resume, determinism across --jobs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bidsanon.run import run_dataset
from synthetic import make_dataset


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A synthetic dataset, its key, and an uninterrupted single-process run."""
    base = tmp_path_factory.mktemp("scale")
    src = make_dataset(base / "in", 12, with_fiff=True)  # 12 x 10 files + top level
    key = base / "key.json"
    summary = run_dataset(src, base / "ref", key_path=key, jobs=1, quiet=True)
    assert summary.published and not summary.failed, summary.failed
    return src, key, tree(base / "ref")


def with_key(key: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "key.json"
    shutil.copyfile(key, copy)
    copy.chmod(0o600)
    return copy


def test_deterministic_across_jobs(reference, tmp_path):
    src, key, expected = reference
    run_dataset(src, tmp_path / "out", key_path=with_key(key, tmp_path), jobs=2, quiet=True)
    assert tree(tmp_path / "out") == expected


def _no_local_pool(*args, **kwargs):
    raise AssertionError("a local worker pool started beside the Dask cluster")


def test_dask_local_cluster_is_byte_identical(reference, tmp_path, monkeypatch):
    """Every per-file stage runs on the cluster (files, read-back verification, the
    final check): no local pool starts, and the output, the verification records and
    the findings are those of the single-process run."""
    from dask.distributed import Client, LocalCluster, get_task_stream

    import bidsanon.execute
    import bidsanon.workers
    monkeypatch.setattr(bidsanon.execute, "process_pool", _no_local_pool)
    monkeypatch.setattr(bidsanon.workers, "process_pool", _no_local_pool)
    src, key, expected = reference
    key = with_key(key, tmp_path)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client, \
            get_task_stream(client=client) as stream:
        assert len(cluster.workers) == 2
        summary = run_dataset(src, tmp_path / "out", key_path=key,
                              scheduler=cluster.scheduler_address, quiet=True)
    assert summary.published and not summary.failed, summary.failed
    assert tree(tmp_path / "out") == expected
    stages = {t["key"].split("-")[1] for t in stream.data
              if isinstance(t["key"], str) and t["key"].startswith("bidsanon-")}
    assert stages == {"warm", "files", "verify", "check"}, stages
    ref, got = (json.loads(reference[1].read_text()), json.loads(key.read_text()))
    assert got["runs"][-1]["findings"] == ref["runs"][-1]["findings"]
    assert [f["verified"] for f in got["files"]] == [f["verified"] for f in ref["files"]]
    assert all(f["verified"] for f in got["files"])


def interrupt(cmd: list[str], manifest: Path, sig: int, entries: int = 30) -> str:
    """Start a run, send ``sig`` once ``entries`` files are recorded, return stderr."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") > entries:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    return err


def resumed(stderr: str) -> int:
    m = re.search(r"resuming: (\d+) of", stderr)
    assert m, stderr
    return int(m.group(1))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_run_resumes_to_the_same_output(reference, tmp_path, sig):
    src, key, expected = reference
    key = with_key(key, tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bidsanon", "run", str(src), str(out), "--key", str(key), "-j", "1"]
    manifest = tmp_path / ".out.bidsanon-work" / "manifest.jsonl"
    err = interrupt(cmd, manifest, sig)
    if sig == signal.SIGINT:
        assert "interrupted; run the same command again to resume" in err
        assert "Traceback" not in err
    assert not out.exists(), "an interrupted run must not publish anything"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert resumed(again.stderr) >= 30
    assert tree(out) == expected


def test_changed_input_invalidates_its_manifest_entry(reference, tmp_path):
    src0, key, _ = reference
    src = tmp_path / "in"
    shutil.copytree(src0, src)
    key = with_key(key, tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bidsanon", "run", str(src), str(out), "--key", str(key), "-j", "1"]
    manifest = tmp_path / ".out.bidsanon-work" / "manifest.jsonl"
    interrupt(cmd, manifest, signal.SIGKILL)
    lines = manifest.read_text().splitlines()[1:]
    entries = [json.loads(l) for l in lines if l.endswith("}")]
    changed = next(e for e in entries if e["task"]["handler"] == "sidecar")
    path = src / changed["task"]["rel"]
    path.write_text(path.read_text().replace('"TaskName": "rest"', '"TaskName": "changed"')
                    .replace('"EchoTime": 0.003', '"EchoTime": 0.004'))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert resumed(again.stderr) == len(entries) - 1
    text = (out / changed["task"]["out"]).read_text()
    assert '"changed"' in text or "0.004" in text


def test_progress_lines_when_not_a_terminal(reference, tmp_path):
    src, key, _ = reference
    proc = subprocess.run([sys.executable, "-m", "bidsanon", "run", str(src),
                           str(tmp_path / "out"), "--key", str(with_key(key, tmp_path)), "-j", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "[files]" in proc.stderr and "files," in proc.stderr and "ETA" in proc.stderr
    quiet = subprocess.run([sys.executable, "-m", "bidsanon", "run", str(src),
                            str(tmp_path / "out2"), "--key", str(with_key(key, tmp_path)), "-q"],
                           capture_output=True, text=True, timeout=300)
    assert "[files]" not in quiet.stderr


def test_only_planned_files_are_published(reference, tmp_path):
    """A run killed mid-write leaves temporary files in staging: they never publish."""
    src, key, expected = reference
    key = with_key(key, tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bidsanon", "run", str(src), str(out), "--key", str(key), "-j", "1"]
    interrupt(cmd, tmp_path / ".out.bidsanon-work" / "manifest.jsonl", signal.SIGKILL)
    staging = tmp_path / ".out.bidsanon-work" / "staging"
    some = next(p for p in staging.rglob("*.json"))
    (some.parent / f".{some.name}.abc123.tmp").write_text("half-written")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert tree(out) == expected
