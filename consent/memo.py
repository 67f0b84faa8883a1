"""Bounded memos of pure consent work, and the exact keys of JSON values they are keyed by. Pure.

The consent fields of events repeat across people: the same TC string, the same category map,
the same Consent Mode object arrive with every visitor of a site. ``frozen`` turns such a value
into a hashable key that is equal for two values only when every reader would see the same
thing: types are kept (``true``, ``1`` and ``1.0`` are three keys, though Python finds them
equal), and so is the order of an object's members (a reader's votes follow it).

``BoundedMemo`` holds at most ``size`` entries and forgets the oldest first; a memo is never
a source of truth, so forgetting only costs the work again.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")

_TAGGED = (bool, int, float)


class Unkeyable(Exception):  # noqa: N818 - control flow: "do not memoize this one"
    """A value ``frozen`` cannot key exactly (not a JSON value): compute it without a memo."""


def frozen(value: Any) -> Hashable:
    """An exact, hashable key of a JSON value (``dict``, ``list``, ``str``, numbers, ``bool``,
    ``None``); :class:`Unkeyable` for anything else (a tuple, a set, another ``Mapping``...),
    whose readers might treat it differently from the JSON value it resembles."""
    kind = type(value)
    if kind is str or value is None:
        scalar: Hashable = value
        return scalar
    if kind is dict:
        return (dict, tuple([(_key(k), frozen(v)) for k, v in value.items()]))
    if kind is list:
        return (list, tuple([frozen(v) for v in value]))
    if kind in _TAGGED:
        return (kind, value)
    raise Unkeyable(kind.__name__)


def _key(name: Any) -> Hashable:
    if type(name) is str:
        return name
    return (type(name), frozen(name))  # a JSON object's keys are strings; others stay apart


class BoundedMemo(Generic[V]):
    """A dict of at most ``size`` entries; the oldest entry goes first when it is full."""

    __slots__ = ("_entries", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a memo holds at least one entry")
        self.size = size
        self._entries: dict[Hashable, V] = {}

    def get(self, key: Hashable) -> V | None:
        """The value memoized for ``key``, or ``None``."""
        return self._entries.get(key)

    def put(self, key: Hashable, value: V) -> V:
        """Remember ``value`` for ``key`` (forgetting the oldest entry when full); ``value``."""
        entries = self._entries
        if len(entries) >= self.size and key not in entries:
            del entries[next(iter(entries))]
        entries[key] = value
        return value

    def __len__(self) -> int:
        return len(self._entries)
