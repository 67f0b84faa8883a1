"""``delivery.partitions``: one destination's queue spread over several streams (hash tags),
read by every worker; dead letters, replay, discard and the queue status see every partition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from router.queue.keys import dlq_key, queue_key
from tests.conftest import BACKENDS, TEST_CONFIG, AppFactory, routing_from, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_delivery import AUTH, by_id, order

PARTITIONS = 4
TOKEN = "operator-token-for-partitions"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


def partitioned(hook_url: str) -> str:
    """The test routing with ops-hook on four partitions and analytics-hook disabled."""
    text = TEST_CONFIG.read_text()
    text = text.replace("requires: [analytics]", "requires: [analytics]\n    enabled: false")
    marker = "    delivery:\n      batch_size: 1\n"
    assert text.count(marker) == 1
    return text.replace(marker, marker + f"      partitions: {PARTITIONS}\n")


async def lengths(client: aioredis.Redis, key: Callable[[str, int], str]) -> list[int]:
    """XLEN of each partition's stream named by ``key(destination, partition)``."""
    return [int(await client.xlen(key("ops-hook", p))) for p in range(PARTITIONS)]


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_a_partitioned_queue_is_spread_listed_replayed_and_delivered(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """40 requests land in several partitions; the status sums them; refused (400) they are
    dead letters in every partition, listed together; replayed, each is delivered once."""
    state, url = receiver
    routing = routing_from(partitioned(url), hook_url=url)
    ingest = await make_router(routing, workers=False, operator_token=TOKEN)
    ids = [f"p{i}" for i in range(40)]
    for message_id in ids:
        assert (await ingest.post("/v1/track", json=order(message_id), headers=AUTH)).status == 200
    queued = await lengths(redis_client, queue_key)
    assert sum(queued) == 40
    assert sum(1 for n in queued if n) > 1  # all 40 in one of 4 partitions: p = 4 ** -39
    response = await ingest.get("/admin/destinations", headers=OPERATOR)
    [row] = [r for r in (await response.json())["destinations"] if r["id"] == "ops-hook"]
    assert row["queue_length"] == 40

    state.script = [400] * 40
    await make_router(routing, operator_token=TOKEN)  # its workers read every partition
    await wait_for(lambda: len(state.requests) == 40, within_s=20)
    await asyncio.sleep(0.2)
    assert sum(await lengths(redis_client, dlq_key)) == 40
    listed = await ingest.get("/admin/dlq/ops-hook?limit=100", headers=OPERATOR)
    letters = (await listed.json())["dead_letters"]
    assert sorted(r["message_id"] for r in letters) == sorted(ids)
    assert any("/" in r["id"] for r in letters)  # ids of partitions 1..3 name their partition

    one = [r["id"] for r in letters if "/" in r["id"]][:1]
    replayed = await ingest.post("/admin/dlq/ops-hook/replay", json={"ids": one}, headers=OPERATOR)
    assert (await replayed.json())["replayed"] == 1
    replayed = await ingest.post("/admin/dlq/ops-hook/replay", headers=OPERATOR)
    assert (await replayed.json())["replayed"] == 39
    await wait_for(lambda: set(ids) <= set(by_id(state)), within_s=20)
    assert sum(await lengths(redis_client, dlq_key)) == 0
    assert len(by_id(state)) == 40


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_discard_and_bad_dead_letter_ids_cover_every_partition(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A held destination's discard empties every partition; an id naming a partition that
    does not exist is a 400."""
    routing = routing_from(partitioned("http://127.0.0.1:9/hook"))
    router = await make_router(routing, workers=False, operator_token=TOKEN)
    for i in range(20):
        assert (await router.post("/v1/track", json=order(f"d{i}"), headers=AUTH)).status == 200
    assert sum(await lengths(redis_client, queue_key)) == 20
    response = await router.post("/admin/holds/ops-hook/discard", headers=OPERATOR)
    assert (await response.json())["discarded"] == 20
    assert sum(await lengths(redis_client, queue_key)) == 0
    for bad in (f"{PARTITIONS}/1-0", "x/1-0", "1-0-0"):
        response = await router.post(
            "/admin/dlq/ops-hook/replay", json={"ids": [bad]}, headers=OPERATOR
        )
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_ids"
