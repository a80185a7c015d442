"""Running one planned task: its format's handler on one file, in this process, in a
local worker pool, or (:mod:`bidsanon.distributed`) on a Dask cluster. Never raises for
bad input: a failed file is a result with an ``error``."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from bidsanon.context import TaskContext
from bidsanon.errors import BidsanonError
from bidsanon.fileio import file_size, sha256_file
from bidsanon.formats import load
from bidsanon.labels import Labels
from bidsanon.plan import FileTask
from bidsanon.workers import (batches, limit_native_threads, map_batch, preload, process_pool,
                              task_batch, threads_per_worker)

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
#: Added for defaced images when the final check looks for faces: the check engine and
#: MTCNN's torch (when installed; about 2 s of CPU to import).
PRELOAD_CHECK = ("bidsanon.check.engine", "bidsanon.deface.mtcnn", "torch")
#: Handlers whose tasks take seconds rather than milliseconds (defacing, the face rule).
HEAVY = frozenset({"anat"})


def preloaded(tasks: list[FileTask], shared: Shared, qc: bool = True,
              check: bool = False) -> set[str]:
    """The modules a run's workers need before their first task (:data:`PRELOAD`);
    ``qc``: the workers write the QC pictures (the file tasks do, the read-back
    verification does not); ``check``: they run the final check's face rule."""
    modules = {m for t in tasks for m in PRELOAD.get(t.handler, ())}
    if any(t.handler == "anat" for t in tasks):
        if qc and shared.qc_dir:
            modules.update(PRELOAD_QC)
        if check:
            modules.update(PRELOAD_CHECK)
    return modules


def heaviest_first(tasks: list[FileTask], root: str | Path) -> tuple[list[FileTask], int]:
    """The tasks in the order to hand them to workers, and how many lead as heavy.

    The :data:`HEAVY` handlers' tasks come first, largest input first, then the others
    by input size: the longest tasks start first, so a stage does not end with one
    worker defacing its last head while the others idle (longest processing time first).
    """
    ordered = sorted(tasks, key=lambda t: (t.handler not in HEAVY,
                                           -file_size(Path(root) / t.rel)))
    return ordered, sum(t.handler in HEAVY for t in tasks)


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


def _run_batch_in_worker(tasks: list[FileTask], fn: Callable) -> list[dict]:
    assert _WORKER_SHARED is not None
    return task_batch(tasks, _WORKER_SHARED, fn)


class LocalPool:
    """``jobs`` local worker processes for every stage of one run (a context manager),
    with the interface of :class:`bidsanon.distributed.Cluster`: :meth:`results` and
    :meth:`map`.

    The same workers run the handlers, the read-back verification and the final
    check's per-file work, so each imports the defacing and face-rule stack and loads
    the detectors' models once per run, not once per stage (a pool per stage made 2
    workers slower than 1 in the final check of 4 real heads: docs/performance.md).
    Each worker's native threads are limited so that the ``jobs`` workers together use
    the cores this process may run on (:func:`~bidsanon.workers.threads_per_worker`).

    Parameters
    ----------
    jobs : int
        Worker processes.
    shared : Shared
        What every task needs besides itself (sent to each worker once, at its start).
    modules : iterable of str
        Imported once by the fork server before it starts the workers
        (:func:`~bidsanon.workers.preload`).
    """

    def __init__(self, jobs: int, shared: Shared, modules: Iterable[str] = ()):
        self.jobs, self.shared, self.modules = jobs, shared, set(modules)
        self._pool = None

    def __enter__(self) -> "LocalPool":
        preload(self.modules)
        self._pool = process_pool(self.jobs, _init_worker,
                                  (self.shared, threads_per_worker(self.jobs)))
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def warm(self, modules: Iterable[str] = ()) -> dict[str, dict]:
        """Nothing to do (the interface of :meth:`bidsanon.distributed.Cluster.warm`):
        the fork server imports the modules given at the start before any worker."""
        return {}

    def results(self, tasks: list[FileTask], shared: Shared, fn: Callable = execute_task,
                stage: str = "files", singles: int = 0) -> Iterator[dict]:
        """Yield ``fn(task, shared)`` for every task as the workers complete them, the
        first ``singles`` one per worker task (:func:`~bidsanon.workers.batches`)."""
        if shared is not self.shared:
            raise ValueError("a LocalPool runs tasks with the Shared its workers started with")
        yield from self._submitted(_run_batch_in_worker, tasks, singles, False, fn)

    def map(self, fn: Callable, items: Iterable, singles: int = 0,
            stage: str = "check") -> Iterator:
        """Yield ``fn(item)`` for every item, in the items' order, the first ``singles``
        one per worker task (what :func:`bidsanon.check.engine.scan_dataset` takes as
        ``mapper``)."""
        yield from self._submitted(map_batch, list(items), singles, True, fn)

    def _submitted(self, run: Callable, items: list, singles: int, in_order: bool,
                   fn: Callable) -> Iterator:
        from concurrent.futures import as_completed

        futures = [self._pool.submit(run, group, fn)
                   for group in batches(items, self.jobs, singles=singles)]
        try:
            for fut in (futures if in_order else as_completed(futures)):
                yield from fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
