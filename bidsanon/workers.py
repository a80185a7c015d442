"""Worker processes: how many native threads each may use, and pools that start clean."""

from __future__ import annotations

import os
import sys
from typing import Callable

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
