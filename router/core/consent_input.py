"""Consent choices arriving as input, read into records to store. Pure.

The reserved track events ``Segment Consent Preference Updated`` (and the older ``Segment
Consent Preference``) carry the user's new choice in ``context.consent.categoryPreferences``;
``consent_update`` turns it into the record to store (malformed: nothing to store).
``parse_status_query`` reads whose status ``GET /v1/consent/status`` asks for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from consent.errors import DecodeError
from consent.ids import normalize_id
from consent.policy import ConsentPolicy
from consent.records import ConsentRecord
from consent.signals import read_segment
from router.core.outcomes import RejectCode, Rejection
from router.core.sanitize import Event, Limits
from router.core.schema import EventType

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
