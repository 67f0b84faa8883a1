"""The queue item: what a destination's stream keeps of one delivery, and its stream entries.

``QueueItem`` is ``router.core.outcomes.QueueItemOf`` with its payload decoded: the planner
builds it, the ingest handler encodes it (``ITEM_ENCODER``). A worker reads hundreds of entries
at once (tens of thousands of deliveries when they come from ``/v1/batch``) and keeps them until
they are settled; the re-checks read only ids and times. Decoded payloads held that long were
most of what the garbage collector walked, so a worker reads ``QueuedItem`` (the same struct,
payload left as raw JSON) and decodes the payload (``decoded``) just before its group is encoded.
There is one item struct and one delivery struct, generic in the payload; a test keeps it so.

At rest (``router.core.sealing``, on when ``ROUTER_ENCRYPTION_KEYS`` is set): a queue entry's
``d``/``b`` value, a dead letter's ``d``, an outbox record's ``r`` and a quarantine entry's ``e``
are AES-256-GCM envelopes whose associated data names the role, the destination and the field
(``sealed_for``). Plaintext values from before encryption still read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeAlias

import msgspec

from destinations.base import DeliveryOf
from router.core.outcomes import QueueItem, QueueItemOf
from router.core.sealing import Sealer, Undecryptable, context

__all__ = [
    "DLQ_ROLE",
    "ITEM_DECODER",
    "ITEM_ENCODER",
    "OUTBOX_ROLE",
    "PLAINTEXT",
    "QUARANTINE_ROLE",
    "QUEUE_ROLE",
    "QueueItem",
    "QueueItemOf",
    "QueuedItem",
    "decode_queued",
    "decoded",
    "entry_fields",
    "entry_for",
    "entry_items",
    "replay_entry",
    "sealed_for",
]

QUEUE_ROLE: Final = "queue"
DLQ_ROLE: Final = "dlq"
OUTBOX_ROLE: Final = "outbox"
QUARANTINE_ROLE: Final = "quarantine"
PLAINTEXT: Final = Sealer()
"""Seals nothing, opens only plaintext: the default where no key ring is configured."""


def sealed_for(role: str, destination: str, field: str) -> bytes:
    """The associated data of a sealed field: ``role`` is ``QUEUE_ROLE``..., ``field`` the
    stream entry's field name (``d``, ``b``, ``r``, ``e``)."""
    return context(role, destination, field)


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
        # ``raise ... from exc`` spelled out: mypyc drops the cause of ``raise ... from``.
        error = msgspec.DecodeError("the payload is not valid UTF-8")
        error.__cause__ = exc
        raise error  # noqa: B904 - the cause is set above
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


def entry_for(
    encoded_items: Sequence[bytes], sealer: Sealer = PLAINTEXT, destination: str = ""
) -> dict[str, bytes | str]:
    """The stream entry holding deliveries to one destination (one request's, or several
    requests' packed by the enqueuer), sealed as a whole when ``sealer`` is on (one envelope
    for up to ``MAX_ITEMS_PER_ENTRY`` deliveries).

    One delivery: ``{"d": item}``; several: ``{"b": [item, ...]}``, so a batch of 100 events
    costs one XADD per destination instead of 100. Dead letters always hold one item (``d``).
    """
    if len(encoded_items) == 1:
        name, value = "d", encoded_items[0]
    else:
        name, value = "b", b"[" + b",".join(encoded_items) + b"]"
    return {name: sealer.seal(value, sealed_for(QUEUE_ROLE, destination, name))}


def entry_items(
    fields: dict[str, bytes], sealer: Sealer = PLAINTEXT, destination: str = ""
) -> list[bytes]:
    """The raw JSON of each delivery in a stream entry (``[]`` when it is unreadable);
    ``router.core.sealing.Undecryptable`` when it is sealed and does not open here."""
    if "d" in fields:
        return [sealer.open(fields["d"], sealed_for(QUEUE_ROLE, destination, "d"))]
    try:
        batch = sealer.open(fields.get("b", b""), sealed_for(QUEUE_ROLE, destination, "b"))
        return [bytes(raw) for raw in _RAW_LIST.decode(batch)]
    except msgspec.DecodeError:
        return []


def replay_entry(
    sealer: Sealer, destination: str, fields: dict[bytes, bytes]
) -> dict[str, bytes] | None:
    """The queue entry that replays a dead letter: its item opened as a dead letter and sealed
    for the queue; an undecryptable one (``qd``/``qb``) goes back as it came, sealed for the
    queue, where a key added since may open it. ``None`` when it opens nowhere (kept)."""
    for name in ("d", "b"):
        kept = fields.get(f"q{name}".encode())
        if kept is not None:
            return {name: kept}
    try:
        item = sealer.open(fields.get(b"d", b""), sealed_for(DLQ_ROLE, destination, "d"))
    except Undecryptable:
        return None
    return {"d": sealer.seal(item, sealed_for(QUEUE_ROLE, destination, "d"))}


def entry_fields(entry: Any) -> dict[str, bytes]:
    """The field map of a stream entry as returned by redis-py (bytes keys)."""
    fields: dict[Any, Any] = entry[1]
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in fields.items()}
