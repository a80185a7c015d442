"""Worker pools: clean start (no fork of a threaded process) and native thread caps."""

from __future__ import annotations

import pytest

from bidsanon.workers import batches, map_batch, process_pool, task_batch, threads_per_worker


def _threads_now() -> list[int]:
    import numpy  # noqa: F401 - its BLAS is the pool measured
    from threadpoolctl import threadpool_info
    return sorted({p["num_threads"] for p in threadpool_info()})


def _square(x: int) -> int:
    return x * x


def test_pool_does_not_fork_the_parent():
    """Forking a process whose dlib/ITK/BLAS threads hold a lock deadlocks the child
    (the final check did, after an in-process deface): the pool starts workers clean."""
    with process_pool(2) as pool:
        method = pool._mp_context.get_start_method()
        assert method in ("forkserver", "spawn")
        assert list(pool.map(_square, range(5))) == [0, 1, 4, 9, 16]


def test_pool_after_native_threads_ran_in_the_parent_finishes():
    """The case that hung CI: dlib's CNN and a BLAS pool ran here before the pool."""
    import numpy as np
    from bidsanon.deface import face
    if not face.cnn_available():
        pytest.skip("face_recognition_models is not installed")
    pic = np.zeros((120, 120), np.uint8)
    face.detect_faces_cnn(pic)
    np.linalg.svd(np.ones((200, 200)))
    with process_pool(2) as pool:
        found = list(pool.map(face.detect_faces_cnn, [pic, pic], timeout=120))
    assert found == [[], []]


def test_batches_send_the_heavy_items_alone_and_the_rest_in_groups():
    items = list(range(100))
    groups = batches(items, workers=2, singles=3)
    assert groups[:3] == [[0], [1], [2]]
    assert [i for g in groups for i in g] == items  # every item once, in order
    assert {len(g) for g in groups[3:-1]} == {97 // 16}  # about 8 batches per worker
    assert batches(list(range(10_000)), workers=2)[0] == list(range(64))  # at most 64
    assert batches([], workers=2, singles=5) == []
    assert map_batch([1, 2, 3], _square) == [1, 4, 9]
    assert task_batch([1, 2, 3], 10, pow) == [1, 1024, 59049]  # fn(task, shared)


def test_threads_per_worker_divides_the_cores():
    assert threads_per_worker(1, cores=8) == 8
    assert threads_per_worker(2, cores=8) == 4
    assert threads_per_worker(3, cores=2) == 1


def _loaded(name: str) -> bool:
    import sys
    return name in sys.modules


def test_dask_workers_get_their_share_of_the_cores_and_the_run_modules():
    """Each Dask worker is warmed once: threads capped and the run's modules imported
    (a module that cannot be imported is skipped, as the fork server skips it)."""
    from dask.distributed import Client, LocalCluster

    from bidsanon.distributed import warm_cluster
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        assert not any(client.run(_loaded, "colorsys").values())
        caps = warm_cluster(client, ["colorsys", "no_such_module_here"])
        threads = client.run(_threads_now)
        loaded = client.run(_loaded, "colorsys")
    assert sorted(caps) == sorted(threads) and len(caps) == 2
    assert {w["threads"] for w in caps.values()} == {threads_per_worker(2)}
    # Dask's defaults: its profiler, and its nanny's MALLOC_TRIM_THRESHOLD_ (scaling.md)
    assert all(w["slow"] == ["the profiler on", "MALLOC_TRIM_THRESHOLD_=65536"]
               for w in caps.values()), caps
    assert all(t == [threads_per_worker(2)] for t in threads.values()), threads
    assert all(loaded.values()), loaded


def test_tuned_dask_workers_have_no_slow_settings(monkeypatch):
    """The worker settings docs/scaling.md recommends remove both slow settings: the
    profiler off, glibc's malloc thresholds in the environment the nanny starts from
    (it keeps a value the environment has over its own 65536)."""
    import dask
    from dask.distributed import Client, LocalCluster

    from bidsanon.distributed import slow_settings
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(128 << 20))
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
    with dask.config.set({"distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        found = client.run(slow_settings)
    assert list(found.values()) == [[]], found


_PRELOAD_PROBE = """
import sys
from bidsanon.workers import preload, process_pool
preload(["colorsys", "no_such_module_here"])
with process_pool(2) as pool:
    print(sorted(set(pool.map(eval, ["'colorsys' in __import__('sys').modules"] * 4))))
"""


def test_preloaded_modules_are_there_when_workers_start():
    """Workers fork from a server that imported the run's heavy modules once (a fresh
    interpreter: this process's fork server may be running already); a module that
    cannot be imported is skipped."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _PRELOAD_PROBE], capture_output=True,
                         text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1:] == ["[True]"]
    without = subprocess.run([sys.executable, "-c", _PRELOAD_PROBE.replace(
        'preload(["colorsys", "no_such_module_here"])', "")], capture_output=True,
        text=True, cwd=root, timeout=120)
    assert without.stdout.split()[-1:] == ["[False]"], without.stderr[-2000:]


def _profiler_running(dask_worker) -> list[bool]:
    from bidsanon.distributed import PROFILER_CALLBACKS
    return [dask_worker.periodic_callbacks[n].is_running() for n in PROFILER_CALLBACKS]


def _malloc_tuned() -> dict:
    from bidsanon.distributed import _TUNED
    return dict(_TUNED["malloc"])


def test_a_run_switches_off_dask_defaults_slow_settings_and_restores_them():
    """Dask's defaults (profiler sampling, the nanny's MALLOC_TRIM_THRESHOLD_=65536) cost
    the defacing up to 70 % more CPU: a run pauses the one and raises glibc's thresholds
    for its duration (mallopt), then gives the worker its own settings back."""
    from dask.distributed import LocalCluster

    from bidsanon.distributed import (FAST_MALLOC, GLIBC_MMAP_THRESHOLD, M_MMAP_THRESHOLD,
                                      M_TRIM_THRESHOLD, Cluster)
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                      dashboard_address=None) as lc:
        with Cluster(lc) as cluster:
            client = cluster.client
            assert list(client.run(_profiler_running).values()) == [[True, True]]
            warmed = cluster.warm(["colorsys"])
            [w] = warmed.values()
            assert w["tuned"] == ["the profiler paused", "malloc thresholds raised"]
            assert w["slow"] == []  # nothing left to warn about
            assert list(client.run(_profiler_running).values()) == [[False, False]]
            # what is restored at the end: the nanny's trim value, glibc's mmap default
            assert list(client.run(_malloc_tuned).values()) == [
                {M_TRIM_THRESHOLD: 65536, M_MMAP_THRESHOLD: GLIBC_MMAP_THRESHOLD}]
            assert set(FAST_MALLOC) == {M_TRIM_THRESHOLD, M_MMAP_THRESHOLD}
        with Cluster(lc) as after:
            assert list(after.client.run(_profiler_running).values()) == [[True, True]]
            assert list(after.client.run(_malloc_tuned).values()) == [{}]
