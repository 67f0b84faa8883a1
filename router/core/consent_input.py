"""Consent choices arriving as input, read into records to store. Pure.

The reserved track events ``Segment Consent Preference Updated`` (and the older ``Segment
Consent Preference``) carry the user's new choice in ``context.consent.categoryPreferences``;
``consent_update`` turns it into the record to store (malformed: nothing to store).
"""

from __future__ import annotations

from consent.errors import DecodeError
from consent.policy import ConsentPolicy
from consent.records import ConsentRecord
from consent.signals import read_segment
from router.core.sanitize import Event
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
