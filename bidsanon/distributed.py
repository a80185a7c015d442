"""Run a plan's per-file stages on a Dask distributed cluster (``bidsanon run --scheduler
ADDRESS``): the file tasks, the read-back verification and the final check's per-file
work all go to the cluster's workers, so a run starts no local worker pool beside it.

Workers must see the input, staging and QC folders at the same paths (a shared
filesystem); the coordinator alone writes the manifest and the key, exactly as in a
local run, so the output is byte-identical.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from bidsanon.errors import UsageError
from bidsanon.execute import execute_task
from bidsanon.workers import (batches, import_modules, limit_native_threads, map_batch,
                              task_batch, threads_per_worker)


def _client(address):
    try:
        from dask.distributed import Client
    except ImportError:  # pragma: no cover - dask[distributed] is a core dependency
        raise UsageError("--scheduler needs dask[distributed]: pip install 'dask[distributed]'") from None
    if not isinstance(address, str):
        return Client(address), True  # a cluster object (tests, notebooks)
    try:
        return Client(address, timeout="30s"), True
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address} ({exc}); start it "
                         "with `dask scheduler` or check the address") from None


def cap_worker_threads(tasks_on_host: int) -> int:
    """Limit this Dask worker's native threads so that the ``tasks_on_host`` tasks its
    host runs at once fit on the host's cores; return the limit."""
    threads = threads_per_worker(tasks_on_host)
    limit_native_threads(threads)
    return threads


#: Below this ``MALLOC_TRIM_THRESHOLD_`` (Dask's nanny sets 65536), glibc's mmap threshold
#: stays at 128 KiB and every larger array is fresh zero-filled memory (docs/scaling.md).
SLOW_TRIM = 1 << 20


def slow_settings() -> list[str]:
    """This Dask worker's settings that make CPU-bound tasks cost more (the defacing: ~70 %
    more CPU than in a local worker, docs/scaling.md), but for those a run switched off
    (:func:`tune_worker`)."""
    import os

    import dask
    slow = []
    if dask.config.get("distributed.worker.profile.enabled", False) \
            and not _TUNED["profiler"]:
        slow.append("the profiler on")
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    if trim.isdigit() and int(trim) < SLOW_TRIM and not _TUNED["malloc"]:
        slow.append(f"MALLOC_TRIM_THRESHOLD_={trim}")
    return slow


#: glibc's ``mallopt`` parameters (malloc.h) and the values a run gives a Dask worker whose
#: nanny set ``MALLOC_TRIM_THRESHOLD_`` below :data:`SLOW_TRIM`: those of docs/scaling.md.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
FAST_MALLOC = {M_TRIM_THRESHOLD: 128 << 20, M_MMAP_THRESHOLD: 32 << 20}
#: glibc's own mmap threshold, which an environment that sets the trim threshold fixes
GLIBC_MMAP_THRESHOLD = 128 * 1024
#: The worker's periodic callbacks that sample its task threads (Dask's profiler).
PROFILER_CALLBACKS = ("profile", "profile-cycle")
#: What this process (a Dask worker) switched off for the runs using it, to restore when
#: the last of them ends: {"runs": n, "profiler": [...], "malloc": {param: value}}.
_TUNED: dict = {"runs": 0, "profiler": [], "malloc": {}}


def _mallopt(settings: dict[int, int]) -> bool:
    """Set glibc malloc parameters in this process; False where it is not glibc."""
    import ctypes
    import os

    try:  # "glibc 2.36" on glibc; absent or an error elsewhere (macOS, musl)
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):
        return False
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(ctypes.c_int(k), ctypes.c_int(v)) == 1 for k, v in settings.items())


def tune_worker(dask_worker=None) -> list[str]:
    """Switch off this Dask worker's :func:`slow_settings` until the run ends
    (:func:`restore_worker`): pause its profiler's sampling and give glibc's malloc the
    thresholds of docs/scaling.md. Runs on the worker's event loop (``client.run``).
    Returns what it changed (nothing for a setting already tuned or not glibc's)."""
    import os

    changed = []
    if not _TUNED["runs"]:
        if dask_worker is not None:
            running = [n for n in PROFILER_CALLBACKS
                       if n in dask_worker.periodic_callbacks
                       and dask_worker.periodic_callbacks[n].is_running()]
            for name in running:
                dask_worker.periodic_callbacks[name].stop()
            if running:
                _TUNED["profiler"] = running
                changed.append("the profiler paused")
        trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
        if trim.isdigit() and int(trim) < SLOW_TRIM:
            mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", "")
            before = {M_TRIM_THRESHOLD: int(trim),
                      M_MMAP_THRESHOLD: int(mmap) if mmap.isdigit() else GLIBC_MMAP_THRESHOLD}
            if _mallopt(FAST_MALLOC):
                _TUNED["malloc"] = before
                changed.append("malloc thresholds raised")
    _TUNED["runs"] += 1
    return changed


def restore_worker(dask_worker=None) -> None:
    """Undo :func:`tune_worker` when the last run that tuned this worker ends."""
    if _TUNED["runs"] == 0:
        return
    _TUNED["runs"] -= 1
    if _TUNED["runs"]:
        return
    if dask_worker is not None:
        for name in _TUNED["profiler"]:
            if name in dask_worker.periodic_callbacks:
                dask_worker.periodic_callbacks[name].start()
    if _TUNED["malloc"]:
        _mallopt(_TUNED["malloc"])
    _TUNED["profiler"], _TUNED["malloc"] = [], {}


def warm_worker(tasks_on_host: int, modules: Iterable[str] = ()) -> dict:
    """Prepare this Dask worker for a run: cap its native threads
    (:func:`cap_worker_threads`), then import ``modules`` (what the local fork server
    preloads for the run, :func:`bidsanon.execute.preloaded`). Returns the thread cap
    (``threads``) and the worker's :func:`slow_settings` left after
    :func:`tune_worker` (``slow``)."""
    threads = cap_worker_threads(tasks_on_host)
    import_modules(modules)
    return {"threads": threads, "slow": slow_settings()}


def warm_cluster(client, modules: Iterable[str] = (), timeout: float = 300,
                 token: str = "") -> dict[str, dict]:
    """Run :func:`warm_worker` once on every worker of the cluster, all at once, and
    wait for them (at most ``timeout`` seconds); returns what each warmed worker's
    :func:`warm_worker` returned (its thread cap and slow settings).

    The cap is the worker's host's cores ÷ the tasks the host runs at once (its
    workers × their threads), the rule of local workers. It runs as a task pinned to
    each worker (in the thread that runs its tasks, not in its event loop, which an
    import of several seconds would block). The warm-up only saves time: a worker that
    leaves before it is done, or does not finish in time, is skipped (its pinned task
    cancelled), and workers that join the cluster later start without it; their first
    task imports what it needs. ``token`` ends the tasks' keys (``bidsanon-warm-0-...``).
    """
    from collections import Counter

    from dask.distributed import wait

    workers = client.scheduler_info().get("workers", {})
    per_host: Counter = Counter()
    for w in workers.values():
        per_host[w.get("host")] += int(w.get("nthreads", 1))
    modules = sorted(set(modules))
    futures = {address: client.submit(warm_worker, per_host[w.get("host")], modules,
                                      workers=[address], allow_other_workers=False,
                                      pure=False, key=f"bidsanon-warm-{i}{token}")
               for i, (address, w) in enumerate(sorted(workers.items()))}
    try:
        wait(list(futures.values()), timeout=timeout)
    except TimeoutError:
        client.cancel([f for f in futures.values() if f.status == "pending"])
    return {address: f.result() for address, f in futures.items() if f.status == "finished"}


class Cluster:
    """One run's connection to a Dask cluster (a context manager).

    Parameters
    ----------
    address : str | object
        The scheduler's address, or a cluster object (``LocalCluster``, dask-jobqueue).

    Notes
    -----
    Thousands of small files would cost one scheduler round trip each, which on a small
    cluster takes longer than the work (docs/performance.md): tasks go out in
    :func:`batches`. The shared context (policy, labels) is sent to each worker once
    per run, not per task.
    """

    def __init__(self, address):
        import uuid

        self.address = address
        #: ends every task key of this run: a key the scheduler still holds from an
        #: earlier run would otherwise hand back that run's result
        self.token = "-" + uuid.uuid4().hex[:8]
        self.client = None
        self._owned = False
        self._shared: tuple | None = None
        self._tuned: list[str] = []  # the workers tune_worker ran on

    def __enter__(self) -> "Cluster":
        self.client, self._owned = _client(self.address)
        return self

    def __exit__(self, *exc) -> None:
        if self._tuned and self.client is not None:  # the workers' own settings back
            try:
                self.client.run(restore_worker, workers=self._tuned, on_error="ignore")
            except Exception:  # noqa: BLE001 - the run's outcome stands; only speed is at stake
                pass
        if self._owned and self.client is not None:
            self.client.close()
        self.client, self._shared, self._tuned = None, None, []

    def workers(self) -> int:
        """How many workers the cluster has now (at least 1)."""
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def warm(self, modules: Iterable[str] = ()) -> dict[str, dict]:
        """Switch off every worker's slow settings for this run (:func:`tune_worker`,
        undone when the run ends), cap its native threads and import ``modules`` there
        (:func:`warm_cluster`). Each worker's entry also says what was switched off
        (``tuned``)."""
        try:
            tuned = self.client.run(tune_worker, on_error="return")
        except Exception:  # noqa: BLE001 - a cluster that refuses it runs untuned, as before
            tuned = {}
        tuned = {a: t for a, t in tuned.items() if isinstance(t, list)}
        self._tuned = sorted(tuned)
        warmed = warm_cluster(self.client, modules, token=self.token)
        for address, w in warmed.items():
            w["tuned"] = tuned.get(address, [])
        return warmed

    def _keys(self, stage: str, n: int) -> list[str]:
        return [f"bidsanon-{stage}-{i}{self.token}" for i in range(n)]

    def _scatter(self, shared):
        if self._shared is None or self._shared[0] is not shared:
            [future] = self.client.scatter([shared], broadcast=True, hash=False)
            self._shared = (shared, future)
        return self._shared[1]

    def results(self, tasks: list, shared, fn: Callable = execute_task,
                stage: str = "files", singles: int = 0) -> Iterator[dict]:
        """Yield ``fn(task, shared)`` for every task as the cluster completes them.

        Parameters
        ----------
        tasks : list of FileTask
            The tasks.
        shared : Shared
            What every task needs besides itself (sent to each worker once).
        fn : callable
            :func:`bidsanon.execute.execute_task` (the handlers) or
            :func:`bidsanon.execute.verify_task` (the read-back verification).
        stage : str
            Names the cluster's tasks (``bidsanon-files-0``, ...).
        singles : int
            The first ``singles`` tasks (the heaviest) go one per cluster task
            (:func:`bidsanon.workers.batches`).

        Yields
        ------
        dict
            Each task's result, in the order the tasks complete.
        """
        if not tasks:
            return
        yield from self._batched(task_batch, tasks, stage, False, singles,
                                 shared=self._scatter(shared), fn=fn)

    def map(self, fn: Callable, items: Iterable, singles: int = 0,
            stage: str = "check") -> Iterator:
        """Yield ``fn(item)`` for every item, in the items' order, computed on the
        cluster, the first ``singles`` one per cluster task (what
        :func:`bidsanon.check.engine.scan_dataset` takes as ``mapper``)."""
        items = list(items)
        if not items:
            return
        yield from self._batched(map_batch, items, stage, True, singles, fn=fn)

    def _batched(self, run: Callable, items: list, stage: str, in_order: bool,
                 singles: int, **kwargs) -> Iterator:
        """``run(batch, **kwargs)`` on the cluster for each of :func:`batches`, the
        results flattened (in the items' order, or as batches complete); every batch
        left is cancelled when the caller stops or fails."""
        from dask.distributed import as_completed

        groups = batches(items, self.workers(), singles=singles)
        futures = self.client.map(run, groups, pure=False, key=self._keys(stage, len(groups)),
                                  **kwargs)
        try:
            for fut in (futures if in_order else as_completed(futures)):
                yield from fut.result()
        except BaseException:
            self.client.cancel(futures)
            raise
