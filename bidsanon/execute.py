"""Running one planned task: its format's handler on one file, in this process, in a
local worker pool, or (:mod:`bidsanon.distributed`) on a Dask cluster. Never raises for
bad input: a failed file is a result with an ``error``."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bidsanon.context import TaskContext
from bidsanon.errors import BidsanonError
from bidsanon.fileio import sha256_file
from bidsanon.formats import load
from bidsanon.labels import Labels
from bidsanon.plan import FileTask
from bidsanon.workers import limit_native_threads, preload, process_pool, threads_per_worker

#: What local workers import once in the fork server (:func:`bidsanon.workers.preload`)
#: when a run has tasks of these handlers: each worker of the file, verification and
#: final-check pools would otherwise import them itself. A run with real heads spent
#: 16 s more CPU with 2 workers than with 1, most of it these imports
#: (docs/performance.md).
PRELOAD = {
    "anat": ("numpy", "scipy.ndimage", "nibabel", "SimpleITK", "dlib",
             "bidsanon.deface.pipeline", "bidsanon.deface.face"),
    "nifti": ("numpy", "nibabel"),
}
#: Added for defaced images when the run writes QC pictures (the contour figure).
PRELOAD_QC = ("matplotlib.pyplot", "nilearn.plotting", "bidsanon.deface.qc")


def preloaded(tasks: list[FileTask], shared: Shared, qc: bool = True) -> set[str]:
    """The modules a run's workers need before their first task (:data:`PRELOAD`);
    ``qc``: the workers write the QC pictures (the file tasks do, the read-back
    verification does not: on a Dask cluster the fork server starts for it)."""
    modules = {m for t in tasks for m in PRELOAD.get(t.handler, ())}
    if qc and shared.qc_dir and any(t.handler == "anat" for t in tasks):
        modules.update(PRELOAD_QC)
    return modules


@dataclass(frozen=True)
class Shared:
    """What every task needs besides its own FileTask (sent to each worker once)."""

    root: str
    staging: str
    policy: dict
    labels: Labels
    secret: bytes
    qc_dir: str | None
    known: tuple[str, ...] = ()


# --- one task --------------------------------------------------------------------

def input_signature(path: Path) -> list:
    """Cheap fingerprint of an input (size and mtime; for folders, of every file)."""
    if path.is_dir():
        return sorted([p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns]
                      for p in path.rglob("*") if p.is_file())
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def execute_task(task: FileTask, shared: Shared) -> dict:
    """Run one task's handler; return a JSON-able result (never raises for bad input)."""
    src = Path(shared.root) / task.rel
    dst = Path(shared.staging) / task.out
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove(dst)  # a half-written file from an interrupted run
    ctx = TaskContext(subject=task.subject, session=task.session, new_subject=task.new_subject,
                      new_session=task.new_session, offset_days=task.offset_days,
                      policy=shared.policy, labels=shared.labels, rel=task.rel,
                      qc_dir=shared.qc_dir, secret=shared.secret, extra=task.extra,
                      known=shared.known)
    started = time.perf_counter()
    base = {"rel": task.rel, "out": task.out, "handler": task.handler}
    try:
        result = load(task.handler).handle(src, dst, ctx)
    except BidsanonError as exc:
        _remove(dst)
        return {**base, "error": str(exc) if exc.path else f"{task.rel}: {exc}"}
    except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
        _remove(dst)
        # the exception's text may quote the file's content: logs only name its type
        return {**base, "error": f"{task.rel}: unexpected {type(exc).__name__} in the "
                f"{task.handler} handler (please report it)"}
    if not dst.exists():
        return {**base, "error": f"{task.rel}: the {task.handler} handler wrote no output"}
    return {**base,
            "source_sha256": sha256_file(src), "output_sha256": sha256_file(dst),
            "changes": [c.to_dict() for c in result.changes],
            "warnings": list(result.warnings), "qc": dict(result.qc),
            "metrics": dict(result.metrics), "seconds": round(time.perf_counter() - started, 4)}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --- executors -------------------------------------------------------------------

def verify_task(task: FileTask, shared: Shared) -> dict:
    """Read one task's output back with its format's reader and compare with the input.

    Returns ``{"out", "verified"}``, or ``{"out", "error"}`` naming the file and what
    differs (never a value).
    """
    from bidsanon.verify import VerificationError
    src = Path(shared.root) / task.rel
    dst = Path(shared.staging) / task.out
    base = {"rel": task.rel, "out": task.out}
    if task.extra.get("create"):  # written by bidsanon, there is no input to compare
        return {**base, "verified": {"reader": "json", "checked": ["written by bidsanon"]}}
    try:
        return {**base, "verified": load(task.handler).verify(src, dst, shared.policy)}
    except VerificationError as exc:
        return {**base, "error": f"{task.out}: verification failed: {exc.message}"}
    except Exception as exc:  # noqa: BLE001 - a reader's crash must fail the file, not pass it
        return {**base, "error": f"{task.out}: verification failed: the reader raised "
                                 f"{type(exc).__name__}"}


_WORKER_SHARED: Shared | None = None

def _init_worker(shared: Shared, threads: int = 1) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared
    limit_native_threads(threads)


def _run_in_worker(task: FileTask, fn=None) -> dict:
    assert _WORKER_SHARED is not None
    return (fn or execute_task)(task, _WORKER_SHARED)


def iter_results(tasks: list[FileTask], shared: Shared, jobs: int = 1,
                 fn=execute_task) -> Iterator[dict]:
    """Yield ``fn(task, shared)`` (default: :func:`execute_task`) as tasks complete, in
    this process or ``jobs`` local workers.

    Each worker's native threads are limited so that the ``jobs`` workers together use
    the cores this process may run on (:func:`threads_per_worker`)."""
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield fn(t, shared)
        return
    from concurrent.futures import as_completed
    preload(preloaded(tasks, shared, qc=fn is execute_task))
    with process_pool(jobs, _init_worker, (shared, threads_per_worker(jobs))) as pool:
        futures = [pool.submit(_run_in_worker, t, fn) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
