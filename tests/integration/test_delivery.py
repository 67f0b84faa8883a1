"""Durable delivery on a real Redis to a signature-checking webhook receiver."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from router.edge.state import STATE
from router.queue.keys import GROUP, dlq_key, outbox_key, queue_key, subject_hash
from router.queue.streams import suppress
from tests.conftest import (
    BACKENDS,
    HOOK_SECRET,
    TEST_CONFIG,
    WRITE_KEY,
    AppFactory,
    routing_from,
    wait_for,
)
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
GRANTED = {"consent": {"categoryPreferences": {"C0002": True}}}


def order(message_id: str, context: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An Order Completed event with fields inside and outside the allowlists."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "user-1",
        "anonymousId": "anon-1",
        "properties": {
            "order_id": f"o-{message_id}",
            "revenue": 42.5,
            "email": "jane@example.com",
            "products": [{"product_id": "p1", "name": "Mat", "price": 9}],
        },
        "context": context if context is not None else dict(GRANTED),
    }
    event.update(extra)
    return event


def by_id(receiver: WebhookReceiver) -> dict[str, list[dict[str, Any]]]:
    """Accepted events grouped by messageId."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in receiver.events():
        grouped.setdefault(event["messageId"], []).append(event)
    return grouped


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_event_arrives_signed_with_only_allowlisted_fields(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Both hooks get the event, signed, each with exactly its allowlisted fields."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    response = await router.post("/v1/batch", json={"batch": [order("m1")]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: len(state.events()) == 2)
    assert state.invalid == []
    analytics, ops = sorted(state.events(), key=len)[::-1]
    assert set(analytics) == {"messageId", "type", "event", "anonymousId", "properties", "userId"}
    assert analytics["properties"] == {"revenue": 42.5, "products": [{"product_id": "p1"}]}
    assert analytics["userId"] != "user-1"
    assert len(analytics["userId"]) == 64
    assert ops == {
        "messageId": "m1",
        "event": "Order Completed",
        "properties": {"order_id": "o-m1"},
    }
    assert "m1" in {r.webhook_id for r in state.accepted}


@pytest.mark.parametrize(
    ("context", "reason"),
    [
        ({"consent": {"categoryPreferences": {"C0002": False}}}, "category_denied"),
        ({}, "no_consent"),
        ({"consent": {"categoryPreferences": "yes please"}}, "consent_unparseable"),
        ({"consentManagement": {"deniedConsentIds": "C0002"}}, "consent_unparseable"),
        ({"consentManagement": {"deniedConsentIds": ["C0002"]}}, "category_denied"),
    ],
)
@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_without_granted_consent_only_the_no_consent_destination_receives(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
    context: dict[str, Any],
    reason: str,
) -> None:
    """Denied, missing or unparseable consent: analytics gets nothing; requires: [] still does."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    response = await router.post("/v1/batch", json={"batch": [order("m2", context)]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: "m2" in by_id(state))
    assert by_id(state)["m2"] == [
        {"messageId": "m2", "event": "Order Completed", "properties": {"order_id": "o-m2"}}
    ]
    assert await redis_client.xlen(queue_key("analytics-hook")) == 0
    stats = router.server.app[STATE].stats
    assert (
        stats.get("router_events_skipped_total", destination="analytics-hook", reason=reason) == 1
    )


async def test_workers_create_their_group_once_and_again_when_it_is_gone(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """Each worker creates its consumer group when it starts, not before every read (an
    existing group answers XGROUP CREATE with an error: a round trip and an exception with its
    traceback per read); a group that disappears (a Redis restarted without its data) is
    created again and delivery goes on."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    workers = sum(1 for task in asyncio.all_tasks() if task.get_name().startswith("worker:"))
    assert workers > 0
    for index in range(20):
        response = await router.post(
            "/v1/batch", json={"batch": [order(f"g{index}")]}, headers=AUTH
        )
        assert response.status == 200
        await wait_for(lambda index=index: f"g{index}" in by_id(state))
    stats = await redis_client.info("commandstats")
    assert 0 < stats["cmdstat_xgroup|create"]["calls"] <= workers
    stream = queue_key("analytics-hook")
    await redis_client.xgroup_destroy(stream, GROUP)
    response = await router.post("/v1/batch", json={"batch": [order("after")]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: len(by_id(state).get("after", [])) == 2)
    assert [g["name"] for g in await redis_client.xinfo_groups(stream)] == [GROUP.encode()]


async def test_retry_after_500_keeps_the_same_webhook_id(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """A 500 then 200: delivered once, and the retry carries the same webhook-id."""
    state, url = receiver
    state.script = [500, 200]
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    router = await make_router(routing_from(text, hook_url=url))
    response = await router.post("/v1/track", json=order("m3"), headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: len(state.accepted) == 1)
    assert [r.status for r in state.requests] == [500, 200]
    assert [r.webhook_id for r in state.requests] == ["m3", "m3"]


async def test_retry_honours_retry_after(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """A 429 with Retry-After delays the next attempt by at least that long."""
    state, url = receiver
    state.script = [429, 200]
    state.retry_after = "1"
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    router = await make_router(routing_from(text, hook_url=url))
    assert (await router.post("/v1/track", json=order("m-ra"), headers=AUTH)).status == 200
    await wait_for(lambda: len(state.accepted) == 1)
    first, second = state.times
    assert second - first >= 0.9


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_permanent_failure_goes_to_dead_letters_with_reason(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """A 400 is not retried: the entry is in the dead-letter stream with reason http_400."""
    state, url = receiver
    state.script = [400]
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    router = await make_router(routing_from(text, hook_url=url))
    assert (await router.post("/v1/track", json=order("m4"), headers=AUTH)).status == 200

    async def dead() -> list[Any]:
        return list(await redis_client.xrange(dlq_key("ops-hook")))

    for _ in range(200):
        if await dead():
            break
        await asyncio.sleep(0.02)
    entries = await dead()
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"reason"] == b"http_400"
    assert msgspec.json.decode(fields[b"d"])["delivery"]["message_id"] == "m4"
    assert [r.status for r in state.requests] == [400]
    assert await redis_client.xlen(queue_key("ops-hook")) == 0


async def test_exhausted_attempts_go_to_dead_letters(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """Three 503s with max_attempts 3: dead-lettered as max_attempts:http_503."""
    state, url = receiver
    state.script = [503, 503, 503]
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    await make_router(routing_from(text, hook_url=url))
    router = await make_router(routing_from(text, hook_url=url), workers=False)
    assert (await router.post("/v1/track", json=order("m5"), headers=AUTH)).status == 200
    for _ in range(300):
        if await redis_client.xlen(dlq_key("ops-hook")):
            break
        await asyncio.sleep(0.02)
    entries = await redis_client.xrange(dlq_key("ops-hook"))
    assert [e[1][b"reason"] for e in entries] == [b"max_attempts:http_503"]
    assert len(state.requests) == 3


async def test_redis_killed_mid_run_loses_no_acknowledged_event(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_server: RedisServer
) -> None:
    """503 while Redis is down; after it returns, every event that got a 200 is delivered."""
    state, url = receiver
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    router = await make_router(routing_from(text, hook_url=url))
    acknowledged: list[str] = []
    statuses: list[int] = []
    for i in range(60):
        if i == 20:
            redis_server.kill()
        if i == 40:
            redis_server.start()
        response = await router.post("/v1/track", json=order(f"k{i}"), headers=AUTH)
        statuses.append(response.status)
        if response.status == 200:
            acknowledged.append(f"k{i}")
        else:
            assert response.status == 503
            assert response.headers["Retry-After"]
    assert 503 in statuses
    assert len(acknowledged) >= 40
    await wait_for(lambda: set(acknowledged) <= set(by_id(state)), within_s=20)
    assert set(by_id(state)) == set(acknowledged)


async def test_worker_killed_mid_batch_is_reclaimed_and_delivered(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """A `router worker` process SIGKILLed while sending: another worker reclaims its entries."""
    state, url = receiver
    state.hang_first = True
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    config = tmp_path / "routing.yaml"
    config.write_text(text)
    ingest = await make_router(routing_from(text, hook_url=url), workers=False)
    for i in range(3):
        assert (await ingest.post("/v1/track", json=order(f"w{i}"), headers=AUTH)).status == 200
    env = {
        **os.environ,
        "ROUTER_REDIS_URL": redis_server.url,
        "ROUTER_CONSUMER_NAME": "doomed",
        "HOOK_URL": url,
        "HOOK_SECRET": HOOK_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "worker",
        "--config",
        str(config),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(lambda: state.hanging > 0, within_s=20)
        pending = await redis_client.xpending(queue_key("ops-hook"), "delivery")
        assert pending["pending"] >= 1
        process.send_signal(signal.SIGKILL)
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    await make_router(routing_from(text, hook_url=url), consumer="rescuer")
    await wait_for(lambda: {"w0", "w1", "w2"} <= set(by_id(state)), within_s=20)
    for _ in range(250):  # the receiver sees a request before the worker acks its entry
        if (await redis_client.xpending(queue_key("ops-hook"), "delivery"))["pending"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await redis_client.xpending(queue_key("ops-hook"), "delivery"))["pending"] == 0


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erased_subject_queued_events_are_not_delivered(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """An event queued before its subject was suppressed is dropped by the delivery re-check."""
    state, url = receiver
    routing = routing_from(hook_url=url)
    ingest = await make_router(routing, workers=False)
    assert (await ingest.post("/v1/track", json=order("s1"), headers=AUTH)).status == 200
    other = order("s2", userId="user-2", anonymousId="anon-2")
    assert (await ingest.post("/v1/track", json=other, headers=AUTH)).status == 200
    await suppress(redis_client, [subject_hash("user-1")])
    worker = await make_router(routing)
    await wait_for(lambda: "s2" in by_id(state))
    stats = worker.server.app[STATE].stats
    await wait_for(
        lambda: stats.get("router_events_skipped_total", reason="suppressed", stage="delivery") == 2
    )
    assert "s1" not in by_id(state)


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_suppressed_subject_is_skipped_at_ingest(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """New events of an erased subject are not queued for anyone."""
    router = await make_router(routing_from(), workers=False)
    await suppress(redis_client, [subject_hash("anon-1")])
    assert (await router.post("/v1/track", json=order("s3"), headers=AUTH)).status == 200
    assert await redis_client.xlen(queue_key("ops-hook")) == 0
    assert await redis_client.xlen(queue_key("analytics-hook")) == 0


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_dry_run_writes_the_encoded_request_to_the_outbox(
    make_router: AppFactory, redis_client: aioredis.Redis, receiver: tuple[WebhookReceiver, str]
) -> None:
    """A dry_run destination sends nothing and records the signed request, secret masked."""
    state, url = receiver
    text = TEST_CONFIG.read_text().replace("requires: []", "requires: []\n    dry_run: true")
    await make_router(routing_from(text, hook_url=url))
    router = await make_router(routing_from(text, hook_url=url), workers=False)
    assert (await router.post("/v1/track", json=order("d1", {}), headers=AUTH)).status == 200
    for _ in range(200):
        if await redis_client.xlen(outbox_key("ops-hook")):
            break
        await asyncio.sleep(0.02)
    entries = await redis_client.xrange(outbox_key("ops-hook"))
    assert len(entries) == 1
    record = msgspec.json.decode(entries[0][1][b"r"])
    assert record["request"]["body"] == {
        "messageId": "d1",
        "event": "Order Completed",
        "properties": {"order_id": "o-d1"},
    }
    assert record["request"]["headers"]["webhook-id"] == "d1"
    assert HOOK_SECRET not in str(record)
    assert state.requests == []


async def test_shutdown_leaves_unfinished_entries_pending_for_others(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """Closing the app while a destination keeps failing returns its entries, not drops them."""
    state, url = receiver
    state.script = [503] * 50
    text = TEST_CONFIG.read_text().replace(
        "requires: [analytics]", "requires: [analytics]\n    enabled: false"
    )
    text = text.replace("max_attempts: 3", "max_attempts: 50")
    router = await make_router(routing_from(text, hook_url=url))
    assert (await router.post("/v1/track", json=order("g1"), headers=AUTH)).status == 200
    await wait_for(lambda: len(state.requests) >= 2)
    await router.close()
    assert await redis_client.xlen(dlq_key("ops-hook")) == 0
    pending = await redis_client.xpending(queue_key("ops-hook"), "delivery")
    assert pending["pending"] == 1
