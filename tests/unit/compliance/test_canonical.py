"""``audit_chain.canonical`` writes exactly what ``json.dumps`` writes (sort_keys, compact,
ensure_ascii, allow_nan=False) whichever encoder it takes: msgspec for plain values, json for
the rest. Every chain hash and every verification of a stored trail depends on these bytes.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.compliance import audit_chain
from router.compliance.audit_chain import canonical, canonical_with, plain_json, pure_plain_json


def reference(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def outcome(encode: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", encode(value)
    except (TypeError, ValueError) as exc:
        return "error", type(exc)


ASCII_TEXT = st.text(st.characters(max_codepoint=0x7F), max_size=12)
ANY_TEXT = st.text(max_size=12)  # surrogates, DEL, control characters, non-ASCII
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ASCII_TEXT
    | ANY_TEXT
)
KEYS = ASCII_TEXT | ANY_TEXT | st.sampled_from(["event", "subjects", "consent_at", "a", "A"])
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(KEYS, inner, max_size=5)
    ),
    max_leaves=30,
)
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | ASCII_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ASCII_TEXT, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=800)
@given(JSON)
def test_canonical_is_json_dumps_on_any_json(value: Any) -> None:
    assert outcome(canonical, value) == outcome(reference, value)


@settings(max_examples=500)
@given(PLAIN)
def test_canonical_is_json_dumps_on_plain_json(value: Any) -> None:
    # Plain values are the msgspec path (unless DEL is in a string): the fast path is the one
    # tested here, not json's.
    assert canonical(value) == reference(value)


@settings(max_examples=800)
@given(JSON)
def test_native_check_agrees_with_the_pure_one(value: Any) -> None:
    for depth in (0, 1, 3, audit_chain.PLAIN_DEPTH):
        assert plain_json(value, depth) is pure_plain_json(value, depth)


class Kind(StrEnum):
    DECISION = "decision"


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ({"b": [1, True, None, 'x\u0001\n"\\/'], "a": (2, -3)}, True),
        ({"count": 2**70}, True),
        ({"a": 1.0}, False),  # msgspec would write 1.0 the same, but not 1e+16
        ({"a": 1e16}, False),
        ({"a": "\x7f"}, False),  # msgspec writes DEL raw, json escapes it
        ({"a": "é"}, False),
        ({"é": 1}, False),
        ({1: "a"}, False),
        ({"kind": Kind.DECISION}, False),  # a str subclass: json's business
        (OrderedDict(a=1), False),
        ({"at": datetime(2026, 1, 1, tzinfo=UTC)}, False),
        ([[[[1]]]], True),
    ],
)
def test_what_is_plain(value: Any, plain: bool) -> None:
    assert plain_json(value) is plain
    assert pure_plain_json(value) is plain
    assert outcome(canonical, value) == outcome(reference, value)


def test_the_json_path_keeps_its_answers() -> None:
    assert (
        canonical({"a": 1e16, "b": "\x7f", "c": "é"}) == b'{"a":1e+16,"b":"\\u007f","c":"\\u00e9"}'
    )
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical({"a": math.nan})
    deep: Any = 1
    for _ in range(audit_chain.PLAIN_DEPTH + 5):
        deep = [deep]
    assert not plain_json(deep)
    assert canonical(deep) == reference(deep)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular"):
        canonical(circular)


def test_a_decisions_record_takes_the_fast_path() -> None:
    events = [
        {"event": f"{n:032x}", "subjects": [f"{n + 1:032x}"], "consent_at": None} for n in range(3)
    ]
    record = {
        "stage": "ingest",
        "destination": "amplitude",
        "decision": "deliver",
        "sent": ["properties.total", "event"],
        "count": 3,
        "events": events,
        "consent": {"sources": ["tcf"]},
    }
    assert plain_json(record)
    assert canonical(record) == reference(record)


@settings(max_examples=500)
@given(
    st.dictionaries(KEYS.filter(lambda k: k != "events"), JSON, max_size=6),
    st.lists(PLAIN | JSON, max_size=5),
)
def test_canonical_with_writes_what_canonical_writes(
    fields: dict[str, Any], items: list[Any]
) -> None:
    """A record put together from its items' canonical bytes is the record's canonical bytes,
    whichever writer any part takes (floats, non-ASCII, DEL; keys on both sides of
    ``events``), and fails as ``canonical`` fails (NaN)."""

    def joined(_: Any) -> bytes:
        return canonical_with(fields, "events", [canonical(i) for i in items])

    assert outcome(joined, None) == outcome(canonical, {**fields, "events": items})


def test_canonical_with_refuses_a_field_of_the_items_name() -> None:
    with pytest.raises(ValueError, match="events"):
        canonical_with({"events": 1}, "events", [])
