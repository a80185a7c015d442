"""What every benchmark says about the machine it ran on, and the CPU time of a
process with all its descendants.

``load_line`` is the header line of the benchmarks (figures are only comparable at a
like load on a shared machine). :class:`TreeCPU` counts the CPU time of every process
below one, including those ``getrusage(RUSAGE_CHILDREN)`` misses: workers started by a
fork server (their parent is the fork server, which is never waited for) and Dask's
nanny and worker processes. It reads ``/proc`` (Linux only).
"""

from __future__ import annotations

import os
import threading
import time


def load_line(when: str = "at start") -> str:
    """``load average at start: 1.23 1.10 0.98 (2 CPUs)``."""
    load = os.getloadavg()
    return (f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"({os.cpu_count()} CPUs)")


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system seconds) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (name) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


class TreeCPU:
    """CPU seconds of the descendants of ``root`` (default: this process), sampled
    every ``interval`` seconds in a thread; each process counts with the last value
    seen, so one that exits loses at most what it used since the last sample.

    Use as a context manager; ``seconds`` is the total, ``processes`` how many were
    seen. The root itself is not counted (its own ``getrusage`` says that).
    """

    def __init__(self, root: int | None = None, interval: float = 0.1):
        self.root, self.interval = root or os.getpid(), interval
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """Record the CPU time of every current descendant."""
        parent: dict[int, tuple[int, float]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                st = _stat(int(name))
                if st is not None:
                    parent[int(name)] = st
        for pid, (ppid, cpu) in parent.items():
            p, depth = ppid, 0
            while p in parent and p != self.root and depth < 64:
                p, depth = parent[p][0], depth + 1
            if p == self.root:
                self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> "TreeCPU":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    @property
    def processes(self) -> int:
        return len(self.seen)


if __name__ == "__main__":  # a self-check: two children burning CPU are counted
    import subprocess
    import sys

    with TreeCPU() as tree:
        procs = [subprocess.Popen([sys.executable, "-c",
                                   "import time\nt = time.process_time()\n"
                                   "while time.process_time() - t < 0.5: pass"])
                 for _ in range(2)]
        for p in procs:
            p.wait()
        time.sleep(0.05)
    print(f"{tree.processes} processes, {tree.seconds:.2f} s CPU (expected about 1.0 s)")
