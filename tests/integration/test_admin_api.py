"""The operator API on a real Redis: roles (401/403/200), auditing, holds, dead letters,
explain, data map; and no personal data in spans, audit, anomalies, data map, labels or logs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consent.model import ConsentState, Signal
from consent.store import ConsentStore
from destinations.base import Delivery
from router.compliance.anomaly import AnomalyMonitor
from router.compliance.audit_chain import parse_record, verify_records
from router.compliance.audit_log import AuditLog, AuditWriter
from router.compliance.datamap import DataMapRecorder
from router.compliance.erasure import ERASURES
from router.core.audit_records import decision_entries
from router.core.paths import field_paths
from router.core.plan import plan
from router.core.sanitize import Event
from router.core.schema import EventType
from router.edge.admin import ROLE_TABLE, Endpoint, add_admin_routes
from router.edge.app import errors
from router.edge.consent_api import post_consent
from router.edge.state import STATE, AppState
from router.edge.tokens import Role, parse_tokens, token_hash
from router.observability.logs import JsonFormatter
from router.observability.metrics import Stats, render_prometheus
from router.observability.setup import setup_telemetry
from router.observability.tracing import set_span_attributes, stage_span, start_ingest_span
from router.queue.enqueuer import Enqueuer
from router.queue.items import ITEM_ENCODER, QueueItem
from router.queue.keys import SUPPRESSED, dlq_key, queue_key
from router.queue.streams import ensure_group, hold
from router.settings import Settings
from tests.conftest import routing_from
from tests.fakes.transport import RecordingTransport
from tests.redis_server import RedisServer

Client = TestClient[web.Request, web.Application]
TOKENS = {role: f"secret-token-for-{role.value}" for role in Role}
DESTINATION = "analytics-hook"
EXPLAIN_BODY = {
    "event": {"event": "Order Completed", "anonymousId": "a-1", "properties": {"revenue": 5}},
    "consent": {"analytics": True},
}


BODIES: dict[str, Any] = {
    "/admin/explain": EXPLAIN_BODY,
    "/admin/erase": {"userId": "user-1"},
    "/admin/subject-report": {"userId": "user-1"},
}


def _bearer(role: Role | None) -> dict[str, str]:
    return {} if role is None else {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
async def admin(redis_client: aioredis.Redis) -> AsyncIterator[Client]:
    """A bare aiohttp app with the admin routes, the test routing and the test's Redis."""
    app = web.Application()
    app[STATE] = AppState(
        settings=Settings(),
        routing=routing_from(),
        redis=redis_client,
        enqueuer=Enqueuer(redis_client),
        stats=Stats(),
        transport=RecordingTransport(),
        consent=ConsentStore(redis_client, suppressed_key=SUPPRESSED),
    )
    table = parse_tokens(json.dumps({token_hash(t): r.value for r, t in TOKENS.items()}))
    add_admin_routes(app, tokens=table, audit_key=b"audit-key")
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def _audit(redis_client: aioredis.Redis) -> list[dict[str, Any]]:
    return [json.loads(line) async for line in AuditLog(redis_client).export()]


async def _call(client: Client, endpoint: Endpoint, role: Role | None) -> Any:
    path = endpoint.path.replace("{destination}", DESTINATION)
    body = BODIES.get(endpoint.path)
    return await client.request(endpoint.method, path, json=body, headers=_bearer(role))


def _expected(endpoint: Endpoint, role: Role | None) -> int:
    if role is None:
        return 401
    return 200 if role in endpoint.roles else 403


@pytest.mark.parametrize("role", [None, *Role], ids=lambda r: r.value if r else "no-token")
@pytest.mark.parametrize("endpoint", ROLE_TABLE, ids=lambda e: f"{e.method} {e.path}")
async def test_every_endpoint_with_every_role(
    admin: Client, redis_client: aioredis.Redis, endpoint: Endpoint, role: Role | None
) -> None:
    """No token: 401; a role outside the endpoint's row: 403; otherwise 200; always audited."""
    response = await _call(admin, endpoint, role)
    assert response.status == _expected(endpoint, role)
    await response.read()
    if response.status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    records: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for _ in range(250):  # a streamed answer (audit export) is audited as the stream ends
        records = await _audit(redis_client)
        calls = [
            r
            for r in records
            if r["kind"] == "admin_call" and r["data"]["endpoint"] == endpoint.path
        ]
        if calls:
            break
        await asyncio.sleep(0.02)
    call = calls[-1]
    assert call["data"]["endpoint"] == endpoint.path
    assert call["data"]["method"] == endpoint.method
    assert call["data"]["status"] == response.status
    assert call["data"]["role"] == (role.value if role else None)
    if role is not None:
        assert call["data"]["token"] == token_hash(TOKENS[role])[:12]
    assert TOKENS[role or Role.ADMIN] not in json.dumps(records)


async def test_wrong_or_malformed_token_is_401(admin: Client) -> None:
    """An unknown bearer token, another scheme or an empty token are all 401."""
    for header in ("Bearer nope", f"Basic {TOKENS[Role.ADMIN]}", "Bearer ", TOKENS[Role.ADMIN]):
        response = await admin.get("/admin/destinations", headers={"Authorization": header})
        assert response.status == 401
        assert (await response.json())["code"] == "unauthorized"


async def test_destinations_show_queue_dlq_and_hold(
    admin: Client, redis_client: aioredis.Redis
) -> None:
    """Each configured destination with its purpose, requirements, queue, dead letters, hold."""
    await _queue(redis_client, DESTINATION, 3)
    await redis_client.xadd(dlq_key(DESTINATION), {"d": b"{}", "reason": "http_400", "at": "x"})
    await hold(redis_client, DESTINATION, reason="volume")
    response = await admin.get("/admin/destinations", headers=_bearer(Role.VIEWER))
    rows = {r["id"]: r for r in (await response.json())["destinations"]}
    row = rows[DESTINATION]
    assert row["type"] == "webhook"
    assert row["requires"] == ["analytics"]
    assert row["purpose"].startswith("Analytics feed")
    assert (row["queue_length"], row["pending"], row["dlq_length"]) == (3, 0, 1)
    assert row["held"] is True
    assert row["hold"]["reason"] == "volume"
    assert row["lag_seconds"] >= 0
    assert rows["ops-hook"]["held"] is False


async def test_release_and_discard_through_the_api(
    admin: Client, redis_client: aioredis.Redis
) -> None:
    """Release keeps the queue; discard empties it and reports the count."""
    await _queue(redis_client, DESTINATION, 4)
    await hold(redis_client, DESTINATION, reason="new_pii")
    headers = _bearer(Role.OPERATOR)
    response = await admin.post(f"/admin/holds/{DESTINATION}/release", headers=headers)
    assert await response.json() == {"destination": DESTINATION, "released": True}
    assert await redis_client.xlen(queue_key(DESTINATION)) == 4
    await hold(redis_client, DESTINATION, reason="new_pii")
    response = await admin.post(f"/admin/holds/{DESTINATION}/discard", headers=headers)
    assert await response.json() == {"destination": DESTINATION, "discarded": 4}
    assert await redis_client.xlen(queue_key(DESTINATION)) == 0
    kinds = [r["kind"] for r in await _audit(redis_client)]
    assert kinds.count("release") == 1
    assert kinds.count("discard") == 1


async def test_unknown_destination_is_404_and_not_echoed_in_the_audit(
    admin: Client, redis_client: aioredis.Redis
) -> None:
    """A path naming no configured destination is 404; the audit says "(unknown)"."""
    response = await admin.post(
        "/admin/holds/jane.doe@example.com/release", headers=_bearer(Role.ADMIN)
    )
    assert response.status == 404
    records = await _audit(redis_client)
    assert records[-1]["data"]["destination"] == "(unknown)"
    assert "jane" not in json.dumps(records)


async def test_dead_letters_listed_without_payload_and_replayed(
    admin: Client, redis_client: aioredis.Redis
) -> None:
    """The list shows ids, reasons and message ids only; replay moves entries to the queue."""
    ids = []
    for index in range(3):
        raw = ITEM_ENCODER.encode(_item(f"m{index}", {"userId": "jane.doe@example.com"}))
        entry = await redis_client.xadd(
            dlq_key(DESTINATION), {"d": raw, "reason": "http_400", "at": "2026-11-22T00:00:00Z"}
        )
        ids.append(entry.decode())
    headers = _bearer(Role.OPERATOR)
    listed = await (await admin.get(f"/admin/dlq/{DESTINATION}", headers=headers)).json()
    rows = listed["dead_letters"]
    assert [r["message_id"] for r in rows] == ["m2", "m1", "m0"]
    assert rows[0]["reason"] == "http_400"
    assert "jane" not in json.dumps(listed)
    response = await admin.post(
        f"/admin/dlq/{DESTINATION}/replay", json={"ids": [ids[0]]}, headers=headers
    )
    assert await response.json() == {"destination": DESTINATION, "replayed": 1}
    assert await redis_client.xlen(dlq_key(DESTINATION)) == 2
    response = await admin.post(f"/admin/dlq/{DESTINATION}/replay", headers=headers)
    assert (await response.json())["replayed"] == 2
    assert await redis_client.xlen(dlq_key(DESTINATION)) == 0
    assert await redis_client.xlen(queue_key(DESTINATION)) == 3
    bad = await admin.post(f"/admin/dlq/{DESTINATION}/replay", json={"ids": "all"}, headers=headers)
    assert bad.status == 400
    replays = [r["data"] for r in await _audit(redis_client) if r["kind"] == "dlq_replay"]
    assert [r["count"] for r in replays] == [1, 2]


async def test_explain_reports_each_destination(admin: Client) -> None:
    """Explain answers deliver or skip per destination for the posted event and consent."""
    response = await admin.post("/admin/explain", json=EXPLAIN_BODY, headers=_bearer(Role.AUDITOR))
    reports = {r["id"]: r for r in (await response.json())["destinations"]}
    assert reports[DESTINATION]["decision"] == "deliver"
    assert reports[DESTINATION]["payload"]["properties"] == {"revenue": 5}
    assert reports["ops-hook"]["decision"] == "deliver"
    no_consent = await admin.post(
        "/admin/explain", json={"event": EXPLAIN_BODY["event"]}, headers=_bearer(Role.VIEWER)
    )
    reports = {r["id"]: r for r in (await no_consent.json())["destinations"]}
    assert reports[DESTINATION]["decision"] == "skip"
    bad = await admin.post("/admin/explain", json={"nope": 1}, headers=_bearer(Role.VIEWER))
    assert bad.status == 400


async def test_datamap_and_anomalies_endpoints(admin: Client, redis_client: aioredis.Redis) -> None:
    """The data map of a day and the anomaly list come from what the recorders flushed."""
    day = datetime(2026, 11, 22, 12, tzinfo=UTC)
    recorder = DataMapRecorder(redis_client, clock=lambda: day)
    recorder.record(DESTINATION, {"event": "x", "userId": "tok"}, ["email"], 120)
    recorder.record(DESTINATION, {"event": "y"}, [], 80)
    await recorder.flush()
    monitor = AnomalyMonitor(redis_client)
    monitor.observe_pii(DESTINATION, ["phone"])
    await monitor.flush()
    headers = _bearer(Role.AUDITOR)
    datamap = await (await admin.get("/admin/datamap?day=2026-11-22", headers=headers)).json()
    assert datamap == {
        "day": "2026-11-22",
        "destinations": {
            DESTINATION: {
                "fields": ["event", "userId"],
                "pii": ["email"],
                "events": 2,
                "bytes": 200,
            }
        },
    }
    assert (await admin.get("/admin/datamap?day=22/11", headers=headers)).status == 400
    anomalies = (await (await admin.get("/admin/anomalies", headers=headers)).json())["anomalies"]
    assert anomalies[0]["kind"] == "new_pii"
    assert anomalies[0]["detail"] == {"pii": "phone"}
    assert (await admin.get("/admin/anomalies?limit=0", headers=headers)).status == 400


async def test_audit_export_verifies_offline(admin: Client, redis_client: aioredis.Redis) -> None:
    """The exported JSON lines form a valid chain; verify says ok."""
    await AuditLog(redis_client).append("config_loaded", {"destinations": 2})
    headers = _bearer(Role.AUDITOR)
    response = await admin.get("/admin/audit/export", headers=headers)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    records = [parse_record(line) for line in (await response.text()).splitlines()]
    assert records[0].kind == "config_loaded"
    assert verify_records(records).ok
    verified = await (await admin.get("/admin/audit/verify", headers=headers)).json()
    assert verified["ok"] is True


def test_token_table_rejects_bad_entries(tmp_path: Path) -> None:
    """Hashes must be SHA-256 hex, roles known; a file path works too."""
    with pytest.raises(ValueError, match="entry 0: the key must be a SHA-256 hex digest"):
        parse_tokens('{"plaintext-token": "admin"}')
    with pytest.raises(ValueError, match="unknown role"):
        parse_tokens(json.dumps({token_hash("t"): "root"}))
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_tokens("{nope")
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({token_hash("t"): "auditor"}))
    table = parse_tokens(str(path))
    identity = table.authenticate("t")
    assert identity is not None
    assert identity.role is Role.AUDITOR
    assert table.authenticate("u") is None


def _item(message_id: str, payload: dict[str, Any]) -> QueueItem:
    return QueueItem(
        delivery=Delivery(
            message_id=message_id,
            type="track",
            timestamp=datetime(2026, 11, 22, tzinfo=UTC),
            payload=payload,
            event="Order Completed",
        )
    )


async def _queue(client: aioredis.Redis, destination: str, count: int) -> None:
    await ensure_group(client, queue_key(destination))
    for index in range(count):
        raw = ITEM_ENCODER.encode(_item(f"q{index}", {}))
        await client.xadd(queue_key(destination), {"d": raw})


# --- no personal data anywhere in telemetry ------------------------------------------------------

PII = (
    "jane.doe@example.com",
    "+1 650 555 1212",
    "6505551212",
    "4111 1111 1111 1111",
    "user-PII-123",
    "DE89370400440532013000",
)


async def _dump(client: aioredis.Redis) -> str:
    """Every key and value the monitoring modules wrote (queues excluded: they hold payloads)."""
    parts: list[str] = []
    async for raw_key in client.scan_iter(match="rt:*"):
        key = raw_key.decode()
        if key.startswith(("rt:q:", "rt:dlq:")):
            continue
        kind = (await client.type(key)).decode()
        parts.append(key)
        if kind == "stream":
            parts.extend(repr(fields) for _, fields in await client.xrange(key))
        elif kind == "set":
            parts.extend(repr(m) for m in await client.smembers(key))  # type: ignore[misc]
        elif kind == "hash":
            parts.append(repr(await client.hgetall(key)))  # type: ignore[misc]
        elif kind == "string":
            parts.append(repr(await client.get(key)))
    return "\n".join(parts)


async def test_no_personal_data_in_spans_audit_anomalies_datamap_labels_or_logs(
    admin: Client, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Recognizable PII pushed through every module's API appears in none of their outputs."""
    caplog.set_level(logging.DEBUG)
    routing = routing_from()
    now = datetime.now(UTC)
    data = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "user-PII-123",
        "userId": "user-PII-123",
        "anonymousId": "jane.doe@example.com",
        "properties": {
            "order_id": "o-1",
            "revenue": 5,
            "jane.doe@example.com": "+1 650 555 1212",
            "6505551212": "4111 1111 1111 1111",
            "iban": "DE89370400440532013000",
        },
        "context": {"consent": {"categoryPreferences": {"analytics": True}}},
    }
    event = Event(
        type=EventType.TRACK,
        message_id="user-PII-123",
        timestamp=now,
        received_at=now,
        data=data,
        user_id="user-PII-123",
        anonymous_id="jane.doe@example.com",
        name="Order Completed",
    )
    consent = ConsentState(
        granted=frozenset({"analytics", "necessary"}), signals=(Signal.SEGMENT,), collected_at=now
    )
    decisions = plan(event, consent, routing.destinations, routing.policy)

    # spans
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry({}, span_exporter=exporter)
    with start_ingest_span(
        telemetry.tracer,
        {"traceparent": "00-jane.doe@example.com-01", "baggage": "user=user-PII-123"},
        route="track",
        source="jane.doe@example.com",
    ) as span:
        set_span_attributes(span, destination="+1 650 555 1212", reason="6505551212")
        span.set_attribute("enduser.id", "user-PII-123")
        with stage_span(telemetry.tracer, "plan", event_type="jane.doe@example.com"):
            pass
    telemetry.metrics.record_request("jane.doe@example.com", 0.1, status="user-PII-123")

    # audit, anomalies, data map
    audit = AuditLog(redis_client, key=b"k")
    writer = AuditWriter(audit)
    writer.record_many(decision_entries(event, consent, decisions, key=b"k"))
    await writer.flush()
    clock_now = [now - timedelta(hours=3)]
    monitor = AnomalyMonitor(redis_client, stats=Stats(), audit=audit, clock=lambda: clock_now[0])
    monitor.observe("web", {DESTINATION: 1}, ["event"])
    await monitor.flush()
    clock_now[0] = now
    monitor.observe("web", {DESTINATION: 1}, field_paths(data))
    monitor.observe_pii(DESTINATION, ["email", "phone"])
    found = await monitor.flush()
    assert {a.kind.value for a in found} == {"schema_drift", "new_pii"}
    recorder = DataMapRecorder(redis_client)
    for decision in decisions:
        recorder.record(decision.destination.id, data, ["email"], 100)
    await recorder.flush()

    # admin calls with PII in paths and bodies
    await admin.post("/admin/holds/user-PII-123/release", headers=_bearer(Role.ADMIN))
    await admin.post(
        "/admin/explain", json={"event": data}, headers={"Authorization": "Bearer user-PII-123"}
    )

    stored = await _dump(redis_client)
    spans = "\n".join(s.to_json() for s in exporter.get_finished_spans())
    labels = render_prometheus(monitor.stats) if monitor.stats else ""
    labels += render_prometheus(admin.app[STATE].stats, telemetry.prometheus_reader)
    formatter = JsonFormatter()
    # aiohttp's access log (request paths) is off in the router: configure_logging sets it to
    # WARNING and `router serve` runs with access_log=None.
    logs = "\n".join(formatter.format(r) for r in caplog.records if r.name != "aiohttp.access")
    telemetry.shutdown()
    assert "schema_drift" in stored
    assert "router.route" in spans
    assert "router_anomalies_total" in labels
    assert "anomaly detected" in logs
    for value in PII:
        for name, text in (("redis", stored), ("spans", spans), ("labels", labels), ("logs", logs)):
            assert value not in text, f"{value!r} leaked into {name}"
        assert value.replace(" ", "") not in stored


# --- concurrency: every call answered with a code and audited ------------------------------------


async def _admin_app(client: aioredis.Redis) -> Client:
    """One router process's operator API and consent endpoint, with the router's error
    middleware, on the test's Redis."""
    app = web.Application(middlewares=[errors])
    app[STATE] = AppState(
        settings=Settings(),
        routing=routing_from(),
        redis=client,
        enqueuer=Enqueuer(client),
        stats=Stats(),
        transport=RecordingTransport(),
        consent=ConsentStore(client, suppressed_key=SUPPRESSED),
    )
    app.router.add_post("/v1/consent", post_consent)
    table = parse_tokens(json.dumps({token_hash(t): r.value for r, t in TOKENS.items()}))
    add_admin_routes(app, tokens=table, audit_key=b"audit-key")
    test_client: Client = TestClient(TestServer(app))
    await test_client.start_server()
    return test_client


CALLS = 192


async def test_many_concurrent_calls_on_several_processes_are_all_answered_and_audited(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    """Four router processes take 192 admin calls at once (unauthenticated ones, reads,
    erasures): no 500, each erasure receipted and audited, every call audited, and the trail
    verifies."""
    connections = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
    apps = [await _admin_app(c) for c in connections]
    try:

        async def call(index: int) -> tuple[str, int]:
            app = apps[index % 4]
            kind = ("anonymous", "read", "erase", "bad-token")[index // 4 % 4]
            if kind == "anonymous":
                response = await app.get("/admin/destinations")
            elif kind == "bad-token":
                response = await app.get("/admin/audit/verify", headers={"Authorization": "x"})
            elif kind == "read":
                response = await app.get("/admin/destinations", headers=_bearer(Role.VIEWER))
            else:
                response = await app.post(
                    "/admin/erase", json={"userId": f"user-{index}"}, headers=_bearer(Role.ADMIN)
                )
            await response.read()
            return kind, response.status

        answers = await asyncio.gather(*(call(i) for i in range(CALLS)))
        expected = {"anonymous": 401, "bad-token": 401, "read": 200, "erase": 200}
        assert [status for _, status in answers] == [expected[kind] for kind, _ in answers]
        records = await _audit(redis_client)
        calls = [r for r in records if r["kind"] == "admin_call"]
        assert len(calls) == CALLS
        assert sorted(r["data"]["status"] for r in calls) == sorted(s for _, s in answers)
        erasures = [r for r in records if r["kind"] == "erasure"]
        assert len(erasures) == CALLS // 4
        assert await redis_client.xlen(ERASURES) == CALLS // 4
        verified = await (
            await apps[0].get("/admin/audit/verify", headers=_bearer(Role.AUDITOR))
        ).json()
        assert verified["ok"] is True, verified
        assert verified["checked"] >= len(records)
    finally:
        for app in apps:
            await app.close()
        for connection in connections:
            await connection.aclose()


# --- bodies: ingest's limits and error shape, never a 500 ----------------------------------------


def _deep(levels: int, leaf: str = "1") -> str:
    return '{"a":' * levels + leaf + "}" * levels


async def _post_raw(client: Client, path: str, body: str, role: Role | None = Role.ADMIN) -> Any:
    headers = {"Content-Type": "application/json", **_bearer(role)}
    return await client.post(path, data=body.encode(), headers=headers)


async def test_explain_with_a_3000_deep_event_is_a_400_too_deep_and_audited(
    admin: Client, redis_client: aioredis.Redis
) -> None:
    """A 3,000-level event is refused like ingest refuses it (400 too_deep with the path),
    not with a 500, and the call is audited with its status."""
    body = '{"event": {"event": "x", "anonymousId": "a", "properties": ' + _deep(3000) + "}}"
    response = await _post_raw(admin, "/admin/explain", body, Role.AUDITOR)
    assert response.status == 400
    answer = await response.json()
    assert answer["success"] is False
    assert answer["code"] == "too_deep"
    assert answer["path"] == "event.properties" + ".a" * 15
    assert "16 levels" in answer["message"]
    calls = [r for r in await _audit(redis_client) if r["kind"] == "admin_call"]
    assert calls[-1]["data"]["status"] == 400


async def test_explain_depth_limit_is_ingests(admin: Client) -> None:
    """Fifteen levels below the event pass, sixteen do not: the same limit as /v1/track, with
    the path from the body."""
    for levels, status in ((15, 200), (16, 400), (40, 400)):
        body = '{"event": {"event": "x", "anonymousId": "a", "properties": ' + _deep(levels)
        response = await _post_raw(admin, "/admin/explain", body + "}}", Role.VIEWER)
        assert response.status == status, levels
        if status == 400:
            answer = await response.json()
            assert (answer["code"], answer["path"]) == ("too_deep", "event.properties" + ".a" * 15)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/erase", '{"userId": ' + _deep(3000, '"u"') + "}"),
        ("/admin/subject-report", '{"userId": ' + _deep(3000, '"u"') + "}"),
        ("/admin/dlq/analytics-hook/replay", '{"ids": ' + _deep(3000) + "}"),
        ("/admin/explain", '{"event": {"event": "x"}, "consent": ' + _deep(3000) + "}"),
        ("/admin/explain", '{"event": {"event": "x"}, "headers": ' + _deep(3000) + "}"),
        ("/admin/explain", "[" * 100_000),
        ("/v1/consent", '{"userId": "u", "categories": ' + _deep(3000) + "}"),
    ],
    ids=[
        "erase",
        "subject-report",
        "replay",
        "explain-consent",
        "explain-headers",
        "explain-brackets",
        "consent",
    ],
)
async def test_deep_bodies_everywhere_are_400_too_deep(
    redis_client: aioredis.Redis, path: str, body: str
) -> None:
    """Every endpoint that reads a JSON body refuses a deep one with ingest's too_deep."""
    app = await _admin_app(redis_client)
    try:
        headers = {"Content-Type": "application/json"}
        if path == "/v1/consent":
            headers["Authorization"] = "Basic " + base64.b64encode(b"test-write-key:").decode()
        else:
            headers.update(_bearer(Role.ADMIN))
        response = await app.post(path, data=body.encode(), headers=headers)
        answer = await response.json()
        assert response.status in (400, 413), answer
        assert answer["success"] is False
        assert answer["code"] in ("too_deep", "body_too_large")
        if response.status == 400:
            assert answer["code"] == "too_deep"
            assert "path" in answer
    finally:
        await app.close()


ODD_EXPLAIN_BODIES = [
    "",
    "null",
    "[]",
    '"event"',
    "{",
    '{"event": 1}',
    '{"event": {}}',
    '{"event": {"event": "x", "anonymousId": "a", "context": "text"}, "consent": {"a": true}}',
    '{"event": {"event": "x", "anonymousId": "a", "context": [["k", 1]]}, "consent": {}}',
    '{"event": {"event": "x", "anonymousId": "a"}, "consent": [1, 2]}',
    '{"event": {"event": "x", "anonymousId": "a"}, "consent": "yes"}',
    '{"event": {"event": "x", "anonymousId": "a"}, "consent": {"tcString": 5}}',
    '{"event": {"event": "x", "anonymousId": "a"}, "consent": {"categoryPreferences": [1]}}',
    '{"event": {"event": "x", "anonymousId": "a"}, "headers": []}',
    '{"event": {"event": "x", "anonymousId": "a"}, "headers": {"Sec-GPC": {"x": 1}}}',
    '{"event": {"event": "x", "anonymousId": "a", "timestamp": 1e300}}',
    '{"event": {"event": "x", "anonymousId": "a", "properties": {"n": 1e400}}}',
    '{"event": {"type": "alias", "anonymousId": "a"}}',
    '{"event": {"type": 7, "anonymousId": "a"}}',
    '{"event": {"event": "x", "userId": true}}',
    '{"event": {"event": "x", "anonymousId": "' + "a" * 70_000 + '"}}',
    '{"event": {"event": "x", "anonymousId": "a", "properties": {"s": "' + "x" * 40_000 + '"}}}',
    '{"event": {"event": "\\ud800", "anonymousId": "\\u0000"}}',
]


@pytest.mark.parametrize("body", ODD_EXPLAIN_BODIES, ids=range(len(ODD_EXPLAIN_BODIES)))
async def test_odd_explain_bodies_get_an_answer_with_a_code(
    admin: Client, redis_client: aioredis.Redis, body: str
) -> None:
    """Malformed, oddly typed or oversized explain bodies answer 200 or a 4xx in the one
    error shape (never a 500), and are audited."""
    response = await _post_raw(admin, "/admin/explain", body, Role.VIEWER)
    answer = await response.json()
    assert response.status in (200, 400, 413), answer
    if response.status != 200:
        assert answer["success"] is False
        assert isinstance(answer["code"], str)
        assert isinstance(answer["message"], str)
    calls = [r for r in await _audit(redis_client) if r["kind"] == "admin_call"]
    assert calls[-1]["data"]["status"] == response.status
