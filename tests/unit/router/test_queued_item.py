"""A worker reads queue items with their payload undecoded (``QueuedItem``): the same items,
the same refusals as ``ITEM_DECODER``, and no struct for the garbage collector to walk."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import msgspec
import pytest

from destinations.base import ConsentFacts, Delivery
from router.queue import (
    ITEM_DECODER,
    ITEM_ENCODER,
    QueuedDelivery,
    QueuedItem,
    QueueItem,
    decode_queued,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _fields(struct: type[msgspec.Struct]) -> list[tuple[str, str, object, object]]:
    return [
        (f.name, f.encode_name, f.default, f.default_factory)
        for f in msgspec.structs.fields(struct)
    ]


def test_the_lazy_structs_mirror_queue_item_and_delivery_field_for_field() -> None:
    """Same names, wire names, order, defaults and types (the payload aside): a field added to
    QueueItem or Delivery must be added here too."""
    assert _fields(QueuedItem) == _fields(QueueItem)
    assert _fields(QueuedDelivery) == _fields(Delivery)
    types = {f.name: f.type for f in msgspec.structs.fields(QueuedDelivery)}
    assert types.pop("payload") is msgspec.Raw
    assert types == {
        f.name: f.type for f in msgspec.structs.fields(Delivery) if f.name != "payload"
    }
    item_types = {f.name: f.type for f in msgspec.structs.fields(QueuedItem)}
    assert item_types.pop("delivery") is QueuedDelivery
    assert item_types == {
        f.name: f.type for f in msgspec.structs.fields(QueueItem) if f.name != "delivery"
    }


ITEMS = [
    QueueItem(
        delivery=Delivery(
            message_id="m1",
            type="track",
            timestamp=T0,
            payload={"event": "x", "properties": {"products": [{"sku": "a"}]}, "n": 1.5},
            event="x",
            consent=ConsentFacts(granted=("analytics",), gpc=True),
        ),
        subjects=("s1", "s2"),
        requires=("analytics",),
        accepted_at=T0,
        trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        pii=("email",),
    ),
    QueueItem(delivery=Delivery(message_id="m2", type="page", timestamp=T0, payload={})),
]


@pytest.mark.parametrize("item", ITEMS)
def test_a_queued_item_becomes_the_queue_item_that_was_written(item: QueueItem) -> None:
    raw = ITEM_ENCODER.encode(item)
    queued = decode_queued(raw)
    assert queued is not None
    assert queued.item() == item == ITEM_DECODER.decode(raw)
    assert (queued.subjects, queued.requires, queued.accepted_at, queued.trace) == (
        item.subjects,
        item.requires,
        item.accepted_at,
        item.trace,
    )
    assert queued.delivery.timestamp == item.delivery.timestamp
    assert not gc.is_tracked(queued)
    assert not gc.is_tracked(queued.delivery)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"subjects": ["s"]}',
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "x", "payload": {}}}',
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": [1]}}',
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": "text"}}',
        b'{"delivery": {"message_id": 7, "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": {}}}',
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": {"a": "\\x"}}}',
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": {}}, "accepted_at": 5}',
        b'{"delivery": {"message_id": "m\xff", "type": "track",'
        b' "timestamp": "2026-11-22T12:00:00Z", "payload": {}}}',
    ],
)
def test_what_the_item_decoder_refuses_is_not_a_queued_item(raw: bytes) -> None:
    """Malformed JSON, missing or mistyped fields, a payload that is not an object, invalid
    UTF-8 (which ITEM_DECODER raised as UnicodeDecodeError: it used to end the worker's task)."""
    with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
        ITEM_DECODER.decode(raw)
    assert decode_queued(raw) is None


def test_a_payload_that_is_not_utf8_is_found_when_it_is_decoded() -> None:
    """The one thing only the payload decode finds: item() raises, the worker dead-letters."""
    raw = (
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": {"a": "\xff"}}}'
    )
    queued = decode_queued(raw)
    assert queued is not None
    with pytest.raises(msgspec.DecodeError):
        queued.item()
