"""A worker reads queue items with their payload undecoded (``QueuedItem``): the same items,
the same refusals as ``ITEM_DECODER``, and no struct for the garbage collector to walk."""

from __future__ import annotations

import ast
import gc
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from destinations.base import ConsentFacts, Delivery, DeliveryOf
from router.queue.items import (
    ITEM_DECODER,
    ITEM_ENCODER,
    QueuedItem,
    QueueItem,
    QueueItemOf,
    decode_queued,
    decoded,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _classes_with(fields: set[str]) -> list[str]:
    """Every class in the packages whose annotated fields include all of ``fields``."""
    found = []
    for package in ("router", "destinations", "consent"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    names = {
                        stmt.target.id
                        for stmt in node.body
                        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    }
                    if fields <= names:
                        found.append(f"{path.relative_to(ROOT)}:{node.name}")
    return found


def test_there_is_one_queue_item_struct_and_one_delivery_struct() -> None:
    """The planner's output, the stored item and the worker's lazy read are one struct each
    (generic in the payload); a second struct holding a delivery and its subjects, or a
    message id and a payload, is the duplicate this layout removed."""
    assert _classes_with({"delivery", "subjects"}) == ["router/core/outcomes.py:QueueItemOf"]
    assert _classes_with({"message_id", "payload"}) == ["destinations/base.py:DeliveryOf"]


def test_the_lazy_reading_is_the_same_struct_with_a_raw_payload() -> None:
    """Same names, wire names, order and defaults: ``QueuedItem`` only parametrizes the payload."""
    assert QueuedItem.__origin__ is QueueItem.__origin__ is QueueItemOf  # type: ignore[attr-defined]
    assert QueuedItem.__args__ == (msgspec.Raw,)  # type: ignore[attr-defined]
    delivery = {f.name: f.type for f in msgspec.structs.fields(QueuedItem)}["delivery"]
    assert delivery == DeliveryOf[msgspec.Raw]


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
    assert decoded(queued) == item == ITEM_DECODER.decode(raw)
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
    """The one thing only the payload decode finds: decoded() raises, the worker dead-letters."""
    raw = (
        b'{"delivery": {"message_id": "m", "type": "track", "timestamp": "2026-11-22T12:00:00Z",'
        b' "payload": {"a": "\xff"}}}'
    )
    queued = decode_queued(raw)
    assert queued is not None
    with pytest.raises(msgspec.DecodeError):
        decoded(queued)
