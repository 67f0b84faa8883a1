"""Stored consent on a real Redis: the consent API, consent events, newest wins, expiry, cache."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis

from consent.records import ConsentRecord
from consent.store import ConsentStore, history_key, record_key, subject_key
from router.edge.state import STATE
from router.queue.keys import queue_key
from tests.conftest import HOOK_SECRET, TEST_CONFIG, WRITE_KEY, AppFactory, routing_from, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer, free_port

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
ANALYTICS = "analytics-hook"


def iso(moment: datetime) -> str:
    """ISO 8601 with a Z, as SDKs send."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order(
    message_id: str, context: dict[str, Any] | None = None, user: str = "user-1", **extra: Any
) -> dict[str, Any]:
    """An Order Completed event of ``user`` (no consent signal unless ``context`` has one)."""
    event: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": user,
        "anonymousId": f"anon-of-{user}",
        "properties": {"order_id": f"o-{message_id}", "revenue": 1.5},
        "context": context or {},
    }
    event.update(extra)
    return event


def preference_event(message_id: str, preferences: Any, user: str = "user-1") -> dict[str, Any]:
    """The reserved Segment consent event carrying ``categoryPreferences``."""
    return order(
        message_id,
        {"consent": {"categoryPreferences": preferences}},
        user,
        event="Segment Consent Preference Updated",
    )


def analytics_ids(receiver: WebhookReceiver) -> set[str]:
    """messageIds the analytics hook received (its payload keeps ``type``; ops-hook's not)."""
    return {e["messageId"] for e in receiver.events() if "type" in e}


def ops_ids(receiver: WebhookReceiver) -> set[str]:
    """messageIds the no-consent ops hook received."""
    return {e["messageId"] for e in receiver.events() if "type" not in e}


def skipped(router: Any, reason: str, stage: str = "ingest") -> int:
    """How many analytics-hook skips with this reason the in-process router counted."""
    stats = router.server.app[STATE].stats
    return int(
        stats.get("router_events_skipped_total", destination=ANALYTICS, reason=reason, stage=stage)
    )


async def live(router: Any) -> ConsentStore:
    """The router's consent store, once its cache is in use."""
    store = router.server.app[STATE].consent
    assert store is not None
    assert await store.wait_live()
    return store


async def test_api_grant_lets_an_event_without_signal_reach_analytics(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """No signal: skipped; after POST /v1/consent grants analytics, the next event is delivered."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    assert (await router.post("/v1/track", json=order("n1"), headers=AUTH)).status == 200
    response = await router.post(
        "/v1/consent",
        json={"userId": "user-1", "categories": {"C0002": True, "C0004": False}},
        headers=AUTH,
    )
    assert response.status == 200
    assert await response.json() == {"success": True}
    assert (await router.post("/v1/track", json=order("n2"), headers=AUTH)).status == 200
    await wait_for(lambda: {"n1", "n2"} <= ops_ids(state))
    await wait_for(lambda: "n2" in analytics_ids(state))
    assert "n1" not in analytics_ids(state)
    assert skipped(router, "no_consent") == 1


async def test_consent_api_takes_the_write_key_in_the_body(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """writeKey in a text/plain body authenticates like /v1/track; the record has the source."""
    router = await make_router(routing_from(), workers=False)
    body = {
        "writeKey": WRITE_KEY,
        "anonymousId": "anon-9",
        "categories": {"analytics": True},
        "source": "onetrust",
    }
    response = await router.post(
        "/v1/consent", data=msgspec.json.encode(body), headers={"Content-Type": "text/plain"}
    )
    assert response.status == 200
    raw = await redis_client.get(record_key(subject_key("anon-9")))
    assert raw is not None
    stored = ConsentRecord.decode(raw)
    assert (stored.granted, stored.denied, stored.source) == ({"analytics"}, set(), "onetrust")


async def test_newer_stored_withdrawal_wins_over_an_older_event_signal(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """An event granting analytics before a stored withdrawal is skipped; one after it is not."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    now = datetime.now(UTC)
    withdrawal = {
        "userId": "user-1",
        "categories": {"C0002": False},
        "timestamp": iso(now - timedelta(minutes=30)),
    }
    assert (await router.post("/v1/consent", json=withdrawal, headers=AUTH)).status == 200
    granting = {"consent": {"categoryPreferences": {"C0002": True}}}
    before = order("w-old", granting, timestamp=iso(now - timedelta(hours=1)))
    after = order("w-new", granting, timestamp=iso(now - timedelta(minutes=5)))
    response = await router.post("/v1/batch", json={"batch": [before, after]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: "w-new" in analytics_ids(state))
    await wait_for(lambda: {"w-old", "w-new"} <= ops_ids(state))
    assert "w-old" not in analytics_ids(state)
    assert skipped(router, "consent_withdrawn") == 1


async def test_an_older_write_never_overwrites_a_newer_record(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """A denial stamped before the stored grant is ignored: still granted, one history entry."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    now = datetime.now(UTC)
    grant = {"userId": "user-1", "categories": {"C0002": True}, "timestamp": iso(now)}
    late = {
        "userId": "user-1",
        "categories": {"C0002": False},
        "timestamp": iso(now - timedelta(hours=2)),
    }
    assert (await router.post("/v1/consent", json=grant, headers=AUTH)).status == 200
    assert (await router.post("/v1/consent", json=late, headers=AUTH)).status == 200
    assert (await router.post("/v1/track", json=order("o1"), headers=AUTH)).status == 200
    await wait_for(lambda: "o1" in analytics_ids(state))
    subject = subject_key("user-1")
    raw = await redis_client.get(record_key(subject))
    assert raw is not None
    assert ConsentRecord.decode(raw).granted == {"analytics"}
    assert await redis_client.xlen(history_key(subject)) == 1


async def test_stored_consent_expires_after_max_age_days(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """A grant about to reach max_age_days is honoured, then forgotten (Redis TTL and cache)."""
    state, url = receiver
    text = TEST_CONFIG.read_text().replace("consent:\n", "consent:\n  max_age_days: 1\n")
    router = await make_router(routing_from(text, hook_url=url))
    await live(router)
    almost = datetime.now(UTC) - timedelta(days=1) + timedelta(seconds=3)
    grant = {"userId": "user-1", "categories": {"C0002": True}, "timestamp": iso(almost)}
    assert (await router.post("/v1/consent", json=grant, headers=AUTH)).status == 200
    subject = subject_key("user-1")
    assert 0 < await redis_client.pttl(record_key(subject)) <= 3000
    assert (await router.post("/v1/track", json=order("e1"), headers=AUTH)).status == 200
    await wait_for(lambda: "e1" in analytics_ids(state))
    await asyncio.sleep(max(0.0, (almost + timedelta(days=1) - datetime.now(UTC)).total_seconds()))
    await asyncio.sleep(0.1)
    assert await redis_client.exists(record_key(subject)) == 0
    assert (await router.post("/v1/track", json=order("e2"), headers=AUTH)).status == 200
    await wait_for(lambda: "e2" in ops_ids(state))
    assert "e2" not in analytics_ids(state)
    assert skipped(router, "no_consent") == 1
    stale = {**grant, "timestamp": iso(datetime.now(UTC) - timedelta(days=2))}
    response = await router.post("/v1/consent", json=stale, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["code"] == "consent_expired"


async def test_reserved_consent_events_update_the_stored_state(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """Segment Consent Preference Updated stores the choice for both ids; a later event uses it."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    denial = preference_event("c1", {"C0002": False, "C0004": False})
    assert (await router.post("/v1/track", json=denial, headers=AUTH)).status == 200
    for identifier in ("user-1", "anon-of-user-1"):
        raw = await redis_client.get(record_key(subject_key(identifier)))
        assert raw is not None
        record = ConsentRecord.decode(raw)
        assert (record.denied, record.source) == ({"analytics", "advertising"}, "segment_event")
    assert (await router.post("/v1/track", json=order("c2"), headers=AUTH)).status == 200
    await wait_for(lambda: "c2" in ops_ids(state))
    assert "c2" not in analytics_ids(state)
    assert skipped(router, "category_denied") == 2

    grant = preference_event("c3", {"C0002": True})
    event = order("c4")
    response = await router.post("/v1/batch", json={"batch": [grant, event]}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: {"c3", "c4"} <= analytics_ids(state))


async def test_older_consent_event_name_and_malformed_preferences(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """'Segment Consent Preference' writes too; a malformed map or another event writes nothing."""
    router = await make_router(routing_from(), workers=False)
    subject = record_key(subject_key("user-1"))
    malformed = preference_event("m1", {"C0002": "yes"})
    other = order("m2", {"consent": {"categoryPreferences": {"C0002": True}}})
    response = await router.post("/v1/batch", json={"batch": [malformed, other]}, headers=AUTH)
    assert response.status == 200
    assert await redis_client.exists(subject) == 0
    older = preference_event("m3", {"C0002": True})
    older["event"] = "Segment Consent Preference"
    assert (await router.post("/v1/track", json=older, headers=AUTH)).status == 200
    raw = await redis_client.get(subject)
    assert raw is not None
    assert ConsentRecord.decode(raw).granted == {"analytics"}


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (b"{nope", "invalid_json", None),
        (b'{"userId": "u"}', "invalid_field", "categories"),
        (b'{"userId": "u", "categories": {"C0002": "yes"}}', "invalid_field", "categories[...]"),
        (b'{"categories": {"C0002": true}}', "missing_identity", "userId"),
        (b'{"userId": "u", "categories": {"C0099": true}}', "unknown_categories", "categories"),
        (b'{"userId": "u", "categories": {}}', "unknown_categories", "categories"),
        (
            b'{"userId": "u", "categories": {"C0002": true}, "timestamp": "soon"}',
            "invalid_timestamp",
            "timestamp",
        ),
        (
            b'{"userId": "u", "categories": {"C0002": true}, "source": "Not Valid!"}',
            "invalid_source",
            "source",
        ),
    ],
)
async def test_invalid_consent_bodies_get_a_400_in_the_one_error_shape(
    make_router: AppFactory,
    redis_client: aioredis.Redis,
    body: bytes,
    code: str,
    path: str | None,
) -> None:
    """Each invalid body is refused with its code and path, and nothing is stored."""
    router = await make_router(routing_from(), workers=False)
    response = await router.post("/v1/consent", data=body, headers=AUTH)
    assert response.status == 400
    answer = await response.json()
    assert answer["success"] is False
    assert answer["code"] == code
    assert answer.get("path") == path
    assert answer["message"]
    assert await redis_client.keys("rt:consent*") == []


async def test_consent_api_needs_a_known_write_key(make_router: AppFactory) -> None:
    """No key or an unknown key: 401, like /v1/track."""
    router = await make_router(routing_from(), workers=False)
    body = {"userId": "u", "categories": {"analytics": True}}
    assert (await router.post("/v1/consent", json=body)).status == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
    response = await router.post("/v1/consent", json=body, headers=wrong)
    assert response.status == 401
    assert (await response.json())["code"] == "invalid_write_key"


async def test_consent_api_answers_503_when_redis_is_down(
    make_router: AppFactory, redis_server: RedisServer
) -> None:
    """Redis unreachable: 503 with Retry-After, so the caller retries."""
    router = await make_router(routing_from(), workers=False)
    redis_server.kill()
    body = {"userId": "u", "categories": {"analytics": True}}
    response = await router.post("/v1/consent", json=body, headers=AUTH)
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert (await response.json())["code"] == "consent_store_unavailable"


async def command_calls(client: aioredis.Redis, command: str) -> int:
    """How many times Redis ran ``command`` (INFO commandstats)."""
    stats = await client.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


async def test_a_hot_subject_costs_no_consent_round_trip(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """The second request of a subject reads no consent from Redis; a write evicts the absence."""
    router = await make_router(routing_from(), workers=False)
    await live(router)
    assert (await router.post("/v1/track", json=order("h1"), headers=AUTH)).status == 200
    first = await command_calls(redis_client, "mget")
    assert first == 1
    for i in range(5):
        assert (await router.post("/v1/track", json=order(f"h{i + 2}"), headers=AUTH)).status == 200
    assert await command_calls(redis_client, "mget") == first
    assert await redis_client.xlen(queue_key(ANALYTICS)) == 0

    grant = {"userId": "user-1", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=grant, headers=AUTH)).status == 200
    assert (await router.post("/v1/track", json=order("h9"), headers=AUTH)).status == 200
    assert await command_calls(redis_client, "mget") == first + 1
    assert await redis_client.xlen(queue_key(ANALYTICS)) == 1


async def test_a_write_by_another_process_evicts_the_cached_absence(
    make_router: AppFactory, redis_server: RedisServer
) -> None:
    """A cached 'no record' is dropped when another process writes (pub/sub), in under a second."""
    router = await make_router(routing_from(), workers=False)
    store = await live(router)
    assert (await router.post("/v1/track", json=order("x1"), headers=AUTH)).status == 200
    assert store.cached == 2
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        other = ConsentStore(client)
        now = datetime.now(UTC)
        record = ConsentRecord.build(
            {"analytics": True}, source="api", updated_at=now, received_at=now, max_age_days=395
        )
        await other.write([subject_key("user-1")], record)
    finally:
        await client.aclose()
    await wait_for(lambda: store.cached == 1, within_s=1.0)
    stored = await store.get(["user-1", "anon-of-user-1"])
    assert stored is not None
    assert stored.granted == {"analytics"}


async def test_invalidations_resume_after_a_redis_restart(
    make_router: AppFactory, redis_server: RedisServer
) -> None:
    """After Redis comes back the store resubscribes: another process's write is seen again."""
    router = await make_router(routing_from(), workers=False)
    store = await live(router)
    assert await store.get(["user-1"]) is None
    redis_server.kill()
    await wait_for(lambda: not store.live, within_s=5)
    redis_server.start()
    assert await store.wait_live(10)
    assert await store.get(["user-1"]) is None
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        now = datetime.now(UTC)
        record = ConsentRecord.build(
            {"advertising": False}, source="api", updated_at=now, received_at=now, max_age_days=1
        )
        await ConsentStore(client).write([subject_key("user-1")], record)
    finally:
        await client.aclose()
    await wait_for(lambda: store.cached == 0, within_s=1.0)
    stored = await store.get(["user-1"])
    assert stored is not None
    assert stored.denied == {"advertising"}


@pytest.fixture
async def second_router(
    redis_server: RedisServer, receiver: tuple[WebhookReceiver, str], tmp_path: Path
) -> AsyncIterator[str]:
    """`router serve --no-workers` as a real subprocess on the same Redis: its base URL."""
    _, url = receiver
    config = tmp_path / "routing.yaml"
    config.write_text(TEST_CONFIG.read_text())
    port = free_port()
    env = {
        **os.environ,
        "ROUTER_REDIS_URL": redis_server.url,
        "HOOK_URL": url,
        "HOOK_SECRET": HOOK_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-workers",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the second router did not start")
        yield base
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def metric(session: aiohttp.ClientSession, base: str, needle: str) -> int:
    """The value of the first /metrics line containing every part of ``needle``."""
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    parts = needle.split("|")
    for line in text.splitlines():
        if all(part in line for part in parts):
            return int(line.rsplit(" ", 1)[1])
    return 0


async def test_a_withdrawal_reaches_another_router_process_within_a_second(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    second_router: str,
) -> None:
    """Two processes, one Redis: each honours the other's withdrawal in < 1 s, queued events too."""
    state, url = receiver
    routing = routing_from(hook_url=url)
    first = await make_router(routing, workers=False)
    await live(first)
    denied_at_second = 'reason="category_denied"|destination="analytics-hook"|stage="ingest"'
    async with aiohttp.ClientSession() as session:

        async def to_second(path: str, body: dict[str, Any]) -> None:
            async with session.post(f"{second_router}{path}", json=body, headers=AUTH) as r:
                assert r.status == 200

        # user-1: granted through the second process, cached by the first, q1 queued there.
        await to_second("/v1/consent", {"userId": "user-1", "categories": {"C0002": True}})
        assert (await first.post("/v1/track", json=order("q1"), headers=AUTH)).status == 200
        await to_second("/v1/consent", {"userId": "user-1", "categories": {"C0002": False}})
        await asyncio.sleep(1.0)
        assert (await first.post("/v1/track", json=order("q2"), headers=AUTH)).status == 200
        assert skipped(first, "category_denied") == 1

        # user-2: granted through the first, cached by the second, p1 queued there.
        grant = {"userId": "user-2", "categories": {"C0002": True}}
        assert (await first.post("/v1/consent", json=grant, headers=AUTH)).status == 200
        await to_second("/v1/track", order("p1", user="user-2"))
        withdraw = {"userId": "user-2", "categories": {"C0002": False}}
        assert (await first.post("/v1/consent", json=withdraw, headers=AUTH)).status == 200
        await asyncio.sleep(1.0)
        await to_second("/v1/track", order("p2", user="user-2"))
        assert await metric(session, second_router, denied_at_second) == 1

    workers = await make_router(routing, consumer="late")
    await wait_for(lambda: {"q1", "q2", "p1", "p2"} <= ops_ids(state))
    await wait_for(lambda: skipped(workers, "consent_withdrawn", stage="delivery") == 2)
    assert analytics_ids(state) == set()


async def test_a_hot_subject_costs_no_suppression_round_trip_and_erasure_still_wins(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """Suppression is cached with consent; an erasure's invalidation makes the next event skip."""
    router = await make_router(routing_from(), workers=False)
    store = await live(router)
    assert (await router.post("/v1/track", json=order("s1"), headers=AUTH)).status == 200
    checks = await command_calls(redis_client, "smismember")
    assert checks == 1
    for i in range(5):
        assert (await router.post("/v1/track", json=order(f"s{i + 2}"), headers=AUTH)).status == 200
    assert await command_calls(redis_client, "smismember") == checks
    assert await redis_client.xlen(queue_key("ops-hook")) == 6

    await store.erase([subject_key("user-1")])
    assert (await router.post("/v1/track", json=order("s9"), headers=AUTH)).status == 200
    assert await command_calls(redis_client, "smismember") == checks + 1
    assert await redis_client.xlen(queue_key("ops-hook")) == 6
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_skipped_total", reason="suppressed", stage="ingest") == 2


async def test_a_choice_in_a_batch_applies_from_that_event_on(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Events of one batch without consent fields share one resolution per subject, until an
    event of the batch stores a new choice: those before it keep the old one."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    denial = preference_event("d0", {"C0002": False})
    assert (await router.post("/v1/track", json=denial, headers=AUTH)).status == 200
    batch = [order("d1"), order("d2"), preference_event("d3", {"C0002": True}), order("d4")]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: {"d1", "d2", "d4"} <= ops_ids(state))
    await wait_for(lambda: {"d3", "d4"} <= analytics_ids(state))
    assert not {"d1", "d2"} & analytics_ids(state)


async def test_events_sharing_a_message_id_keep_their_own_subjects(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Two events of one batch with the same messageId but different users are each decided
    by their own user's stored consent."""
    state, url = receiver
    router = await make_router(routing_from(hook_url=url))
    denial = preference_event("p0", {"C0002": False}, user="user-denied")
    assert (await router.post("/v1/track", json=denial, headers=AUTH)).status == 200
    grant = preference_event("p1", {"C0002": True}, user="user-granted")
    assert (await router.post("/v1/track", json=grant, headers=AUTH)).status == 200
    granted = order("same-id", user="user-denied")
    other = order("same-id", user="user-granted")
    before = skipped(router, "category_denied")
    response = await router.post("/v1/batch", json={"batch": [other, granted]}, headers=AUTH)
    assert response.status == 200
    assert skipped(router, "category_denied") == before + 1  # decided at ingest
    await wait_for(lambda: "same-id" in analytics_ids(state))
    sent = [e.get("anonymousId") for e in state.events() if e.get("messageId") == "same-id"]
    assert "anon-of-user-granted" in sent
    assert "anon-of-user-denied" not in sent


async def test_a_corrupt_stored_record_grants_nothing(
    redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A value under a record key that is not a record reads as 'grants nothing' and is logged
    without its content (it could be anything)."""
    await redis_client.set(record_key(subject_key("user-7")), b'{"granted": ["analytics"]}')
    stored = await ConsentStore(redis_client).get(["user-7"])
    assert stored is not None
    assert (stored.granted, stored.source) == (frozenset(), "unreadable")
    messages = [r.getMessage() for r in caplog.records if r.name == "consent.store"]
    assert messages == ["unreadable consent record; it grants nothing"]
