"""Group commit on a real Redis: concurrent requests' deliveries share stream entries."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from router.delivery.worker import DestinationWorker, WorkerOptions
from router.errors import QueueUnavailableError
from router.observability.metrics import Stats
from router.queue.enqueuer import MAX_ITEMS_PER_ENTRY, Deliveries, Enqueuer, Write
from router.queue.items import entry_fields, entry_for, entry_items
from router.queue.keys import QUARANTINE, queue_key
from router.queue.streams import ensure_group
from tests.conftest import routing_from
from tests.fakes.transport import RecordingTransport
from tests.redis_server import RedisServer

STREAM = queue_key("hook")


async def _entries(client: aioredis.Redis, stream: str) -> list[list[bytes]]:
    return [entry_items(entry_fields(raw)) for raw in await client.xrange(stream)]


async def test_concurrent_requests_share_entries_and_a_batch_stays_whole(
    redis_client: aioredis.Redis,
) -> None:
    """250 single-event requests and one 100-event batch, submitted together: every item is
    stored once, in submission order, in entries of at most MAX_ITEMS_PER_ENTRY items, and
    the batch's items stay in one entry."""
    enqueuer = Enqueuer(redis_client)
    enqueuer.start()
    singles = [[Deliveries(STREAM, [f'"s{n}"'.encode()])] for n in range(250)]
    batch = [Deliveries(STREAM, [f'"b{n}"'.encode() for n in range(100)])]
    quarantined = [Write(QUARANTINE, {"code": "invalid_json"})]
    requests = [*singles[:120], batch, quarantined, *singles[120:]]
    await asyncio.gather(*(enqueuer.submit(writes) for writes in requests))
    await enqueuer.close()

    entries = await _entries(redis_client, STREAM)
    items = [item for entry in entries for item in entry]
    expected = [
        i for writes in requests for w in writes if isinstance(w, Deliveries) for i in w.items
    ]
    assert items == expected
    assert all(len(entry) <= MAX_ITEMS_PER_ENTRY for entry in entries)
    assert list(batch[0].items) in entries
    assert len(entries) < len(singles) // 10  # shared, not one entry per request
    assert await redis_client.xlen(QUARANTINE) == 1


async def test_a_failed_pipeline_fails_every_request_in_it(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    """No request of a failed flush is told its events are stored."""
    enqueuer = Enqueuer(redis_client)
    enqueuer.start()
    redis_server.kill()
    results = await asyncio.gather(
        *(enqueuer.submit([Deliveries(STREAM, [b'"x"'])]) for _ in range(20)),
        return_exceptions=True,
    )
    await enqueuer.close()
    assert len(results) == 20
    assert all(isinstance(r, QueueUnavailableError) for r in results)


@pytest.mark.parametrize("size", [1, MAX_ITEMS_PER_ENTRY, MAX_ITEMS_PER_ENTRY + 1])
async def test_a_request_larger_than_the_entry_cap_is_not_split(
    redis_client: aioredis.Redis, size: int
) -> None:
    """A request's own deliveries are never split across entries (one XADD per request at
    most, as before packing)."""
    enqueuer = Enqueuer(redis_client)
    enqueuer.start()
    items = [f'"{n}"'.encode() for n in range(size)]
    await enqueuer.submit([Deliveries(STREAM, items)])
    await enqueuer.close()
    assert await _entries(redis_client, STREAM) == [items]


async def test_a_worker_reads_about_batch_size_deliveries_not_entries(
    redis_client: aioredis.Redis,
) -> None:
    """Entries may hold up to MAX_ITEMS_PER_ENTRY deliveries: a read asks for about
    ``batch_size`` deliveries, so a backlog of big entries is not all pulled into memory."""
    text = """
sources: [{id: web, write_key: k}]
destinations:
  - id: hook
    type: webhook
    requires: []
    fields: [messageId]
    settings: {url: "http://127.0.0.1:9/hook", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 100}
"""
    (destination,) = routing_from(text).destinations
    worker = DestinationWorker(
        client=redis_client,
        transport=RecordingTransport(),
        destination=destination,
        options=WorkerOptions(consumer="test", block_ms=10),
        stats=Stats(),
        stopping=asyncio.Event(),
    )
    await ensure_group(redis_client, STREAM)
    for n in range(10):
        await redis_client.xadd(STREAM, entry_for([f'"{n}-{i}"'.encode() for i in range(100)]))
    first = await worker._read(STREAM)
    assert len(first) == 1  # 100 deliveries: one entry, not batch_size (100) entries
    worker._items_per_entry = 1.0  # as after reading entries of single requests
    assert len(await worker._read(STREAM)) == 9
