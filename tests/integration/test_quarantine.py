"""The quarantine on a real Redis: redacted entries, retention, erasure, the readers."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from consent.ids import subject_key
from router.cli import main
from router.compliance.quarantine import read_quarantine
from router.queue.keys import QUARANTINE
from tests.conftest import WRITE_KEY, AppFactory, routing_from
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
TOKEN = "operator-token-for-quarantine-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = ("jane@example.com", "user-secret-1", "anon-secret-1", "+33 6 12 34 56 78", "4111")


def bad_event(user: str, message_id: str) -> dict[str, Any]:
    """A track call of ``user`` with a bad timestamp and personal data in its properties."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": user,
        "anonymousId": "anon-secret-1",
        "timestamp": "not a time",
        "properties": {
            "email": "jane@example.com",
            "phone": "+33 6 12 34 56 78",
            "total": 4111,
            "items": [{"sku": "a"}, {"sku": 3}],
            "jane@example.com": True,
        },
    }


async def test_quarantine_keeps_the_shape_without_values_and_erasure_removes_it(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A rejected event rests as code, path, source, size and field types (no value, ids only
    hashed); erasing its subject deletes it and counts it, another subject's entry stays."""
    router = await make_router(routing_from(), workers=False, operator_token=TOKEN)
    batch = {"batch": [bad_event("user-secret-1", "m-1"), bad_event("user-2", "m-2")]}
    response = await router.post("/v1/batch", json=batch, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["code"] == "no_valid_events"

    entries = await redis_client.xrange(QUARANTINE)
    assert len(entries) == 2
    stored = json.dumps([{k.decode(): v.decode() for k, v in f.items()} for _, f in entries])
    for secret in SECRETS:
        assert secret not in stored

    answer = await (await router.get("/admin/quarantine", headers=OPERATOR)).json()
    newest, oldest = answer["quarantine"]
    assert newest["index"] == 1
    assert (oldest["code"], oldest["path"], oldest["source"]) == (
        "invalid_timestamp",
        "timestamp",
        "web",
    )
    assert (oldest["index"], oldest["json"]) == (0, True)
    assert oldest["size"] == len(json.dumps(bad_event("user-secret-1", "m-1")))
    assert oldest["shape"]["properties.email"] == "string"
    assert oldest["shape"]["properties.total"] == "number"
    assert oldest["shape"]["properties.items[].sku"] == "number|string"
    assert oldest["shape"]["properties.*"] == "boolean"  # a value-like key is not kept
    assert "subjects" not in oldest

    erase = {"userId": "user-secret-1"}
    receipt = (await (await router.post("/admin/erase", json=erase, headers=OPERATOR)).json())[
        "receipt"
    ]
    assert receipt["removed"]["quarantined"] == 1
    left = await redis_client.xrange(QUARANTINE)
    assert [f[b"index"] for _, f in left] == [b"1"]
    assert left[0][1][b"subjects"].decode().split(",") == [
        subject_key("user-2"),
        subject_key("anon-secret-1"),
    ]
    receipt = (
        await (
            await router.post(
                "/admin/erase", json={"anonymousId": " anon-secret-1"}, headers=OPERATOR
            )
        ).json()
    )["receipt"]
    assert receipt["removed"]["quarantined"] == 1
    assert await redis_client.xlen(QUARANTINE) == 0


async def test_entries_past_the_retention_are_trimmed_on_write_and_on_read(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """Entries older than ROUTER_QUARANTINE_RETENTION_DAYS go when a rejection is quarantined,
    and before the quarantine is read; younger ones stay."""
    now = datetime.now(UTC)
    old = int((now - timedelta(days=8)).timestamp() * 1000)
    recent = int((now - timedelta(days=6)).timestamp() * 1000)
    await redis_client.xadd(QUARANTINE, {"code": "invalid_json"}, id=f"{old}-0")
    await redis_client.xadd(QUARANTINE, {"code": "invalid_json"}, id=f"{recent}-0")
    router = await make_router(routing_from(), workers=False)
    response = await router.post("/v1/track", json=bad_event("u", "m"), headers=AUTH)
    assert response.status == 400
    ids = [entry_id.decode() for entry_id, _ in await redis_client.xrange(QUARANTINE)]
    assert len(ids) == 2
    assert ids[0] == f"{recent}-0"

    later = now + timedelta(days=2)
    entries = await read_quarantine(redis_client, 10, now=later, retention_days=7)
    assert [e["id"] for e in entries] == [ids[1]]
    assert await redis_client.xlen(QUARANTINE) == 1


async def test_router_quarantine_prints_the_redacted_entries(
    make_router: AppFactory,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`router quarantine` prints one JSON line per entry, newest first, without values."""
    router = await make_router(routing_from(), workers=False)
    assert (await router.post("/v1/track", json=bad_event("u-1", "m"), headers=AUTH)).status == 400
    anonymous = {"event": "Signed Up", "properties": {"email": "jane@example.com"}}
    assert (await router.post("/v1/track", json=anonymous, headers=AUTH)).status == 400
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    code = await asyncio.to_thread(main, ["quarantine", "--limit", "5"])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["code"], e["json"]) for e in lines] == [
        ("missing_identity", True),
        ("invalid_timestamp", True),
    ]
    assert all(secret not in out for secret in SECRETS)
