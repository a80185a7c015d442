"""Run plan tasks on a Dask distributed cluster (``bidsanon run --scheduler ADDRESS``).

Workers must see the input, staging and QC folders at the same paths (a shared
filesystem); the coordinator alone writes the manifest and the key, exactly as in a local run, so the output is byte-identical.
"""

from __future__ import annotations

from typing import Iterator

from bidsanon.errors import UsageError
from bidsanon.execute import execute_task
from bidsanon.workers import limit_native_threads, threads_per_worker


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


def execute_batch(tasks: list, shared) -> list[dict]:
    """Run a batch of tasks on one worker (one scheduler round trip for the batch)."""
    return [execute_task(t, shared) for t in tasks]


def cap_worker_threads(tasks_on_host: int) -> int:
    """Limit this Dask worker's native threads so that the ``tasks_on_host`` tasks its
    host runs at once fit on the host's cores; return the limit."""
    threads = threads_per_worker(tasks_on_host)
    limit_native_threads(threads)
    return threads


def cap_cluster_threads(client) -> None:
    """Each worker's thread cap, from how many tasks its host runs at once."""
    from collections import Counter

    workers = client.scheduler_info().get("workers", {})
    per_host = Counter()
    for w in workers.values():
        per_host[w.get("host")] += int(w.get("nthreads", 1))
    for address, w in workers.items():
        client.run(cap_worker_threads, per_host[w.get("host")], workers=[address])


def batches(tasks: list, workers: int, per_worker: int = 8, largest: int = 64) -> list[list]:
    """Split tasks into batches: about ``per_worker`` batches per worker (so the load
    still balances), never more than ``largest`` tasks in one."""
    size = max(1, min(largest, len(tasks) // max(1, workers * per_worker)))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def iter_results_dask(tasks: list, shared, address) -> Iterator[dict]:
    """Submit the tasks to the cluster in batches and yield results as they complete.

    Thousands of small files would otherwise cost one scheduler round trip each,
    which on a small cluster takes longer than the work (see docs/performance.md).
    """
    from dask.distributed import as_completed

    client, owned = _client(address)
    try:
        # the shared context (policy, labels) is sent to each worker once, not per task
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        cap_cluster_threads(client)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        groups = batches(tasks, workers)
        futures = client.map(execute_batch, groups, shared=shared_future, pure=False,
                             key=[f"bidsanon-{i}" for i in range(len(groups))])
        try:
            for fut in as_completed(futures):
                yield from fut.result()
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        if owned:
            client.close()
