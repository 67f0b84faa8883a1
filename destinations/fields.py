"""Allowlist minimization and field transforms. Pure.

A destination lists field paths; everything else is removed. Paths are dotted, with ``[]`` for
"each element of this array": ``properties.products[].product_id``. Listing a path whose value is
an object allows that whole object.

Transforms apply to allowed fields, and a transformed path is allowed in its transformed form
(``userId: tokenize`` sends the token, never the raw id):

- ``drop``: remove the field (useful under an allowed parent object);
- ``hash_sha256``: hex SHA-256 of the trimmed string value;
- ``tokenize``: hex HMAC-SHA256 with the destination's own key (stable per destination, not
  joinable across destinations);
- ``truncate_ip``: IPv4 to /24, IPv6 to /48.

A value a transform cannot handle (an object to hash, an invalid IP) is removed: fail closed.
``compile_allowlist`` runs once per configuration, so no event re-reads the YAML.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import Any, Final

from destinations.errors import FieldPathError

_native: ModuleType | None
try:  # the native walker, when pip could build it (setup.py); else the pure ``_apply``
    import destinations._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None


class Transform(StrEnum):
    """The field transforms a routing file may name."""

    DROP = "drop"
    HASH_SHA256 = "hash_sha256"
    TOKENIZE = "tokenize"
    TRUNCATE_IP = "truncate_ip"


_SEGMENT = re.compile(r"^[^.\[\]\s]+(\[\])?$")


def parse_path(path: str) -> tuple[tuple[str, bool], ...]:
    """Split a path: ``a.b[].c`` -> ``(("a", False), ("b", True), ("c", False))``."""
    if not path or path != path.strip():
        raise FieldPathError("a field path must be a non-empty string without surrounding spaces")
    parts: list[tuple[str, bool]] = []
    for segment in path.split("."):
        if not _SEGMENT.match(segment):
            raise FieldPathError(
                f"invalid segment {segment!r}: use names separated by dots, with [] for arrays"
            )
        each = segment.endswith("[]")
        parts.append((segment[:-2] if each else segment, each))
    return tuple(parts)


class _Dropped:
    """Marker for "remove this value"."""


DROPPED: Final = _Dropped()
_ABSENT: Final = _Dropped()
"""Marker for "no such key" in ``_apply`` (distinct from ``DROPPED`` and from ``None``)."""


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    each: _Node | None = None
    whole: bool = False
    transform: Transform | None = None
    leaf: bool = False
    """Allowed as is: whole, with no child rule and no transform (set once compiled)."""
    rules: tuple[tuple[str, _Node | None], ...] = ()
    """The children in order, ``None`` for a leaf child (copied without a call; set once
    compiled)."""
    native: Any = field(default=None, compare=False, repr=False)
    """This node as the native walker's ``Rule`` (set once compiled, when it is built)."""

    def seal(self) -> None:
        """Compute ``leaf`` and ``rules`` for this node and every node below it."""
        self.leaf = (
            self.whole and not self.children and self.each is None and self.transform is None
        )
        for child in self.children.values():
            child.seal()
        if self.each is not None:
            self.each.seal()
        self.rules = tuple(
            (name, None if child.leaf else child) for name, child in self.children.items()
        )
        if _native is not None:
            self.native = _native.Rule(
                self.transform,
                self.leaf,
                self.whole,
                None if self.each is None else self.each.native,
                tuple((name, None if c is None else c.native) for name, c in self.rules),
            )

    def child(self, name: str) -> _Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = _Node()
        return node


ROUTER_FIELDS: Final = frozenset(
    {"messageId", "type", "timestamp", "originalTimestamp", "sentAt", "receivedAt"}
)
"""Top-level fields written by the router's sanitizer (ids and ISO timestamps), never free text."""


@dataclass(frozen=True)
class Allowlist:
    """A compiled allowlist with its transforms, for one destination."""

    root: _Node
    tokenize_key: bytes
    transformed_paths: frozenset[str]
    fields: tuple[str, ...] = ()
    unscanned_paths: frozenset[str] = field(init=False, repr=False, compare=False)
    """Paths the PII safety net leaves alone: transformed values (a hash must not be
    rewritten) and the fields the router itself generated or validated as ids and times."""
    _copier: Any = field(init=False, repr=False, compare=False)
    """The native ``Copier`` of this allowlist (``None`` on the pure walker)."""

    def __post_init__(self) -> None:
        # Set once here, not as cached properties: the compiled build (mypyc) does not cache
        # those, and built a new Copier for every event.
        unscanned = self.transformed_paths | ROUTER_FIELDS
        copier = None
        if _native is not None and self.root.native is not None:
            top_level = frozenset(p for p in unscanned if "." not in p and "[" not in p)
            copier = _native.Copier(
                self.root.native, self.tokenize_key, apply_transform, DROPPED, top_level
            )
        object.__setattr__(self, "unscanned_paths", unscanned)
        object.__setattr__(self, "_copier", copier)

    def apply(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The event reduced to the allowed fields, transforms applied."""
        copier = self._copier
        if copier is not None:
            return copier.apply(event)  # type: ignore[no-any-return]
        result = _apply(self.root, event, self.tokenize_key)
        return result if isinstance(result, dict) else {}

    def apply_checked(self, event: Mapping[str, Any], min_text: int) -> tuple[dict[str, Any], bool]:
        """``apply``, and whether the PII net must look at the copy: ``False`` when the native
        copy checked every value it copied (but transformed ones and the top-level
        ``unscanned_paths``) and found none that could hold a finding (``min_text``: the net's
        shortest string); always ``True`` on the pure walker."""
        copier = self._copier
        if copier is None:
            return self.apply(event), True
        return copier.apply_checked(event, min_text)  # type: ignore[no-any-return]

    def rule_for(self, path: str) -> str:
        """The listed path that let ``path`` through (bounded: a metric label), or ``other``."""
        best = ""
        for rule in self.fields:
            if (path == rule or path.startswith((rule + ".", rule + "["))) and len(rule) > len(
                best
            ):
                best = rule
        return best or "other"


def compile_allowlist(
    fields: Iterable[str],
    transforms: Mapping[str, Transform | str] | None = None,
    tokenize_key: bytes = b"",
) -> Allowlist:
    """Build the tree once; raises ``FieldPathError`` on a bad path (and ``ValueError`` on a
    transform that is not one of ``Transform``'s values)."""
    fields = tuple(fields)
    root = _Node()
    for path in fields:
        _insert(root, parse_path(path)).whole = True
    chosen = {path: Transform(transform) for path, transform in (transforms or {}).items()}
    for path, transform in chosen.items():
        _insert(root, parse_path(path)).transform = transform
    root.seal()
    transformed = frozenset(p for p, t in chosen.items() if t is not Transform.DROP)
    listed = tuple(dict.fromkeys([*fields, *chosen]))
    return Allowlist(
        root=root, tokenize_key=tokenize_key, transformed_paths=transformed, fields=listed
    )


def _insert(root: _Node, parts: tuple[tuple[str, bool], ...]) -> _Node:
    node = root
    for name, each in parts:
        node = node.child(name)
        if each:
            if node.each is None:
                node.each = _Node()
            node = node.each
    return node


def _apply(node: _Node, value: Any, key: bytes) -> Any:
    """The pure walk of ``Allowlist.apply`` (the native one gives the same answers)."""
    if node.transform is not None:
        return apply_transform(node.transform, value, key)
    if node.leaf:
        return value
    kind = type(value)
    if kind is list:
        if node.each is None:
            return value if node.whole else DROPPED
        each = node.each
        items = []
        for item in value:
            result = _apply(each, item, key)
            if result is not DROPPED:
                items.append(result)
        return items if items or node.whole else DROPPED
    if kind is dict:
        out: dict[str, Any] = dict(value) if node.whole else {}
        for name, child in node.rules:
            item = value.get(name, _ABSENT)  # one lookup; the value itself may be None
            if item is _ABSENT:
                continue
            if child is None:  # a leaf: the common case, without a call
                out[name] = item
                continue
            result = _apply(child, item, key)
            if result is DROPPED:
                out.pop(name, None)
            else:
                out[name] = result
        return out if out or node.whole else DROPPED
    return value if node.whole else DROPPED


def apply_transform(transform: Transform, value: Any, key: bytes) -> Any:
    """One transform on one value; ``DROPPED`` when the value cannot be transformed safely."""
    if transform is Transform.DROP or value is None:
        return DROPPED
    if isinstance(value, dict | list | bool):
        return DROPPED
    text = str(value).strip()
    if transform is Transform.HASH_SHA256:
        return hashlib.sha256(text.encode()).hexdigest()
    if transform is Transform.TOKENIZE:
        return _keyed(key, text)
    return _truncated_ip(text)


@functools.lru_cache(maxsize=4096)
def _truncated_ip(text: str) -> Any:
    """Memoized: an address parse costs more than the lookup, and the addresses of a site's
    visitors recur. (The hashes are not: a native HMAC costs less than a cache miss, and
    tokenized ids such as user ids are mostly new: measured with distinct users.)"""
    return truncate_ip(text) or DROPPED


@functools.lru_cache(maxsize=64)
def _hmac_base(key: bytes) -> Any:
    """The keyed state of ``key``: native (``HmacSha256``, native/sha256.h) when built, else
    hmac's."""
    if _native is None:
        return hmac.new(key, digestmod=hashlib.sha256)
    return _native.HmacSha256(key)


def _keyed(key: bytes, text: str) -> str:
    """HMAC-SHA256 hex of ``text``, from a keyed state prepared once per key."""
    base = _hmac_base(key)
    if _native is None:
        state = base.copy()
        state.update(text.encode())
        return str(state.hexdigest())
    return str(base.hex(text))


def truncate_ip(text: str) -> str | None:
    """IPv4 -> its /24 network address, IPv6 -> its /48; ``None`` for anything else."""
    parts = text.split(".")
    if len(parts) == 4 and all(
        p.isdigit() and p.isascii() and len(p) <= 3 and int(p) <= 255 and (p == "0" or p[0] != "0")
        for p in parts
    ):
        return f"{int(parts[0])}.{int(parts[1])}.{int(parts[2])}.0"
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
