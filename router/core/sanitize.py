"""Validate and sanitize one decoded event: pure, from ``WireEvent`` to ``Event`` or a rejection.

What it does, in order:
- checks the type and the fields each type requires (``event`` for track, an identity...);
- strips control characters, NFC-normalizes strings and keys, caps string length, caps nesting
  depth (deeper events are rejected, not truncated);
- parses timestamps, sets ``receivedAt``, generates a ``messageId`` when absent, and corrects
  the client's clock skew from ``sentAt`` as Segment does:
  ``timestamp = receivedAt - (sentAt - originalTimestamp)``.

Nothing after this module reads raw input: the ``Event`` it returns is trusted.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import msgspec

from consent.ids import normalize_id
from router.core.outcomes import RejectCode, Rejection
from router.core.schema import EventType, Timestamp, WireEvent

_native: ModuleType | None
try:  # the native byte scan, when pip could build it (setup.py); else the pure checks below
    import router.core._speedups as _native
except ImportError:  # pragma: no cover - a build without a C compiler
    _native = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-event limits (the request limits live with the HTTP edge)."""

    max_string_chars: int = 8192
    max_key_chars: int = 256
    max_depth: int = 16
    max_id_chars: int = 256


class Event(msgspec.Struct, frozen=True):
    """A validated, sanitized event.

    ``data`` is the Segment-shaped event (``type``, ``messageId``, ``userId``, ``properties``,
    ``context``, ISO timestamps...) that minimization reads from.
    """

    type: EventType
    message_id: str
    timestamp: datetime
    received_at: datetime
    data: dict[str, Any]
    user_id: str | None = None
    anonymous_id: str | None = None
    name: str | None = None

    @property
    def subject_ids(self) -> tuple[str, ...]:
        """The identifiers consent and suppression are looked up by (the non-empty ones of
        ``user_id`` and ``anonymous_id``, in that order)."""
        user, anonymous = self.user_id, self.anonymous_id
        if user:
            return (user, anonymous) if anonymous else (user,)
        return (anonymous,) if anonymous else ()


class Rejected(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TYPES = {t.value: t for t in EventType}


def _clean_str(value: str, cap: int) -> str:
    # Fast path: printable ASCII (the usual case) needs neither NFC nor control stripping.
    if not (value.isascii() and value.isprintable()):
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        if _CONTROL.search(value):
            value = _CONTROL.sub("", value)
    if len(value) > cap:
        value = value[:cap]
    return value


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """A bad value deep in a tree; the path is collected while the stack unwinds."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parts: list[str] = []

    def rejection(self, root: str) -> Rejection:
        return Rejection(self.code, root + "".join(reversed(self.parts)), self.message)


def _clean(value: Any, limits: Limits, depth: int) -> Any:
    """A cleaned copy of a JSON value. No path is built unless something is wrong."""
    kind = type(value)
    if kind is str:
        return _clean_str(value, limits.max_string_chars)
    if kind is dict:
        if depth >= limits.max_depth:
            raise _Invalid(RejectCode.TOO_DEEP, f"nesting deeper than {limits.max_depth} levels")
        out: dict[str, Any] = {}
        for key, item in value.items():
            clean_key = _clean_str(key, limits.max_key_chars)
            try:
                out[clean_key] = _clean(item, limits, depth + 1)
            except _Invalid as invalid:
                invalid.parts.append(f".{clean_key}")
                raise
        return out
    if kind is list:
        if depth >= limits.max_depth:
            raise _Invalid(RejectCode.TOO_DEEP, f"nesting deeper than {limits.max_depth} levels")
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_clean(item, limits, depth + 1))
            except _Invalid as invalid:
                invalid.parts.append(f"[{index}]")
                raise
        return items
    if kind is float and not math.isfinite(value):
        raise _Invalid(RejectCode.INVALID_NUMBER, "numbers must be finite")
    if kind in (int, float, bool) or value is None:
        return value
    raise _Invalid(RejectCode.INVALID_VALUE, f"unsupported value {kind.__name__}")


class _KeyTooLong(Exception):  # noqa: N818 - internal control flow
    """A key over the cap: the tree needs the full cleaning walk after all."""


def _check_depth(value: Any, limits: Limits, depth: int) -> None:
    """Only the nesting limit (and key lengths), for trees whose strings need no cleaning.

    Mirrors ``_clean``: the same limit at the same depth, the same path on failure.
    """
    if type(value) is dict:
        if value and max(map(len, value)) > limits.max_key_chars:
            raise _KeyTooLong
        for key, item in value.items():
            if type(item) is dict or type(item) is list:
                try:
                    _descend(item, limits, depth)
                except _Invalid as invalid:
                    invalid.parts.append(f".{key}")
                    raise
        return
    for index, item in enumerate(value):
        if type(item) is dict or type(item) is list:
            try:
                _descend(item, limits, depth)
            except _Invalid as invalid:
                invalid.parts.append(f"[{index}]")
                raise


def _descend(item: Any, limits: Limits, depth: int) -> None:
    if depth >= limits.max_depth:
        raise _Invalid(RejectCode.TOO_DEEP, f"nesting deeper than {limits.max_depth} levels")
    _check_depth(item, limits, depth + 1)


def clean_source(raw: bytes, limits: Limits) -> bool:
    """Whether an event's raw JSON can hold no string that sanitizing would change.

    True for printable ASCII without escapes that decode to control or non-ASCII characters,
    shorter than the string cap: then sanitizing reduces to the depth check.
    """
    return (
        len(raw) <= limits.max_string_chars
        and raw.isascii()
        and b"\x7f" not in raw
        and (
            b"\\" not in raw  # no escape at all: the usual event
            or (b"\\u" not in raw and b"\\b" not in raw and b"\\f" not in raw)
        )
    )


@functools.lru_cache(maxsize=16)
def _long_string(max_key_chars: int) -> re.Pattern[bytes]:
    return re.compile(b'"[^"]{%d}' % (max_key_chars + 1))


_BLOCK = 128
"""A quote-free run of ``2 * _BLOCK - 1`` bytes or more covers a whole aligned block of
``_BLOCK`` bytes: when every aligned block holds a quote, no run is that long."""


def _no_long_run(raw: bytes, max_key_chars: int) -> bool:
    """Whether no quote of ``raw`` is followed by more than ``max_key_chars`` bytes without a
    quote. Every aligned block holding a quote rules such a run out at the cost of a few
    ``find`` calls; the regular expression (which stops at every quote) decides otherwise."""
    if max_key_chars >= 2 * _BLOCK - 2:
        find = raw.find
        for start in range(0, len(raw) - _BLOCK + 1, _BLOCK):  # whole blocks only
            if find(b'"', start, start + _BLOCK) < 0:
                break
        else:
            return True
    return not _long_string(max_key_chars).search(raw)


def shallow_source(raw: bytes, limits: Limits) -> bool:
    """Whether an event's raw JSON is certainly within the depth and key-length limits.

    At most ``max_depth`` opening brackets in all (brackets inside strings only make the count
    larger) and no quoted run longer than the key cap: then no value can be nested deeper
    than the limit and no key is too long, so a trusted event needs no walk at all.
    """
    return raw.count(b"{") + raw.count(b"[") <= limits.max_depth and _no_long_run(
        raw, limits.max_key_chars
    )


def _source_flags(raw: bytes | None, limits: Limits) -> tuple[bool, bool]:
    """``clean_source`` and (when it holds) ``shallow_source`` of ``raw``: one native pass
    over the bytes when ``router.core._speedups`` is built (the same answers)."""
    if raw is None:
        return False, False
    if _native is not None:
        flags = _native.source_flags(
            raw, limits.max_string_chars, limits.max_depth, limits.max_key_chars
        )
        return bool(flags & _native.TRUSTED), bool(flags & _native.SHALLOW)
    trusted = clean_source(raw, limits)
    return trusted, trusted and shallow_source(raw, limits)


def _clean_field(value: dict[str, Any], limits: Limits, name: str, trusted: bool) -> dict[str, Any]:
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


def _id(value: Any, path: str, limits: Limits) -> str | None:
    if type(value) is not str:  # a string (the usual id) goes straight to normalizing
        if value is None:
            return None
        if isinstance(value, bool):
            raise Rejected(
                Rejection(RejectCode.INVALID_ID, path, "an id must be a string or a number")
            )
        if isinstance(value, float):
            if not math.isfinite(value):
                raise Rejected(Rejection(RejectCode.INVALID_ID, path, "an id must be finite"))
            value = int(value) if value.is_integer() else value
        value = str(value)
    text = normalize_id(value)  # the form every hash of an id is taken of
    if len(text) > limits.max_id_chars:
        raise Rejected(
            Rejection(
                RejectCode.INVALID_ID, path, f"ids are limited to {limits.max_id_chars} characters"
            )
        )
    return text or None


def parse_timestamp(value: Timestamp, path: str) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string (or epoch seconds/milliseconds)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Rejected(
            Rejection(RejectCode.INVALID_TIMESTAMP, path, "expected an ISO 8601 timestamp")
        )
    if isinstance(value, int | float):
        seconds = float(value) / 1000 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise Rejected(
                Rejection(RejectCode.INVALID_TIMESTAMP, path, "timestamp out of range")
            ) from exc
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Rejected(
            Rejection(RejectCode.INVALID_TIMESTAMP, path, "expected an ISO 8601 timestamp")
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise Rejected(
            Rejection(RejectCode.INVALID_TIMESTAMP, path, "timestamp out of range")
        ) from exc


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, as Segment writes timestamps: written
    natively for a moment already in UTC (every one sanitizing makes; 0.1 us against 2-3 for
    ``isoformat``), else ``pure_iso``."""
    if _native is not None:
        text: str | None = _native.iso_millis(moment)
        if text is not None:
            return text
    return pure_iso(moment)


@functools.lru_cache(maxsize=4096)
def pure_iso(moment: datetime) -> str:
    """``iso`` through ``isoformat``. Memoized: a request's ``receivedAt`` and a batch's
    ``sentAt`` are the same for each of its events, and formatting costs ten times a lookup."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_FUTURE = timedelta(days=365 * 10)
"""How far after its receipt an event's time may lie."""


def _required(value: str | None, path: str, what: str) -> None:
    if not value:
        raise Rejected(Rejection(RejectCode.MISSING_FIELD, path, f"{what} is required"))


def sanitize(
    wire: WireEvent,
    *,
    route_type: EventType | None,
    received_at: datetime,
    new_id: Callable[[], str],
    limits: Limits = Limits(),
    batch_context: Mapping[str, Any] | None = None,
    batch_integrations: Mapping[str, Any] | None = None,
    batch_sent_at: Timestamp = None,
    raw: bytes | None = None,
) -> Event | Rejection:
    """Validate and normalize one event; a ``Rejection`` says why it cannot be accepted.

    ``raw`` (the event's JSON as received) lets a clean event skip the string walk.
    """
    trusted, shallow = _source_flags(raw, limits)
    try:
        return _sanitize(
            wire,
            trusted=trusted,
            shallow=shallow,
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


def _sanitize(
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

    user_id = _id(wire.user_id, "userId", limits)
    anonymous_id = _id(wire.anonymous_id, "anonymousId", limits)
    if not user_id and not anonymous_id:
        raise Rejected(
            Rejection(RejectCode.MISSING_IDENTITY, "userId", "userId or anonymousId is required")
        )
    message_id = _id(wire.message_id, "messageId", limits) or new_id()

    data: dict[str, Any] = {"type": str(event_type), "messageId": message_id}  # its value
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
        group_id = _id(wire.group_id, "groupId", limits)
        _required(group_id, "groupId", "groupId")
        data["groupId"] = group_id
    elif event_type is EventType.ALIAS:
        previous_id = _id(wire.previous_id, "previousId", limits)
        _required(previous_id, "previousId", "previousId")
        _required(user_id, "userId", "userId")
        data["previousId"] = previous_id

    # Batch-level context / integrations were not part of the event's raw bytes: merged with
    # them, the event's own are cleaned in full; alone, they are trusted like the rest.
    context = {**batch_context, **(wire.context or {})} if batch_context else wire.context
    integrations = (
        {**batch_integrations, **(wire.integrations or {})}
        if batch_integrations
        else wire.integrations
    )
    for key, value, own in (
        ("properties", wire.properties, True),
        ("traits", wire.traits, True),
        ("context", context, not batch_context),
        ("integrations", integrations, not batch_integrations),
    ):
        if value:
            field_trusted = trusted and own
            data[key] = (
                value
                if field_trusted and shallow
                else _clean_field(value, limits, key, field_trusted)
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
    if timestamp.year < 1971 or timestamp > received_at + _FUTURE:
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
