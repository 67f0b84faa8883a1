"""Splitting a ``/v1/batch`` body into events: one poisoned value costs only its event
(property-based, no Redis: ``parse_body`` and ``jsonscan.defect`` are pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.ids import normalize_id
from router.core import jsonscan
from router.core.outcomes import Rejection
from router.core.sanitize import sanitize
from router.core.schema import WireEvent
from router.edge.http import HttpError
from router.edge.ingest import _subject_hashes, decoded, parse_body
from router.queue.keys import subject_hash

NOW = datetime(2026, 12, 8, tzinfo=UTC)

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=12,
)
POISONS = {
    "NaN": "invalid_number",
    "-Infinity": "invalid_number",
    "Infinity": "invalid_number",
    "1e400": "invalid_number",
    '"\\ud83d"': "invalid_string",
    '"x\\udfff"': "invalid_string",
    '"tab\there"': "invalid_string",
    '"nul\x00"': "invalid_string",
}


def _event(properties: dict[str, Any], message_id: str) -> str:
    return json.dumps(
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "messageId": message_id,
            "properties": properties,
        }
    )


@given(
    good=st.lists(st.dictionaries(names, values, max_size=4), min_size=1, max_size=5),
    at=st.integers(min_value=0),
    key=names,
    nested=st.booleans(),
    poison=st.sampled_from(sorted(POISONS)),
)
def test_one_poisoned_event_among_good_ones(
    good: list[dict[str, Any]], at: int, key: str, nested: bool, poison: str
) -> None:
    """Every good event decodes; the poisoned one is rejected at its index with the code for
    its defect and the path of the poisoned value."""
    at %= len(good) + 1
    items = [_event(props, f"m{i}") for i, props in enumerate(good)]
    holder = '{"k": [0, ' + poison + "]}" if nested else poison
    bad = '{"type": "track", "event": "E", "anonymousId": "a", "properties": {%s: %s}}'
    items.insert(at, bad % (json.dumps(key), holder))
    body = ('{"batch": [' + ", ".join(items) + "]}").encode("utf-8", "surrogatepass")
    parsed = parse_body(body, None, 32_000, 2_500)
    outcomes = [item for _, item in parsed.items]
    assert len(outcomes) == len(good) + 1
    rejection = outcomes.pop(at)
    assert isinstance(rejection, Rejection)
    assert rejection.code == POISONS[poison]
    assert rejection.path == f"properties.{key}" + (".k[1]" if nested else "")
    assert [o.message_id for o in outcomes if isinstance(o, WireEvent)] == [
        f"m{i}" for i in range(len(good))
    ]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_http_error_or_events(data: bytes) -> None:
    """Garbage never raises anything but an HttpError with a status and code."""
    body = b'{"batch": [' + data + b"]}"
    try:
        parsed = parse_body(body, None, 32_000, 2_500)
    except HttpError as error:
        failure: HttpError | None = error
    else:
        failure = None
        assert all(isinstance(item, WireEvent | Rejection) for _, item in parsed.items)
    if failure is not None:
        assert (failure.status, failure.code) in {(400, "invalid_json"), (400, "too_deep")}


@given(values)
def test_valid_json_has_no_defect(value: Any) -> None:
    """Whatever msgspec accepts, the defect finder finds nothing wrong with."""
    assert jsonscan.defect(msgspec.json.encode({"v": value})) is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": {"b": [1, 2, NaN]}}', ("non_finite", "a.b[2]")),
        (b'{"a": [{}, [], {"c": "\\udc00"}]}', ("lone_surrogate", "a[2].c")),
        (b'{"a": "\\ud83d\\ude00", "b": "\x7f\x01"}', ("control_char", "b")),
        (b'{"a\x02": 1}', ("control_char", "a\ufffd")),
        (b'{"a": "\\\\ud800"}', None),  # an escaped backslash, then the letters ud800
        (b'{"a": [1 2]}', None),  # broken structure: not a defect of one value
        (b"[,]", None),  # a delimiter where a value belongs ends the scan (no endless loop)
        (b'{"a": :}', None),
        (b"1 :", None),
    ],
)
def test_defect_names_the_kind_and_path(body: bytes, expected: tuple[str, str] | None) -> None:
    """The first defective value is named with its field path."""
    assert jsonscan.defect(body) == expected


ids = st.none() | st.text(max_size=12) | st.integers(-(10**6), 10**6) | st.booleans()


@given(user=ids, anonymous=ids, properties=st.dictionaries(names, values, max_size=3))
def test_the_people_read_from_a_raw_event_are_those_sanitizing_finds(
    user: Any, anonymous: Any, properties: dict[str, Any]
) -> None:
    """``_subject_hashes`` reads the ids of an undecoded event as sanitizing gives them: every
    subject hash of the sanitized event that comes from a string id is among them, and none
    is of an id the event does not carry (numbers are left to the lookup after sanitizing)."""
    event = {"type": "track", "event": "E", "userId": user, "anonymousId": anonymous}
    raw = json.dumps(event | {"properties": properties}).encode("utf-8", "surrogatepass")
    parsed = parse_body(b'{"batch": [' + raw + b"]}", None, 32_000, 2_500, decode=False)
    assert [item for _, item in parsed.items] == [None]
    known = _subject_hashes(parsed.items, b"secret")
    wire = decoded(*parsed.items[0])
    if isinstance(wire, Rejection):  # a boolean id: the decoding rejects it
        assert isinstance(user, bool) or isinstance(anonymous, bool)
        return
    outcome = sanitize(wire, route_type=None, received_at=NOW, new_id=lambda: "generated")
    if isinstance(outcome, Rejection):
        return
    strings = [v for v in (user, anonymous) if isinstance(v, str)]
    expected = {i: subject_hash(i, b"secret") for i in outcome.subject_ids if i in known}
    assert expected == {i: known[i] for i in expected}
    assert set(known) <= set(outcome.subject_ids)
    assert {i for i in outcome.subject_ids if any(normalize_id(s) == i for s in strings)} <= set(
        known
    )


@given(st.binary(max_size=200))
def test_reading_the_people_of_garbage_finds_nobody_and_raises_nothing(data: bytes) -> None:
    """An undecodable raw event gives no id (its decoding rejects it later)."""
    found = _subject_hashes([(data, None)], b"")
    assert all(len(h) == 64 for h in found.values())
