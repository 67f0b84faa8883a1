"""Differentially private aggregates on a real Redis, with the router's own workers counting
and a local partner that checks every signature: consent before counting, the per-person
bound, releases audited and delivered, the daily budget refused and visible in the metrics,
and the noise of many releases."""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from consent.store import ConsentStore
from destinations.transport import AiohttpTransport
from router.compliance.aggregates import (
    AggregateStore,
    Contribution,
    discrete_laplace_variance,
    window_of,
)
from router.compliance.audit_log import AuditLog
from router.compliance.datamap import read_last_deliveries
from router.compliance.erasure import Identifiers, erase
from router.compliance.inventory import AGGREGATES, Flag, read_inventory
from router.delivery.aggregate import AggregateReleaser, aggregate_parts, releaser_for
from router.edge.state import STATE
from router.observability.metrics import Stats
from router.queue.keys import SUPPRESSED, outbox_key, queue_key
from router.routing import Routing, parse_routing
from tests.conftest import HOOK_SECRET, WRITE_KEY, AppFactory, wait_for
from tests.fakes.transport import RecordingTransport
from tests.fakes.webhook import WebhookReceiver

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
GRANTED = {"consent": {"categoryPreferences": {"C0002": True}}}
DENIED = {"consent": {"categoryPreferences": {"C0002": False}}}
WINDOW_S = 60
ROUTING = """
sources:
  - id: web
    write_key: test-write-key
consent:
  mappings:
    ids: {C0002: analytics}
destinations:
  - id: partner-agg
    type: aggregate
    purpose: Sales insight for the brand partner
    requires: [analytics]
    events: ["Order Completed", "Product Viewed"]
    fields: [properties.category, properties.revenue]
    settings:
      url: "${HOOK_URL}"
      secret: "${HOOK_SECRET}"
      window_s: 60
      release_delay_s: 0
      epsilon: @EPSILON@
      daily_epsilon: @DAILY@
      max_contributions: 2
      dimensions: {properties.category: [shoes, hats]}
      sum: {field: properties.revenue, lower: 0, upper: 100}
"""


def routing(url: str, epsilon: float = 1.0, daily: float = 1.5) -> Routing:
    text = ROUTING.replace("@EPSILON@", str(epsilon)).replace("@DAILY@", str(daily))
    return parse_routing(text, env={"HOOK_URL": url, "HOOK_SECRET": HOOK_SECRET})


def order(number: int, user: str, category: str, revenue: float, consent: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"m-{number}",
        "userId": user,
        "properties": {"category": category, "revenue": revenue, "email": "x@shop.example"},
        "context": consent,
    }


def releaser(
    route: Routing, client: aioredis.Redis, transport: AiohttpTransport, at: datetime
) -> tuple[AggregateReleaser, Stats]:
    stats = Stats()
    audit = AuditLog(client, key=b"audit-key")
    driver = releaser_for(route.destinations[0], client, transport, audit, stats, clock=lambda: at)
    return driver, stats


async def audit_records(client: aioredis.Redis) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in AuditLog(client).export()]


def cell(release: dict[str, Any], event: str, category: str) -> dict[str, Any]:
    found = [
        c
        for c in release["cells"]
        if c["event"] == event and c["dimensions"] == {"properties.category": category}
    ]
    assert len(found) == 1
    return found[0]


async def test_counts_with_consent_and_bound_then_releases_within_the_daily_budget(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
) -> None:
    """Only consenting events are counted, at most two per person per window, and no event
    reaches the partner. The first window is released with noise (audited, signed, delivered);
    the next windows of the same day are refused once the budget is spent: audited as
    ``aggregate_refused`` and counted in ``router_aggregate_releases_total``."""
    partner, url = receiver
    route = routing(url, epsilon=1.0, daily=1.5)
    router = await make_router(route, release_every_s=3600)  # the test drives the releases
    started = datetime.now(UTC)
    batch = [
        *(order(n, "alice", "shoes", 250, GRANTED) for n in range(5)),  # 2 counted, clipped
        order(10, "bob", "hats", 30, GRANTED),
        order(11, "carol", "shoes", 40, DENIED),  # no consent: never counted
        order(12, "dave", "socks", 20, GRANTED),  # an unlisted value: "other"
    ]
    assert (await router.post("/v1/batch", json={"batch": batch}, headers=AUTH)).status == 200
    stats = router.server.app[STATE].stats
    await wait_for(
        lambda: (
            stats.get(
                "router_aggregate_contributions_total", destination="partner-agg", status="counted"
            )
            == 4
        )
    )
    assert (
        stats.get(
            "router_aggregate_contributions_total", destination="partner-agg", status="over_bound"
        )
        == 3
    )
    assert (
        stats.get(
            "router_events_skipped_total",
            destination="partner-agg",
            reason="category_denied",
            stage="ingest",
        )
        + stats.get(
            "router_events_skipped_total",
            destination="partner-agg",
            reason="no_consent",
            stage="ingest",
        )
        == 1
    )
    for _ in range(200):  # acknowledged and deleted once counted
        if await redis_client.xlen(queue_key("partner-agg")) == 0:
            break
        await asyncio.sleep(0.02)
    assert await redis_client.xlen(queue_key("partner-agg")) == 0
    assert partner.requests == []  # nothing per event, ever
    metrics = await (await router.get("/metrics")).text()
    assert (
        'router_aggregate_contributions_total{destination="partner-agg",status="over_bound"} 3'
        in metrics
    )

    destination = route.destinations[0]
    _, settings, layout = aggregate_parts(destination)
    store = AggregateStore(redis_client, destination.id, settings)
    first = window_of(started.timestamp(), WINDOW_S)
    counts, sums = await store.raw(first, layout)
    assert sums is not None
    truth = {layout.cells[i]: (c, s) for i, (c, s) in enumerate(zip(counts, sums, strict=True))}
    assert truth[("Order Completed", ("shoes",))] == (2, 200)  # alice: bound 2, clipped at 100
    assert truth[("Order Completed", ("hats",))] == (1, 30)
    assert truth[("Order Completed", ("other",))] == (1, 20)
    assert sum(counts) == 4

    transport = AiohttpTransport()
    later = datetime.fromtimestamp(first + 3 * WINDOW_S + 1, UTC)
    driver, driver_stats = releaser(route, redis_client, transport, later)
    try:
        await driver.tick()
    finally:
        await transport.aclose()
    days = [datetime.fromtimestamp(first + k * WINDOW_S, UTC).date() for k in range(3)]
    # Simulate the budget per UTC day: 1.5 a day, 1.0 a window (at most two days among three
    # windows, so at least one refusal whatever the time of day).
    spent: dict[Any, float] = {}
    expected = []
    for day in days:
        ok = spent.get(day, 0.0) + 1.0 <= 1.5
        spent[day] = spent.get(day, 0.0) + (1.0 if ok else 0.0)
        expected.append("released" if ok else "refused")
    assert "refused" in expected
    released = expected.count("released")
    assert (
        driver_stats.get(
            "router_aggregate_releases_total", destination="partner-agg", status="released"
        )
        == released
    )
    assert driver_stats.get(
        "router_aggregate_releases_total", destination="partner-agg", status="refused"
    ) == expected.count("refused")
    assert (
        driver_stats.get(
            "router_aggregate_releases_total", destination="partner-agg", status="delivered"
        )
        == released
    )
    assert len(partner.accepted) == released
    assert partner.invalid == []
    body = partner.accepted[0].body
    assert body["window_start"] == datetime.fromtimestamp(first, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    assert body["mechanism"] == "discrete_laplace"
    assert body["epsilon"] <= 1.0
    assert body["count_sensitivity"] == 2
    assert body["sum_sensitivity"] == 200
    assert body["count_scale"] == pytest.approx(2 / 0.5, rel=1e-3)
    assert body["sum_scale"] == pytest.approx(200 / 0.5, rel=1e-3)
    assert len(body["cells"]) == 6  # every cell, zero or not
    assert "alice" not in json.dumps(body)
    shoes = cell(body, "Order Completed", "shoes")
    assert isinstance(shoes["count"], int)
    assert isinstance(shoes["sum"], int)

    records = await audit_records(redis_client)
    kinds = [r["kind"] for r in records]
    assert kinds.count("aggregate_release") == released
    assert kinds.count("aggregate_refused") == expected.count("refused")
    release = next(r["data"] for r in records if r["kind"] == "aggregate_release")
    assert release["spent_today"] == pytest.approx(body["epsilon"])
    assert release["daily_epsilon"] == 1.5
    assert "body" not in release
    raw = partner.accepted[0]
    assert raw.webhook_id.startswith("release_")
    refusal = next(r["data"] for r in records if r["kind"] == "aggregate_refused")
    assert refusal["spent_today"] == pytest.approx(1.0, rel=1e-3)
    assert refusal["status"] == "refused"
    assert await store.pending() == {}  # audited and delivered: nothing waits
    last = await read_last_deliveries(redis_client)
    assert last["partner-agg"] == later  # the inventory's last delivery
    inventory = await read_inventory(redis_client, route, datetime.fromtimestamp(first + 1, UTC))
    row = inventory.recipients[0]
    assert row.data_categories == [AGGREGATES]
    assert row.flags == [Flag.NO_LEGAL_BASIS, Flag.NO_RETENTION]  # not idle: it released
    assert row.privacy_budget is not None
    assert row.privacy_budget.spent_today == pytest.approx(spent[days[0]], rel=1e-3)
    assert row.privacy_budget.daily_epsilon == 1.5
    assert row.deletion.detail == "aggregates_only"

    # A late event of a released window is not counted into it.
    late = await store.count(first, [("1-0", [])])
    assert late.counted == 0
    stored_next = int(await redis_client.get(store.key("next")) or 0)
    assert stored_next == first + 3 * WINDOW_S
    spent_today = await store.spent(days[0].isoformat())
    assert spent_today <= 1.5


async def test_a_failed_delivery_is_sent_again_without_new_noise_or_charge(
    receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """The partner answers 500 first: the same stored release (same id, same body) is
    delivered on a later tick, and the budget is charged once."""
    partner, url = receiver
    partner.script = [500]
    route = routing(url, epsilon=1.0, daily=5.0)
    now = datetime.now(UTC)
    transport = AiohttpTransport()
    first = window_of(now.timestamp(), WINDOW_S)
    store = AggregateStore(redis_client, "partner-agg", aggregate_parts(route.destinations[0])[1])
    await store.next_window(now.timestamp())
    later = datetime.fromtimestamp(first + WINDOW_S + 1, UTC)
    driver, stats = releaser(route, redis_client, transport, later)
    try:
        await driver.tick()
        assert [r.status for r in partner.requests] == [500]
        driver.clock = lambda: later + timedelta(seconds=10)
        await driver.tick()
    finally:
        await transport.aclose()
    assert [r.status for r in partner.requests] == [500, 200]
    assert partner.requests[0].body == partner.requests[1].body
    assert partner.requests[0].webhook_id == partner.requests[1].webhook_id
    day = datetime.fromtimestamp(first, UTC).date().isoformat()
    assert await store.spent(day) == pytest.approx(partner.requests[1].body["epsilon"])
    assert (
        stats.get(
            "router_aggregate_releases_total", destination="partner-agg", status="delivery_failed"
        )
        == 1
    )


async def test_many_releases_of_a_fixed_count_have_the_configured_noise(
    receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """120 consecutive windows, each with one person's two shoe orders: over the 720 released
    counts, the residuals (released minus true: 2 for that cell, 0 elsewhere) have mean 0 and
    the discrete Laplace variance of scale 2/(epsilon/2), within 35% (about 4 standard errors
    for 720 Laplace samples)."""
    partner, url = receiver
    partner.tolerance_s = 3 * 3600  # the releases are signed at the driven clock's time
    route = routing(url, epsilon=0.5, daily=100.0)
    destination = route.destinations[0]
    _, settings, layout = aggregate_parts(destination)
    store = AggregateStore(redis_client, destination.id, settings)
    start = window_of(datetime.now(UTC).timestamp(), WINDOW_S) - 130 * WINDOW_S
    await redis_client.set(store.key("next"), start)
    shoes = layout.cells.index(("Order Completed", ("shoes",)))
    for k in range(120):
        contributions = [Contribution(layout.keys[shoes], 10, ("subject-hash",))] * 2
        result = await store.count(start + k * WINDOW_S, [(f"{k}-0", contributions)])
        assert result.counted == 2
    transport = AiohttpTransport()
    at = datetime.fromtimestamp(start + 120 * WINDOW_S, UTC)
    driver, _ = releaser(route, redis_client, transport, at)
    try:
        await driver.tick()
    finally:
        await transport.aclose()
    bodies = [r.body for r in partner.accepted]
    assert len(bodies) == 120
    scale = bodies[0]["count_scale"]
    assert scale == pytest.approx(2 / 0.25, rel=1e-3)
    variance = discrete_laplace_variance(scale)
    residuals = [
        c["count"]
        - (
            2
            if c["dimensions"] == {"properties.category": "shoes"}
            and c["event"] == "Order Completed"
            else 0
        )
        for body in bodies
        for c in body["cells"]
    ]
    assert len(residuals) == 720
    assert statistics.fmean(residuals) == pytest.approx(0, abs=4 * (variance / 720) ** 0.5)
    assert statistics.pvariance(residuals) == pytest.approx(variance, rel=0.35)
    day_spent = sum(
        r["data"]["epsilon"]
        for r in await audit_records(redis_client)
        if r["kind"] == "aggregate_release"
    )
    assert day_spent == pytest.approx(120 * bodies[0]["epsilon"])


async def test_counts_survive_a_reload_that_changes_the_cells(
    receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """Cells are stored by their labels: after a reload drops a dimension value, the open
    window's other cells keep their counts and the dropped cell is left out."""
    _, url = receiver
    before = routing(url)
    destination = before.destinations[0]
    _, settings, layout = aggregate_parts(destination)
    store = AggregateStore(redis_client, destination.id, settings)
    window = window_of(datetime.now(UTC).timestamp(), WINDOW_S)
    shoes = layout.keys[layout.cells.index(("Order Completed", ("shoes",)))]
    hats = layout.keys[layout.cells.index(("Order Completed", ("hats",)))]
    result = await store.count(
        window,
        [("1-0", [Contribution(shoes, 5, ("a",)), Contribution(hats, 7, ("b",))])],
    )
    assert result.counted == 2
    after = parse_routing(
        ROUTING.replace("@EPSILON@", "1")
        .replace("@DAILY@", "2")
        .replace("[shoes, hats]", "[shoes]"),
        env={"HOOK_URL": url, "HOOK_SECRET": HOOK_SECRET},
    )
    _, _, narrower = aggregate_parts(after.destinations[0])
    counts, sums = await store.raw(window, narrower)
    assert len(counts) == 4  # 2 events x (shoes, other)
    assert counts[narrower.cells.index(("Order Completed", ("shoes",)))] == 1
    assert sum(counts) == 1
    assert sums is not None
    assert sum(sums) == 5
    again = await store.count(window, [("1-0", [Contribution(shoes, 5, ("a",))])])
    assert again.counted == 0  # the same stream entry is never counted twice


async def test_erasure_removes_the_person_from_the_contribution_ledgers(
    receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """``erase`` removes the person's hashed ids from every open window's ledger of an
    aggregate destination (and says how many in the receipt); others stay."""
    _, url = receiver
    route = routing(url)
    _, settings, layout = aggregate_parts(route.destinations[0])
    store = AggregateStore(redis_client, "partner-agg", settings)
    window = window_of(datetime.now(UTC).timestamp(), WINDOW_S)
    alice = Identifiers.of(user_ids=["alice"]).hashes()
    cell = layout.keys[0]
    for offset, subjects in ((0, (*alice, "other-person")), (WINDOW_S, tuple(alice))):
        contribution = Contribution(cell, 1, subjects)
        await store.count(window + offset, [(f"{offset}-1", [contribution])])
    receipt = await erase(
        redis_client,
        ConsentStore(redis_client, suppressed_key=SUPPRESSED),
        route,
        Identifiers.of(user_ids=["alice"]),
        RecordingTransport(),
    )
    assert receipt["removed"]["aggregate_contributions"] == 2
    assert await redis_client.hkeys(store.key("who", window)) == [b"other-person"]
    assert await redis_client.exists(store.key("who", window + WINDOW_S)) == 0


async def test_a_dry_run_release_goes_to_the_outbox_not_the_partner(
    receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """With ``dry_run: true`` the release is charged, audited and written to the outbox (the
    signed request, as ``router outbox`` shows it); the partner receives nothing."""
    partner, url = receiver
    text = ROUTING.replace("@EPSILON@", "1").replace("@DAILY@", "2") + "    dry_run: true\n"
    route = parse_routing(text, env={"HOOK_URL": url, "HOOK_SECRET": HOOK_SECRET})
    now = datetime.now(UTC)
    first = window_of(now.timestamp(), WINDOW_S)
    transport = AiohttpTransport()
    at = datetime.fromtimestamp(first + WINDOW_S + 1, UTC)
    driver, stats = releaser(route, redis_client, transport, at)
    await driver.store.next_window(now.timestamp())
    try:
        await driver.tick()
    finally:
        await transport.aclose()
    assert partner.requests == []
    outbox = await redis_client.xrange(outbox_key("partner-agg"))
    assert len(outbox) == 1
    request = json.loads(outbox[0][1][b"r"])["request"]
    assert request["url"] == url
    assert request["body"]["window_start"].startswith(
        datetime.fromtimestamp(first, UTC).date().isoformat()
    )
    assert (
        stats.get("router_aggregate_releases_total", destination="partner-agg", status="delivered")
        == 1
    )


async def test_a_withdrawal_after_ingest_keeps_the_event_out_of_the_count(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Consent is checked again before counting, as before any send: an event queued with
    consent is not counted once the person withdrew it (skipped ``consent_withdrawn``)."""
    _, url = receiver
    route = routing(url)
    edge = await make_router(route, workers=False)
    batch = [order(1, "erin", "shoes", 10, GRANTED), order(2, "frank", "hats", 10, GRANTED)]
    assert (await edge.post("/v1/batch", json={"batch": batch}, headers=AUTH)).status == 200
    withdrawal = {"userId": "erin", "categories": {"C0002": False}}
    assert (await edge.post("/v1/consent", json=withdrawal, headers=AUTH)).status == 200
    worker = await make_router(route, release_every_s=3600, consumer="later")
    stats = worker.server.app[STATE].stats
    await wait_for(
        lambda: (
            stats.get(
                "router_events_skipped_total",
                destination="partner-agg",
                reason="consent_withdrawn",
                stage="delivery",
            )
            == 1
        )
    )
    await wait_for(
        lambda: (
            stats.get(
                "router_aggregate_contributions_total", destination="partner-agg", status="counted"
            )
            == 1
        )
    )
