"""Group lookup: concurrent requests' stored-consent and suppression misses share one round
trip, and every request gets exactly what its own lookup would have returned."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consent.ids import subject_key
from consent.records import ConsentRecord
from consent.resolve import RequestSignals
from consent.store import ConsentStore
from router.core.plan import RequestPlan, plan_request
from router.core.sanitize import Event, sanitize
from router.core.schema import WireEvent
from router.edge.state import STATE
from router.queue.backend import connect
from router.queue.keys import SUPPRESSED
from tests.conftest import WRITE_KEY, AppFactory, routing_from
from tests.integration.test_consent_store import command_calls
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
NOW = datetime.now(UTC).replace(microsecond=0)
ROUTING = routing_from()
CATEGORIES = ("C0001", "C0002", "C0003", "C0004")


async def test_concurrent_lookups_share_one_mget(redis_client: aioredis.Redis) -> None:
    """N concurrent lookups of different subjects: one MGET and one SMISMEMBER in Redis."""
    store = ConsentStore(redis_client, suppressed_key=SUPPRESSED)
    before = await command_calls(redis_client, "mget")
    results = await asyncio.gather(
        *(store.lookup_all([subject_key(f"u{n}"), subject_key(f"a{n}")]) for n in range(16))
    )
    assert await command_calls(redis_client, "mget") == before + 1
    assert await command_calls(redis_client, "smismember") == 0  # erasure marks: same MGET
    for n, (records, suppressed) in enumerate(results):
        assert set(records) == {subject_key(f"u{n}"), subject_key(f"a{n}")}
        assert suppressed == set()


async def test_a_lookup_during_a_read_in_flight_joins_the_next_one(
    redis_client: aioredis.Redis,
) -> None:
    """While one group read is in flight, later lookups gather into the next: two MGETs."""
    store = ConsentStore(redis_client)
    first = asyncio.ensure_future(store.lookup_all([subject_key("x0")]))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first group is sent now
    later = [asyncio.ensure_future(store.lookup_all([subject_key(f"x{n}")])) for n in range(1, 9)]
    await asyncio.gather(first, *later)
    assert await command_calls(redis_client, "mget") == 2


async def test_a_failed_group_read_fails_every_request_of_the_group(
    redis_server: RedisServer,
) -> None:
    """Redis failing the read (here: down): each request of the group gets the error (the
    edge answers 503), none hangs, and the next read works again once Redis is back."""
    client = connect(redis_server.url, 500)
    store = ConsentStore(client, suppressed_key=SUPPRESSED)
    try:
        redis_server.kill()
        outcomes = await asyncio.gather(
            *(store.lookup_all([subject_key(f"f{n}")]) for n in range(4)), return_exceptions=True
        )
        assert all(isinstance(o, RedisError | OSError) for o in outcomes)
        redis_server.start()
        records, suppressed = await store.lookup_all([subject_key("f0")])
        assert records == {subject_key("f0"): None}
        assert suppressed == set()
    finally:
        await client.aclose()


async def test_a_cancelled_request_does_not_strand_its_group(redis_client: aioredis.Redis) -> None:
    """The request that opened a group goes away: the others still get their answer."""
    store = ConsentStore(redis_client)
    opener = asyncio.ensure_future(store.lookup_all([subject_key("c0")]))
    others = [asyncio.ensure_future(store.lookup_all([subject_key(f"c{n}")])) for n in range(1, 4)]
    await asyncio.sleep(0)
    opener.cancel()
    answers = await asyncio.gather(*others)
    assert [set(records) for records, _ in answers] == [{subject_key(f"c{n}")} for n in (1, 2, 3)]
    assert opener.cancelled()


async def test_concurrent_requests_cost_one_mget_round_trip(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """N concurrent single-event requests of N different people: one MGET for all of them."""
    router = await make_router(routing_from(), workers=False)
    store = router.server.app[STATE].consent
    assert store is not None
    assert await store.wait_live()
    events = [_wire(n, user=f"person-{n}") for n in range(12)]
    before = await command_calls(redis_client, "mget")
    responses = await asyncio.gather(
        *(router.post("/v1/track", json=e, headers=AUTH) for e in events)
    )
    assert [r.status for r in responses] == [200] * len(events)
    assert await command_calls(redis_client, "mget") - before == 1
    assert store.cached == 2 * len(events)


def _wire(n: int, *, user: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{n}",
        "userId": user,
        "anonymousId": f"anon-{user}",
        "timestamp": (NOW - timedelta(seconds=n % 50)).isoformat(),
        "properties": {"order_id": f"o-{n}", "revenue": n * 1.5, "currency": "EUR"},
        "context": context or {},
    }


def _generated(rng: random.Random, count: int) -> list[Event]:
    """Events of a pool of people: some with a consent of their own, most without."""
    events = []
    for n in range(count):
        context: dict[str, Any] = {}
        if rng.random() < 0.3:
            prefs = {c: rng.random() < 0.6 for c in rng.sample(CATEGORIES, rng.randint(1, 4))}
            context["consent"] = {"categoryPreferences": prefs}
        wire = _wire(n, user=f"p{rng.randrange(40)}", context=context)
        event = sanitize(
            msgspec.convert(wire, WireEvent), route_type=None, received_at=NOW, new_id=str
        )
        assert isinstance(event, Event)
        events.append(event)
    return events


async def _store_choices(rng: random.Random, store: ConsentStore) -> None:
    """Stored records for half the pool (grants and denials, various ages), two erased."""
    for person in range(0, 40, 2):
        at = NOW - timedelta(minutes=rng.randrange(600))
        record = ConsentRecord.build(
            {"analytics": rng.random() < 0.7, "advertising": rng.random() < 0.3},
            source="api",
            updated_at=at,
            received_at=at,
            max_age_days=395,
        )
        subjects = [subject_key(f"p{person}")]
        if rng.random() < 0.5:
            subjects.append(subject_key(f"anon-p{person}"))
        await store.write(subjects, record)
    await store.erase([subject_key("p3"), subject_key("anon-p8")])


def _encoded(plan: RequestPlan) -> bytes:
    """Everything a request's plan decided, as bytes."""
    return msgspec.json.encode(
        {
            "deliveries": {
                d: [msgspec.structs.asdict(r.delivery) | {"pii": r.pii} for r in routed]
                for d, routed in plan.deliveries.items()
            },
            "skipped": sorted((d, r.value, n) for (d, r), n in plan.skipped.items()),
            "audit": plan.decision_records(),
        }
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_grouped_lookups_give_byte_for_byte_the_same_decisions(
    redis_client: aioredis.Redis, seed: int
) -> None:
    """Generated events planned on grouped (concurrent) and on one-by-one lookups: the same
    deliveries, skips and audit entries, byte for byte."""
    rng = random.Random(seed)
    grouped = ConsentStore(redis_client, suppressed_key=SUPPRESSED)
    alone = ConsentStore(redis_client, suppressed_key=SUPPRESSED, group_lookups=False)
    await _store_choices(rng, alone)
    events = _generated(rng, 300)
    subjects = [tuple(subject_key(i) for i in e.subject_ids) for e in events]
    mget_before = await command_calls(redis_client, "mget")
    together = await asyncio.gather(*(grouped.lookup_all(s) for s in subjects))
    grouped_mgets = await command_calls(redis_client, "mget") - mget_before
    one_by_one = [await alone.lookup_all(s) for s in subjects]
    assert grouped_mgets == 1
    assert together == one_by_one

    def plan_of(lookups: tuple[dict[str, ConsentRecord | None], set[str]], i: int) -> bytes:
        records, suppressed = lookups
        plan = plan_request(
            [events[i]],
            [subjects[i]],
            routing=ROUTING,
            signals=RequestSignals(),
            suppressed=suppressed,
            records=records,
            audit_key=b"audit-key",
        )
        return _encoded(plan)

    decided = [plan_of(together[i], i) for i in range(len(events))]
    assert decided == [plan_of(one_by_one[i], i) for i in range(len(events))]
    assert any(b'"suppressed"' in d for d in decided)
    assert any(b'"deliveries":{}' not in d for d in decided)
