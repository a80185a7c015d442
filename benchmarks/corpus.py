"""Run bidsanon over every dataset of a bids-examples checkout and report, per dataset,
whether it publishes, which BIDS validator errors the output has that the input has
not, and whether an original subject label is left in an output name or byte.

Get the corpus (the BIDS project's example datasets; data files are mostly empty
placeholders, so the whole checkout is small)::

    git clone https://github.com/bids-standard/bids-examples

then run (``bids-validator-deno`` comes with ``pip install ".[test]"``)::

    python benchmarks/corpus.py bids-examples --work /tmp/corpus [--only ds001 pet001]
        [--timeout 900] [--jobs 2] [--markdown docs/corpus.md]

Each dataset is first run with the default policy; when that run does not publish it
is run again with ``run.on_error: skip`` (the files that fail are left out). Input and
output are validated with ``bids-validator-deno --format json`` and compared by error
code. Leaks are ``sub-<original>`` anywhere in an output path or in an output file's
bytes (gzip streams decompressed), and original labels of 4+ characters with a letter
as whole tokens in bytes. Results are appended to ``WORK/results.jsonl`` as each
dataset finishes; ``--resume`` skips datasets already there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SKIP = {"docs", "tools", ".git", ".github"}


def validator() -> str:
    """``bids-validator-deno`` next to this Python (a virtual environment), else on PATH."""
    for folder in (Path(sys.executable).parent, Path(sys.executable).resolve().parent):
        if (folder / "bids-validator-deno").is_file():
            return str(folder / "bids-validator-deno")
    found = shutil.which("bids-validator-deno")
    if found is None:
        sys.exit("bids-validator-deno not found: pip install '.[test]'")
    return found


def validate(path: Path, timeout: float) -> dict[str, int] | str:
    """Error codes of the validator and how often each occurs, or a one-line failure."""
    try:
        proc = subprocess.run([validator(), "--format", "json", str(path)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"validator timed out after {timeout:.0f} s"
    try:
        issues = json.loads(proc.stdout)["issues"]["issues"]
    except (ValueError, KeyError):
        return "validator gave no JSON: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
    codes: dict[str, int] = {}
    for i in issues:
        if i.get("severity") == "error":
            codes[i["code"]] = codes.get(i["code"], 0) + 1
    return codes


def original_labels(src: Path) -> list[str]:
    """Subject labels of the input: its ``sub-*`` folders and participants.tsv ids."""
    labels = {p.name[4:] for p in src.glob("sub-*") if p.is_dir()}
    tsv = src / "participants.tsv"
    if tsv.is_file():
        lines = tsv.read_text(encoding="utf-8-sig", errors="replace").splitlines()
        if lines and "participant_id" in lines[0].split("\t"):
            i = lines[0].split("\t").index("participant_id")
            for line in lines[1:]:
                cells = line.split("\t")
                if len(cells) > i and cells[i].startswith("sub-"):
                    labels.add(cells[i][4:].strip())
    return sorted(labels - {"emptyroom", ""})


def file_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when it is a gzip stream."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError):
            return data
    return data


def leaks(out: Path, labels: list[str]) -> list[str]:
    """Every place where an original subject label is left in the output."""
    if not labels:
        return []
    alt = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    entity = re.compile(r"sub-(" + alt + r")(?![A-Za-z0-9])")
    bare = [x for x in labels if len(x) >= 4 and re.search(r"[A-Za-z]", x)]
    bare_rx = re.compile(rb"(?<![A-Za-z0-9])(" + b"|".join(re.escape(x.encode()) for x in bare)
                         + rb")(?![A-Za-z0-9])") if bare else None
    entity_b = re.compile(entity.pattern.encode())
    found = []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        m = entity.search(rel)
        if m:
            found.append(f"{rel}: name")
        if p.is_file() and not p.is_symlink():
            data = file_bytes(p)
            if entity_b.search(data) or (bare_rx is not None and bare_rx.search(data)):
                found.append(f"{rel}: bytes")
    return found


def run_bidsanon(src: Path, out: Path, policy: Path | None, jobs: int,
                 timeout: float) -> tuple[bool, str]:
    """Run ``bidsanon run``; (published, one-line message)."""
    cmd = [sys.executable, "-m", "bidsanon", "run", str(src), str(out), "--quiet",
           "--jobs", str(jobs)]
    if policy is not None:
        cmd += ["--policy", str(policy)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    text = proc.stderr.strip()
    if "output published to" in text:
        failed = [ln.strip()[len("FAILED: "):] for ln in text.splitlines()
                  if ln.strip().startswith("FAILED: ")]
        return True, "; ".join(f[:300] for f in failed)
    return False, (text.splitlines() or ["no output"])[-1][:400]


def one_dataset(src: Path, work: Path, jobs: int, timeout: float) -> dict:
    """Run, validate and look for leaks in one dataset; a JSON-able result."""
    name = src.name
    t0 = time.monotonic()
    out = work / "out" / name
    for stale in (out, work / "out" / f"{name}_bidsanon-key.json", work / "out" / f".{name}.bidsanon-work"):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    (work / "out").mkdir(parents=True, exist_ok=True)
    skip_policy = work / "on_error_skip.yaml"
    skip_policy.write_text("run:\n  on_error: skip\n")
    res: dict = {"dataset": name}
    published, msg = run_bidsanon(src, out, None, jobs, timeout)
    res["result"] = "published" if published else "failed"
    res["message"] = msg
    if not published:
        res["first_error"] = msg
        key = work / "out" / f"{name}_bidsanon-key.json"
        if key.exists():
            key.unlink()  # the second attempt starts fresh
        published, msg = run_bidsanon(src, out, skip_policy, jobs, timeout)
        res["result"] = "published (on_error: skip)" if published else "failed"
        res["message"] = msg
    res["seconds_run"] = round(time.monotonic() - t0, 1)
    cache = work / "inputs" / f"{name}.json"
    if cache.is_file():
        before = json.loads(cache.read_text())
    else:
        before = validate(src, timeout)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(before))
    res["input_errors"] = before
    if published:
        after = validate(out, timeout)
        res["output_errors"] = after
        if isinstance(after, dict) and isinstance(before, dict):
            res["new_errors"] = {c: n for c, n in after.items() if c not in before}
        else:
            res["new_errors"] = {"VALIDATOR": 1}
        res["leaks"] = leaks(out, original_labels(src))
    res["seconds"] = round(time.monotonic() - t0, 1)
    return res


def datasets(corpus: Path, only: list[str] | None) -> list[Path]:
    """Every example dataset folder (one with a dataset_description.json)."""
    found = sorted(p for p in corpus.iterdir() if p.is_dir() and p.name not in SKIP
                   and (p / "dataset_description.json").is_file())
    if only:
        missing = set(only) - {p.name for p in found}
        if missing:
            sys.exit(f"no such dataset in {corpus}: {' '.join(sorted(missing))}")
        found = [p for p in found if p.name in only]
    return found


def table(results: list[dict]) -> str:
    """The Markdown table of the results."""
    rows = ["| dataset | result | new validator errors | label leaks | note |",
            "|---|---|---|---|---|"]
    for r in results:
        new = r.get("new_errors")
        new_s = "—" if new is None else (", ".join(f"{c} ×{n}" for c, n in sorted(new.items()))
                                         or "none")
        lk = r.get("leaks")
        lk_s = "—" if lk is None else (f"{len(lk)} (e.g. `{lk[0]}`)" if lk else "none")
        note = r.get("first_error") or r.get("message") or ""
        note = note.replace("|", "\\|").replace("\n", " ")[:160]
        rows.append(f"| {r['dataset']} | {r['result']} | {new_s} | {lk_s} | {note} |")
    return "\n".join(rows)


def totals(results: list[dict]) -> str:
    """One paragraph of counts."""
    n = len(results)
    first = sum(r["result"] == "published" for r in results)
    skip = sum(r["result"] == "published (on_error: skip)" for r in results)
    clean = sum(r.get("new_errors") == {} for r in results)
    leaky = sum(bool(r.get("leaks")) for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for c in r.get("new_errors") or {}:
            codes[c] = codes.get(c, 0) + 1
    top = ", ".join(f"{c} ({k})" for c, k in sorted(codes.items(), key=lambda x: -x[1]))
    return (f"{n} datasets: {first} published with the default policy, {skip} only with "
            f"`run.on_error: skip`, {n - first - skip} not published; {clean} without a new "
            f"validator error; {leaky} with a label leak. New error codes (datasets): "
            f"{top or 'none'}.")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="a bids-examples checkout")
    ap.add_argument("--work", type=Path, default=Path("corpus-work"),
                    help="folder for outputs, keys and results (default: ./corpus-work)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these datasets")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per bidsanon run and "
                    "per validator run (default 900)")
    ap.add_argument("--jobs", type=int, default=2, help="bidsanon worker processes")
    ap.add_argument("--resume", action="store_true", help="skip datasets already in results")
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results_file = args.work / "results.jsonl"
    done: dict[str, dict] = {}
    if args.resume and results_file.is_file():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            done[r["dataset"]] = r
    elif results_file.exists():
        results_file.unlink()
    todo = datasets(args.corpus, args.only)
    results = []
    for src in todo:
        if src.name in done:
            results.append(done[src.name])
            continue
        r = one_dataset(src.resolve(), args.work.resolve(), args.jobs, args.timeout)
        results.append(r)
        with open(results_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{r['dataset']}: {r['result']}; new errors {r.get('new_errors')}; "
              f"leaks {len(r.get('leaks') or [])} ({r['seconds']} s)", file=sys.stderr,
              flush=True)
    text = totals(results) + "\n\n" + table(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
