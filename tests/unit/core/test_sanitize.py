"""Validation and sanitizing of one event (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.outcomes import RejectCode, Rejection
from router.core.sanitize import Event, Limits, clean_source, sanitize, shallow_source
from router.core.schema import EventType, WireEvent

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def run(data: dict[str, Any], **kwargs: Any) -> Event | Rejection:
    """Sanitize a dict as if it were a batch item."""
    wire = msgspec.convert(data, WireEvent)
    return sanitize(wire, route_type=None, received_at=NOW, new_id=lambda: "generated", **kwargs)


def accepted(data: dict[str, Any], **kwargs: Any) -> Event:
    """Sanitize, asserting it is accepted."""
    result = run(data, **kwargs)
    assert isinstance(result, Event), result
    return result


def test_strips_control_characters_and_normalizes_to_nfc() -> None:
    """Control characters go, decomposed accents become composed, tab and newline stay."""
    event = accepted(
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "properties": {"n": "Cafe\u0301\x00\x07 a\tb\n"},
        }
    )
    assert event.data["properties"]["n"] == "Caf\u00e9 a\tb\n"


def test_caps_string_length() -> None:
    """Strings longer than the cap are truncated."""
    event = accepted(
        {"type": "track", "event": "E", "anonymousId": "a", "properties": {"s": "x" * 100}},
        limits=Limits(max_string_chars=10),
    )
    assert event.data["properties"]["s"] == "x" * 10


def test_rejects_nesting_deeper_than_limit_with_path() -> None:
    """Too deep is rejected (not truncated), naming where."""
    deep: Any = 1
    for _ in range(5):
        deep = {"k": deep}
    result = run(
        {"type": "track", "event": "E", "anonymousId": "a", "properties": deep},
        limits=Limits(max_depth=4),
    )
    assert isinstance(result, Rejection)
    assert result.code == "too_deep"
    assert result.path.startswith("properties.k.k")


def test_generates_message_id_and_sets_received_at() -> None:
    """A missing messageId is generated; receivedAt is the server time."""
    event = accepted({"type": "identify", "userId": "u"})
    assert event.message_id == "generated"
    assert event.data["receivedAt"] == "2026-11-22T12:00:00.000Z"


def test_corrects_clock_skew_from_sent_at() -> None:
    """timestamp = receivedAt - (sentAt - originalTimestamp), as Segment does."""
    event = accepted(
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "timestamp": "2026-11-22T13:00:00+01:00",
            "sentAt": "2026-11-22T13:00:05+01:00",
        }
    )
    assert event.timestamp == NOW - timedelta(seconds=5)
    assert event.data["originalTimestamp"] == "2026-11-22T12:00:00.000Z"


def test_batch_sent_at_applies_to_every_event() -> None:
    """The envelope's sentAt corrects each event of a batch."""
    wire = msgspec.convert(
        {"type": "track", "event": "E", "anonymousId": "a", "timestamp": "2026-11-22T11:00:00Z"},
        WireEvent,
    )
    event = sanitize(
        wire,
        route_type=None,
        received_at=NOW,
        new_id=lambda: "x",
        batch_sent_at="2026-11-22T11:00:30Z",
    )
    assert isinstance(event, Event)
    assert event.timestamp == NOW - timedelta(seconds=30)


def test_numeric_ids_become_strings_and_null_anonymous_id_is_fine() -> None:
    """SDKs send numbers as ids and anonymousId null."""
    event = accepted({"type": "track", "event": "E", "userId": 42, "anonymousId": None})
    assert event.user_id == "42"
    assert event.anonymous_id is None
    assert "anonymousId" not in event.data


def test_merges_batch_context_under_the_event_context() -> None:
    """The batch context applies to each event; the event's own keys win."""
    wire = msgspec.convert(
        {"type": "track", "event": "E", "anonymousId": "a", "context": {"ip": "1.1.1.1"}}, WireEvent
    )
    event = sanitize(
        wire,
        route_type=None,
        received_at=NOW,
        new_id=lambda: "x",
        batch_context={"ip": "9.9.9.9", "locale": "fr"},
    )
    assert isinstance(event, Event)
    assert event.data["context"] == {"ip": "1.1.1.1", "locale": "fr"}


def test_rejects_timestamp_that_is_not_iso() -> None:
    """An unparseable timestamp names its field."""
    result = run({"type": "track", "event": "E", "anonymousId": "a", "timestamp": "12/31/2025"})
    assert result == Rejection(
        RejectCode.INVALID_TIMESTAMP, "timestamp", "expected an ISO 8601 timestamp"
    )


def test_route_type_wins_over_body_type() -> None:
    """/v1/page makes a page whatever the body says."""
    wire = msgspec.convert({"type": "track", "anonymousId": "a", "name": "Home"}, WireEvent)
    event = sanitize(wire, route_type=EventType.PAGE, received_at=NOW, new_id=lambda: "x")
    assert isinstance(event, Event)
    assert event.type is EventType.PAGE
    assert event.name == "Home"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["track", "identify", "page", "screen", "group", "alias", "x", ""]
            ),
            "event": st.text(max_size=20),
            "userId": st.one_of(st.none(), st.text(max_size=10), st.integers()),
            "anonymousId": st.one_of(st.none(), st.text(max_size=10)),
            "groupId": st.text(max_size=5),
            "previousId": st.text(max_size=5),
            "timestamp": st.one_of(st.text(max_size=30), st.integers(), st.floats()),
            "sentAt": st.text(max_size=30),
            "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=5),
            "context": st.dictionaries(st.text(max_size=8), json_values, max_size=5),
        },
    )
)
def test_any_input_gives_an_event_or_a_rejection(data: dict[str, Any]) -> None:
    """Whatever the input, sanitize returns a value; it never raises."""
    try:
        wire = msgspec.convert(data, WireEvent)
    except msgspec.ValidationError:
        return
    result = sanitize(wire, route_type=None, received_at=NOW, new_id=lambda: "x")
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Event):
        msgspec.json.encode(result.data)
        assert result.data["messageId"]


def _both(data: dict[str, Any], limits: Limits) -> tuple[Event | Rejection, Event | Rejection]:
    """Sanitize with and without the raw-bytes fast path."""
    raw = msgspec.json.encode(data)
    wire = msgspec.json.decode(raw, type=WireEvent)
    slow = sanitize(wire, route_type=None, received_at=NOW, new_id=lambda: "x", limits=limits)
    fast = sanitize(
        wire, route_type=None, received_at=NOW, new_id=lambda: "x", limits=limits, raw=raw
    )
    return slow, fast


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=300), json_values, max_size=6),
    st.integers(min_value=2, max_value=6),
)
def test_fast_path_gives_the_same_result_as_the_full_walk(
    properties: dict[str, Any], depth: int
) -> None:
    """Whether the raw bytes let sanitize skip the string walk or not, the outcome is equal."""
    data = {
        "type": "track",
        "event": "E",
        "anonymousId": "a",
        "messageId": "m",
        "properties": properties,
    }
    limits = Limits(max_depth=depth, max_string_chars=4096)
    slow, fast = _both(data, limits)
    if isinstance(slow, Rejection):
        assert isinstance(fast, Rejection)
        assert (fast.code, fast.path) == (slow.code, slow.path)
    else:
        assert isinstance(fast, Event)
        assert fast.data == slow.data


def test_clean_source_detects_what_needs_cleaning() -> None:
    """Escapes that decode to control or non-ASCII characters force the full walk."""
    limits = Limits()
    assert clean_source(b'{"a": "plain text"}', limits)
    assert not clean_source(b'{"a": "caf\\u00e9"}', limits)
    assert not clean_source('{"a": "café"}'.encode(), limits)
    assert not clean_source(b'{"a": "bell\\b"}', limits)
    assert not clean_source(b'{"a": "' + b"x" * 9000 + b'"}', limits)


def test_shallow_source_bounds_depth_and_key_length() -> None:
    """No walk is skipped unless the bytes prove the depth and key limits hold."""
    limits = Limits(max_depth=3, max_key_chars=4)
    assert shallow_source(b'{"a":{"b":["c"]}}', limits)
    assert not shallow_source(b'{"a":{"b":[{}]}}', limits)
    assert not shallow_source(b'{"a":"[[[["}', limits)  # brackets in strings count too
    assert shallow_source(b'{"abcd":"x"}', limits)
    assert not shallow_source(b'{"a":[12345]}', limits)  # any long run between quotes: walk
    assert not shallow_source(b'{"abcde":1}', limits)


def test_fast_path_still_rejects_too_deep_and_truncates_long_keys() -> None:
    """Events beyond the shortcut's bounds take the walks and get the same treatment."""
    limits = Limits(max_depth=3, max_key_chars=4)
    deep = {"type": "track", "event": "E", "anonymousId": "a", "properties": {"a": {"b": {}}}}
    slow, fast = _both(deep, limits)
    assert isinstance(slow, Rejection)
    assert isinstance(fast, Rejection)
    assert (fast.code, fast.path) == (slow.code, slow.path) == ("too_deep", "properties.a.b")
    long_key = {"type": "track", "event": "E", "anonymousId": "a", "properties": {"abcdef": 1}}
    slow, fast = _both(long_key, limits)
    assert isinstance(fast, Event)
    assert isinstance(slow, Event)
    assert fast.data["properties"] == slow.data["properties"] == {"abcd": 1}


def test_batch_context_is_cleaned_even_when_the_event_is_clean() -> None:
    """The fast path covers the event's own bytes, not the merged batch context."""
    raw = b'{"type": "track", "event": "E", "anonymousId": "a"}'
    wire = msgspec.json.decode(raw, type=WireEvent)
    event = sanitize(
        wire,
        route_type=None,
        received_at=NOW,
        new_id=lambda: "x",
        raw=raw,
        batch_context={"note": "bell\x07 and Cafe\u0301"},
    )
    assert isinstance(event, Event)
    assert event.data["context"] == {"note": "bell and Caf\u00e9"}
