"""``bidsanon check``: find identifying content left in a BIDS dataset.

:mod:`bidsanon.check.rules` holds the rules' vocabulary and the text rules,
:mod:`bidsanon.check.engine` walks a dataset and asks each file's format
(:data:`bidsanon.formats.FORMATS`) for its own ``check_file``, and
:mod:`bidsanon.check.output` writes the results as text, JSON, JUnit, GitHub
annotations, SARIF or GitLab code quality (never the values found), and
:mod:`bidsanon.check.baseline` accepts reviewed findings.
"""

from __future__ import annotations

import importlib

#: public name -> module; loaded on first use so that ``bidsanon check --help`` (which
#: reads :data:`bidsanon.check.output.FORMATS`) does not load the engine and its rules
_API = {
    "CheckResult": "bidsanon.check.engine", "Needles": "bidsanon.check.engine",
    "check_dataset": "bidsanon.check.engine", "scan_dataset": "bidsanon.check.engine",
    "severity_rank": "bidsanon.check.engine", "sort_findings": "bidsanon.check.engine",
    "RULES": "bidsanon.check.rules", "doc_table": "bidsanon.check.rules",
}

__all__ = ["RULES", "CheckResult", "Needles", "check_dataset", "doc_table", "scan_dataset",
           "severity_rank", "sort_findings"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bidsanon.check' has no attribute {name!r}")
