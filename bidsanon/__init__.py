"""bidsanon: de-identify BIDS neuroimaging datasets for public sharing.

The Python API mirrors the command line:

- :func:`run_dataset` (``bidsanon run``), :func:`build_plan`, :func:`load_policy`;
- :func:`anonymize_fiff` (``bidsanon fiff``), :func:`deface_image` (``bidsanon deface``);
- :func:`check_dataset` (``bidsanon check``); :func:`read_key`.

Heavy modules are imported on first use, so ``import bidsanon`` stays fast.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_API = {
    "run_dataset": "bidsanon.run",
    "build_plan": "bidsanon.plan",
    "load_policy": "bidsanon.policy",
    "default_policy": "bidsanon.policy",
    "read_key": "bidsanon.key",
    "anonymize_fiff": "bidsanon.fiff",
    "deface_image": "bidsanon.deface",
    "check_dataset": "bidsanon.check",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bidsanon' has no attribute {name!r}")
