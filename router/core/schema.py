"""The wire format: what SDKs post, decoded with msgspec at the boundary.

Segment and RudderStack SDKs post one event (``/v1/track``...) or a batch envelope
(``/v1/batch``). A batch keeps each event as raw JSON so that one bad event is rejected on its
own (with its index) while the others are accepted.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class EventType(StrEnum):
    """The six Segment event types."""

    TRACK = "track"
    IDENTIFY = "identify"
    PAGE = "page"
    SCREEN = "screen"
    GROUP = "group"
    ALIAS = "alias"


ROUTE_TYPES: dict[str, EventType | None] = {
    "track": EventType.TRACK,
    "t": EventType.TRACK,
    "identify": EventType.IDENTIFY,
    "i": EventType.IDENTIFY,
    "page": EventType.PAGE,
    "p": EventType.PAGE,
    "screen": EventType.SCREEN,
    "s": EventType.SCREEN,
    "group": EventType.GROUP,
    "g": EventType.GROUP,
    "alias": EventType.ALIAS,
    "a": EventType.ALIAS,
    "batch": None,
    "b": None,
}
"""Path segment after ``/v1/`` -> event type (``None`` for a batch), aliases included."""

Id = str | int | float | None
Timestamp = str | int | float | None


class WireEvent(msgspec.Struct, omit_defaults=True, rename="camel"):
    """One event as posted. Unknown top-level keys are ignored (they flow nowhere)."""

    type: str | None = None
    message_id: Id = None
    user_id: Id = None
    anonymous_id: Id = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: Timestamp = None
    original_timestamp: Timestamp = None
    sent_at: Timestamp = None
    group_id: Id = None
    previous_id: Id = None
    channel: str | None = None
    write_key: str | None = None


class BatchEnvelope(msgspec.Struct, rename="camel"):
    """``/v1/batch`` body: events stay raw until each is decoded on its own."""

    batch: list[msgspec.Raw]
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    write_key: str | None = None
    sent_at: Timestamp = None


class KeyProbe(msgspec.Struct, rename="camel"):
    """Just the write key of a body, for authentication before full validation."""

    write_key: str | None = None


class IdProbe(msgspec.Struct, rename="camel"):
    """Just the subject ids of an event: the handler reads a batch's people from the raw
    events to look them up before it decodes the events themselves."""

    user_id: Id = None
    anonymous_id: Id = None


WIRE_EVENT_DECODER = msgspec.json.Decoder(WireEvent)
BATCH_DECODER = msgspec.json.Decoder(BatchEnvelope)
KEY_DECODER = msgspec.json.Decoder(KeyProbe)
ID_PROBE_DECODER = msgspec.json.Decoder(IdProbe)


def error_path(message: str) -> str:
    """The field path of a msgspec error message (``... - at `$.context.ip``` -> ``context.ip``)."""
    marker = " - at `$"
    at = message.rfind(marker)
    if at < 0:
        return ""
    return message[at + len(marker) : -1].lstrip(".")


def error_text(message: str) -> str:
    """The msgspec error message without its path suffix."""
    at = message.rfind(" - at `$")
    return message if at < 0 else message[:at]
