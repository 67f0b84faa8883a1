"""Consent choices arriving as input, read into records to store. Pure.

The reserved track events ``Segment Consent Preference Updated`` (and the older ``Segment
Consent Preference``) carry the user's new choice in ``context.consent.categoryPreferences``;
``consent_update`` turns it into the record to store (malformed: nothing to store).
``parse_consent_body`` reads a ``POST /v1/consent`` body into hashed subjects and a record, or
a ``Rejection`` (stable code, field path, message) that the edge answers with a 400.
``parse_status_query`` reads whose status ``GET /v1/consent/status`` asks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, NamedTuple

import msgspec

from consent.errors import DecodeError
from consent.ids import normalize_id, subject_key
from consent.policy import ConsentPolicy
from consent.records import ConsentRecord
from consent.signals import read_segment
from router.core.outcomes import RejectCode, Rejection
from router.core.sanitize import Event, Limits
from router.core.schema import EventType, error_path, error_text

RESERVED_EVENTS = frozenset({"Segment Consent Preference Updated", "Segment Consent Preference"})
SOURCE_EVENT = "segment_event"


def consent_update(event: Event, policy: ConsentPolicy) -> ConsentRecord | None:
    """The stored record a reserved consent event asks for; ``None`` for any other event."""
    if event.type is not EventType.TRACK or event.name not in RESERVED_EVENTS:
        return None
    context = event.data.get("context")
    if not isinstance(context, dict):
        return None
    try:
        reading = read_segment(context, policy)
    except DecodeError:
        return None
    if reading is None or not reading.votes:
        return None
    return ConsentRecord.build(
        reading.votes,
        source=SOURCE_EVENT,
        updated_at=event.timestamp,
        received_at=event.received_at,
        max_age_days=policy.max_age_days,
    )


_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")


def field_rejection(error: msgspec.ValidationError) -> Rejection:
    """``invalid_field`` with the field's path (a missing or unknown field's name too)."""
    text = str(error)
    path = error_path(text)
    named = _NAMED_FIELD.search(text)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return Rejection(RejectCode.INVALID_FIELD, path, error_text(text))


# --- the consent API's body (``POST /v1/consent``) ---


SOURCE_API = "api"
_SOURCE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

Id = Annotated[str, msgspec.Meta(max_length=512)]


class ConsentBody(msgspec.Struct, frozen=True):
    """``POST /v1/consent``: whose consent, the category choices, when, from where."""

    categories: dict[Annotated[str, msgspec.Meta(max_length=128)], bool]
    user_id: Id | int | None = msgspec.field(default=None, name="userId")
    anonymous_id: Id | int | None = msgspec.field(default=None, name="anonymousId")
    timestamp: str | None = None
    source: str | None = None
    write_key: str | None = msgspec.field(default=None, name="writeKey")


_BODY_DECODER = msgspec.json.Decoder(ConsentBody)
_KEY_DECODER = msgspec.json.Decoder(dict[str, Any])


def body_write_key(body: bytes) -> str | None:
    """The ``writeKey`` member of a body, if any (for authentication before validation)."""
    try:
        key = _KEY_DECODER.decode(body).get("writeKey")
    except (msgspec.DecodeError, RecursionError):
        return None
    return key if isinstance(key, str) else None


class ConsentRequest(NamedTuple):
    """A valid ``POST /v1/consent``: hashed subjects, the record, and the ids as given (for
    the audit trail's keyed tokens; never stored)."""

    subjects: list[str]
    record: ConsentRecord
    ids: list[str]


def parse_consent_body(
    body: bytes, policy: ConsentPolicy, received_at: datetime, subject_secret: bytes = b""
) -> ConsentRequest | Rejection:
    """Hashed subject ids and the record to store, or why the body is refused."""
    try:
        parsed = _BODY_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        return field_rejection(exc)
    except (msgspec.DecodeError, RecursionError):
        return Rejection(RejectCode.INVALID_JSON, "", "the body is not valid JSON")
    ids = [normalize_id(str(i)) for i in (parsed.user_id, parsed.anonymous_id) if i is not None]
    ids = [i for i in ids if i]
    if not ids:
        return Rejection(RejectCode.MISSING_IDENTITY, "userId", "userId or anonymousId is required")
    votes: dict[str, bool] = {}
    for cmp_id, granted in parsed.categories.items():
        category = policy.category_of(cmp_id)
        if category is not None:
            votes[category] = votes.get(category, True) and granted
    if not votes:
        return Rejection(
            RejectCode.UNKNOWN_CATEGORIES,
            "categories",
            "no key of `categories` is a configured category or category id",
        )
    source = SOURCE_API if parsed.source is None else parsed.source
    if not _SOURCE.match(source):
        return Rejection(RejectCode.INVALID_SOURCE, "source", "source: up to 32 of a-z 0-9 _ . -")
    updated_at = received_at if parsed.timestamp is None else _timestamp(parsed.timestamp)
    if updated_at is None:
        return Rejection(
            RejectCode.INVALID_TIMESTAMP, "timestamp", "expected an ISO 8601 timestamp"
        )
    record = ConsentRecord.build(
        votes,
        source=source,
        updated_at=updated_at,
        received_at=received_at,
        max_age_days=policy.max_age_days,
    )
    if record.expires_at <= received_at:
        return Rejection(
            RejectCode.CONSENT_EXPIRED,
            "timestamp",
            f"the timestamp is older than max_age_days ({policy.max_age_days})",
        )
    unique = list(dict.fromkeys(ids))
    return ConsentRequest([subject_key(i, subject_secret) for i in unique], record, unique)


def _timestamp(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# --- whose consent status is asked for (``GET /v1/consent/status``) ---


MAX_ID_CHARS: Final = Limits().max_id_chars
STATUS_IDS: Final = (("userId", "user_id"), ("anonymousId", "anonymous_id"))
"""The query parameters of ``GET /v1/consent/status`` naming the person."""


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """Whose consent status is asked for: normalized ids, at least one."""

    user_id: str | None = None
    anonymous_id: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """The ids given, user id first."""
        return tuple(i for i in (self.user_id, self.anonymous_id) if i)


def parse_status_query(
    items: Iterable[tuple[str, str]], *, max_id_chars: int = MAX_ID_CHARS
) -> StatusQuery | Rejection:
    """The person of ``GET /v1/consent/status?userId=..&anonymousId=..``.

    Each id is normalized as ingest normalizes ids (``normalize_id``); an empty one counts as
    absent (a page may template an empty ``userId`` for a visitor who is not logged in). Other
    parameters (``writeKey``, cache busters) are ignored. A Rejection when no id is left
    (``missing_identity``), or an id is given twice or is too long (``invalid_id``)."""
    given: dict[str, list[str]] = {}
    for name, value in items:
        given.setdefault(name, []).append(value)
    found: dict[str, str | None] = {}
    for name, attribute in STATUS_IDS:
        values = given.get(name, [])
        if len(values) > 1:
            return Rejection(RejectCode.INVALID_ID, name, f"give {name} once")
        text = normalize_id(values[0]) if values else ""
        if len(text) > max_id_chars:
            return Rejection(
                RejectCode.INVALID_ID, name, f"ids are limited to {max_id_chars} characters"
            )
        found[attribute] = text or None
    query = StatusQuery(**found)
    if not query.ids:
        return Rejection(
            RejectCode.MISSING_IDENTITY, "userId", "give userId or anonymousId (or both)"
        )
    return query
