"""Field paths: one walker for "which fields does this JSON hold", in allowlist syntax. Pure.

Paths are dotted, with ``[]`` for the elements of an array (``properties.products[].sku``),
as the routing file's ``fields`` write them; an empty object or array is a leaf at its own
path (``properties.tags`` for ``"tags": []``: it has no element). A key that does not look like
a field name (an email or a phone number used as a key, anything with spaces or long digit
runs) becomes ``*``, so no value-like key reaches the data map, the anomaly store, the audit
trail or ``router explain``.

``removed(data, payload)`` is what minimization took away: the one answer ``router explain``
and the audit trail's ``decision`` records both give.

``sent_paths(allowlist, data_paths, payload)``: the paths of a destination's payload, memoized
per event shape (the audit's sent and removed paths read it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final

from destinations.fields import Allowlist

_native: ModuleType | None
try:  # the native walker, when pip could build it (setup.py); else the pure one below
    import router.core._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None

MAX_PATHS: Final = 256
MAX_DEPTH: Final = 16
_SEGMENT: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]{0,63}")
_DIGIT_RUN: Final = re.compile(r"[0-9]{5}")
WILDCARD: Final = "*"


_FIELD_NAMES: Final[set[str]] = set()
"""Keys already found to look like field names (the same few recur in every event), bounded;
value-like keys are never kept here."""
_MAX_FIELD_NAMES: Final = 8192


def safe_segment(name: object) -> str:
    """A key as it may appear in a field path: itself if it looks like a field name, else ``*``."""
    if not isinstance(name, str):
        return WILDCARD
    if name in _FIELD_NAMES:
        return name
    if _SEGMENT.fullmatch(name) and not _DIGIT_RUN.search(name):
        if len(_FIELD_NAMES) < _MAX_FIELD_NAMES:
            _FIELD_NAMES.add(name)
        return name
    return WILDCARD


def field_paths(
    value: Any, *, max_paths: int = MAX_PATHS, max_depth: int = MAX_DEPTH
) -> frozenset[str]:
    """Leaf paths of a JSON-like value in allowlist syntax (``a.b[].c``), keys normalized.

    At most ``max_paths`` paths, at most ``max_depth`` levels (deeper values count as a leaf).
    Native when ``router.core._speedups`` is built (the same answers as ``pure_field_paths``).
    """
    if _native is not None:
        paths: frozenset[str] = _native.field_paths(value, max_paths, max_depth)
    else:
        paths = pure_field_paths(value, max_paths=max_paths, max_depth=max_depth)
    return _one_of(paths)


_SHAPES: Final[dict[frozenset[str], frozenset[str]]] = {}
"""Path sets seen, each kept as one object (bounded: then it starts again)."""
_MAX_SHAPES: Final = 4096


def _one_of(paths: frozenset[str]) -> frozenset[str]:
    """The one object of the path sets equal to ``paths``. Events of one shape give equal
    sets, and the memos keyed by them (``sent_paths``, ``_removed``, ``_listed``) compare
    keys: an identical set compares in one step, an equal one element by element."""
    known = _SHAPES.get(paths)
    if known is not None:
        return known
    if len(_SHAPES) >= _MAX_SHAPES:
        _SHAPES.clear()
    _SHAPES[paths] = paths
    return paths


def pure_field_paths(
    value: Any, *, max_paths: int = MAX_PATHS, max_depth: int = MAX_DEPTH
) -> frozenset[str]:
    """``field_paths`` in Python (the fallback, and the reference the native walker is tested
    against)."""
    found: set[str] = set()
    if type(value) is dict:
        _dict_paths(value, "", 0, found, max_paths, max_depth)
    elif type(value) is list:
        _list_paths(value, "[]", 0, found, max_paths, max_depth)
    return frozenset(found)


# The two walkers below run for every event (audit, data map, schema drift): they recurse
# (depth is capped by ``max_depth``) and test exact types, which is several times faster than
# an explicit stack of (value, path, depth) tuples.


def _dict_paths(  # noqa: PLR0917 - positional: the hottest recursion of the ingest
    node: dict[Any, Any], prefix: str, depth: int, found: set[str], max_paths: int, max_depth: int
) -> None:
    depth += 1
    names = _FIELD_NAMES
    for name, child in node.items():
        if len(found) >= max_paths:
            return
        path = prefix + (name if name in names else safe_segment(name))
        kind = type(child)
        if kind is dict and child and depth < max_depth:
            _dict_paths(child, path + ".", depth, found, max_paths, max_depth)
        elif kind is list and child and depth < max_depth:
            _list_paths(child, path + "[]", depth, found, max_paths, max_depth)
        else:
            found.add(path)


def _list_paths(  # noqa: PLR0917 - positional: the hottest recursion of the ingest
    items: list[Any], path: str, depth: int, found: set[str], max_paths: int, max_depth: int
) -> None:
    depth += 1
    for child in items:
        if len(found) >= max_paths:
            return
        kind = type(child)
        if kind is dict and child and depth < max_depth:
            _dict_paths(child, path + ".", depth, found, max_paths, max_depth)
        elif kind is list and child and depth < max_depth:
            _list_paths(child, path + "[]", depth, found, max_paths, max_depth)
        else:
            found.add(path)


@functools.lru_cache(maxsize=4096)
def safe_path(path: str) -> str:
    """A configured or computed path re-checked segment by segment (for paths from elsewhere)."""
    parts = []
    for part in path.split(".")[:MAX_DEPTH]:
        name, brackets, _ = part.partition("[]")
        parts.append(safe_segment(name) + ("[]" * part.count("[]") if brackets else ""))
    return ".".join(parts)


MAX_REMOVED: Final = 100
"""At most this many removed paths are listed (the audit record's bound)."""


def removed(
    data: Mapping[str, Any],
    payload: Mapping[str, Any],
    *,
    data_paths: frozenset[str] | None = None,
) -> list[str]:
    """The paths of ``data`` its minimized form ``payload`` no longer has: sorted, at most
    ``MAX_REMOVED``. ``data_paths``: ``field_paths(data)`` when the caller has it already."""
    return _removed(field_paths(data) if data_paths is None else data_paths, field_paths(payload))


def sent_and_removed(
    data_paths: frozenset[str],
    payload: Mapping[str, Any],
    *,
    sent: frozenset[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The paths ``payload`` holds and the paths of the data it no longer has (each sorted, at
    most ``MAX_REMOVED``): what left and what minimization took away, in one walk.
    ``sent``: ``field_paths(payload)`` (or ``sent_paths``) when the caller has it already."""
    if sent is None:
        sent = field_paths(payload)
    return _listed(sent), _removed(data_paths, sent)


@functools.lru_cache(maxsize=4096)
def _listed(paths: frozenset[str]) -> list[str]:
    """Shared: never change the list."""
    return sorted(paths)[:MAX_REMOVED]


@functools.lru_cache(maxsize=4096)
def _removed(all_paths: frozenset[str], sent: frozenset[str]) -> list[str]:
    """Events of one shape give the same sets. Shared: never change the list."""
    return sorted(all_paths - sent)[:MAX_REMOVED]


# -- what a destination receives, per event shape ----------------------------------------------
#
# A payload is ``allowlist.apply(event)`` passed through the PII net, which only rewrites leaf
# values. Which paths it has is decided by the event's structure, which ``field_paths(event)``
# names exactly (a path is a leaf, an empty container, or a union over array elements, and the
# allowlist keeps or drops by path the same way), except where a value decides: a transform
# drops a value it cannot transform (``null``, a boolean, an object, a malformed IP). So the
# memo's key is the event's path set plus, per transformed field, whether the payload has it;
# it is used only where that key is complete:
# - no transform under an array (``a[].b``): its outcome may differ from element to element;
# - every listed path is a field name (``safe_path`` leaves it alone) and shallower than
#   ``MAX_DEPTH``: normalized or depth-capped keys of different events could otherwise meet;
# - the event has fewer than ``MAX_PATHS`` paths (a capped path set is not its shape).
# Anything else is walked (``field_paths(payload)``), which is always the answer.

_MEMO_SIZE: Final = 4096
"""Shapes remembered per allowlist (then the memo starts afresh)."""
_MAX_ALLOWLISTS: Final = 64


class _Memo:
    """One allowlist's memo: whether it may be used, the transformed fields to probe."""

    __slots__ = ("allowlist", "probes", "shapes", "usable")

    def __init__(self, allowlist: Allowlist) -> None:
        self.allowlist = allowlist  # held: its id() cannot be reused while this memo lives
        self.usable = all("[]" not in p for p in allowlist.transformed_paths) and all(
            safe_path(p) == p and p.count(".") + p.count("[]") < MAX_DEPTH - 1
            for p in allowlist.fields
        )
        self.probes = tuple(tuple(p.split(".")) for p in sorted(allowlist.transformed_paths))
        self.shapes: dict[tuple[frozenset[str], tuple[bool, ...]], frozenset[str]] = {}


_MEMOS: Final[dict[int, _Memo]] = {}


def _memo_of(allowlist: Allowlist) -> _Memo:
    memo = _MEMOS.get(id(allowlist))
    if memo is None or memo.allowlist is not allowlist:
        if len(_MEMOS) >= _MAX_ALLOWLISTS:
            _MEMOS.clear()  # routing files reloaded many times: old allowlists go
        memo = _MEMOS[id(allowlist)] = _Memo(allowlist)
    return memo


def _has(payload: Mapping[str, Any], parts: tuple[str, ...]) -> bool:
    node: Any = payload
    for part in parts:
        if type(node) is not dict or part not in node:
            return False
        node = node[part]
    return True


def sent_paths(
    allowlist: Allowlist, data_paths: frozenset[str], payload: Mapping[str, Any]
) -> frozenset[str]:
    """``field_paths(payload)`` for ``payload`` = ``allowlist`` applied to an event whose
    ``field_paths`` are ``data_paths`` (then through the PII net): memoized per event shape
    where the shape decides it (see above), walked otherwise. Shared: never change it."""
    memo = _memo_of(allowlist)
    if not memo.usable or len(data_paths) >= MAX_PATHS:
        return field_paths(payload)
    key = (data_paths, tuple(_has(payload, probe) for probe in memo.probes))
    found = memo.shapes.get(key)
    if found is None:
        if len(memo.shapes) >= _MEMO_SIZE:
            memo.shapes.clear()
        found = memo.shapes[key] = field_paths(payload)
    return found
