"""What a delivered batch records: one latency per event, and the data map as per-event records
would have written it."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis

from destinations.base import Delivery
from router.compliance.datamap import DataMapRecorder, declared_kinds
from router.core.paths import field_paths
from router.delivery.worker import DestinationWorker, WorkerOptions, _Entry
from router.observability.metrics import Stats, render_prometheus
from router.observability.setup import setup_telemetry
from router.queue.items import ITEM_ENCODER, QueueItem, decode_queued
from router.routing import CompiledDestination
from tests.conftest import routing_from
from tests.fakes.transport import RecordingTransport

ROUTING = """
sources: [{id: web, write_key: k}]
destinations:
  - id: hook
    type: webhook
    requires: []
    fields: [messageId, userId, context.ip, traits.email, "properties.products[].sku"]
    identifiers: {traits.email: email}
    settings: {url: "http://127.0.0.1:9/hook", secret: "${HOOK_SECRET}"}
"""
NOW = datetime.now(UTC)
DAY = NOW.date().isoformat()


def _item(n: int, payload: dict[str, Any], pii: tuple[str, ...] = ()) -> QueueItem:
    """Accepted ``n`` seconds ago."""
    now = datetime.now(UTC)
    delivery = Delivery(message_id=f"m{n}", type="track", timestamp=now, payload=payload)
    return QueueItem(
        delivery=delivery, accepted_at=now - timedelta(seconds=n), subjects=("s",), pii=pii
    )


def _items() -> list[QueueItem]:
    return [
        _item(1, {"messageId": "m1", "userId": "u1"}),
        _item(2, {"messageId": "m2", "traits": {"email": "a@b.example"}}, pii=("email",)),
        _item(3, {"messageId": "m3", "properties": {"products": [{"sku": "a"}, {"sku": "b"}]}}),
        _item(4, {"messageId": "m4", "context": {"ip": "203.0.113.0"}}, pii=("ip",)),
        _item(5, {}),
    ]


def _worker(destination: CompiledDestination, datamap: DataMapRecorder) -> DestinationWorker:
    return DestinationWorker(
        client=cast(aioredis.Redis, None),
        transport=RecordingTransport(),
        destination=destination,
        options=WorkerOptions(consumer="test"),
        stats=Stats(),
        stopping=cast(Any, None),
        telemetry=setup_telemetry({}),
        datamap=datamap,
    )


def test_a_delivered_batch_records_what_per_event_records_did() -> None:
    """Field paths, kinds (found and declared), events and bytes per destination and day are
    what one record per event gave; the latency histogram counts every event once."""
    (destination,) = routing_from(ROUTING).destinations
    recorder = DataMapRecorder(cast(aioredis.Redis, None), clock=lambda: NOW)
    worker = _worker(destination, recorder)
    items = _items()
    raws = [ITEM_ENCODER.encode(item) for item in items]
    entries = [_Entry(entry_id=b"1-0", item=decode_queued(raw), raw=raw) for raw in raws]
    positions = [0, 1, 2, 3, 4]
    worker._delivered(entries, positions, items)

    reference = DataMapRecorder(cast(aioredis.Redis, None), clock=lambda: NOW)
    for item, raw in zip(items, raws, strict=True):
        payload = item.delivery.payload
        paths = field_paths(payload)
        kinds = set(item.pii) | declared_kinds(paths, destination.identifiers)
        reference.record("hook", payload, kinds, len(raw), paths=paths)
    got, expected = recorder._pending[(DAY, "hook")], reference._pending[(DAY, "hook")]
    assert got == expected
    assert got.fields == {
        "messageId",
        "userId",
        "traits.email",
        "properties.products[].sku",
        "context.ip",
    }
    assert got.pii == {"email", "ip"}
    assert (got.events, got.bytes) == (5, sum(len(raw) for raw in raws))

    assert worker.telemetry is not None
    text = render_prometheus(Stats(), worker.telemetry.prometheus_reader)
    count = 'router_delivery_latency_seconds_count{destination="hook",status="delivered"}'
    assert f"{count} 5" in text
    bucket = 'router_delivery_latency_seconds_bucket{destination="hook",le="%s",status="delivered"}'
    assert f"{bucket % '1'} 0" in text  # accepted 1 to 5 seconds ago
    assert f"{bucket % '10'} 5" in text
    worker.telemetry.shutdown()


def test_a_dry_run_batch_stays_out_of_the_data_map() -> None:
    """A dry run sends nothing, so it maps nothing (latency is still recorded)."""
    routing = routing_from(ROUTING.replace("type: webhook", "type: webhook\n    dry_run: true"))
    (destination,) = routing.destinations
    recorder = DataMapRecorder(cast(aioredis.Redis, None), clock=lambda: NOW)
    worker = _worker(destination, recorder)
    item = _items()[0]
    raw = ITEM_ENCODER.encode(item)
    entries = [_Entry(entry_id=b"1-0", item=decode_queued(raw), raw=raw)]
    worker._delivered(entries, [0], [item])
    assert recorder._pending == {}
    assert worker.telemetry is not None
    worker.telemetry.shutdown()


def test_decoded_queue_items_stay_out_of_the_garbage_collectors_lists() -> None:
    """A backlog decodes 100,000s of items that cannot form cycles: their structs are not
    tracked (gc=False), so collections walk only the payloads' dicts and lists."""
    item = _items()[1]
    decoded = msgspec.json.decode(ITEM_ENCODER.encode(item), type=QueueItem)
    assert decoded == item
    assert not gc.is_tracked(decoded)
    assert not gc.is_tracked(decoded.delivery)
    assert not gc.is_tracked(decoded.delivery.consent)
    assert gc.is_tracked(decoded.delivery.payload)
