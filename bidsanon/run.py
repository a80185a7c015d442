"""Execute a plan: staging, parallel execution, resume manifest, key, atomic publish."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

from bidsanon._version import __version__
from bidsanon.errors import FindingsError, InputError, UsageError
from bidsanon.execute import (LocalPool, Shared, execute_task, heaviest_first, input_signature,
                              preloaded)
from bidsanon.fileio import sha256_file, write_text_atomic
from bidsanon.key import KeyData, check_paths, now_iso, read_key, write_key
from bidsanon.labels import EMPTYROOM
from bidsanon.plan import FileTask, Plan, build_plan
from bidsanon.policy import digest, load_policy

#: Change fields whose original values identify a person or place: recorded in the key
#: so that ``bidsanon check --key`` can look for them in an output.
IDENTIFYING_FIELD = re.compile(r"name|birth|institution|address|station|serial|experimenter|"
                               r"operator|email|phone|url|his|patient|physician|persons|"
                               r"technician|subject|participant", re.IGNORECASE)


@dataclass
class RunSummary:
    """What a run did: counts, failures, paths (returned by :func:`run_dataset`)."""

    output: Path
    key: Path
    counts: dict[str, int] = field(default_factory=dict)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resumed: int = 0
    published: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    findings: list = field(default_factory=list)
    report: Path | None = None
    #: k-anonymity of participant tables: "participants.tsv: k = 1 -> 5 (target 5), ..."
    privacy: list[str] = field(default_factory=list)
    #: where the time went (:func:`stage_times`)
    stages: dict = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"bidsanon {__version__}: "
                 + ("output published to " + str(self.output) if self.published
                    else "output NOT published")]
        lines.append("  files: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())))
        if self.resumed:
            lines.append(f"  resumed: {self.resumed} files already done in an earlier run")
        reasons = Counter(why for _, why in self.excluded)
        for why, n in reasons.most_common():
            lines.append(f"  excluded {n}: {why}")
        for p in self.privacy:
            lines.append(f"  k-anonymity: {p}")
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        for f in self.failed:
            lines.append(f"  FAILED: {f}")
        if self.timings:
            lines.append("  time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                  self.timings.items()))
        lines += stage_lines(self.stages)
        lines.append(f"  key (private): {self.key}")
        if self.report:
            lines.append(f"  report (private): {self.report}")
        return "\n".join(lines)


def default_key_path(output_dir: str | Path) -> Path:
    """The key's default place: next to (never inside) the output folder."""
    out = Path(output_dir).resolve()
    return out.parent / f"{out.name}_bidsanon-key.json"


def work_dir(output_dir: str | Path) -> Path:
    """Staging area next to the output (same filesystem, so publishing is a rename)."""
    out = Path(output_dir).resolve()
    return out.parent / f".{out.name}.bidsanon-work"


def results_of(tasks: list[FileTask], shared: Shared, cluster=None,
               fn: Callable = execute_task, stage: str = "files") -> Iterator[dict]:
    """``fn(task, shared)`` of every task as they complete: on ``cluster`` (the run's
    :class:`bidsanon.distributed.Cluster` or :class:`bidsanon.execute.LocalPool`,
    :func:`run_workers`), heaviest first, or in this process."""
    if cluster is not None:
        ordered, heavy = heaviest_first(tasks, shared.root)
        return cluster.results(ordered, shared, fn=fn, stage=stage, singles=heavy)
    return (fn(t, shared) for t in tasks)


def run_workers(cluster, jobs: int, tasks: list[FileTask], shared: Shared, check: bool
                ) -> contextlib.AbstractContextManager:
    """The workers of every stage of a run: the Dask ``cluster`` when given, else a
    :class:`~bidsanon.execute.LocalPool` of ``jobs`` processes (the fork server first
    imports what the tasks and, with ``check``, the final check need), else none (this
    process does the work)."""
    if cluster is not None or jobs <= 1 or len(tasks) <= 1:
        return contextlib.nullcontext(cluster)
    return LocalPool(jobs, shared, preloaded(tasks, shared, check=check))


def connect(scheduler) -> contextlib.AbstractContextManager:
    """The run's Dask cluster at ``scheduler`` (an address or a cluster object), or
    nothing (``None``: local workers)."""
    if not scheduler:
        return contextlib.nullcontext()
    from bidsanon.distributed import Cluster
    return Cluster(scheduler)


# --- progress --------------------------------------------------------------------

class Progress:
    """A tqdm bar on a terminal, periodic plain lines otherwise (CI), nothing when quiet."""

    def __init__(self, total: int, stage: str, quiet: bool = False, stream=None):
        self.total, self.stage, self.quiet = total, stage, quiet
        self.stream = stream or sys.stderr
        self.done, self.started = 0, time.monotonic()
        self.last = self.started
        self.bar = None
        if not quiet and self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=stage, unit="file", file=self.stream)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if not self.quiet and (now - self.last >= 10 or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0
            print(f"[{self.stage}] {self.done}/{self.total} files, {rate:.1f}/s, "
                  f"ETA {eta:.0f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the manifest (resume) ----------------------------------------------------------

def _manifest_header(policy_digest: str, key: KeyData) -> dict:
    import hashlib
    return {"bidsanon_manifest": 1, "version": __version__, "policy": policy_digest,
            "key": hashlib.sha256(key.secret.encode()).hexdigest()}


def load_manifest(path: Path, header: dict) -> dict[str, dict]:
    """Finished results of an earlier, interrupted run with the same policy and key."""
    if not path.is_file():
        return {}
    done: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or json.loads(lines[0]) != header:
        return {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # the last line of a killed run may be cut short
        done[entry["task"]["out"]] = entry
    return done


# --- the run -----------------------------------------------------------------------

def run_dataset(bids_dir: str | Path, output_dir: str | Path, *, policy_path: str | Path | None = None,
                key_path: str | Path | None = None, participant_labels: list[str] | None = None,
                dry_run: bool = False, jobs: int | None = None, scheduler: str | None = None,
                quiet: bool = False, passphrase: str | None = None,
                encrypt_key: bool = False, echo: Callable[[str], None] | None = None) -> RunSummary:
    """De-identify ``bids_dir`` into ``output_dir`` (the Python API of ``bidsanon run``).

    Parameters
    ----------
    bids_dir, output_dir : path
        Input BIDS dataset (never modified) and the new derivative dataset.
    policy_path : path | None
        Study policy YAML (defaults built in).
    key_path : path | None
        Private key (default: next to the output). An existing key is reused, so labels
        and offsets stay stable across releases.
    participant_labels : list of str | None
        Only these subjects.
    dry_run : bool
        Print the plan and write nothing.
    jobs : int | None
        Local worker processes (default: number of CPUs).
    scheduler : str | None
        Address of a Dask distributed scheduler to run the tasks on.
    quiet : bool
        No progress output.
    passphrase : str | None
        Encrypt the key with it (or decrypt an existing encrypted key).
    encrypt_key : bool
        Encrypt a new key (with ``passphrase``).
    echo : callable | None
        Where plan and progress lines go (default: standard error).

    Returns
    -------
    RunSummary
        Counts, failed and excluded files, findings, timings, and whether the output was
        published.
    """
    echo = echo or (lambda s: None if quiet else print(s, file=sys.stderr))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    bids_dir, output_dir = Path(bids_dir), Path(output_dir)
    key_path = Path(key_path) if key_path else default_key_path(output_dir)
    report = report_path(key_path)
    check_paths(bids_dir, output_dir, key_path, [report, qc_dir(key_path), work_dir(output_dir)])
    _check_output_replaceable(output_dir)
    policy = load_policy(policy_path)
    pdigest = digest(policy)
    if key_path.exists():
        key = read_key(key_path, passphrase)
    else:
        key = KeyData(created=now_iso())
    if encrypt_key and passphrase is None:
        from bidsanon.key import get_passphrase
        passphrase = get_passphrase(confirm=True)
    plan = build_plan(bids_dir, policy, key, participant_labels)
    key.source_root = str(bids_dir.resolve())
    key.policy_digest = pdigest
    timings["plan"] = time.perf_counter() - t0
    echo(f"[plan] {len(plan.tasks)} files to write, {len(plan.excluded)} excluded, "
         f"{sum(1 for e in key.subjects.values() if not e.withdrawn)} subjects "
         f"({timings['plan']:.1f} s)")
    if dry_run:
        print(plan.describe())
        return RunSummary(output=output_dir, key=key_path, counts=plan.summary(),
                          excluded=plan.excluded, warnings=plan.warnings, timings=timings)
    # the mapping is saved before any output exists, so an interrupted run resumes
    # with the same labels and offsets
    key_path.parent.mkdir(parents=True, exist_ok=True)
    write_key(key_path, key, passphrase)
    summary = execute_plan(plan, output_dir, key_path, pdigest, jobs=jobs, scheduler=scheduler,
                           quiet=quiet, passphrase=passphrase, echo=echo, timings=timings)
    summary.report = report if report.exists() else None
    return summary


def _check_output_replaceable(output_dir: Path) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise UsageError(f"the output path {output_dir} exists and is not a folder")
    if any(output_dir.iterdir()) and not _is_bidsanon_output(output_dir):
        raise UsageError(f"the output folder {output_dir} exists and is not a bidsanon "
                         "output; choose a new folder (it would be replaced)")


def _is_bidsanon_output(folder: Path) -> bool:
    try:
        desc = json.loads((folder / "dataset_description.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(g.get("Name") == "bidsanon" for g in desc.get("GeneratedBy", [])
               if isinstance(g, dict))


def execute_plan(plan: Plan, output_dir: Path, key_path: Path, pdigest: str, *,
                 jobs: int | None = None, scheduler: str | None = None, quiet: bool = False,
                 passphrase: str | None = None, echo: Callable[[str], None] = print,
                 timings: dict | None = None) -> RunSummary:
    """Execute every task into staging, check, write the key, publish atomically.

    With ``scheduler``, every per-file stage (the handlers, the read-back verification,
    the final check) runs on that Dask cluster, whose workers are first prepared once
    (threads capped, the run's modules imported); otherwise in ``jobs`` local workers.
    """
    shared = Shared(root=str(plan.root), staging=str(work_dir(output_dir) / "staging"),
                    policy=plan.policy, labels=plan.labels, secret=plan.key.secret_bytes,
                    qc_dir=str(qc_dir(key_path)) if plan.policy["run"]["qc"] else None,
                    known=plan.known)
    jobs = jobs or os.cpu_count() or 1
    check = bool(plan.policy["run"]["check"])
    with connect(scheduler) as cluster, \
            run_workers(cluster, jobs, plan.tasks, shared, check) as workers:
        return _execute(plan, output_dir, key_path, pdigest, shared, jobs=jobs,
                        cluster=workers, quiet=quiet, passphrase=passphrase, echo=echo,
                        timings=timings)


def _execute(plan: Plan, output_dir: Path, key_path: Path, pdigest: str, shared: Shared, *,
             jobs: int, cluster, quiet: bool, passphrase: str | None,
             echo: Callable[[str], None], timings: dict | None) -> RunSummary:
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    work = work_dir(output_dir)
    staging = work / "staging"
    manifest = work / "manifest.jsonl"
    header = _manifest_header(pdigest, plan.key)
    done = load_manifest(manifest, header)
    if not done and work.exists():
        shutil.rmtree(work)  # an earlier run with another policy or key: start over
    staging.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    todo: list[FileTask] = []
    for t in plan.tasks:
        entry = done.get(t.out)
        if entry and entry["task"] == dataclasses.asdict(t) and \
                entry["signature"] == input_signature(plan.root / t.rel) and \
                (staging / t.out).exists() and "error" not in entry["result"]:
            results[t.out] = entry["result"]
        else:
            todo.append(t)
    resumed = len(results)
    if cluster is not None:  # the modules of every stage, the final check's too
        warmed = cluster.warm(preloaded(plan.tasks, shared, check=plan.policy["run"]["check"]))
        tuned = sorted({s for w in warmed.values() for s in w.get("tuned", ())})
        if tuned:
            echo(f"note: for this run, the Dask workers have {' and '.join(tuned)} "
                 "(restored when it ends; docs/scaling.md, worker settings for bidsanon)")
        slow = sorted({s for w in warmed.values() for s in w["slow"]})
        if slow and any(t.handler == "anat" for t in todo):
            echo(f"note: the Dask workers run with {' and '.join(slow)}: defacing costs "
                 "them up to 70 % more CPU than local workers (docs/scaling.md, worker "
                 "settings for bidsanon)")
    if resumed:
        echo(f"resuming: {resumed} of {resumed + len(todo)} files already done")
    progress = Progress(len(todo), "files", quiet=quiet)
    by_out = {t.out: t for t in todo}
    failed: list[str] = []
    with open(manifest, "a" if done else "w", encoding="utf-8") as mf:
        if not done:
            mf.write(json.dumps(header) + "\n")
        try:
            for res in results_of(todo, shared, cluster):
                task = by_out[res["out"]]
                results[res["out"]] = res
                if "error" in res:
                    failed.append(res["error"])
                    if plan.policy["run"]["on_error"] == "stop":
                        raise InputError(res["error"].replace("\n", " "))
                else:
                    mf.write(json.dumps({"task": dataclasses.asdict(task),
                                         "signature": input_signature(plan.root / task.rel),
                                         "result": res}) + "\n")
                    mf.flush()
                progress.update()
        finally:
            progress.close()
    timings["files"] = time.perf_counter() - t0
    recordings = None
    if plan.policy["run"]["verify"]:
        t2 = time.perf_counter()
        recordings = verify_outputs(plan, results, shared, quiet, failed, cluster)
        timings["verify"] = time.perf_counter() - t2
    summary = RunSummary(output=output_dir, key=key_path, counts=plan.summary(),
                         excluded=list(plan.excluded), warnings=list(plan.warnings),
                         failed=failed, resumed=resumed, timings=timings)
    for rel_out, res in results.items():
        summary.warnings += [f"{res['rel']}: {w}" for w in res.get("warnings", [])]
        summary.privacy += k_anonymity_lines(res)
    skipped = [t for t in plan.tasks if t.out in results and "error" in results[t.out]]
    summary.excluded += [(t.rel, "failed (run.on_error: skip)") for t in skipped]
    leaving = drop_companions(skipped, plan.tasks, staging)
    summary.excluded += [(t.rel, why) for t, why in leaving]
    gone = {t.out for t in skipped} | {t.out for t, _ in leaving}
    rewritten = drop_scans_rows(gone, plan.tasks, staging)
    rewritten += drop_participant_rows(gone, plan.tasks, staging)
    emptied = drop_empty_participants(plan.tasks, staging)
    summary.excluded += [(t.rel, "no participant is left (every file of every subject "
                                 "failed)") for t in emptied]
    gone |= {t.out for t in emptied}
    for out in (o for o in rewritten if o not in gone):
        results[out] = {**results[out], "output_sha256": sha256_file(staging / out)}
    ordered = [results[t.out] for t in plan.tasks if t.out in results
               and "error" not in results[t.out] and t.out not in gone]
    update_key(plan.key, ordered, summary, plan.known)
    t1 = time.perf_counter()
    if recordings is not None:
        recordings = [r for r in recordings if r not in gone]
    with open_dataset(staging, recordings, background=cluster is not None) as opened:
        # the final gate: the same check a CI job runs, on what is about to be published
        scan = final_check(staging, plan, plan.policy, render_dir=qc_dir(key_path),
                           jobs=jobs, quiet=quiet,
                           mapper=cluster.map if cluster is not None else None)
    findings = scan.findings if scan is not None else []
    if recordings is not None:
        plan.key.runs[-1]["verified_dataset"] = opened.result()
    summary.findings = findings
    timings["check"] = time.perf_counter() - t1
    summary.stages = stage_times(ordered, scan.file_seconds if scan is not None else {})
    plan.key.runs[-1]["timings"] = {k: round(v, 3) for k, v in timings.items()}
    plan.key.runs[-1]["stages"] = summary.stages
    plan.key.runs[-1]["findings"] = [f.to_dict() for f in findings]
    write_key(key_path, plan.key, passphrase)
    _write_report(plan, key_path)
    errors = [f for f in findings if getattr(f, "severity", "") == "error"]
    if errors:
        raise FindingsError(f"the check found {len(errors)} identifying item(s) in the staged "
                            f"output (first: {errors[0].path}: {errors[0].message}); nothing "
                            f"was published, staging kept in {staging}")
    prune_staging(staging, {r["out"] for r in ordered})
    publish(staging, output_dir)
    shutil.rmtree(work, ignore_errors=True)
    summary.published = True
    return summary


def verify_outputs(plan: Plan, results: dict[str, dict], shared: Shared, quiet: bool,
                   failed: list[str], cluster=None) -> list[str]:
    """Read every output back with its format's reader (:mod:`bidsanon.verify`), on the
    run's workers (``cluster``) or in this process.

    A file that does not verify fails like a file whose handler failed: with
    ``run.on_error: stop`` the run stops (nothing published), with ``skip`` the file is
    left out. Each result gets a ``verified`` record for the key. Returns the outputs
    MNE read back, for :func:`open_dataset`.
    """
    from bidsanon.execute import verify_task
    from bidsanon.verify import VerificationError
    tasks = [t for t in plan.tasks if t.out in results and "error" not in results[t.out]]
    progress = Progress(len(tasks), "verify", quiet=quiet)
    try:
        for res in results_of(tasks, shared, cluster, fn=verify_task, stage="verify"):
            progress.update()
            if "error" in res:
                if plan.policy["run"]["on_error"] == "stop":
                    raise VerificationError(res["error"])
                results[res["out"]] = {**results[res["out"]], "error": res["error"]}
                failed.append(res["error"])
            else:
                results[res["out"]]["verified"] = res["verified"]
    finally:
        progress.close()
    return [out for out, r in results.items() if "error" not in r
            and str(r.get("verified", {}).get("reader", "")).startswith("mne.io.")
            and r["verified"].get("checked")]


@contextlib.contextmanager
def open_dataset(staging: Path, recordings: list[str] | None, background: bool
                 ) -> Iterator:
    """Open the staged dataset as a user would (:func:`bidsanon.verify.dataset`:
    pybids, then mne_bids.read_raw_bids of each of ``recordings``) while the body runs.

    Yields a future whose ``result()`` is what was opened (``None`` when
    ``recordings`` is ``None``: no verification). With ``background`` it opens in a
    thread of this process, beside the workers' final check, which takes this
    process's CPU only to collect results; otherwise first. A dataset that does not
    open raises :class:`bidsanon.verify.VerificationError` when the body has run.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from bidsanon.verify import dataset
    if recordings is None or not background:
        fut: Future = Future()
        fut.set_result(None if recordings is None else dataset(staging, recordings))
        yield fut
        return
    with ThreadPoolExecutor(1, thread_name_prefix="bidsanon-dataset") as pool:
        fut = pool.submit(dataset, staging, recordings)
        yield fut
    fut.result()  # raises here, after the check, when the dataset does not open


#: The stages of a defaced image, in the order they run (``seconds.*`` metrics of the
#: anat handler): reading the voxels, registration to the template, masks (labels, ears,
#: brain protection), the cover, the NIfTI write, the QC pictures.
DEFACE_STAGES = ("read", "registration", "masks", "cover", "write", "qc")


def stage_times(results: Iterable[dict], check_seconds: dict[str, float]) -> dict:
    """Where a run's time went, summed over its files (seconds of the tasks, whichever
    worker ran them): each defacing stage (:data:`DEFACE_STAGES`) and their images'
    count, the final check of those images (its face rule, mostly), every handler's
    tasks in all, and the rest of the final check.
    """
    results = list(results)
    defaced = [r for r in results if "seconds.registration" in r.get("metrics", {})]
    out: dict = {"defaced_images": len(defaced)}
    for stage in DEFACE_STAGES:
        out[f"deface.{stage}"] = round(sum(r["metrics"].get(f"seconds.{stage}", 0.0)
                                           for r in defaced), 3)
    images = {r["out"] for r in defaced}
    out["check.defaced_images"] = round(sum(v for k, v in check_seconds.items()
                                            if k in images), 3)
    out["check.other_files"] = round(sum(v for k, v in check_seconds.items()
                                         if k not in images), 3)
    by_handler: dict[str, float] = {}
    for r in results:
        key = f"handler.{r['handler']}"
        by_handler[key] = by_handler.get(key, 0.0) + float(r.get("seconds", 0.0))
    return {**out, **{k: round(v, 3) for k, v in by_handler.items()}}


def stage_lines(stages: dict) -> list[str]:
    """The run summary's lines of :func:`stage_times`."""
    if not stages:
        return []
    lines = []
    n = stages.get("defaced_images", 0)
    if n:
        parts = ", ".join(f"{s} {stages[f'deface.{s}'] / n:.1f}" for s in DEFACE_STAGES
                          if stages.get(f"deface.{s}", 0.0) > 0)
        lines.append(f"  time per defaced image (s): {parts}, final check "
                     f"{stages['check.defaced_images'] / n:.1f}")
    handlers = sorted((k.removeprefix("handler."), v) for k, v in stages.items()
                      if k.startswith("handler."))
    lines.append("  time by handler (s, all files): " + ", ".join(
        f"{h} {v:.2f}" for h, v in handlers) + f"; final check of the other files "
        f"{stages.get('check.other_files', 0.0):.2f}")
    return lines


def k_anonymity_lines(result: dict) -> list[str]:
    """The run summary's k-anonymity line of a participants table's result."""
    m = result.get("metrics") or {}
    if "k_after" not in m:
        return []
    line = (f"{result['out']}: k = {int(m['k_before'])} -> {int(m['k_after'])} (target "
            f"{int(m['k_target'])})")
    if m.get("suppressed_cells"):
        line += f", {int(m['suppressed_cells'])} cells suppressed"
    return [line]


def drop_companions(failed: list[FileTask], tasks: list[FileTask], staging: Path
                    ) -> list[tuple[FileTask, str]]:
    """Remove from staging what must leave with data files that failed: their JSON
    sidecars, the other parts and the companions of the recording (a sidecar without
    its data file is invalid BIDS; see :func:`bidsanon.plan.companions`). Returns each
    task removed and why."""
    from bidsanon.plan import companions
    if not failed:
        return []
    why = "belongs to a failed file (run.on_error: skip)"
    removed = []
    for t, _, _ in companions({t.out: "failed" for t in failed}, tasks, "out"):
        target = staging / t.out
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        removed.append((t, why))
    return removed


def drop_participant_rows(gone: set[str], tasks: list[FileTask], staging: Path) -> list[str]:
    """Remove from the staged participants.tsv and phenotype tables the rows of subjects
    none of whose files is left (every one failed or followed a failed file): a row
    without a folder would not match the dataset. Returns the tables rewritten."""
    from bidsanon.formats.tsv import Table, format_tsv, read_tsv
    had = {t.new_subject for t in tasks if t.subject not in (None, EMPTYROOM)}
    left = {t.new_subject for t in tasks if t.subject not in (None, EMPTYROOM)
            and t.out not in gone}
    empty = {f"sub-{s}" for s in had - left}
    changed = []
    if not empty:
        return changed
    for t in tasks:
        staged = staging / t.out
        if t.handler != "participants" or not t.out.endswith(".tsv") or not staged.is_file():
            continue
        table = read_tsv(staged)
        if "participant_id" not in table.columns:
            continue
        i = table.columns.index("participant_id")
        kept = [r for r in table.rows if r[i] not in empty]
        if len(kept) != len(table.rows):
            write_text_atomic(staged, format_tsv(Table(table.columns, kept, table.newline)))
            changed.append(t.out)
    return changed


def drop_empty_participants(tasks: list[FileTask], staging: Path) -> list[FileTask]:
    """Remove the staged ``participants.tsv`` (and ``participants.json``) when no subject
    and no row is left (every file of every subject failed): the BIDS validator refuses
    a participants table without rows (``PARTICIPANT_ID_MISMATCH``), and it describes
    nobody. Returns the tasks removed."""
    from bidsanon.formats.tsv import read_tsv
    table = staging / "participants.tsv"
    if not table.is_file() or read_tsv(table).rows or \
            any(p.is_file() for p in staging.glob("sub-*/**/*")):
        return []
    removed = []
    for t in tasks:
        if t.out in ("participants.tsv", "participants.json") and (staging / t.out).is_file():
            (staging / t.out).unlink()
            removed.append(t)
    return removed


def drop_scans_rows(gone: set[str], tasks: list[FileTask], staging: Path) -> list[str]:
    """Remove the rows of output files that left (``gone``) from the staged scans
    tables; returns the scans tables rewritten."""
    from bidsanon.formats.tsv import Table, format_tsv, read_tsv
    changed = []
    for t in tasks:
        staged = staging / t.out
        if t.handler != "scans" or not t.out.endswith("_scans.tsv") or not staged.is_file():
            continue
        base = t.out.rsplit("/", 1)[0] + "/"
        rows = {o[len(base):] for o in gone if o.startswith(base)}
        if not rows:
            continue
        table = read_tsv(staged)
        if "filename" not in table.columns:
            continue
        i = table.columns.index("filename")
        kept = [r for r in table.rows if r[i] not in rows]
        if len(kept) != len(table.rows):
            write_text_atomic(staged, format_tsv(Table(table.columns, kept, table.newline)))
            changed.append(t.out)
    return changed


def final_check(staging: Path, plan: Plan, policy: dict, render_dir: Path | None = None,
                jobs: int = 1, quiet: bool = False, mapper: Callable | None = None):
    """Run ``bidsanon check`` on the staged output (face renders go to the private QC
    folder: a face found there must not be shown anywhere public); its per-file work
    in ``jobs`` local workers, or through ``mapper`` (the ``map`` of the run's Dask
    cluster or local pool). Returns the :class:`~bidsanon.check.engine.CheckResult`, or
    None when the policy turns the check off (``run.check: false``)."""
    if not policy["run"]["check"]:
        return None
    from bidsanon.check.engine import scan_dataset
    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "check", quiet=quiet)
        bar.update(done - bar.done)
    try:
        return scan_dataset(staging, policy=policy, key=plan.key, render_dir=render_dir,
                            jobs=jobs, progress=progress, mapper=mapper)
    finally:
        if bar is not None:
            bar.close()


def report_path(key_path: Path) -> Path:
    """The private HTML report's place: next to the key."""
    return key_path.with_name(key_path.name.removesuffix(".json") + "_report.html")


def qc_dir(key_path: Path) -> Path:
    """The private QC images' folder: next to the key."""
    return key_path.with_name(key_path.name.removesuffix(".json") + "_qc")


def _write_report(plan: Plan, key_path: Path) -> None:
    if not plan.policy["run"]["qc"]:
        return
    try:
        from bidsanon.report import write_report
    except ModuleNotFoundError:
        return
    write_report(plan.key, report_path(key_path))


def update_key(key: KeyData, results: Iterable[dict], summary: RunSummary,
               known: tuple[str, ...] = ()) -> None:
    """Record the file map, the identifying originals and this run in the key."""
    key.files = [{"source": r["rel"], "output": r["out"], "handler": r["handler"],
                  "source_sha256": r["source_sha256"], "output_sha256": r["output_sha256"],
                  "changes": r.get("changes", []), "warnings": r.get("warnings", []),
                  "qc": r.get("qc", {}), "metrics": r.get("metrics", {}),
                  "verified": r.get("verified", {}),
                  "seconds": r.get("seconds", 0.0)} for r in results]
    originals = set(key.originals) | set(known)
    for r in key.files:
        for c in r["changes"]:
            old = c.get("old")
            if isinstance(old, str) and len(old.strip()) >= 4 and IDENTIFYING_FIELD.search(c["field"]) \
                    and not old.strip().replace(".", "").isdigit():
                originals.add(old.strip())
    originals |= {s for s, e in key.subjects.items() if e.label != s and len(s) >= 3}
    from bidsanon.scrub import GENERIC_VALUES  # placeholders that identify nobody
    originals = {o for o in originals if o.lower() not in GENERIC_VALUES}
    # labels that stay in the output (sub-emptyroom, kept labels) are not secrets
    kept = {e.label for e in key.subjects.values()} | {EMPTYROOM}
    originals = {o for o in originals if not (o in kept or o.removeprefix("sub-") in kept)}
    key.originals = sorted(originals)
    key.runs.append({"time": now_iso(), "tool_version": __version__,
                     "counts": summary.counts, "failed": list(summary.failed),
                     "warnings": list(summary.warnings),
                     "excluded": [list(x) for x in summary.excluded],
                     "withdrawn": sorted(s for s, e in key.subjects.items() if e.withdrawn),
                     "timings": {}, "findings": []})


def prune_staging(staging: Path, expected: set[str]) -> list[str]:
    """Delete from staging everything that is not a planned output: temporary files of
    a run killed mid-write, outputs of tasks that failed. Only planned files publish."""
    removed = []
    for path in sorted(staging.rglob("*"), reverse=True):  # children before parents
        rel = PurePosixPath(path.relative_to(staging).as_posix())
        if str(rel) in expected or any(str(p) in expected for p in rel.parents):
            continue  # a planned output, or inside a planned folder (CTF .ds)
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        else:
            path.unlink()
            removed.append(str(rel))
    return removed


def publish(staging: Path, output_dir: Path) -> None:
    """Move the finished staging folder into place (replacing an earlier bidsanon output)."""
    output_dir = output_dir.resolve()
    if output_dir.exists():
        old = staging.parent / "previous-output"
        os.rename(output_dir, old)
        os.rename(staging, output_dir)
        shutil.rmtree(old)
    else:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, output_dir)
