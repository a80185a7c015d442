"""Run plan tasks on a Dask distributed cluster (``bidsanon run --scheduler ADDRESS``).

Workers must see the input, staging and QC folders at the same paths (a shared
filesystem); the coordinator alone writes the manifest, the key and the
dataset_description.json, exactly as in a local run, so the output is byte-identical.
"""

from __future__ import annotations

from typing import Iterator

from .errors import UsageError


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


def iter_results_dask(tasks: list, shared, address) -> Iterator[dict]:
    """Submit every task to the cluster and yield results as they complete."""
    from dask.distributed import as_completed

    from .run import execute_task
    client, owned = _client(address)
    try:
        # the shared context (policy, labels) is sent to each worker once, not per task
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        futures = client.map(execute_task, tasks, shared=shared_future, pure=False,
                             key=[f"bidsanon-{i}" for i in range(len(tasks))])
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        if owned:
            client.close()
