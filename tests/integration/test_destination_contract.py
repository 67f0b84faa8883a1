"""The destination contract: every registered connector, through the real pipeline.

Router app with workers on a real Redis, events posted to ``/v1/batch`` with Basic auth,
delivered to the platform's local fake (which checks the platform's documented rules). Each
destination type must pass the same clauses (style.md rule 7): happy path with dedup ids,
retry then success, permanent failure, partial failure, only allowlisted fields on the wire,
idempotent shutdown, and isolation from a destination that is down. The per-platform knobs
live in ``contract_cases.py``; a type registered without a case fails here.

Events are first enqueued by an app without workers, then a second app with workers delivers
them, so every batch holds exactly the events the test expects (a worker that reads while the
ingest pipeline is still writing could otherwise see half a batch).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from destinations.registry import CONNECTORS
from router.compliance.datamap import day_of, read_datamap
from router.edge.app import RUNTIME
from router.edge.state import STATE
from router.queue.items import entry_items
from router.queue.keys import GROUP, dlq_key, queue_key
from router.routing import Routing
from tests.conftest import WRITE_KEY, AppFactory, routing_from, wait_for
from tests.integration.contract_cases import (
    CASES,
    FORBIDDEN,
    REVENUE,
    MixpanelPlatform,
    Platform,
    order,
    routing_text,
)

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
Serve = Callable[[Platform], Awaitable[str]]
Client = TestClient[web.Request, web.Application]


def contract(clause: str) -> list[Any]:
    """Every registered destination type, with a strict xfail where its case names a bug."""
    params = []
    for type_name in sorted(CONNECTORS):
        case = CASES.get(type_name)
        bug = case.known_bugs.get(clause) if case is not None else None
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
        params.append(pytest.param(type_name, marks=marks, id=type_name))
    return params


@pytest.fixture
def platform(request: pytest.FixtureRequest) -> Platform:
    """The contract case of the destination type under test."""
    type_name: str = request.param
    case = CASES.get(type_name)
    if case is None:
        pytest.fail(
            f"destination type {type_name!r} is registered but has no contract case in "
            "tests/integration/contract_cases.py"
        )
    return case()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a platform's fake on a free port; returns its base URL."""
    servers: list[TestServer] = []

    async def start(platform: Platform) -> str:
        server = TestServer(platform.app())
        await server.start_server()
        servers.append(server)
        return f"http://{server.host}:{server.port}"

    yield start
    for server in servers:
        await server.close()


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """``wait_for`` for conditions that need Redis: poll until ``check()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def queued(redis: aioredis.Redis, destination: str) -> int:
    """Deliveries waiting in a destination's stream (an entry may hold a request's batch)."""
    entries = await redis.xrange(queue_key(destination))
    return sum(len(entry_items({k.decode(): v for k, v in f.items()})) for _, f in entries)


@dataclass
class Harness:
    """One destination of the platform under test, wired to its fake and the test's Redis."""

    platform: Platform
    routing: Routing
    make_router: AppFactory
    redis: aioredis.Redis

    @property
    def id(self) -> str:
        """The destination id."""
        return self.platform.destination_id

    async def post(self, router: Client, events: list[dict[str, Any]]) -> None:
        """Post a batch; every event must be accepted."""
        response = await router.post("/v1/batch", json={"batch": events}, headers=AUTH)
        assert response.status == 200
        assert await response.json() == {"success": True}

    async def deliver(self, events: list[dict[str, Any]]) -> Client:
        """Enqueue every event, then start the app whose workers deliver them."""
        await self.post(await self.make_router(self.routing, workers=False), events)
        assert await queued(self.redis, self.id) == len(events)
        return await self.make_router(self.routing)

    async def dead_letters(self) -> dict[str, str]:
        """messageId -> reason of every dead letter of the destination."""
        letters = {}
        for _, fields in await self.redis.xrange(dlq_key(self.id)):
            item = msgspec.json.decode(fields[b"d"])
            letters[item["delivery"]["message_id"]] = fields[b"reason"].decode()
        return letters

    async def pending(self) -> int:
        """Entries read by a worker and not acknowledged."""
        summary = await self.redis.xpending(queue_key(self.id), GROUP)
        return int(summary["pending"])

    async def settled(self) -> bool:
        """Nothing pending and nothing left in the destination's queue."""
        return await self.pending() == 0 and await self.redis.xlen(queue_key(self.id)) == 0


@pytest.fixture
async def harness(
    platform: Platform, serve: Serve, make_router: AppFactory, redis_client: aioredis.Redis
) -> Harness:
    """The platform's fake started and a routing file with its destination."""
    base_url = await serve(platform)
    routing = routing_from(routing_text(platform.destination(base_url)))
    return Harness(platform, routing, make_router, redis_client)


def batches(count: int, platform: Platform) -> int:
    """Requests needed for ``count`` events read in batches of the platform's size."""
    return math.ceil(count / platform.batch_size)


def accepted(platform: Platform) -> list[str | None]:
    """The dedup ids of the events the platform accepted, sorted (a missing id shows as None)."""
    return sorted(platform.accepted_ids(), key=str)


def stats(router: Client) -> Any:
    """The router app's counters."""
    return router.server.app[STATE].stats


def test_every_registered_connector_has_a_contract_case() -> None:
    """A destination type registered without a contract case fails the suite."""
    assert set(CASES) == set(CONNECTORS)
    for type_name, case in CASES.items():
        assert case.type_name == type_name


@pytest.mark.parametrize("platform", contract("happy_path"), indirect=True)
async def test_happy_path_delivers_every_event_with_its_dedup_id(harness: Harness) -> None:
    """N events all reach the fake, accepted, each carrying its messageId as dedup id."""
    platform = harness.platform
    ids = [f"happy-{i}" for i in range(5)]
    worker = await harness.deliver([order(i) for i in ids])
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    await until(harness.settled)
    assert accepted(platform) == ids, f"dedup id: {platform.dedup_id}"
    assert platform.problems() == []
    assert await harness.dead_letters() == {}
    assert stats(worker).get("router_events_delivered_total", destination=harness.id) == 5
    assert len(platform.raw) == batches(len(ids), platform)


@pytest.mark.parametrize("platform", contract("retry_then_success"), indirect=True)
async def test_transient_failure_is_retried_and_delivers_each_event_once(
    harness: Harness,
) -> None:
    """One 5xx or throttling answer, then success: each event accepted once, a retry counted."""
    platform = harness.platform
    platform.fail_once()
    ids = [f"retry-{i}" for i in range(3)]
    worker = await harness.deliver([order(i) for i in ids])
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    await until(harness.settled)
    assert accepted(platform) == ids
    assert len(platform.raw) == batches(len(ids), platform) + 1
    retried = min(len(ids), platform.batch_size)  # the events of the first batch
    assert stats(worker).get("router_delivery_retries_total", destination=harness.id) == retried
    assert await harness.dead_letters() == {}


@pytest.mark.parametrize("platform", contract("permanent_failure"), indirect=True)
async def test_permanent_failure_dead_letters_every_event_without_retry(
    harness: Harness,
) -> None:
    """A permanent refusal: every event dead-lettered with the reason, none pending, no retry."""
    platform = harness.platform
    platform.refuse_all()
    ids = [f"refused-{i}" for i in range(3)]
    worker = await harness.deliver([order(i) for i in ids])
    await until(lambda: _has(harness, len(ids)))
    await until(harness.settled)
    assert await harness.dead_letters() == dict.fromkeys(ids, platform.refusal_reason)
    assert platform.accepted_ids() == []
    assert stats(worker).get("router_delivery_retries_total", destination=harness.id) == 0
    assert stats(worker).get("router_events_delivered_total", destination=harness.id) == 0


async def _has(harness: Harness, count: int) -> bool:
    return await harness.redis.xlen(dlq_key(harness.id)) >= count


@pytest.mark.parametrize("platform", contract("request_wide_refusal"), indirect=True)
async def test_request_wide_refusal_costs_one_request_per_batch(harness: Harness) -> None:
    """Revoked credentials refuse the whole request: no retry, no bisection, one request."""
    platform = harness.platform
    platform.refuse_all()
    ids = [f"revoked-{i}" for i in range(3)]
    await harness.deliver([order(i) for i in ids])
    await until(lambda: _has(harness, len(ids)))
    await until(harness.settled)
    assert len(platform.raw) == batches(len(ids), platform)


@pytest.mark.parametrize("platform", contract("partial_failure"), indirect=True)
async def test_partial_failure_dead_letters_only_the_bad_event(harness: Harness) -> None:
    """One event the platform refuses on its own is dead-lettered; the rest are delivered."""
    platform = harness.platform
    if platform.partial_skip is not None:
        pytest.skip(platform.partial_skip)
    ids = [f"part-{i}" for i in range(4)]
    events = [order(i) for i in ids]
    events[2] = platform.spoil(events[2])
    good = [ids[0], ids[1], ids[3]]
    assert len(events) <= platform.batch_size  # one batch: the bad event travels with the good
    worker = await harness.deliver(events)
    await wait_for(lambda: len(platform.accepted_ids()) >= len(good))
    await until(lambda: _has(harness, 1))
    await until(harness.settled)
    assert await harness.dead_letters() == {ids[2]: platform.partial_reason}
    assert accepted(platform) == good
    delivered = stats(worker).get("router_events_delivered_total", destination=harness.id)
    assert delivered == len(good)


@pytest.mark.parametrize("platform", contract("allowlist_only"), indirect=True)
async def test_only_allowlisted_fields_reach_the_wire(harness: Harness) -> None:
    """No value of a field outside the allowlist appears in any byte the platform received."""
    platform = harness.platform
    ids = [f"pii-{i}" for i in range(3)]
    await harness.deliver([order(i) for i in ids])
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    await until(harness.settled)
    assert platform.problems() == []
    wire = b"\n".join(platform.raw)
    assert str(REVENUE).encode() in wire  # the search sees the allowlisted payload
    leaked = [value for value in FORBIDDEN if value.encode() in wire]
    assert leaked == []


@pytest.mark.parametrize("platform", contract("idempotent_close"), indirect=True)
async def test_closing_twice_raises_nothing_and_leaves_nothing_pending(harness: Harness) -> None:
    """Start and close the app twice, close and stop the workers twice: all delivered, acked."""
    platform = harness.platform
    delivered: list[str] = []
    for run in range(2):
        ids = [f"close{run}-{i}" for i in range(3)]
        router = await harness.make_router(harness.routing)
        await harness.post(router, [order(i) for i in ids])
        delivered += ids
        expected = len(delivered)
        await wait_for(lambda expected=expected: len(platform.accepted_ids()) >= expected)
        await until(harness.settled)
        pool = router.server.app[RUNTIME].workers
        assert pool is not None
        await router.close()
        await router.close()
        await pool.stop(1.0)
        await pool.stop(1.0)
    assert accepted(platform) == sorted(delivered)
    assert await harness.pending() == 0
    assert await harness.redis.xlen(queue_key(harness.id)) == 0
    assert await harness.dead_letters() == {}


@pytest.mark.parametrize("platform", contract("isolation"), indirect=True)
async def test_a_down_destination_keeps_its_backlog_and_never_holds_up_another(
    platform: Platform, serve: Serve, make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """While one destination answers 503, another gets all N; after recovery the first too."""
    others = sorted(set(CASES) - {platform.type_name})
    healthy = CASES["webhook" if platform.type_name != "webhook" else others[0]]()
    down_url, healthy_url = await serve(platform), await serve(healthy)
    routing = routing_from(
        routing_text(
            # Enough attempts that the down destination keeps its backlog instead of
            # dead-lettering it while the test watches.
            platform.destination(down_url, max_attempts=1000),
            healthy.destination(healthy_url),
        )
    )
    platform.go_down()
    router = await make_router(routing)
    ids = [f"iso-{i}" for i in range(6)]
    response = await router.post("/v1/batch", json={"batch": [order(i) for i in ids]}, headers=AUTH)
    assert response.status == 200

    await wait_for(lambda: len(healthy.accepted_ids()) >= len(ids) and len(platform.raw) >= 2)
    assert accepted(healthy) == ids
    assert platform.accepted_ids() == []
    assert await queued(redis_client, platform.destination_id) == len(ids)
    assert await redis_client.xlen(dlq_key(platform.destination_id)) == 0

    platform.recover()
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    assert accepted(platform) == ids
    down = Harness(platform, routing, make_router, redis_client)
    await until(down.settled)
    assert await down.dead_letters() == {}
    assert (
        stats(router).get("router_delivery_retries_total", destination=healthy.destination_id) == 0
    )


@pytest.mark.parametrize("currency", ["euro", None], ids=["euro", "no_currency"])
@pytest.mark.parametrize("platform", contract("documented_money"), indirect=True)
async def test_value_leaves_only_with_an_iso_4217_currency(
    harness: Harness, currency: str | None
) -> None:
    """ "euro" or no currency: never "EURO" on the wire, never a value the platform would
    refuse or not count; a Meta Purchase is skipped (missing_required), the rest delivered.

    GA4 event reference (currency required with value), Meta custom data ("Required for
    purchase events"; contents[] "id and quantity are the required fields"), Amplitude HTTP
    V2 and TikTok Events API (ISO 4217): the fakes refuse or flag each breach.
    """
    platform = harness.platform
    ids = [f"money-{i}" for i in range(3)]
    events = []
    for message_id in ids:
        event = order(message_id)
        properties = dict(event["properties"])
        properties.pop("currency")
        if currency is not None:
            properties["currency"] = currency
        # A product without quantity: Meta requires one in contents[] and documents no default.
        properties["products"] = [*properties["products"], {"product_id": "p2", "price": 3}]
        events.append({**event, "properties": properties})
    worker = await harness.deliver(events)
    expected_letters = (
        dict.fromkeys(ids, platform.unpriced_purchase) if platform.unpriced_purchase else {}
    )
    expected_accepted = [] if platform.unpriced_purchase else ids
    await until(lambda: _settled_with(harness, len(expected_accepted), len(expected_letters)))
    await until(harness.settled)
    assert accepted(platform) == expected_accepted
    assert await harness.dead_letters() == expected_letters
    assert platform.problems() == []
    if platform.currency_field:
        assert b'"EURO"' not in b"\n".join(platform.raw)
    delivered = stats(worker).get("router_events_delivered_total", destination=harness.id)
    assert delivered == len(expected_accepted)


async def _settled_with(harness: Harness, accepted_count: int, letters: int) -> bool:
    return (
        len(harness.platform.accepted_ids()) >= accepted_count
        and await harness.redis.xlen(dlq_key(harness.id)) >= letters
    )


@pytest.mark.parametrize("platform", contract("phone_without_country_code"), indirect=True)
async def test_a_phone_without_country_code_is_never_hashed_as_if_it_had_one(
    harness: Harness,
) -> None:
    """(650) 555-1212 with no default country code: no hash of 6505551212 / +6505551212 leaves
    (it could never match), and the event is still delivered."""
    platform = harness.platform
    ids = [f"phone-{i}" for i in range(2)]
    events = []
    for message_id in ids:
        event = order(message_id)
        context = {
            **event["context"],
            "traits": {**event["context"]["traits"], "phone": "(650) 555-1212"},
        }
        events.append({**event, "context": context})
    worker = await harness.deliver(events)
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    await until(harness.settled)
    wire = b"\n".join(platform.raw)
    for wrong in ("6505551212", "+6505551212"):
        assert hashlib.sha256(wrong.encode()).hexdigest().encode() not in wire
    assert platform.problems() == []
    if "context.traits.phone" not in platform.fields:
        return
    # Match readiness: the omission is counted, and the data map says why matches fell.
    omitted = stats(worker).get(
        "router_fields_omitted_total", destination=harness.id, field="phone"
    )
    assert omitted == len(ids)
    recorder = worker.server.app[RUNTIME].datamap
    await recorder.flush()
    row = (await read_datamap(harness.redis, day_of(datetime.now(UTC))))["destinations"][harness.id]
    assert row["match"]["omitted:phone:no_country_code"] == len(ids)
    assert row["match"]["email"] == len(ids)
    assert "phone" not in row["match"]


@pytest.mark.parametrize("platform", ["mixpanel"], indirect=True)
async def test_mixpanel_413_is_split_until_every_event_is_imported(harness: Harness) -> None:
    """Mixpanel answers 413 over its body limit (import-events reference: "request exceeds max
    limit"): the worker halves the request until the parts fit; nothing is dead-lettered."""
    platform = harness.platform
    assert isinstance(platform, MixpanelPlatform)
    ids = [f"big-{i}" for i in range(4)]
    platform.fake.max_body_bytes = 600  # one event (about 300 bytes) fits, four do not
    await harness.deliver([order(i) for i in ids])
    await wait_for(lambda: len(platform.accepted_ids()) >= len(ids))
    await until(harness.settled)
    assert accepted(platform) == ids
    assert await harness.dead_letters() == {}
    statuses = [status for status, _ in platform.fake.responses]
    assert 413 in statuses
