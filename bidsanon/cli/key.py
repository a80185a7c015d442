"""Inspect a private key without revealing secrets (`info`) or verify that an output
dataset matches the checksums recorded in it (`verify`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bidsanon.errors import EXIT_FINDINGS, EXIT_OK


HELP = "inspect or verify a key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="key_cmd", required=True)
    info = sub.add_parser("info", help="summary of a key, without labels, dates or secrets")
    info.add_argument("key", type=Path)
    verify = sub.add_parser("verify", help="check an output against the key's checksums")
    verify.add_argument("key", type=Path)
    verify.add_argument("output", type=Path)


def info_text(path: Path) -> str:
    """Counts and provenance only: nothing that links the output back."""
    from bidsanon.key import FORMAT, VERSION, is_encrypted, read_key
    key = read_key(path)
    active = sum(1 for e in key.subjects.values() if not e.withdrawn)
    withdrawn = len(key.subjects) - active
    last = key.runs[-1] if key.runs else {}
    lines = [f"{path}: {FORMAT} version {VERSION}" + (" (encrypted)" if is_encrypted(path) else ""),
             f"  created: {key.created or 'unknown'}; runs: {len(key.runs)}"
             + (f"; last {last.get('time')} with bidsanon {last.get('tool_version')}" if last else ""),
             f"  subjects: {active} active, {withdrawn} withdrawn; empty-room copies: "
             f"{sum(len(v) for v in key.emptyroom.values())}",
             f"  files: {len(key.files)}; identifying originals recorded: {len(key.originals)}",
             f"  policy digest: {key.policy_digest[:16]}…"]
    return "\n".join(lines)


def verify_output(path: Path, output: Path) -> list[str]:
    """Problems found: missing, changed or unrecorded files."""
    from bidsanon.fileio import sha256_file
    from bidsanon.key import read_key
    key = read_key(path)
    problems = []
    recorded = set()
    for entry in key.files:
        recorded.add(entry["output"])
        target = output / entry["output"]
        if not target.exists():
            problems.append(f"missing: {entry['output']}")
        elif sha256_file(target) != entry["output_sha256"]:
            problems.append(f"changed since the run: {entry['output']}")
    for p in sorted(output.rglob("*")):
        rel = p.relative_to(output).as_posix()
        if p.is_file() and rel != "dataset_description.json" and \
                not any(rel == r or rel.startswith(r + "/") for r in recorded):
            problems.append(f"not made by this run: {rel}")
    return problems


def run(args: argparse.Namespace) -> int:
    if args.key_cmd == "info":
        print(info_text(args.key))
        return EXIT_OK
    problems = verify_output(args.key, args.output)
    for p in problems:
        print(p)
    print(f"{args.output}: " + ("matches the key" if not problems else f"{len(problems)} problem(s)"))
    return EXIT_FINDINGS if problems else EXIT_OK
