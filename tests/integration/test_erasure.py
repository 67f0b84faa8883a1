"""Erasure on a real Redis: POST /admin/erase and `router erase`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from consent.store import record_key, subject_key
from router.compliance.audit_log import AuditLog
from router.compliance.erasure import ERASURES
from router.core.audit_records import subject_token
from router.edge.state import STATE
from router.edge.tokens import token_hash
from router.queue.keys import queue_key
from tests.conftest import (
    BACKENDS,
    HOOK_SECRET,
    TEST_CONFIG,
    WRITE_KEY,
    AppFactory,
    routing_from,
    suppressed_hashes,
    wait_for,
)
from tests.fakes.amplitude import AmplitudeFake, create_app
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
TOKEN = "operator-token-for-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
GRANTED = {"consent": {"categoryPreferences": {"C0002": True}}}


def order(message_id: str, user: str) -> dict[str, Any]:
    """An Order Completed event of ``user`` granting analytics."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": user,
        "anonymousId": f"anon-of-{user}",
        "properties": {"order_id": f"o-{message_id}", "revenue": 3.0},
        "context": GRANTED,
    }


def received(receiver: WebhookReceiver) -> list[str]:
    """Every messageId the hooks accepted (one per destination)."""
    return [e["messageId"] for e in receiver.events()]


async def all_redis_text(client: aioredis.Redis) -> str:
    """Every key, and every string and stream value, of the test's Redis, as one string."""
    parts: list[str] = []
    for key in await client.keys("*"):
        parts.append(key.decode())
        kind = (await client.type(key)).decode()
        if kind == "string":
            parts.append((await client.get(key)).decode())
        elif kind == "stream":
            parts.extend(str(fields) for _, fields in await client.xrange(key))
        elif kind == "set":
            parts.extend(m.decode() for m in await client.smembers(key))  # type: ignore[misc]
    return "\n".join(parts)


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_an_erased_users_queued_and_new_events_reach_no_destination(
    make_router: AppFactory,
    receiver: tuple[WebhookReceiver, str],
    redis_client: aioredis.Redis,
) -> None:
    """Erase user-1 with events queued: none is delivered, user-2's are; the receipt counts."""
    state, url = receiver
    routing = routing_from(hook_url=url)
    ingest = await make_router(routing, workers=False, operator_token=TOKEN)
    grant = {"userId": "user-1", "categories": {"C0002": True}}
    assert (await ingest.post("/v1/consent", json=grant, headers=AUTH)).status == 200
    for message_id, user in (("a1", "user-1"), ("b1", "user-2"), ("a2", "user-1")):
        assert (await ingest.post("/v1/track", json=order(message_id, user), headers=AUTH)).status
    assert await redis_client.xlen(queue_key("analytics-hook")) == 3

    response = await ingest.post("/admin/erase", json={"userId": "user-1"}, headers=OPERATOR)
    assert response.status == 200
    answer = await response.json()
    assert answer["success"] is True
    receipt = answer["receipt"]
    assert receipt["identifiers"] == 1
    assert receipt["subjects"] == [subject_key("user-1")]
    assert receipt["removed"] == {
        "consent_records": 1,
        "history_entries": 1,
        "quarantined": 0,
        "aggregate_contributions": 0,
    }
    assert receipt["suppressed"] == 1
    assert [(d["destination"], d["status"], d["reason"]) for d in receipt["destinations"]] == [
        ("analytics-hook", "skipped", "no_deletion_api"),
        ("ops-hook", "skipped", "no_deletion_api"),
    ]
    assert await redis_client.exists(record_key(subject_key("user-1"))) == 0

    assert (await ingest.post("/v1/track", json=order("a3", "user-1"), headers=AUTH)).status == 200
    assert (await ingest.post("/v1/track", json=order("b2", "user-2"), headers=AUTH)).status == 200
    workers = await make_router(routing, consumer="after")
    await wait_for(lambda: sorted(received(state)) == ["b1", "b1", "b2", "b2"])
    stats = workers.server.app[STATE].stats
    await wait_for(
        lambda: stats.get("router_events_skipped_total", reason="suppressed", stage="delivery") == 4
    )
    await asyncio.sleep(0.2)
    assert sorted(received(state)) == ["b1", "b1", "b2", "b2"]

    text = json.dumps(answer) + await all_redis_text(redis_client)
    assert "user-1" not in text
    assert "anon-of-user-1" not in text


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erase_needs_the_operator_token(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """Wrong, missing or non-Bearer token: 401; no token configured: 503; nothing suppressed."""
    body = {"userId": "user-1"}
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    for headers in (
        {"Authorization": "Bearer wrong-token"},
        {},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        response = await router.post("/admin/erase", json=body, headers=headers)
        assert response.status == 401
        assert (await response.json())["code"] == "invalid_token"
    disabled = await make_router(routing_from(), workers=False)
    response = await disabled.post("/admin/erase", json=body, headers=OPERATOR)
    assert response.status == 503
    assert (await response.json())["code"] == "erasure_disabled"
    assert await suppressed_hashes(redis_client) == set()


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        (b"{}", "missing_identity", "userId"),
        (b'{"userId": ["  "]}', "missing_identity", "userId"),
        (b'{"userId": 5}', "invalid_field", "userId"),
        (b'{"phone": "+33600000000"}', "invalid_field", "phone"),
        (b"{nope", "invalid_json", None),
        (b"[]", "invalid_field", None),
    ],
)
@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_invalid_erase_bodies_are_refused(
    make_router: AppFactory, redis_client: aioredis.Redis, body: bytes, code: str, path: str | None
) -> None:
    """A body without a usable identifier is a 400 with its code and path; nothing is done."""
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    response = await router.post("/admin/erase", data=body, headers=OPERATOR)
    assert response.status == 400
    answer = await response.json()
    assert (answer["code"], answer.get("path")) == (code, path)
    assert await redis_client.exists(ERASURES) == 0
    assert await suppressed_hashes(redis_client) == set()


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erased_subject_gets_no_consent_record_back(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """After erasure neither the consent API nor a consent event stores anything for the id."""
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    body = {"anonymousId": ["anon-7", "anon-8"], "email": "Jane@Example.com"}
    response = await router.post("/admin/erase", json=body, headers=OPERATOR)
    receipt = (await response.json())["receipt"]
    assert receipt["identifiers"] == 3
    assert receipt["suppressed"] == 4  # the email as given and lower-cased
    grant = {"anonymousId": "anon-7", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=grant, headers=AUTH)).status == 200
    event = {
        "type": "track",
        "event": "Segment Consent Preference Updated",
        "anonymousId": "anon-8",
        "context": GRANTED,
    }
    assert (await router.post("/v1/track", json=event, headers=AUTH)).status == 200
    assert await redis_client.keys("rt:consent*") == []
    assert subject_key("jane@example.com") in await suppressed_hashes(redis_client)
    assert await redis_client.xlen(ERASURES) == 1


AMPLITUDE_AND_MIXPANEL = """
  - id: amp
    type: amplitude
    requires: [analytics]
    fields: [userId, anonymousId, event, properties.revenue]
    settings:
      api_key: amp-api-key-123
      secret_key: amp-secret-456
      endpoint_url: "${AMP_URL}/2/httpapi"
      deletion_url: "${AMP_URL}/api/2/deletions/users"

  - id: mixpanel-try
    type: mixpanel
    requires: [analytics]
    dry_run: true
    fields: [userId, anonymousId, event]
    settings: {project_token: mp-token, gdpr_token: mp-gdpr}
"""


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erase_forwards_to_destinations_with_a_deletion_api(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str]
) -> None:
    """Amplitude gets a deletion job for the user id; a dry_run destination is skipped."""
    _, url = receiver
    fake = AmplitudeFake()
    server = TestServer(create_app(fake))
    await server.start_server()
    try:
        text = TEST_CONFIG.read_text() + AMPLITUDE_AND_MIXPANEL
        routing = routing_from(text.replace("${AMP_URL}", str(server.make_url(""))), url)
        router = await make_router(routing, workers=False, operator_token=TOKEN)
        body = {"userId": "user-00001", "anonymousId": "device-1"}
        response = await router.post("/admin/erase", json=body, headers=OPERATOR)
        assert response.status == 200
        receipt = (await response.json())["receipt"]
    finally:
        await server.close()
    by_destination = {d["destination"]: d for d in receipt["destinations"]}
    assert by_destination["amp"]["status"] == "scheduled"
    assert by_destination["amp"]["ids"] == 1
    assert by_destination["mixpanel-try"] == {
        "destination": "mixpanel-try",
        "type": "mixpanel",
        "status": "skipped",
        "reason": "dry_run",
    }
    assert [d["user_ids"] for d in fake.deletions] == [["user-00001"]]
    assert "user-00001" not in json.dumps(receipt)
    assert "device-1" not in json.dumps(receipt)


async def test_router_erase_command_suppresses_and_prints_the_receipt(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """`router erase ID --email E` works against Redis directly and prints a receipt as JSON."""
    config = tmp_path / "routing.yaml"
    config.write_text(TEST_CONFIG.read_text())
    env = {
        **os.environ,
        "ROUTER_REDIS_URL": redis_server.url,
        "HOOK_URL": "http://127.0.0.1:9/hook",
        "HOOK_SECRET": HOOK_SECRET,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.cli",
        "erase",
        "user-9",
        "--email",
        "Jane@Example.com",
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    answer = json.loads(stdout)
    receipt = answer["receipt"]
    assert receipt["identifiers"] == 2
    assert set(receipt["subjects"]) == {
        subject_key("user-9"),
        subject_key("Jane@Example.com"),
        subject_key("jane@example.com"),
    }
    assert await suppressed_hashes(redis_client) == set(receipt["subjects"])
    assert "user-9" not in stdout.decode() + stderr.decode()
    assert "jane" not in (stdout.decode() + stderr.decode()).lower()
    [(_, fields)] = await redis_client.xrange(ERASURES)
    assert msgspec.json.decode(fields[b"receipt"])["id"] == receipt["id"]


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erasure_is_authorised_by_role_and_audited(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """With ROUTER_ADMIN_TOKENS only: a viewer gets 403, no token 401, an admin erases; every
    call and the erasure itself are in the audit trail, the subject as a keyed token."""
    tokens = {token_hash("viewer-token"): "viewer", token_hash("admin-token"): "admin"}
    router = await make_router(
        routing_from(), workers=False, admin_tokens=json.dumps(tokens), audit_key="audit-key"
    )
    body = {"userId": "user-1", "email": "Jane@Example.com"}
    viewer = await router.post(
        "/admin/erase", json=body, headers={"Authorization": "Bearer viewer-token"}
    )
    assert viewer.status == 403
    assert (await viewer.json())["code"] == "forbidden"
    anonymous = await router.post("/admin/erase", json=body)
    assert anonymous.status == 401
    assert (await anonymous.json())["code"] == "invalid_token"
    assert await suppressed_hashes(redis_client) == set()
    admin = await router.post(
        "/admin/erase", json=body, headers={"Authorization": "Bearer admin-token"}
    )
    assert admin.status == 200
    receipt = (await admin.json())["receipt"]
    records = [json.loads(line) async for line in AuditLog(redis_client).export()]
    calls = [r["data"] for r in records if r["kind"] == "admin_call"]
    assert [(c["endpoint"], c["status"], c["role"]) for c in calls] == [
        ("/admin/erase", 403, "viewer"),
        ("/admin/erase", 401, None),
        ("/admin/erase", 200, "admin"),
    ]
    (erasure,) = [r["data"] for r in records if r["kind"] == "erasure"]
    assert erasure["receipt"] == receipt["id"]
    assert erasure["actor"] == f"admin:{token_hash('admin-token')[:12]}"
    key = b"audit-key"
    assert erasure["subjects"] == sorted(
        {subject_token(i, key) for i in ("user-1", "Jane@Example.com", "jane@example.com")}
    )
    assert erasure["suppressed"] == receipt["suppressed"]
    text = json.dumps(records)
    assert "user-1" not in text
    assert "jane" not in text.lower()


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_erasure_and_withdrawal_of_unnormalized_ids_apply_to_their_events(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """An erasure for "jose\\u0301" and a withdrawal for "ann\\u0000" hit the events of those
    ids (ingest NFC-normalizes and strips control characters before hashing): both skipped."""
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    response = await router.post("/admin/erase", json={"userId": "jose\u0301"}, headers=OPERATOR)
    assert response.status == 200
    withdrawal = {"userId": " ann\u0000 ", "categories": {"C0002": False}}
    assert (await router.post("/v1/consent", json=withdrawal, headers=AUTH)).status == 200
    for message_id, user in (("e1", "jos\u00e9"), ("e2", "jose\u0301"), ("w1", "ann")):
        event = order(message_id, user) | {"anonymousId": None}
        if message_id == "w1":
            event["context"] = {}  # no signal of its own: the stored choice decides
        assert (await router.post("/v1/track", json=event, headers=AUTH)).status == 200
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_skipped_total", reason="suppressed", stage="ingest") == 4
    assert stats.get("router_events_skipped_total", reason="category_denied", stage="ingest") == 1
    assert await redis_client.xlen(queue_key("analytics-hook")) == 0


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_a_batchs_numeric_ids_get_their_erasure_and_stored_choice(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """The handler reads a batch's people from its raw events to look them up before it
    decodes them, and reads only string ids there: ids sent as numbers (12345, 678.0) are
    looked up once their events are sanitized, before they are planned. The erased 12345 is
    suppressed and 678's stored withdrawal denies, next to a string id of the same batch."""
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    response = await router.post("/admin/erase", json={"userId": "12345"}, headers=OPERATOR)
    assert response.status == 200
    withdrawal = {"userId": "678", "categories": {"C0002": False}}
    assert (await router.post("/v1/consent", json=withdrawal, headers=AUTH)).status == 200
    batch = [
        order("n1", "x") | {"userId": 12345, "anonymousId": None},
        order("n2", "x") | {"userId": 678.0, "anonymousId": None, "context": {}},
        order("s1", "someone-else"),
    ]
    response = await router.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert response.status == 200
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_skipped_total", reason="suppressed", stage="ingest") == 2
    assert stats.get("router_events_skipped_total", reason="category_denied", stage="ingest") == 1
    queued = await redis_client.xrange(queue_key("analytics-hook"))
    assert len(queued) == 1
    assert "s1" in str(queued)
