"""Declarative policy schema: each handler module declares its own section.

A section is a dict mapping key names to :class:`Key` (a leaf) or to another dict
(a sub-section). ``policy.py`` assembles the sections, validates study policies against
them, and generates ``configs/default.yaml`` and ``docs/policy.md`` from the docs here,
so the schema is the one place where a policy key is defined.
"""

# No ``from __future__ import annotations`` (named tuples: see bidsanon.records).

from collections.abc import Callable
from typing import Any, NamedTuple, Self

from bidsanon.errors import PolicyError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


class Key(NamedTuple):
    """One policy key (a named tuple: see :mod:`bidsanon.records` for why not a
    dataclass).

    Parameters
    ----------
    default : Any
        Built-in default; its type is the key's type unless ``type`` is given.
    doc : str
        One or two sentences for the annotated default policy and docs/policy.md.
    type : type | tuple of type | None
        Allowed Python type(s) of the value (int values are accepted for float).
    choices : tuple | None
        Allowed values (for strings) or allowed list items.
    min, max : float | None
        Inclusive range for numbers (and for each number in a list).
    nullable : bool
        Whether ``null`` is allowed.
    item : Key | None
        Spec of each list item.
    values : Key | None
        Spec of each value of a free-form mapping (keys are free).
    check : callable | None
        ``check(value) -> str | None``: extra validation, returns an error text.
    """

    default: Any
    doc: str
    type: type | tuple | None = None
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    item: Self | None = None
    values: Self | None = None
    check: Callable[[Any], str | None] | None = None

    @property
    def types(self) -> tuple:
        t = self.type if self.type is not None else type(self.default)
        t = t if isinstance(t, tuple) else (t,)
        if float in t and int not in t:
            t = t + (int,)
        return t


Section = dict  # str -> Key | Section


def defaults(section: Section) -> dict:
    """Return the built-in default values of a section, as plain data."""
    out = {}
    for name, spec in section.items():
        out[name] = defaults(spec) if isinstance(spec, dict) else _copy(spec.default)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def all_paths(section: Section, prefix: str = "") -> list[str]:
    """Every dotted key path of a section (sub-sections included)."""
    paths = []
    for name, spec in section.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if isinstance(spec, dict):
            paths.extend(all_paths(spec, path + "."))
    return paths


def _suggest(path: str, name: str, siblings: list[str], every: list[str]) -> str:
    import difflib  # only for an unknown key: not loaded for every process
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
    if close:
        parent = path.rsplit(".", 1)[0] + "." if "." in path else ""
        return f" (did you mean `{parent}{close[0]}`?)"
    close = difflib.get_close_matches(path, every, n=1, cutoff=0.6)
    if not close:  # a key put in the wrong section: match on its last part
        tails = {p.rsplit(".", 1)[-1]: p for p in every}
        hit = difflib.get_close_matches(name, list(tails), n=1, cutoff=0.8)
        close = [tails[hit[0]]] if hit else []
    return f" (did you mean `{close[0]}`?)" if close else ""


def validate(data: Any, section: Section, source: str = "policy",
             prefix: str = "", _every: list[str] | None = None) -> None:
    """Validate ``data`` against ``section``; raise :class:`PolicyError` on the first fault.

    The message names the source file, the dotted key path and, for an unknown key,
    the closest known key.
    """
    every = _every if _every is not None else all_paths(section)
    if not isinstance(data, dict):
        where = f"`{prefix[:-1]}`" if prefix else "the top level"
        raise PolicyError(f"{where} must be a mapping, got {_describe(data)}", source)
    for name, value in data.items():
        path = f"{prefix}{name}"
        if not isinstance(name, str) or name not in section:
            hint = _suggest(path, str(name), list(section), every)
            raise PolicyError(f"unknown key `{path}`{hint}", source)
        spec = section[name]
        if isinstance(spec, dict):
            validate(value, spec, source, path + ".", every)
        else:
            check_value(value, spec, path, source)


def check_value(value: Any, spec: Key, path: str, source: str) -> None:
    """Check one leaf value against its :class:`Key`."""
    if value is None:
        if spec.nullable:
            return
        raise PolicyError(f"`{path}` must not be null", source)
    types = spec.types
    if isinstance(value, bool) and bool not in types:
        raise PolicyError(f"`{path}` must be {_expected(types)}, got {_describe(value)}", source)
    if not isinstance(value, types):
        raise PolicyError(f"`{path}` must be {_expected(types)}, got {_describe(value)}", source)
    if spec.choices is not None and isinstance(value, str) and value not in spec.choices:
        import difflib
        close = difflib.get_close_matches(value, [str(c) for c in spec.choices], n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise PolicyError(f"`{path}` must be one of {', '.join(map(str, spec.choices))}; "
                          f"got `{value}`{hint}", source)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            raise PolicyError(f"`{path}` must be >= {spec.min}, got {value}", source)
        if spec.max is not None and value > spec.max:
            raise PolicyError(f"`{path}` must be <= {spec.max}, got {value}", source)
    if isinstance(value, list) and spec.item is not None:
        for i, item in enumerate(value):
            check_value(item, spec.item, f"{path}[{i}]", source)
    if isinstance(value, dict) and spec.values is not None:
        for k, v in value.items():
            check_value(v, spec.values, f"{path}.{k}", source)
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise PolicyError(f"`{path}` {problem}", source)


def _expected(types: tuple) -> str:
    names = [_TYPE_NAMES.get(t, t.__name__) for t in types if not (t is int and float in types)]
    return " or ".join(dict.fromkeys(names))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{_TYPE_NAMES.get(type(value), type(value).__name__)} ({value!r})"[:80]


def merge(base: dict, override: dict, section: Section | None = None) -> dict:
    """Deep-merge ``override`` onto ``base``.

    Sub-sections merge recursively; a free-form mapping key (``Key.values``) merges
    entry by entry, each entry replaced whole; every other value is replaced.
    """
    out = _copy(base)
    for name, value in override.items():
        spec = section.get(name) if section is not None else None
        if isinstance(spec, Key):
            if spec.values is not None and isinstance(value, dict) and isinstance(out.get(name), dict):
                out[name] = {**out[name], **_copy(value)}
            else:
                out[name] = _copy(value)
        elif isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = merge(out[name], value, spec if isinstance(spec, dict) else None)
        else:
            out[name] = _copy(value)
    return out
