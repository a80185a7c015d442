"""``bidsanon check``: find identifying content left in a BIDS dataset.

:mod:`bidsanon.check.rules` holds the rules' vocabulary and the text rules,
:mod:`bidsanon.check.engine` walks a dataset and asks each file's format
(:data:`bidsanon.formats.FORMATS`) for its own ``check_file``, and
:mod:`bidsanon.check.output` writes the results as text, JSON, JUnit, GitHub
annotations, SARIF or GitLab code quality (never the values found), and
:mod:`bidsanon.check.baseline` accepts reviewed findings.
"""

from bidsanon.check.engine import (CheckResult, Needles, check_dataset, scan_dataset,
                                   severity_rank, sort_findings)
from bidsanon.check.rules import RULES, doc_table

__all__ = ["RULES", "CheckResult", "Needles", "check_dataset", "doc_table", "scan_dataset",
           "severity_rank", "sort_findings"]
