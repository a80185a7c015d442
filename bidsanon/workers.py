"""Worker processes: how many native threads each may use, and pools that start clean."""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable

#: Environment variables that size the native thread pools (OpenMP, the BLAS libraries,
#: ITK) of libraries a worker has not loaded yet.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(jobs: int, cores: int | None = None) -> int:
    """Native threads each of ``jobs`` workers may use so that all fit on ``cores``."""
    return max(1, (cores or available_cores()) // max(1, jobs))


def limit_native_threads(threads: int) -> None:
    """Cap this process's native thread pools (OpenMP, BLAS, ITK) at ``threads``.

    Libraries not loaded yet read the environment variables; pools already started
    (numpy's BLAS inherited through ``fork``, SimpleITK) are resized in place. The
    defacing registration runs single-threaded whatever this says (its sums must not
    depend on the thread count); this keeps workers from competing for the cores.
    """
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    if "SimpleITK" in sys.modules:
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)


def preload(modules: Iterable[str]) -> None:
    """Have the fork server import ``modules`` once, before it starts a worker.

    Workers forked from it start with them loaded instead of each importing them again
    (the defacing, QC and face-rule stack takes about 6 s of CPU to import: numpy,
    nibabel, scipy.ndimage, SimpleITK 1 s, matplotlib and nilearn.plotting 4 s, dlib),
    and so do the workers of every later pool of this process (the read-back
    verification's, the final check's): the fork server lives as long as the process.
    Takes effect when the fork server starts, i.e. before this process's first pool;
    a module that cannot be imported is skipped by the fork server. The server only
    imports: ITK and dlib start no thread at import, and OpenBLAS stops its idle
    threads around a fork (its own fork handler), so forking from it stays safe; each
    worker then caps its pools (:func:`limit_native_threads`).
    """
    import multiprocessing as mp

    modules = sorted(set(modules))
    if modules and "forkserver" in mp.get_all_start_methods():  # "__main__": the default
        mp.get_context("forkserver").set_forkserver_preload(["__main__", *modules])


def import_modules(modules: Iterable[str]) -> list[str]:
    """Import ``modules`` in this process now (a Dask worker's warm-up: what
    :func:`preload` has the fork server do for local workers); a module that cannot be
    imported is skipped, as the fork server skips it. Returns those imported."""
    import importlib

    done = []
    for name in sorted(set(modules)):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing extra: the task that needs it says so
            continue
        done.append(name)
    return done


def batches(items: list, workers: int, per_worker: int = 8, largest: int = 64,
            singles: int = 0) -> list[list]:
    """Split items into batches for ``workers`` workers: the first ``singles`` (the
    heaviest, put first by the caller) one per batch, so that none waits behind another
    in one worker while the other workers idle; the rest about ``per_worker`` batches per
    worker (so the load still balances) of at most ``largest`` items, so that thousands
    of small files do not cost one round trip each."""
    head = [[item] for item in items[:singles]]
    rest = items[singles:]
    size = max(1, min(largest, len(rest) // max(1, workers * per_worker)))
    return head + [rest[i:i + size] for i in range(0, len(rest), size)]


def map_batch(items: list, fn: Callable) -> list:
    """``fn(item)`` for a batch of items in one worker, in order."""
    return [fn(item) for item in items]


def task_batch(tasks: list, shared, fn: Callable) -> list:
    """``fn(task, shared)`` for a batch of tasks in one worker, in order (one round trip
    for the batch: a local pool's and a Dask cluster's)."""
    return [fn(t, shared) for t in tasks]


def process_pool(jobs: int, initializer: Callable | None = None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of ``jobs`` workers started by a fork server (``spawn``
    where there is none).

    Not ``fork``: a forked copy of a process whose native libraries have started
    threads (dlib's CNN, ITK, OpenBLAS) can wait forever on a lock that one of those
    threads held, as the final check's workers did after the defacing ran in-process.
    The initializer and its arguments must be picklable.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(method),
                               initializer=initializer, initargs=initargs)
