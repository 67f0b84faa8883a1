"""Anomalies on a real Redis: volume baseline, drift, new PII, holds, alerts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer

from destinations.base import Delivery
from destinations.transport import AiohttpTransport
from router.compliance.anomaly import (
    ANOMALIES,
    AnomalyKind,
    AnomalyMonitor,
    MonitorSettings,
    SubjectKind,
    recent_anomalies,
)
from router.compliance.audit_log import AuditLog
from router.observability.metrics import Stats
from router.queue.items import ITEM_ENCODER, QueueItem
from router.queue.keys import GROUP, queue_key
from router.queue.streams import HoldGate, discard, ensure_group, hold, hold_info, is_held, release
from tests.conftest import wait_for

START = datetime(2026, 11, 10, 0, 5, tzinfo=UTC)


class Clock:
    """A settable clock for the monitor."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _monitor(client: aioredis.Redis, clock: Clock, **kwargs: Any) -> AnomalyMonitor:
    settings = kwargs.pop(
        "settings", MonitorSettings(volume_floor=100, volume_factor=3.0, min_baseline_days=3)
    )
    return AnomalyMonitor(client, settings=settings, clock=clock, stats=Stats(), **kwargs)


async def _history(client: aioredis.Redis, per_hour: dict[int, int]) -> None:
    """Seven days of traffic for source ``web`` and destination ``ga4`` at the given hours
    (recorded by a monitor whose floor is too high to alarm while the history builds up)."""
    clock = Clock(START)
    monitor = _monitor(client, clock, settings=MonitorSettings(volume_floor=10**9))
    for day in range(7):
        for hour, count in per_hour.items():
            clock.now = START + timedelta(days=day, hours=hour)
            monitor.observe("web", {"ga4": count}, events=count)
            assert await monitor.flush() == []


async def _enqueue(client: aioredis.Redis, destination: str, count: int) -> None:
    await ensure_group(client, queue_key(destination))
    for index in range(count):
        item = QueueItem(
            delivery=Delivery(
                message_id=f"m{index}", type="track", timestamp=START, payload={}, event="x"
            )
        )
        await client.xadd(queue_key(destination), {"d": ITEM_ENCODER.encode(item)})


async def test_volume_alarm_follows_the_hour_of_day(redis_client: aioredis.Redis) -> None:
    """400 events alarm at the quiet 03:00 but not at the busy 14:00; one alarm per hour."""
    clock = Clock(START)
    monitor = _monitor(redis_client, clock)
    await _history(redis_client, {3: 20, 14: 300})
    clock.now = START + timedelta(days=7, hours=14, minutes=30)
    monitor.observe("web", {"ga4": 400}, events=400)
    assert await monitor.flush() == []
    clock.now = START + timedelta(days=7, hours=3, minutes=30)
    monitor.observe("web", {"ga4": 400}, events=400)
    found = await monitor.flush()
    assert {(a.kind, a.subject_kind, a.subject) for a in found} == {
        (AnomalyKind.VOLUME, SubjectKind.SOURCE, "web"),
        (AnomalyKind.VOLUME, SubjectKind.DESTINATION, "ga4"),
    }
    assert found[0].detail["count"] == 400
    assert found[0].detail["threshold"] == 100.0
    monitor.observe("web", {"ga4": 400}, events=400)
    assert await monitor.flush() == []
    stored = await recent_anomalies(redis_client)
    assert len(stored) == 2
    assert monitor.stats is not None
    assert monitor.stats.get("router_anomalies_total", reason="volume") == 2


async def test_floor_keeps_small_sources_quiet(redis_client: aioredis.Redis) -> None:
    """A source that jumps from 2 to 90 events an hour stays under the floor: no alarm."""
    clock = Clock(START)
    monitor = _monitor(redis_client, clock)
    await _history(redis_client, {9: 2})
    clock.now = START + timedelta(days=7, hours=9)
    monitor.observe("web", {"ga4": 90}, events=90)
    assert await monitor.flush() == []


async def test_volume_without_history_does_not_alarm(redis_client: aioredis.Redis) -> None:
    """The very first hour of a subject has no baseline and never alarms."""
    clock = Clock(START)
    monitor = _monitor(redis_client, clock)
    monitor.observe("web", {"ga4": 10_000}, events=10_000)
    assert await monitor.flush() == []


async def test_schema_drift_after_the_learning_period(redis_client: aioredis.Redis) -> None:
    """Paths seen while learning are quiet; a path never seen before raises schema_drift."""
    clock = Clock(START)
    monitor = _monitor(redis_client, clock)
    monitor.observe("web", {}, ["event", "properties.revenue"])
    assert await monitor.flush() == []
    clock.now = START + timedelta(hours=2)
    monitor.observe("web", {}, ["event", "properties.revenue", "properties.ssn"])
    (drift,) = await monitor.flush()
    assert drift.kind is AnomalyKind.SCHEMA_DRIFT
    assert drift.subject == "web"
    assert drift.detail == {"paths": ["properties.ssn"], "count": 1}
    monitor.observe("web", {}, ["properties.ssn"])
    assert await monitor.flush() == []
    assert await redis_client.sismember("rt:fields:web", "properties.ssn")  # type: ignore[misc]


async def test_new_pii_kind_for_a_destination(redis_client: aioredis.Redis) -> None:
    """A declared kind is quiet; the first email reaching a destination is an anomaly, once."""
    clock = Clock(START)
    monitor = _monitor(redis_client, clock, expected_pii={"meta": frozenset({"email"})})
    monitor.observe_pii("meta", ["email"])
    monitor.observe_pii("ga4", ["email"])
    (found,) = await monitor.flush()
    assert (found.kind, found.subject, found.detail) == (
        AnomalyKind.NEW_PII,
        "ga4",
        {"pii": "email"},
    )
    monitor.observe_pii("ga4", ["email"])
    assert await monitor.flush() == []
    monitor = _monitor(redis_client, clock)  # another process, empty cache
    monitor.observe_pii("ga4", ["email", "phone"])
    (again,) = await monitor.flush()
    assert again.detail == {"pii": "phone"}


async def test_hold_keeps_every_event_until_release(redis_client: aioredis.Redis) -> None:
    """An anomaly holds the destination; its events stay queued; release lets them flow."""
    clock = Clock(START)
    audit = AuditLog(redis_client)
    monitor = _monitor(redis_client, clock, hold_destinations=frozenset({"ga4"}), audit=audit)
    await _enqueue(redis_client, "ga4", 5)
    monitor.observe_pii("ga4", ["phone"])
    monitor.observe_pii("other", ["phone"])
    assert len(await monitor.flush()) == 2
    assert await is_held(redis_client, "ga4")
    assert not await is_held(redis_client, "other")
    info = await hold_info(redis_client, "ga4")
    assert info is not None
    assert info["reason"] == "new_pii"
    gate = HoldGate(redis_client, ttl_s=0)
    assert await gate.held("ga4")
    await _enqueue(redis_client, "ga4", 3)
    assert await redis_client.xlen(queue_key("ga4")) == 8
    assert await release(redis_client, "ga4", audit=audit, actor="operator:abc")
    assert not await gate.held("ga4")
    assert await redis_client.xlen(queue_key("ga4")) == 8
    kinds = [json.loads(line)["kind"] async for line in audit.export()]
    assert kinds == ["anomaly", "hold", "anomaly", "release"]
    assert (await audit.verify()).ok


async def test_discard_drops_the_queue_and_records_the_count(redis_client: aioredis.Redis) -> None:
    """Discard acks and deletes every queued entry (pending ones too) and clears the hold."""
    audit = AuditLog(redis_client)
    await _enqueue(redis_client, "ga4", 7)
    await redis_client.xreadgroup(GROUP, "c1", {queue_key("ga4"): ">"}, count=2)
    assert await hold(redis_client, "ga4", reason="volume")
    assert not await hold(redis_client, "ga4", reason="new_pii")
    assert await discard(redis_client, "ga4", audit=audit, actor="admin:x", page=3) == 7
    assert await redis_client.xlen(queue_key("ga4")) == 0
    pending = await redis_client.xpending(queue_key("ga4"), GROUP)
    assert pending["pending"] == 0
    assert not await is_held(redis_client, "ga4")
    records = [json.loads(line) async for line in audit.export()]
    assert records[-1]["kind"] == "discard"
    assert records[-1]["data"] == {"destination": "ga4", "count": 7, "actor": "admin:x"}


@pytest.fixture
async def alert_hook() -> AsyncIterator[tuple[list[Any], str]]:
    """A local alert receiver: (the JSON bodies received, its URL)."""
    received: list[Any] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alert", handle)
    server = TestServer(app)
    await server.start_server()
    yield received, str(server.make_url("/alert"))
    await server.close()


async def test_alert_webhook_receives_the_anomaly(
    redis_client: aioredis.Redis, alert_hook: tuple[list[Any], str]
) -> None:
    """With ``alert_webhook`` set, each anomaly is POSTed as JSON."""
    received, url = alert_hook
    clock = Clock(START)
    transport = AiohttpTransport()
    monitor = _monitor(
        redis_client, clock, settings=MonitorSettings(alert_webhook=url), transport=transport
    )
    monitor.observe_pii("ga4", ["card"])
    await monitor.flush()
    await wait_for(lambda: bool(received))
    await monitor.close()
    await transport.aclose()
    assert received == [
        {
            "kind": "new_pii",
            "subject_kind": "destination",
            "subject": "ga4",
            "detail": {"pii": "card"},
            "at": "2026-11-10T00:05:00+00:00",
        }
    ]
    assert monitor.stats is not None
    assert monitor.stats.get("router_anomaly_alerts_total", status="204") == 1


async def test_monitor_task_flushes_in_the_background(redis_client: aioredis.Redis) -> None:
    """Started, the monitor flushes on its own; observe never touches Redis."""
    monitor = AnomalyMonitor(redis_client, flush_every_s=0.02)
    monitor.observe_pii("ga4", ["iban"])
    assert await redis_client.xlen(ANOMALIES) == 0
    monitor.start()
    for _ in range(500):
        if await redis_client.xlen(ANOMALIES):
            break
        await asyncio.sleep(0.01)
    await monitor.close()
    assert await redis_client.xlen(ANOMALIES) == 1
