"""The package's shape: no import cycle, formats listed in one registry only, numpydoc
docstrings on the public API."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bidsanon
from bidsanon import formats

PKG = Path(bidsanon.__file__).parent
ROOT = PKG.parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Every import between the package's modules, at module level or inside functions
    (a lazy import is still a dependency)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_cycle_detector_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_cross_module_imports():
    mods = _modules()
    bad = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in mods:
                bad += [f"{name}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and a.name != "__version__"]
    assert bad == []


def test_format_modules_are_listed_in_the_registry_only():
    """No other place names a format module (the six string tables are gone)."""
    pattern = re.compile(r"[\"']bidsanon\.formats\.\w+")
    offenders = []
    for name, path in _modules().items():
        if name in ("bidsanon.formats", "bidsanon"):  # the registry; the API's name table
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                offenders.append(f"{name}:{n}")
    assert offenders == []
    registered = {f.module for f in formats.FORMATS}
    on_disk = {m for m in _modules() if m.startswith("bidsanon.formats.")
               and m.count(".") == 2
               and m not in ("bidsanon.formats.contract", "bidsanon.formats.fields")}
    assert on_disk == registered


def test_public_api_resolves():
    for name in bidsanon.__all__:
        assert getattr(bidsanon, name) is not None


#: Files whose docstrings are checked with the numpydoc convention (the public API's
#: entry points and the format contract).
NUMPYDOC_FILES = ["bidsanon/__init__.py", "bidsanon/formats/contract.py"]


def test_format_contract_docstrings_follow_numpydoc():
    pytest.importorskip("ruff")
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "--select", "D", "--config",
                           'lint.pydocstyle.convention="numpy"', *NUMPYDOC_FILES],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_public_api_docstrings_follow_numpydoc():
    validate = pytest.importorskip("numpydoc.validate")
    problems = []
    for name in bidsanon.__all__:
        if name == "__version__":
            continue
        obj = getattr(bidsanon, name)
        result = validate.validate(f"{obj.__module__}.{obj.__qualname__}")
        # GL08: no docstring; PR01/PR02: parameters undocumented or unknown;
        # RT01: no Returns section; SS01-SS03: no summary
        wanted = {"GL08", "PR01", "PR02", "RT01", "SS01", "SS02", "SS03"}
        problems += [f"{name}: {code} {msg}" for code, msg in result["errors"] if code in wanted]
    assert problems == []
