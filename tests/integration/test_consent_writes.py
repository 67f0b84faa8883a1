"""Who may write stored consent (``sources[].consent_writes``), on a real Redis.

A source with ``grant`` stores any choice; any other source only withdraws: its denials are
stored, a grant that stored consent does not already hold is refused (403 on the API; for a
consent event the event is routed on its own signals but stores no grant), counted and audited.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from consent.records import ConsentRecord, narrow
from consent.store import ConsentStore, WriteOutcome, record_key, subject_key
from router.compliance.audit_log import AuditLog
from router.edge.state import STATE
from router.queue.keys import queue_key
from tests.conftest import TEST_CONFIG, AppFactory, routing_from

PARTNER_KEY = "partner-write-key"
WEB = {"Authorization": "Basic " + base64.b64encode(b"test-write-key:").decode()}
PARTNER = {"Authorization": "Basic " + base64.b64encode(f"{PARTNER_KEY}:".encode()).decode()}
SOURCES = """sources:
  - id: web
    write_key: test-write-key
    consent_writes: grant
  - id: partner
    write_key: partner-write-key
"""


def routing() -> Any:
    """config/test.yaml with a second source, ``partner``, that declares no permission."""
    text = TEST_CONFIG.read_text()
    rest = text[text.index("\nconsent:") :]
    return routing_from(SOURCES + rest)


async def stored(client: aioredis.Redis, subject: str) -> dict[str, Any] | None:
    """The stored record of a raw subject id, decoded."""
    raw = await client.get(record_key(subject_key(subject)))
    return None if raw is None else dict(json.loads(raw))


def order(message_id: str, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """user-1's Order Completed (no consent signal of its own unless ``context`` has one)."""
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "user-1",
        "properties": {"order_id": "o-1", "revenue": 2.0},
        "context": context or {},
    }


async def test_a_partner_key_cannot_regrant_a_withdrawn_consent(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """The web CMP withdraws analytics; the partner's grant of it is a 403 and changes nothing."""
    router = await make_router(routing(), workers=False, audit_key="k")
    withdrawal = {"userId": "user-1", "categories": {"C0002": False, "C0001": True}}
    assert (await router.post("/v1/consent", json=withdrawal, headers=WEB)).status == 200
    before = await stored(redis_client, "user-1")

    regrant = {"userId": "user-1", "categories": {"C0002": True}}
    response = await router.post("/v1/consent", json=regrant, headers=PARTNER)
    assert response.status == 403
    answer = await response.json()
    assert answer["success"] is False
    assert (answer["code"], answer["path"]) == ("consent_write_forbidden", "categories")
    assert "analytics" in answer["message"]
    assert await stored(redis_client, "user-1") == before

    assert (await router.post("/v1/track", json=order("m1"), headers=WEB)).status == 200
    stats = router.server.app[STATE].stats
    assert stats.get("router_events_skipped_total", destination="analytics-hook") == 1
    assert stats.get("router_consent_writes_total", source="partner", status="forbidden") == 1
    audit = router.server.app[STATE].audit
    assert audit is not None
    await audit.flush()
    records = [json.loads(line) async for line in AuditLog(redis_client).export()]
    written = [r["data"] for r in records if r["kind"] == "consent_written"]
    assert [(w["source_id"], w.get("refused")) for w in written] == [
        ("web", None),
        ("partner", ["analytics"]),
    ]


async def test_any_source_can_withdraw_and_its_grants_of_new_categories_are_refused(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A partner withdrawal is stored over the CMP's record, keeping the other grants; a grant
    it adds is refused (403) while the withdrawal in the same request still lands."""
    router = await make_router(routing(), workers=False)
    grant = {"userId": "user-1", "categories": {"C0001": True, "C0002": True}}
    assert (await router.post("/v1/consent", json=grant, headers=WEB)).status == 200

    mixed = {"userId": "user-1", "categories": {"C0002": False, "C0004": True, "C0001": True}}
    response = await router.post("/v1/consent", json=mixed, headers=PARTNER)
    assert response.status == 403
    assert (await response.json())["code"] == "consent_write_forbidden"
    record = await stored(redis_client, "user-1")
    assert record is not None
    assert (record["granted"], record["denied"]) == (["necessary"], ["analytics"])

    only_withdrawal = {"anonymousId": "anon-2", "categories": {"C0004": False}}
    assert (await router.post("/v1/consent", json=only_withdrawal, headers=PARTNER)).status == 200
    record = await stored(redis_client, "anon-2")
    assert record is not None
    assert (record["granted"], record["denied"]) == ([], ["advertising"])

    before = await stored(redis_client, "user-1")
    restated = {"userId": "user-1", "categories": {"C0001": True}}  # already granted: fine
    assert (await router.post("/v1/consent", json=restated, headers=PARTNER)).status == 200
    assert await stored(redis_client, "user-1") == before  # nothing withdrawn: nothing stored


async def test_a_partner_consent_event_is_routed_but_stores_no_grant(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """A partner's consent event in a batch: accepted and routed on its own signal, the stored
    withdrawal stays, later events without a signal are skipped; counted as forbidden."""
    router = await make_router(routing(), workers=False)
    withdrawal = {"userId": "user-1", "categories": {"C0002": False}}
    assert (await router.post("/v1/consent", json=withdrawal, headers=WEB)).status == 200
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    preference = order("c1", {"consent": {"categoryPreferences": {"C0002": True}}})
    preference |= {"event": "Segment Consent Preference Updated", "timestamp": later}
    batch = {"batch": [preference, order("m2") | {"timestamp": later}]}
    response = await router.post("/v1/batch", json=batch, headers=PARTNER)
    assert response.status == 200
    assert await response.json() == {"success": True}

    record = await stored(redis_client, "user-1")
    assert record is not None
    assert (record["granted"], record["denied"]) == ([], ["analytics"])
    queued = await redis_client.xrange(queue_key("analytics-hook"))
    assert len(queued) == 1  # the consent event itself, on its own grant; m2 saw no grant
    stats = router.server.app[STATE].stats
    assert stats.get("router_consent_writes_total", route="event", status="forbidden") == 1

    # the web CMP may grant by event
    preference["messageId"] = "c2"
    preference["timestamp"] = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    assert (await router.post("/v1/track", json=preference, headers=WEB)).status == 200
    record = await stored(redis_client, "user-1")
    assert record is not None
    assert record["granted"] == ["analytics"]


T0 = datetime.now(UTC).replace(microsecond=0)


def built(votes: dict[str, bool], at: datetime) -> ConsentRecord:
    """A record of these votes at ``at``."""
    return ConsentRecord.build(votes, source="api", updated_at=at, received_at=at, max_age_days=395)


@pytest.mark.parametrize(
    ("current", "write"),
    [
        (None, {"analytics": False}),
        (None, {"analytics": True}),
        (None, {"analytics": True, "advertising": False}),
        ({"analytics": True, "functional": True}, {"analytics": False}),
        ({"analytics": True}, {"analytics": True}),
        ({"analytics": False}, {"analytics": True, "functional": False}),
        ({"analytics": True, "advertising": False}, {"advertising": False}),
        ({"necessary": True}, {"necessary": True, "analytics": True, "advertising": False}),
    ],
)
async def test_the_stores_narrowing_is_the_pure_rule(
    redis_client: aioredis.Redis, current: dict[str, bool] | None, write: dict[str, bool]
) -> None:
    """The Lua write of a source that may not grant stores what ``narrow`` says, refuses the
    same grants, and leaves the record alone when it adds no withdrawal."""
    store = ConsentStore(redis_client)
    subject = subject_key("user-1")
    existing = None if current is None else built(current, T0)
    if existing is not None:
        await store.write([subject], existing)
    update = built(write, T0 + timedelta(seconds=1))
    result = await store.write([subject], update, may_grant=False)
    expected, refused = narrow(existing, update)
    assert result.refused == refused
    raw = await redis_client.get(record_key(subject))
    if expected is None:
        assert result.outcomes[subject] is WriteOutcome.UNCHANGED
        assert raw == (None if existing is None else existing.encode().encode())
    else:
        assert result.outcomes[subject] is WriteOutcome.WRITTEN
        assert ConsentRecord.decode(raw) == expected
