"""The cheaper raw scans, id checks and field handling of ``sanitize`` give exactly what the
old code gave.

``reference_shallow_source``, ``reference_id`` and ``reference_sanitize`` are the code before
the aligned block pre-check, the string id fast path and the uncopied fields (commit 2bfc166),
kept verbatim (over the module's unchanged helpers) as the oracle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consent.ids import normalize_id
from router.core import sanitize as sanitize_module
from router.core.outcomes import RejectCode, Rejection
from router.core.sanitize import (
    _TYPES,
    Event,
    Limits,
    Rejected,
    _check_depth,
    _clean,
    _clean_str,
    _Invalid,
    _KeyTooLong,
    _required,
    clean_source,
    iso,
    parse_timestamp,
    sanitize,
    shallow_source,
)
from router.core.schema import EventType, Timestamp, WireEvent


def reference_shallow_source(raw: bytes, limits: Limits) -> bool:
    """``shallow_source`` before the aligned block pre-check."""
    long_string = re.compile(b'"[^"]{%d}' % (limits.max_key_chars + 1))
    return raw.count(b"{") + raw.count(b"[") <= limits.max_depth and not long_string.search(raw)


def reference_id(value: Any, path: str, limits: Limits) -> str | None:
    """``sanitize._id`` before the string fast path."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Rejected(Rejection(RejectCode.INVALID_ID, path, "an id must be a string or a number"))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Rejected(Rejection(RejectCode.INVALID_ID, path, "an id must be finite"))
        value = int(value) if value.is_integer() else value
    text = normalize_id(str(value))
    if len(text) > limits.max_id_chars:
        raise Rejected(
            Rejection(
                RejectCode.INVALID_ID, path, f"ids are limited to {limits.max_id_chars} characters"
            )
        )
    return text or None


# --- the old sanitize itself, over the module's unchanged helpers ---


def reference_clean_field(
    value: dict[str, Any], limits: Limits, name: str, *, trusted: bool, shallow: bool = False
) -> dict[str, Any]:
    """``_clean_field`` before the shortcuts."""
    if trusted and shallow:
        return value
    try:
        if trusted:
            try:
                _check_depth(value, limits, 2)
            except _KeyTooLong:
                pass
            else:
                return value
        cleaned: dict[str, Any] = _clean(value, limits, 1)
    except _Invalid as invalid:
        raise Rejected(invalid.rejection(name)) from None
    return cleaned


def reference_sanitize(
    wire: WireEvent,
    *,
    route_type: EventType | None,
    received_at: datetime,
    new_id: Callable[[], str],
    limits: Limits,
    batch_context: Mapping[str, Any] | None = None,
    batch_integrations: Mapping[str, Any] | None = None,
    batch_sent_at: Timestamp = None,
    raw: bytes | None = None,
) -> Event | Rejection:
    """``sanitize`` before the shortcuts (commit 2bfc166)."""
    trusted = raw is not None and clean_source(raw, limits)
    try:
        return reference_inner(
            wire,
            trusted=trusted,
            shallow=trusted and raw is not None and reference_shallow_source(raw, limits),
            route_type=route_type,
            received_at=received_at,
            new_id=new_id,
            limits=limits,
            batch_context=batch_context,
            batch_integrations=batch_integrations,
            batch_sent_at=batch_sent_at,
        )
    except Rejected as rejected:
        return rejected.rejection
    except RecursionError:
        return Rejection(RejectCode.TOO_DEEP, "", f"nesting deeper than {limits.max_depth} levels")


def reference_inner(
    wire: WireEvent,
    *,
    trusted: bool,
    shallow: bool,
    route_type: EventType | None,
    received_at: datetime,
    new_id: Callable[[], str],
    limits: Limits,
    batch_context: Mapping[str, Any] | None,
    batch_integrations: Mapping[str, Any] | None,
    batch_sent_at: Timestamp,
) -> Event:
    """``_sanitize`` before the shortcuts."""
    if route_type is not None:
        event_type = route_type
    else:
        if not wire.type:
            raise Rejected(
                Rejection(RejectCode.MISSING_FIELD, "type", "every batch item needs a type")
            )
        found = _TYPES.get(wire.type.strip().lower())
        if found is None:
            raise Rejected(
                Rejection(
                    RejectCode.INVALID_TYPE,
                    "type",
                    "type must be one of track, identify, page, screen, group, alias",
                )
            )
        event_type = found

    user_id = reference_id(wire.user_id, "userId", limits)
    anonymous_id = reference_id(wire.anonymous_id, "anonymousId", limits)
    if not user_id and not anonymous_id:
        raise Rejected(
            Rejection(RejectCode.MISSING_IDENTITY, "userId", "userId or anonymousId is required")
        )
    message_id = reference_id(wire.message_id, "messageId", limits) or new_id()

    data: dict[str, Any] = {"type": event_type.value, "messageId": message_id}
    if user_id:
        data["userId"] = user_id
    if anonymous_id:
        data["anonymousId"] = anonymous_id

    name: str | None = None
    if event_type is EventType.TRACK:
        name = _clean_str(wire.event or "", limits.max_string_chars).strip()
        _required(name, "event", "event (the name of a track call)")
        data["event"] = name
    elif event_type in (EventType.PAGE, EventType.SCREEN):
        if wire.name:
            name = _clean_str(wire.name, limits.max_string_chars)
            data["name"] = name
        if wire.category:
            data["category"] = _clean_str(wire.category, limits.max_string_chars)
    elif event_type is EventType.GROUP:
        group_id = reference_id(wire.group_id, "groupId", limits)
        _required(group_id, "groupId", "groupId")
        data["groupId"] = group_id
    elif event_type is EventType.ALIAS:
        previous_id = reference_id(wire.previous_id, "previousId", limits)
        _required(previous_id, "previousId", "previousId")
        _required(user_id, "userId", "userId")
        data["previousId"] = previous_id

    context: dict[str, Any] = dict(batch_context or {})
    context.update(wire.context or {})
    integrations: dict[str, Any] = dict(batch_integrations or {})
    integrations.update(wire.integrations or {})
    for key, value in (
        ("properties", wire.properties),
        ("traits", wire.traits),
        ("context", context),
        ("integrations", integrations),
    ):
        # Merged batch-level context / integrations were not part of the event's raw bytes.
        from_batch = (key == "context" and batch_context) or (
            key == "integrations" and batch_integrations
        )
        if value:
            data[key] = reference_clean_field(
                value, limits, key, trusted=trusted and not from_batch, shallow=shallow
            )
    if wire.channel:
        data["channel"] = _clean_str(wire.channel, 64)

    client_time = parse_timestamp(wire.original_timestamp, "originalTimestamp") or parse_timestamp(
        wire.timestamp, "timestamp"
    )
    sent_at = parse_timestamp(wire.sent_at, "sentAt") or parse_timestamp(batch_sent_at, "sentAt")
    timestamp = received_at if client_time is None else client_time
    if client_time is not None and sent_at is not None:
        try:
            timestamp = received_at - (sent_at - client_time)
        except OverflowError:
            timestamp = client_time
    if timestamp.year < 1971 or timestamp > received_at + timedelta(days=365 * 10):
        raise Rejected(
            Rejection(
                RejectCode.INVALID_TIMESTAMP, "timestamp", "timestamp is outside plausible range"
            )
        )
    data["timestamp"] = iso(timestamp)
    if client_time is not None:
        data["originalTimestamp"] = iso(client_time)
    if sent_at is not None:
        data["sentAt"] = iso(sent_at)
    data["receivedAt"] = iso(received_at)

    return Event(
        type=event_type,
        message_id=message_id,
        timestamp=timestamp,
        received_at=received_at,
        data=data,
        user_id=user_id,
        anonymous_id=anonymous_id,
        name=name,
    )


KEY_CAPS = [0, 5, 126, 127, 200, 253, 254, 255, 256, 257, 300, 1000]
segments = st.one_of(
    st.sampled_from([b'"', b'"', b"{", b"[", b"]}", b":", b","]),
    st.integers(0, 700).map(lambda n: b"a" * n),
    st.binary(max_size=40),
)
raw_events = st.lists(segments, max_size=40).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(raw_events, st.sampled_from(KEY_CAPS), st.sampled_from([1, 4, 16, 64]))
def test_shallow_source_answers_as_the_reference(raw: bytes, key_cap: int, depth: int) -> None:
    """Quote-free runs of every length around the block size and the key cap, anywhere."""
    limits = Limits(max_key_chars=key_cap, max_depth=depth)
    assert shallow_source(raw, limits) == reference_shallow_source(raw, limits)


@pytest.mark.parametrize("offset", [0, 1, 64, 127, 128, 129, 255])
@pytest.mark.parametrize("run", [254, 255, 256, 257, 258, 400])
def test_shallow_source_finds_a_long_run_wherever_it_starts(offset: int, run: int) -> None:
    """A run just over the key cap is found whatever its alignment to the blocks."""
    raw = b'{"k":"' + b"x" * offset + b'","' + b"y" * run + b'":1}'
    limits = Limits(max_key_chars=256)
    assert shallow_source(raw, limits) == reference_shallow_source(raw, limits)
    assert shallow_source(raw, limits) is (run <= 256)


@pytest.mark.parametrize("key_cap", [200, 236, 240, 253, 254, 255, 256, 300])
def test_shallow_source_finds_runs_at_every_alignment(key_cap: int) -> None:
    """Runs of the cap and just over it, starting at every offset of two blocks, ending the
    event or not: the block pre-check never hides one the expression would find."""
    limits = Limits(max_key_chars=key_cap)
    for run in (key_cap, key_cap + 1, key_cap + 2):
        for offset in range(260):
            for tail in (b"", b'"', b'"}'):
                raw = b"x" * offset + b'"' + b"y" * run + tail
                assert shallow_source(raw, limits) == reference_shallow_source(raw, limits), (
                    run,
                    offset,
                    tail,
                )


ids = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.text(alphabet=" \t\x00\x7fe\u0301abc", max_size=20),
)


@settings(max_examples=2000, deadline=None)
@given(ids, st.sampled_from([1, 8, 256]))
def test_ids_are_checked_as_by_the_reference(value: Any, cap: int) -> None:
    """Every id (string, number, bool, non-finite, too long) gives the same id or rejection."""
    limits = Limits(max_id_chars=cap)
    try:
        expected: str | Rejection | None = reference_id(value, "userId", limits)
    except Rejected as rejected:
        expected = rejected.rejection
    try:
        got: str | Rejection | None = sanitize_module._id(value, "userId", limits)
    except Rejected as rejected:
        got = rejected.rejection
    assert got == expected


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CLEAN = "abcXYZ019 .-_/:"
DIRTY = ["caf\u00e9", "a\x00b", "tab\there", "\x7f", "e\u0301", "k" * 300]


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """JSON values with strings drawn from ``text``, nested a few levels."""
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=10,
    )


clean_texts = st.text(alphabet=CLEAN, max_size=12)
mostly_clean = st.one_of(clean_texts, clean_texts, clean_texts, st.sampled_from(DIRTY))
dirty_texts = st.one_of(clean_texts, st.sampled_from(DIRTY), st.text(max_size=6))
own_objects = st.dictionaries(mostly_clean, json_values(mostly_clean), max_size=4)
batch_objects = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(dirty_texts, json_values(dirty_texts), min_size=1, max_size=3),
)
wire_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"]),
        "anonymousId": st.one_of(clean_texts, st.none(), st.integers(), st.floats()),
    },
    optional={
        "event": mostly_clean,
        "name": mostly_clean,
        "category": mostly_clean,
        "userId": st.one_of(st.none(), mostly_clean, st.integers()),
        "messageId": mostly_clean,
        "groupId": mostly_clean,
        "previousId": mostly_clean,
        "timestamp": st.sampled_from(["2026-11-22T11:59:00Z", "2026-11-22T11:59:00", "bad", 1e12]),
        "originalTimestamp": st.sampled_from(["2026-11-22T11:58:00.5+01:00", ""]),
        "sentAt": st.sampled_from(["2026-11-22T11:59:30Z", 1763812800]),
        "channel": st.one_of(mostly_clean, st.just("c" * 80)),
        "properties": own_objects,
        "traits": own_objects,
        "context": own_objects,
        "integrations": st.one_of(own_objects, st.just({"All": False, "ga4": True})),
    },
)


_TRACK = {"type": "track", "event": "E", "anonymousId": "a"}
_SMALL = Limits(max_depth=3, max_key_chars=4)


@example({**_TRACK, "properties": {"abcdef": 1}}, None, None, None, None, _SMALL, True)
@example({**_TRACK, "traits": {"a": {"b": {"c": 1}}}}, None, None, None, None, _SMALL, True)
@example({**_TRACK, "context": {"a": "b"}}, {"k": "a\x00b"}, None, None, None, Limits(), True)
@example({**_TRACK, "integrations": {"a": 1}}, None, {"k\x7f": 1}, None, None, Limits(), True)
@example({**_TRACK, "context": {"a": "b"}}, {"a": "c", "b": 1}, None, None, None, Limits(), True)
@settings(max_examples=1500, deadline=None)
@given(
    wire_events,
    batch_objects,
    batch_objects,
    st.sampled_from([None, "2026-11-22T11:59:45Z", "bad"]),
    st.sampled_from([None, "track"]),
    st.sampled_from(
        [
            Limits(),
            Limits(max_depth=3, max_key_chars=4),
            Limits(max_depth=3, max_key_chars=4, max_string_chars=20),
        ]
    ),
    st.booleans(),
)
def test_sanitize_gives_what_the_reference_gives(
    data: dict[str, Any],
    batch_context: dict[str, Any] | None,
    batch_integrations: dict[str, Any] | None,
    batch_sent_at: str | None,
    route: str | None,
    limits: Limits,
    with_raw: bool,
) -> None:
    """Event for event (member order included) or rejection for rejection, with and without
    the raw bytes' shortcuts, with and without batch-level context and integrations."""
    raw = msgspec.json.encode(data)
    try:
        wire = msgspec.json.decode(raw, type=WireEvent)
    except msgspec.ValidationError:
        return
    route_type = EventType(route) if route else None
    common: dict[str, Any] = {
        "route_type": route_type,
        "received_at": NOW,
        "new_id": lambda: "generated",
        "limits": limits,
        "batch_context": batch_context,
        "batch_integrations": batch_integrations,
        "batch_sent_at": batch_sent_at,
        "raw": raw if with_raw else None,
    }
    expected = reference_sanitize(wire, **common)
    got = sanitize(wire, **common)
    if isinstance(expected, Rejection):
        assert got == expected
    else:
        assert isinstance(got, Event)
        assert msgspec.json.encode(got) == msgspec.json.encode(expected)
