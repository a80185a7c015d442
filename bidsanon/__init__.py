"""bidsanon: de-identify BIDS neuroimaging datasets for public sharing.

The Python API mirrors the command line:

- :func:`run_dataset` (``bidsanon run``), :func:`build_plan`, :func:`load_policy`;
- :func:`anonymize_fiff` (``bidsanon fiff``), :func:`deface_image` (``bidsanon deface``);
- :func:`check_dataset` (``bidsanon check``); :func:`read_key`.

Heavy modules are imported on first use, so ``import bidsanon`` stays fast.
"""

from __future__ import annotations

import importlib

from bidsanon._version import __version__

#: public name -> (module, attribute)
_API = {
    "run_dataset": ("bidsanon.run", "run_dataset"),
    "build_plan": ("bidsanon.plan", "build_plan"),
    "load_policy": ("bidsanon.policy", "load_policy"),
    "default_policy": ("bidsanon.policy", "default_policy"),
    "read_key": ("bidsanon.key", "read_key"),
    "anonymize_fiff": ("bidsanon.formats.fiff", "anonymize_file"),
    "deface_image": ("bidsanon.deface", "deface_image"),
    "check_dataset": ("bidsanon.check", "check_dataset"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'bidsanon' has no attribute {name!r}")
