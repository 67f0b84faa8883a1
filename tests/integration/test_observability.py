"""Observability of the running service: one event traced from the SDK to the webhook,
/metrics against what was sent, an anomaly hold released through the operator API, the audit
trail and the data map through the CLI, and no personal data in any telemetry."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from router.cli import main
from router.compliance.anomaly import ANOMALIES, AnomalyMonitor, MonitorSettings
from router.compliance.audit_chain import parse_record, verify_records
from router.compliance.audit_log import STREAM, AuditLog
from router.core.audit_records import subject_token
from router.edge.app import create_app, reload_routing
from router.edge.state import STATE
from router.edge.tokens import token_hash
from router.observability.logs import JsonFormatter
from router.observability.metrics import render_prometheus
from router.observability.setup import setup_telemetry
from router.observability.tracing import parse_traceparent
from router.queue.items import ITEM_DECODER, entry_items
from router.queue.keys import dlq_key, queue_key
from router.queue.streams import is_held
from router.routing import Routing, parse_routing
from router.runtime import build_runtime
from router.settings import Settings
from tests.conftest import HOOK_SECRET, WRITE_KEY, AppFactory, wait_for
from tests.fakes.amplitude import AmplitudeFake
from tests.fakes.amplitude import create_app as amplitude_app
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer
from tests.unit.consent.tcf_encoder import encode_core
from tests.unit.consent.test_tcf import BASE

Client = TestClient[web.Request, web.Application]
Receiver = tuple[WebhookReceiver, str]
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
GRANTED = {"consent": {"categoryPreferences": {"C0002": True}}}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
OPERATOR_TOKEN = "operator-token-for-observability-tests"
ADMIN_TOKENS = {
    "auditor": "auditor-token-for-observability-tests",
    "viewer": "viewer-token-for-observability-tests",
}
AUDIT_KEY = "audit-key-for-tests"

ROUTING = """
sources:
  - id: web
    write_key: test-write-key
    consent_writes: grant

consent:
  mappings:
    ids: {C0001: necessary, C0002: analytics, C0004: advertising}

monitoring:
  volume_floor: @FLOOR@
  volume_factor: 10

destinations:
  - id: analytics-hook
    type: webhook
    purpose: Analytics feed
    requires: [analytics]
    hold_on_anomaly: @HOLD@
    fields: [messageId, type, event, anonymousId, properties.revenue]
    transforms: {userId: tokenize}
    tokenize_key: test-tokenize-key
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 10, max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50,
               timeout_ms: 2000}

  - id: ops-hook
    type: webhook
    purpose: Order feed
    requires: []
    events: ["Order Completed"]
    fields: [messageId, event, properties.order_id, properties.email]
    identifiers: {properties.email: email}
    settings: {url: "${OPS_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 1, max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50,
               timeout_ms: 2000}
"""


def routing_of(
    hook: Receiver, ops: Receiver, *, hold: bool = False, floor: int = 1000, extra: str = ""
) -> Routing:
    """The routing of these tests: analytics-hook on ``hook``, ops-hook on ``ops``."""
    text = ROUTING.replace("@HOLD@", str(hold).lower()).replace("@FLOOR@", str(floor)) + extra
    env = {"HOOK_URL": hook[1], "OPS_URL": ops[1], "HOOK_SECRET": HOOK_SECRET}
    return parse_routing(text, env=env)


def event(
    message_id: str,
    name: str = "Order Completed",
    *,
    granted: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A track event; ``granted``: analytics consent in the event."""
    data: dict[str, Any] = {
        "type": "track",
        "event": name,
        "messageId": message_id,
        "anonymousId": "anon-0001",
        "properties": {"order_id": f"o-{message_id}", "revenue": 3.0},
    }
    if granted:
        data["context"] = GRANTED
    data.update(fields)
    return data


def admin_settings() -> dict[str, Any]:
    """Settings with an operator token, an auditor and a viewer token, and an audit key."""
    tokens = {token_hash(token): role for role, token in ADMIN_TOKENS.items()}
    return {
        "operator_token": OPERATOR_TOKEN,
        "admin_tokens": json.dumps(tokens),
        "audit_key": AUDIT_KEY,
    }


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an operator API token."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def ops_receiver() -> AsyncIterator[Receiver]:
    """A second webhook endpoint (ops-hook's), apart from the ``receiver`` fixture."""
    state = WebhookReceiver(secret=HOOK_SECRET)
    server = TestServer(state.app())
    await server.start_server()
    yield state, str(server.make_url("/hook"))
    await server.close()


async def start_amplitude(fake: AmplitudeFake) -> TestServer:
    """The fake Amplitude on a free port."""
    server = TestServer(amplitude_app(fake))
    await server.start_server()
    return server


def metric_series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Prometheus text as ``{(name, labels): value}``; a repeated series fails the test."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        key = (name, frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)))
        assert key not in found, f"series rendered twice: {line}"
        found[key] = float(value)
    return found


def metric(
    series: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One series' value (0 when absent)."""
    return series.get((name, frozenset(labels.items())), 0.0)


async def audit_records(client: aioredis.Redis) -> list[dict[str, Any]]:
    """The audit trail as exported."""
    return [json.loads(line) async for line in AuditLog(client).export()]


# --- tracing ---------------------------------------------------------------------------------


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


async def test_one_event_traced_from_the_sdk_traceparent_to_the_webhook_call(
    make_router: AppFactory, receiver: Receiver, ops_receiver: Receiver
) -> None:
    """The SDK's trace continues in the ingest span (consent, plan, enqueue under it); each
    webhook receives the traceparent of a send span under a delivery span linked to it."""
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry({}, span_exporter=exporter)
    router = await make_router(routing_of(receiver, ops_receiver), telemetry=telemetry)
    headers = {**AUTH, "traceparent": TRACEPARENT}
    response = await router.post("/v1/track", json=event("m-1"), headers=headers)
    assert response.status == 200
    hooks = (receiver[0], ops_receiver[0])
    await wait_for(lambda: all(h.accepted for h in hooks))
    await wait_for(lambda: sum(s.name == "deliver" for s in exporter.get_finished_spans()) == 2)
    spans = list(exporter.get_finished_spans())

    ingest = _one(spans, "ingest")
    assert ingest.kind is SpanKind.SERVER
    assert f"{ingest.context.trace_id:032x}" == TRACE_ID
    assert ingest.parent is not None
    assert f"{ingest.parent.span_id:016x}" == PARENT_ID
    assert ingest.attributes == {
        "router.route": "track",
        "router.source": "web",
        "http.request.method": "POST",
        "http.response.status_code": 200,
    }
    for stage in ("consent", "plan", "enqueue"):
        span = _one(spans, stage)
        assert span.parent is not None
        assert span.parent.span_id == ingest.context.span_id
        assert span.context.trace_id == ingest.context.trace_id

    by_id = {(s.context.trace_id, s.context.span_id): s for s in spans}
    destinations = set()
    for hook in hooks:
        (request,) = hook.accepted
        sent = parse_traceparent(request.headers["traceparent"])
        assert sent is not None
        send = by_id[(sent.trace_id, sent.span_id)]
        assert send.name == "send"
        assert send.kind is SpanKind.CLIENT
        assert send.attributes is not None
        assert send.attributes["http.response.status_code"] == 200
        assert send.parent is not None
        deliver = by_id[(send.context.trace_id, send.parent.span_id)]
        assert deliver.name == "deliver"
        assert deliver.kind is SpanKind.CONSUMER
        assert deliver.parent is None  # a batch mixes traces: its own trace, linked to each
        assert [(k.context.trace_id, k.context.span_id) for k in deliver.links] == [
            (ingest.context.trace_id, ingest.context.span_id)
        ]
        assert deliver.attributes is not None
        destinations.add(deliver.attributes["router.destination"])
    assert destinations == {"analytics-hook", "ops-hook"}


async def test_without_an_exporter_the_trace_still_reaches_the_queue_and_the_webhook(
    make_router: AppFactory,
    receiver: Receiver,
    ops_receiver: Receiver,
    redis_client: aioredis.Redis,
) -> None:
    """No OTEL exporter (the default): nothing is recorded, but the stream entry carries the
    SDK's trace and the webhook still receives a traceparent."""
    routing = routing_of(receiver, ops_receiver)
    ingest = await make_router(routing, workers=False)
    headers = {**AUTH, "traceparent": TRACEPARENT}
    assert (await ingest.post("/v1/track", json=event("m-1"), headers=headers)).status == 200
    [(_, fields)] = await redis_client.xrange(queue_key("ops-hook"))
    stored = ITEM_DECODER.decode(fields[b"d"]).trace
    assert stored is not None
    assert stored.startswith(f"00-{TRACE_ID}-")
    await make_router(routing, consumer="worker")
    await wait_for(lambda: bool(ops_receiver[0].accepted))
    sent = parse_traceparent(ops_receiver[0].accepted[0].headers["traceparent"])
    assert sent is not None


AMPLITUDE = """
  - id: amp
    type: amplitude
    requires: [analytics]
    fields: [userId, anonymousId, event, properties.revenue]
    settings: {api_key: amp-api-key-123, endpoint_url: "@AMP@/2/httpapi"}
    delivery: {max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50}

  - id: amp-traced
    type: amplitude
    requires: [analytics]
    forward_traceparent: true
    fields: [userId, anonymousId, event, properties.revenue]
    settings: {api_key: amp-api-key-123, endpoint_url: "@AMP_TRACED@/2/httpapi"}
    delivery: {max_attempts: 3, backoff_initial_ms: 10, backoff_max_ms: 50}
"""


async def test_traceparent_goes_to_webhooks_not_ad_platforms_unless_configured(
    make_router: AppFactory, receiver: Receiver, ops_receiver: Receiver
) -> None:
    """Amplitude gets no traceparent by default, a webhook does; forward_traceparent turns it
    on for an ad platform and off for a webhook."""
    plain, traced = AmplitudeFake(), AmplitudeFake()
    servers = [await start_amplitude(plain), await start_amplitude(traced)]
    try:
        extra = AMPLITUDE.replace("@AMP@", str(servers[0].make_url(""))).replace(
            "@AMP_TRACED@", str(servers[1].make_url(""))
        )
        text = ROUTING.replace("@FLOOR@", "1000").replace(
            "hold_on_anomaly: @HOLD@",
            "forward_traceparent: false",  # on analytics-hook
        )
        env = {"HOOK_URL": receiver[1], "OPS_URL": ops_receiver[1], "HOOK_SECRET": HOOK_SECRET}
        routing = parse_routing(text + extra, env=env)
        router = await make_router(routing)
        body = event("m-1", userId="user-00001", anonymousId="device-00001")
        headers = {**AUTH, "traceparent": TRACEPARENT}
        assert (await router.post("/v1/track", json=body, headers=headers)).status == 200
        await wait_for(lambda: bool(plain.events and traced.events))
        await wait_for(lambda: bool(receiver[0].accepted and ops_receiver[0].accepted))
    finally:
        for server in servers:
            await server.close()
    assert "traceparent" not in plain.headers[0]
    assert parse_traceparent(traced.headers[0]["traceparent"]) is not None
    assert "traceparent" not in receiver[0].accepted[0].headers  # forward_traceparent: false
    assert parse_traceparent(ops_receiver[0].accepted[0].headers["traceparent"]) is not None


# --- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_what_was_sent_per_destination_and_reason(
    make_router: AppFactory, receiver: Receiver, ops_receiver: Receiver
) -> None:
    """Received, accepted, rejected by code, skipped by destination and reason, delivered,
    retried and dead-lettered match the traffic; histograms and queue lag are rendered."""
    hook, ops = receiver[0], ops_receiver[0]
    hook.script = [500]  # the first analytics request is retried
    ops.script = [400]  # the first order is refused: dead letter
    router = await make_router(routing_of(receiver, ops_receiver))
    batch = [
        event("e1"),  # analytics: delivered; ops: 400 -> dead letter
        event("e2", granted=False),  # analytics: no_consent; ops: delivered
        event("e3", "Product Viewed"),  # analytics: delivered; ops: event_not_listed
        event("e4", timestamp="not a time"),  # rejected: invalid_timestamp
    ]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status == 200
    assert [r["code"] for r in (await response.json())["rejected"]] == ["invalid_timestamp"]
    unauthorized = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
    assert (await router.post("/v1/track", json=event("x"), headers=unauthorized)).status == 401
    stats = router.server.app[STATE].stats
    await wait_for(lambda: stats.get("router_events_delivered_total") == 3)
    await wait_for(lambda: stats.get("router_events_dead_lettered_total") == 1)

    text = await (await router.get("/metrics")).text()
    series = metric_series(text)
    web = {"source": "web"}
    assert metric(series, "router_events_received_total", route="batch", **web) == 4
    assert metric(series, "router_events_accepted_total", route="batch", **web) == 3
    assert metric(series, "router_events_rejected_total", code="invalid_timestamp", **web) == 1
    skipped = "router_events_skipped_total"
    assert (
        metric(series, skipped, destination="analytics-hook", reason="no_consent", stage="ingest")
        == 1
    )
    assert (
        metric(series, skipped, destination="ops-hook", reason="event_not_listed", stage="ingest")
        == 1
    )
    delivered = "router_events_delivered_total"
    assert metric(series, delivered, destination="analytics-hook") == 2
    assert metric(series, delivered, destination="ops-hook") == 1
    dead = "router_events_dead_lettered_total"
    assert metric(series, dead, destination="ops-hook", reason="http_400") == 1
    first = hook.requests[0]
    assert first.status == 500
    retried = len(first.body["batch"]) if "batch" in first.body else 1
    retries = "router_delivery_retries_total"
    assert metric(series, retries, destination="analytics-hook", reason="http_500") == retried

    latency = "router_delivery_latency_seconds_count"
    assert metric(series, latency, destination="analytics-hook", status="delivered") == 2
    assert metric(series, latency, destination="ops-hook", status="delivered") == 1
    assert metric(series, latency, destination="ops-hook", status="dead_lettered") == 1
    requests = "router_delivery_request_seconds_count"
    assert metric(series, requests, destination="ops-hook", status="400") == 1
    assert metric(series, requests, destination="analytics-hook", status="500") == 1
    assert ("router_queue_lag_seconds", frozenset({("destination", "ops-hook")})) in series
    assert "# TYPE router_delivery_latency_seconds histogram" in text


async def test_metrics_endpoint_is_the_one_renderer(
    make_router: AppFactory, receiver: Receiver, ops_receiver: Receiver
) -> None:
    """``GET /metrics`` is ``render_prometheus`` of the app's counters and reader, byte for byte
    (no second renderer)."""
    router = await make_router(routing_of(receiver, ops_receiver), workers=False)
    response = await router.post("/v1/batch", json={"batch": [event("e1")]}, headers=AUTH)
    assert response.status == 200
    text = await (await router.get("/metrics")).text()
    state = router.server.app[STATE]
    assert state.telemetry is not None
    assert text == render_prometheus(state.stats, state.telemetry.prometheus_reader)
    assert 'router_events_accepted_total{route="batch",source="web"} 1' in text
    assert "# TYPE router_queue_lag_seconds gauge" in text


# --- anomaly, hold, release ------------------------------------------------------------------


async def _history(client: aioredis.Redis, per_hour: int) -> None:
    """24 hours of ``per_hour`` events for source web and analytics-hook, up to the last hour
    (recorded through a monitor that cannot alarm)."""
    now = datetime.now(UTC)
    moment = [now]
    monitor = AnomalyMonitor(
        client, settings=MonitorSettings(volume_floor=10**9), clock=lambda: moment[0]
    )
    for hours_ago in range(24, 0, -1):
        moment[0] = now - timedelta(hours=hours_ago)
        monitor.observe("web", {"analytics-hook": per_hour}, events=per_hour)
        assert await monitor.flush() == []


async def test_volume_anomaly_holds_the_destination_until_released_and_loses_nothing(
    make_router: AppFactory,
    receiver: Receiver,
    ops_receiver: Receiver,
    redis_client: aioredis.Redis,
) -> None:
    """A hundredfold hour trips the volume alarm; the destination is held, its events stay
    queued, and after release through the operator API every event is delivered."""
    hook = receiver[0]
    await _history(redis_client, per_hour=2)
    routing = routing_of(receiver, ops_receiver, hold=True, floor=20)
    router = await make_router(routing, **admin_settings())
    sent: list[str] = []

    async def send(count: int) -> None:
        batch = [event(f"v{len(sent) + i}", "Product Viewed") for i in range(count)]
        sent.extend(e["messageId"] for e in batch)
        response = await router.post("/v1/batch", json={"batch": batch}, headers=AUTH)
        assert response.status == 200

    await send(100)
    await send(100)  # 200 this hour against a baseline of 2 an hour
    held: list[bool] = []

    async def check_held() -> bool:
        held.append(await is_held(redis_client, "analytics-hook"))
        return held[-1]

    deadline = asyncio.get_running_loop().time() + 10
    while not await check_held():
        assert asyncio.get_running_loop().time() < deadline, "no hold"
        await asyncio.sleep(0.05)
    anomalies = await redis_client.xrange(ANOMALIES)
    subjects = {(f[b"kind"], f[b"subject"]) for _, f in anomalies}
    assert (b"volume", b"analytics-hook") in subjects

    await asyncio.sleep(1.5)  # the workers' hold gate caches its answer for a second
    delivered_before = {e["messageId"] for e in hook.events()}
    await send(50)
    await asyncio.sleep(1.5)
    assert {e["messageId"] for e in hook.events()} == delivered_before
    queued = [
        item
        for _, fields in await redis_client.xrange(queue_key("analytics-hook"))
        for item in entry_items({k.decode(): v for k, v in fields.items()})
    ]
    assert len(queued) >= 50

    viewer = await router.post(
        "/admin/holds/analytics-hook/release", headers=bearer(ADMIN_TOKENS["viewer"])
    )
    assert viewer.status == 403
    released = await router.post(
        "/admin/holds/analytics-hook/release", headers=bearer(OPERATOR_TOKEN)
    )
    assert await released.json() == {"destination": "analytics-hook", "released": True}
    # nothing lost (delivery is at least once: a request retried after a slow answer may
    # arrive twice, so duplicates are not counted against it)
    await wait_for(lambda: {e["messageId"] for e in hook.events()} == set(sent), within_s=20)
    assert await redis_client.xlen(dlq_key("analytics-hook")) == 0
    kinds = [r["kind"] for r in await audit_records(redis_client)]
    assert {"anomaly", "hold", "release"} <= set(kinds)
    assert kinds.index("hold") < kinds.index("release")


# --- audit trail and data map through the CLI -------------------------------------------------


async def _cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    redis_server: RedisServer,
    *args: str,
) -> tuple[int, str, str]:
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


async def _rewrite_record(client: aioredis.Redis, seq: int, data: dict[str, Any]) -> None:
    """Replace one stored record's data in place (same stream id), as a tamperer would."""
    entries = await client.xrange(STREAM)
    await client.delete(STREAM)
    for entry_id, fields in entries:
        changed = dict(fields)
        if int(fields[b"seq"]) == seq:
            changed[b"data"] = json.dumps(data).encode()
        await client.xadd(STREAM, changed, id=entry_id)


async def test_audit_verify_passes_then_names_the_tampered_record(
    make_router: AppFactory,
    receiver: Receiver,
    ops_receiver: Receiver,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The running service's trail (config, consent, decisions, erasure) verifies; after one
    record is edited, `router audit verify` exits 1 naming and printing it."""
    router = await make_router(routing_of(receiver, ops_receiver), **admin_settings())
    assert (await router.post("/v1/track", json=event("a1"), headers=AUTH)).status == 200
    consent = {"userId": "user-1", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=consent, headers=AUTH)).status == 200
    choice = event("c1", "Segment Consent Preference Updated", userId="user-2")
    assert (await router.post("/v1/track", json=choice, headers=AUTH)).status == 200
    stats = router.server.app[STATE].stats
    assert stats.get("router_consent_writes_total", route="event") == 1
    assert stats.get("router_consent_writes_total", route="consent") == 1
    erase = await router.post(
        "/admin/erase", json={"userId": "user-1"}, headers=bearer(OPERATOR_TOKEN)
    )
    assert erase.status == 200
    await router.close()  # flushes the buffered records
    records = await audit_records(redis_client)
    kinds = [r["kind"] for r in records]
    for kind in ("config_loaded", "decisions", "consent_written", "erasure", "admin_call"):
        assert kind in kinds
    written = [r["data"] for r in records if r["kind"] == "consent_written"]
    assert [(w["route"], w["granted"]) for w in written] == [
        ("consent", ["analytics"]),
        ("event", ["analytics"]),
    ]
    key = AUDIT_KEY.encode()
    assert written[1]["subjects"] == sorted(
        {subject_token("user-2", key), subject_token("anon-0001", key)}
    )
    erasure = next(r["data"] for r in records if r["kind"] == "erasure")
    assert erasure["subjects"] == [subject_token("user-1", AUDIT_KEY.encode())]
    assert erasure["actor"] == f"operator:{token_hash(OPERATOR_TOKEN)[:12]}"

    code, out, _ = await _cli(monkeypatch, capsys, redis_server, "audit", "verify")
    assert code == 0
    assert f"{len(records)} record(s) verified" in out
    code, out, _ = await _cli(monkeypatch, capsys, redis_server, "audit", "export")
    assert code == 0
    exported = [parse_record(line) for line in out.splitlines()]
    assert [r.seq for r in exported] == list(range(1, len(records) + 1))
    assert verify_records(exported).ok

    victim = next(r for r in records if r["kind"] == "decisions")
    await _rewrite_record(redis_client, victim["seq"], {**victim["data"], "decision": "skip"})
    code, out, _ = await _cli(monkeypatch, capsys, redis_server, "audit", "verify")
    assert code == 1
    assert f"BROKEN at record {victim['seq']}" in out
    assert f"record {victim['seq']}: its content does not match its hash" in out
    assert f'record {victim["seq"]} as stored: {{"at":' in out
    assert '"decision":"skip"' in out


async def test_datamap_json_shows_the_fields_sent_to_each_destination_today(
    make_router: AppFactory,
    receiver: Receiver,
    ops_receiver: Receiver,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`router datamap --json` lists per destination the field paths that left today, the
    declared personal-data kinds among them, events and bytes; the admin API agrees."""
    router = await make_router(routing_of(receiver, ops_receiver), **admin_settings())
    orders = [
        event(f"d{i}", properties={"order_id": f"o-{i}", "revenue": 2, "email": "a@b.example"})
        for i in range(3)
    ]
    response = await router.post("/v1/batch", json={"batch": orders}, headers=AUTH)
    assert response.status == 200
    await wait_for(lambda: len(receiver[0].events()) == 3 and len(ops_receiver[0].events()) == 3)
    await router.close()  # flushes the data map
    code, out, err = await _cli(monkeypatch, capsys, redis_server, "datamap", "--json")
    assert code == 0, err
    datamap = json.loads(out)
    assert datamap["day"] == datetime.now(UTC).date().isoformat()
    analytics = datamap["destinations"]["analytics-hook"]
    assert analytics["fields"] == [
        "anonymousId",
        "event",
        "messageId",
        "properties.revenue",
        "type",
    ]
    assert analytics["pii"] == []
    assert analytics["events"] == 3
    assert analytics["bytes"] > 0
    ops = datamap["destinations"]["ops-hook"]
    assert ops["fields"] == ["event", "messageId", "properties.email", "properties.order_id"]
    assert ops["pii"] == ["email"]  # declared in identifiers, and sent
    assert ops["events"] == 3
    reader = await make_router(
        routing_of(receiver, ops_receiver), workers=False, **admin_settings()
    )
    api = await reader.get("/admin/datamap", headers=bearer(ADMIN_TOKENS["auditor"]))
    assert await api.json() == datamap
    code, out, _ = await _cli(monkeypatch, capsys, redis_server, "datamap")
    assert code == 0
    assert "ops-hook" in out
    assert "    properties.email" in out
    code, _, err = await _cli(monkeypatch, capsys, redis_server, "datamap", "--day", "22/11")
    assert code == 1
    assert "YYYY-MM-DD" in err


async def test_reload_is_audited_with_the_files_digest_and_reconfigures_the_monitor(
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    receiver: Receiver,
    ops_receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A successful reload records config_changed with the new file's SHA-256; holds follow."""
    text = ROUTING.replace("@HOLD@", "false").replace("@FLOOR@", "1000")
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    env = {"HOOK_URL": receiver[1], "OPS_URL": ops_receiver[1], "HOOK_SECRET": HOOK_SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(redis_url=redis_server.url, config=path)
    telemetry = setup_telemetry({})
    runtime = build_runtime(settings, parse_routing(text, env=env), serve=True, telemetry=telemetry)
    app = create_app(runtime)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        changed = text.replace("hold_on_anomaly: false", "hold_on_anomaly: true")
        path.write_text(changed)
        assert await reload_routing(app)
        monitor = app[STATE].monitor
        assert monitor is not None
        assert monitor.hold_destinations == frozenset({"analytics-hook"})
    finally:
        await client.close()
        telemetry.shutdown()
    records = await audit_records(redis_client)
    loaded = next(r for r in records if r["kind"] == "config_loaded")
    assert loaded["data"]["digest"] == hashlib.sha256(text.encode()).hexdigest()
    reloaded = next(r for r in records if r["kind"] == "config_changed")
    assert reloaded["data"]["digest"] == hashlib.sha256(changed.encode()).hexdigest()
    assert reloaded["data"]["destinations"] == ["analytics-hook", "ops-hook"]


# --- no personal data anywhere ---------------------------------------------------------------

EMAIL = "jane.doe@example.com"
PHONE = "+1 650 555 1212"
CARD = "4111 1111 1111 1111"
IP = "203.0.113.77"
USER = "user-PII-4711"
USP = "1YYN"
TC_STRING = encode_core(dataclasses.replace(BASE, disclosed_vendors=frozenset()), "bitfield")
GPP = f"DBABMA~{TC_STRING}"
PII_VALUES = (EMAIL, PHONE, CARD, IP, USER, USP, TC_STRING, GPP, "jane.doe", "650 555")


def pii_event(message_id: str, *, strings: bool = False, **fields: Any) -> dict[str, Any]:
    """A track event full of personal data; ``strings``: consent as TCF/GPP/USP strings."""
    consent: dict[str, Any] = {"categoryPreferences": {"C0002": True}}
    if strings:
        consent = {"tcString": TC_STRING, "gppString": GPP, "usPrivacy": USP}
    data: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": USER,
        "anonymousId": EMAIL,
        "properties": {
            "order_id": f"o-{message_id}",
            "revenue": 5,
            "email": EMAIL,
            "phone": PHONE,
            "card": CARD,
            "note": f"call {PHONE} or write to {EMAIL}, card {CARD}",
            EMAIL: PHONE,
        },
        "context": {"ip": IP, "consent": consent, "traits": {"email": EMAIL, "phone": PHONE}},
    }
    data.update(fields)
    return data


async def _stored_monitoring(client: aioredis.Redis) -> str:
    """What the monitor, the data map and the anomaly stream wrote to Redis."""
    parts: list[str] = []
    for pattern in ("rt:dm:*", "rt:fields:*", "rt:pii:*", "rt:vol:*", "rt:hold:*"):
        async for raw_key in client.scan_iter(match=pattern):
            parts.append(raw_key.decode())
            kind = (await client.type(raw_key)).decode()
            if kind == "set":
                parts.extend(repr(m) for m in await client.smembers(raw_key))  # type: ignore[misc]
            elif kind == "hash":
                parts.append(repr(await client.hgetall(raw_key)))  # type: ignore[misc]
            elif kind == "string":
                parts.append(repr(await client.get(raw_key)))
    parts.extend(repr(fields) for _, fields in await client.xrange(ANOMALIES))
    return "\n".join(parts)


@pytest.mark.slow
async def test_no_personal_data_in_logs_spans_metric_labels_or_audit_records(
    make_router: AppFactory,
    receiver: Receiver,
    ops_receiver: Receiver,
    redis_client: aioredis.Redis,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Emails, phones, card numbers, IPs, user ids and consent strings pushed through every
    path (accepted, rejected, 401, consent API, erasure, 500s to exhaustion, 400 to the dead
    letters, Redis down) appear in no log line, span, metric label or audit record."""
    caplog.set_level(logging.DEBUG)
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry({}, span_exporter=exporter)
    receiver[0].script = [500] * 3  # analytics-hook: every attempt fails -> max_attempts
    ops_receiver[0].script = [400]  # ops-hook: the first order is refused -> dead letter
    router = await make_router(
        routing_of(receiver, ops_receiver), telemetry=telemetry, **admin_settings()
    )
    headers = {**AUTH, "traceparent": f"00-{EMAIL}-01", "tracestate": f"u={USER}"}
    batch = [
        pii_event("p1"),
        pii_event("p2", strings=True),
        pii_event("p3", timestamp=EMAIL),  # rejected: invalid_timestamp
        pii_event("p4", event=f"Signed up {EMAIL}"),
        {"type": "identify", "userId": USER, "traits": {"email": EMAIL, "phone": PHONE}},
    ]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=headers)
    assert response.status == 200
    assert len((await response.json())["rejected"]) == 1
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{EMAIL}:".encode()).decode()}
    assert (await router.post("/v1/track", json=pii_event("p5"), headers=wrong)).status == 401
    traced = {**AUTH, "traceparent": TRACEPARENT, "tracestate": f"vendor={USER},e={EMAIL}"}
    assert (await router.post("/v1/track", json=pii_event("p8"), headers=traced)).status == 200
    bad = await router.post("/v1/track", data=f'{{"userId": "{USER}", "x": ', headers=AUTH)
    assert bad.status == 400
    consent = {"userId": USER, "anonymousId": EMAIL, "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=consent, headers=AUTH)).status == 200
    stats = router.server.app[STATE].stats
    dead = "router_events_dead_lettered_total"
    await wait_for(
        lambda: (
            stats.get(dead, destination="analytics-hook") >= 1
            and stats.get(dead, destination="ops-hook") >= 1
        ),
        within_s=20,
    )
    erase = await router.post(
        "/admin/erase", json={"userId": USER, "email": EMAIL}, headers=bearer(OPERATOR_TOKEN)
    )
    assert erase.status == 200
    assert (await router.post("/v1/track", json=pii_event("p6"), headers=AUTH)).status == 200
    forbidden = await router.post(
        f"/admin/holds/{EMAIL}/release", headers=bearer(ADMIN_TOKENS["viewer"])
    )
    assert forbidden.status == 403
    await asyncio.sleep(1.2)  # the monitor, data map and audit flush once a second
    metrics_text = await (await router.get("/metrics")).text()
    assert 'reason="max_attempts"' in metrics_text
    assert 'reason="http_400"' in metrics_text
    audit = "\n".join(json.dumps(r) for r in await audit_records(redis_client))
    assert '"kind": "erasure"' in audit
    assert '"kind": "decisions"' in audit
    stored = await _stored_monitoring(redis_client)

    redis_server.kill()  # and the unavailable paths log and answer without leaking either
    # a subject the consent cache has not seen: the lookup needs Redis
    fresh = pii_event("p7", userId=f"{USER}-2", anonymousId=f"2.{EMAIL}")
    down = await router.post("/v1/track", json=fresh, headers=headers)
    assert down.status == 503
    await asyncio.sleep(0.5)
    await router.close()

    spans = "\n".join(s.to_json() for s in exporter.get_finished_spans())
    formatter = JsonFormatter()
    # aiohttp's access log is off in the router (`router serve` runs with access_log=None).
    logs = "\n".join(formatter.format(r) for r in caplog.records if r.name != "aiohttp.access")
    assert "redis unavailable in worker" in logs
    assert '"name": "ingest"' in spans
    for value in PII_VALUES:
        for name, text in (
            ("logs", logs),
            ("spans", spans),
            ("metric labels", metrics_text),
            ("audit records", audit),
            ("monitoring keys", stored),
        ):
            assert value not in text, f"{value!r} leaked into {name}"
            assert value.replace(" ", "") not in text, f"{value!r} leaked into {name}"
