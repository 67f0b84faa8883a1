"""Field paths: one walker for "which fields does this JSON hold", in allowlist syntax. Pure.

Paths are dotted, with ``[]`` for the elements of an array (``properties.products[].sku``),
as the routing file's ``fields`` write them; an empty object or array is a leaf at its own
path (``properties.tags`` for ``"tags": []``: it has no element). A key that does not look like
a field name (an email or a phone number used as a key, anything with spaces or long digit
runs) becomes ``*``, so no value-like key reaches the data map, the anomaly store, the audit
trail or ``router explain``.

``removed(data, payload)`` is what minimization took away: the one answer ``router explain``
and the audit trail's ``decision`` records both give.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final

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
    """
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
    data_paths: frozenset[str], payload: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """The paths ``payload`` holds and the paths of the data it no longer has (each sorted, at
    most ``MAX_REMOVED``): what left and what minimization took away, in one walk."""
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
