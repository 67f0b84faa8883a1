"""Stream entries that are not queue items are dead-lettered (``corrupt_entry``); the others of
the same entry are delivered, and the worker keeps running."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from destinations.base import Delivery
from router.queue.items import ITEM_ENCODER, QueueItem, entry_for
from router.queue.keys import dlq_key, queue_key
from tests.conftest import TEST_CONFIG, AppFactory, routing_from, wait_for
from tests.fakes.webhook import WebhookReceiver


def _item(message_id: str) -> bytes:
    now = datetime.now(UTC)
    delivery = Delivery(
        message_id=message_id,
        type="track",
        timestamp=now,
        payload={"messageId": message_id, "event": "Order Completed"},
        event="Order Completed",
    )
    return ITEM_ENCODER.encode(QueueItem(delivery=delivery, accepted_at=now))


async def test_corrupt_deliveries_are_dead_lettered_and_the_rest_delivered(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """In one batch entry: a good item, one whose payload is not UTF-8 (it used to raise out
    of the worker's loop), one that is JSON but no queue item; then a good single entry."""
    state, url = receiver
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    not_utf8 = _item("bad1").replace(b'"event":"Order Completed"}', b'"event":"Order \xff"}')
    assert not_utf8 != _item("bad1")
    stream = queue_key("ops-hook")
    await redis_client.xadd(stream, entry_for([_item("ok1"), not_utf8, b'{"x": 1}']))  # type: ignore[arg-type]
    await redis_client.xadd(stream, entry_for([b"not json"]))  # type: ignore[arg-type]
    router = await make_router(routing_from(text, hook_url=url))
    assert router.server is not None
    await wait_for(lambda: len(state.events()) == 1)
    await redis_client.xadd(stream, entry_for([_item("ok2")]))  # type: ignore[arg-type]
    await wait_for(lambda: len(state.events()) == 2)
    assert sorted(e["messageId"] for e in state.events()) == ["ok1", "ok2"]

    async def dead() -> list[Any]:
        return list(await redis_client.xrange(dlq_key("ops-hook")))

    for _ in range(200):
        if len(await dead()) == 3:
            break
        await asyncio.sleep(0.02)
    letters = await dead()
    assert [fields[b"reason"] for _, fields in letters] == [b"corrupt_entry"] * 3
    assert sorted(fields[b"d"] for _, fields in letters) == sorted(
        [not_utf8, b'{"x": 1}', b"not json"]
    )
    for _ in range(200):
        if await redis_client.xlen(stream) == 0:
            break
        await asyncio.sleep(0.02)
    assert await redis_client.xlen(stream) == 0
