"""The one bounded-label policy: what may label a span, a metric series or a log line.

Keys are a fixed set; values must be shaped like what the router itself produces, so user ids,
IPs, emails and consent strings cannot reach telemetry:

- ``source``, ``destination``: ids from the routing file, short identifiers (``safe_value``);
- ``route``, ``reason``, ``status``, ``type``, ``code``, ``stage``, ``kind``: codes from bounded
  vocabularies (``invalid_json``, ``consent_withdrawn``, ``http_400``, ``analytics_js.invoke``);
- ``field``: a field path in allowlist syntax (``properties.items[].sku``): the allowlist rule
  that let a value through or a connector's own field name, never a key of the event.

Unbounded inputs are bucketed where they arise, before they become a label (an unknown field
falls under ``other`` by ``Allowlist.rule_for``, an unknown SDK metric under ``other``). A value
that still does not fit its key's shape is refused here: the attribute or label is left out (a
metric series then merges with its neighbours), never rewritten. A key outside the set is a
programming error for ``Stats.add`` and is dropped from anything else.

Spans, metrics (``/metrics`` and OTLP alike) and the JSON logs all go through these functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

LABEL_KEYS: Final = frozenset(
    {"route", "source", "destination", "type", "reason", "code", "stage", "status", "kind", "field"}
)
"""Every key a metric series or a log line may be labelled with."""
CODE_KEYS: Final = frozenset({"route", "reason", "status", "type", "code", "stage", "kind"})
"""Keys whose values are codes: lower case, digits, ``_``, ``:`` and ``.`` only."""
LOG_KEYS: Final = LABEL_KEYS | {"error", "count", "path", "config", "port", "consumer"}
"""What a log line may carry from ``extra``: the labels, plus operational values (an
exception's class name, a count, a configuration file, a port, a consumer name)."""

SPAN_KEYS: Final[Mapping[str, str]] = {
    "route": "router.route",
    "source": "router.source",
    "destination": "router.destination",
    "event_type": "router.event_type",
    "reason": "router.reason",
    "status": "http.response.status_code",
    "method": "http.request.method",
}
"""Short names accepted by ``span_attributes`` and the span attribute each one becomes."""
EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias", "batch"})
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_SAFE_VALUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_CODE: Final = re.compile(r"[a-z0-9][a-z0-9_:.]{0,47}")
_SEGMENT: Final = r"[A-Za-z0-9_$][A-Za-z0-9_$-]{0,63}(?:\[\])*"
_FIELD_PATH: Final = re.compile(rf"(?=.{{1,160}}$){_SEGMENT}(?:\.{_SEGMENT}){{0,15}}")
_LONG_DIGITS: Final = re.compile(r"[0-9]{7}")  # a phone or account number, never an identifier
_SPAN_ATTRIBUTES: Final = frozenset(SPAN_KEYS.values())
_SPAN_CODES: Final = frozenset({SPAN_KEYS["route"], SPAN_KEYS["reason"]})


def safe_value(value: object, *, code: bool = False) -> bool:
    """Whether a string is short and shaped like an identifier (no ``@``, spaces, long digit
    runs...), or with ``code``, like a lower-case code."""
    pattern = _CODE if code else _SAFE_VALUE
    return (
        isinstance(value, str)
        and pattern.fullmatch(value) is not None
        and _LONG_DIGITS.search(value) is None
    )


def label_allowed(key: str, value: str) -> bool:
    """Whether ``value`` may label ``key`` (a key of ``LABEL_KEYS``)."""
    if key == "field":
        return _FIELD_PATH.fullmatch(value) is not None and _LONG_DIGITS.search(value) is None
    return key in LABEL_KEYS and safe_value(value, code=key in CODE_KEYS)


def metric_labels(labels: Mapping[str, object]) -> dict[str, str]:
    """The labels of a metric series: allowed keys with allowed values, as text."""
    kept: dict[str, str] = {}
    for key, value in labels.items():
        text = str(value)
        if label_allowed(key, text):
            kept[key] = text
    return kept


def log_fields(extra: Mapping[str, Any]) -> dict[str, Any]:
    """What a log record's extras may show: ``LOG_KEYS`` only, labels with allowed values."""
    kept: dict[str, Any] = {}
    for key in LOG_KEYS & extra.keys():
        value = extra[key]
        if key not in LABEL_KEYS or label_allowed(key, str(value)):
            kept[key] = value
    return kept


def span_attributes(**values: object) -> dict[str, AttributeValue]:
    """The span attributes for these short names; unknown keys and unsafe values are dropped."""
    attributes: dict[str, AttributeValue] = {}
    for name, value in values.items():
        key = SPAN_KEYS.get(name)
        if key is None or value is None:
            continue
        if name == "status":
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                attributes[key] = value
        elif name == "method":
            if isinstance(value, str) and value.upper() in HTTP_METHODS:
                attributes[key] = value.upper()
        elif name == "event_type":
            if value in EVENT_TYPES:
                attributes[key] = str(value)
        elif safe_value(value, code=name in CODE_KEYS):
            attributes[key] = str(value)
    return attributes


def finished_span_attributes(attributes: Mapping[str, Any] | None) -> dict[str, AttributeValue]:
    """Re-check a finished span's attributes by their full key: allowed keys, safe values."""
    kept: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if key not in _SPAN_ATTRIBUTES:
            continue
        code = key in _SPAN_CODES
        if (isinstance(value, int) and not isinstance(value, bool)) or safe_value(value, code=code):
            kept[key] = value
    return kept
