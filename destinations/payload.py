"""Small helpers the connectors share for reading payloads. Pure."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import msgspec

CONTACT_IDENTIFIERS: Mapping[str, str] = MappingProxyType(
    {
        "traits.email": "email",
        "context.traits.email": "email",
        "traits.phone": "phone",
        "context.traits.phone": "phone",
        "context.ip": "ip",
    }
)
"""The identifier fields of the ad platforms that match people by contact data (GA4 user_data,
Meta and TikTok user matching): each normalizes and hashes them itself."""
HASHED_CONTACT_FIELDS: frozenset[str] = frozenset(
    path for path, kind in CONTACT_IDENTIFIERS.items() if kind in ("email", "phone")
)
"""The contact identifiers GA4, Meta and TikTok only ever send SHA-256 hashed."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_JSON_SCALARS = frozenset({str, int, float, bool, list})
_NUMBERS = (int, float)  # a tuple: ``int | float`` would build a union at every call


def mapping(value: Any) -> Mapping[str, Any]:
    """The value if it is a mapping, else an empty one."""
    # A payload holds dicts, lists and scalars: the ABC check (slow) only for anything else.
    kind = type(value)
    if kind is dict:
        return value  # type: ignore[no-any-return]
    if value is None or kind in _JSON_SCALARS:
        return {}
    return value if isinstance(value, Mapping) else {}


@functools.lru_cache(maxsize=1024)
def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(dotted.split("."))


def path_value(payload: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path, or ``None``."""
    node: Any = payload
    for part in _parts(dotted):
        if type(node) is not dict and not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def trait(payload: Mapping[str, Any], name: str) -> Any:
    """A trait from ``traits`` (identify) or ``context.traits`` (every other call)."""
    traits = mapping(payload.get("traits"))
    if name in traits:
        return traits[name]
    return mapping(mapping(payload.get("context")).get("traits")).get(name)


def id_text(value: Any) -> str | None:
    """A string id or label: strings as is, integers as digits, anything else absent."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, _NUMBERS) and not isinstance(value, bool)


def finite_number(value: Any) -> float | int | None:
    """A finite int or float (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        return None
    return value if math.isfinite(value) else None


def millis(timestamp: datetime) -> int:
    """Unix time in milliseconds."""
    return (timestamp - _EPOCH) // _MILLISECOND


def json_object(body: bytes) -> dict[str, Any]:
    """A response body as a JSON object, or an empty dict."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value by lower-case name, whatever the case it was sent in."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
