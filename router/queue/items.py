"""The queue item: what a destination's stream keeps of one delivery, and its stream entries.

``QueueItem`` is ``router.core.outcomes.QueueItemOf`` with its payload decoded: the planner
builds it, the ingest handler encodes it (``ITEM_ENCODER``). A worker reads hundreds of entries
at once (tens of thousands of deliveries when they come from ``/v1/batch``) and keeps them until
they are settled; the re-checks read only ids and times. Decoded payloads held that long were
most of what the garbage collector walked, so a worker reads ``QueuedItem`` (the same struct,
payload left as raw JSON) and decodes the payload (``decoded``) just before its group is encoded.
There is one item struct and one delivery struct, generic in the payload; a test keeps it so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import msgspec

from destinations.base import DeliveryOf
from router.core.outcomes import QueueItem, QueueItemOf

__all__ = [
    "ITEM_DECODER",
    "ITEM_ENCODER",
    "QueueItem",
    "QueueItemOf",
    "QueuedItem",
    "decode_queued",
    "decoded",
    "entry_fields",
    "entry_for",
    "entry_items",
]

QueuedItem: TypeAlias = QueueItemOf[msgspec.Raw]
"""A queue item as a worker first reads it: the payload left as raw JSON."""

ITEM_ENCODER = msgspec.json.Encoder()
ITEM_DECODER = msgspec.json.Decoder(QueueItem)

_QUEUED_DECODER = msgspec.json.Decoder(QueuedItem)
_PAYLOAD_DECODER = msgspec.json.Decoder(dict[str, Any])
_OPEN_BRACE = ord("{")


def decode_queued(data: bytes) -> QueuedItem | None:
    """A stream entry's delivery with its payload undecoded; ``None`` when it is not a queue
    item (what ``ITEM_DECODER`` refuses: malformed JSON or UTF-8, a missing or mistyped field, a
    payload that is not an object)."""
    try:
        queued = _QUEUED_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 raises the latter
        return None
    if memoryview(queued.delivery.payload)[0] != _OPEN_BRACE:  # a JSON value: never empty
        return None
    return queued


def decoded(queued: QueuedItem) -> QueueItem:
    """The whole item; ``msgspec.DecodeError`` when the payload is not valid UTF-8 (the only
    thing ``decode_queued`` lets through that ``ITEM_DECODER`` refuses)."""
    head = queued.delivery
    try:
        payload = _PAYLOAD_DECODER.decode(head.payload)
    except UnicodeDecodeError as exc:  # msgspec's own error type for invalid UTF-8
        raise msgspec.DecodeError("the payload is not valid UTF-8") from exc
    delivery = DeliveryOf(
        message_id=head.message_id,
        type=head.type,
        timestamp=head.timestamp,
        payload=payload,
        event=head.event,
        consent=head.consent,
    )
    return QueueItemOf(
        delivery=delivery,
        subjects=queued.subjects,
        requires=queued.requires,
        accepted_at=queued.accepted_at,
        trace=queued.trace,
        pii=queued.pii,
    )


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def entry_for(encoded_items: Sequence[bytes]) -> dict[str, bytes | str]:
    """The stream entry holding deliveries to one destination (one request's, or several
    requests' packed by the enqueuer).

    One delivery: ``{"d": item}``; several: ``{"b": [item, ...]}``, so a batch of 100 events
    costs one XADD per destination instead of 100. Dead letters always hold one item (``d``).
    """
    if len(encoded_items) == 1:
        return {"d": encoded_items[0]}
    return {"b": b"[" + b",".join(encoded_items) + b"]"}


def entry_items(fields: dict[str, bytes]) -> list[bytes]:
    """The raw JSON of each delivery in a stream entry (``[]`` when it is unreadable)."""
    if "d" in fields:
        return [fields["d"]]
    try:
        return [bytes(raw) for raw in _RAW_LIST.decode(fields.get("b", b""))]
    except msgspec.DecodeError:
        return []


def entry_fields(entry: Any) -> dict[str, bytes]:
    """The field map of a stream entry as returned by redis-py (bytes keys)."""
    fields: dict[Any, Any] = entry[1]
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in fields.items()}
