"""``router migrate`` on a real single server holding keys as the previous version named them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from consent.ids import subject_key
from consent.records import ConsentRecord
from consent.store import ConsentStore, history_key, record_key
from router.cli import main
from router.compliance.audit_log import AuditLog, verify
from router.core.audit_records import AuditKind
from router.queue.keys import GROUP, SUPPRESSED, dlq_key, outbox_key, queue_key
from tests.conftest import suppressed_hashes
from tests.redis_server import RedisServer

SUBJECT = subject_key("user-1")
ERASED = [subject_key("gone-1"), subject_key("gone-2")]


async def _old_deployment(client: aioredis.Redis) -> None:
    """Keys exactly as 0.x wrote them: bare names, one suppression set, ``rt:audit*``."""
    await client.xgroup_create("rt:q:ops-hook", GROUP, id="0", mkstream=True)
    await client.xadd("rt:q:ops-hook", {"d": b"{}"})
    await client.xadd("rt:q:ops-hook", {"d": b"{}"})
    # One entry read and not acknowledged: it must stay pending after the rename.
    await client.xreadgroup(GROUP, "old-worker", {"rt:q:ops-hook": ">"}, count=1)
    await client.xadd("rt:dlq:ops-hook", {"d": b"{}", "reason": "http_400"})
    await client.xadd("rt:outbox:preview-hook", {"r": b"{}"})
    record = ConsentRecord(
        granted=frozenset({"analytics"}),
        denied=frozenset(),
        source="api",
        updated_at=datetime.now(UTC),
        received_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) + timedelta(days=30),
    )
    await client.set(f"rt:consent:{SUBJECT}", record.encode(), px=30 * 86_400_000)
    await client.xadd(f"rt:consent-log:{SUBJECT}", {"granted": "analytics"})
    await client.sadd(SUPPRESSED, *ERASED)  # type: ignore[misc]
    audit = AuditLog(client, key=b"k", stream="rt:audit")
    await audit.append(AuditKind.RELEASE, {"destination": "ops-hook"})
    await audit.append(AuditKind.RELEASE, {"destination": "ga4"})


def _migrate(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    return main(["migrate", *args])


async def test_migrate_renames_every_old_key_and_a_second_run_changes_nothing(
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Queues keep their group and pending entry, consent its expiry, the suppression set
    becomes a key per subject, the audit trail still verifies; run twice, the same state."""
    await _old_deployment(redis_client)
    before = await redis_client.pttl(f"rt:consent:{SUBJECT}")

    assert await asyncio.to_thread(_migrate, redis_server, monkeypatch, "--dry-run") == 0
    assert "would rename 9 keys, 2 erased subjects" in capsys.readouterr().out
    assert await redis_client.exists("rt:q:ops-hook", SUPPRESSED, "rt:audit") == 3

    assert await asyncio.to_thread(_migrate, redis_server, monkeypatch) == 0
    assert "renamed 9 keys, 2 erased subjects" in capsys.readouterr().out
    remaining = sorted(k.decode() for k in await redis_client.keys("rt:*"))
    assert remaining == sorted(
        [
            queue_key("ops-hook"),
            dlq_key("ops-hook"),
            outbox_key("preview-hook"),
            record_key(SUBJECT),
            history_key(SUBJECT),
            *(f"{SUPPRESSED}:{{{h}}}" for h in ERASED),
            "rt:{audit}",
            "rt:{audit}:lanes",
            "rt:{audit}:heads",
            "rt:{audit}:last",
        ]
    )
    assert await redis_client.xlen(queue_key("ops-hook")) == 2
    pending = await redis_client.xpending(queue_key("ops-hook"), GROUP)
    assert pending["pending"] == 1
    assert 0 < await redis_client.pttl(record_key(SUBJECT)) <= before
    assert await suppressed_hashes(redis_client) == set(ERASED)
    assert (await verify(redis_client)).ok

    # The new version reads what was migrated: the consent, the erasure marks.
    store = ConsentStore(redis_client, suppressed_key=SUPPRESSED)
    records, suppressed = await store.lookup_all([SUBJECT, *ERASED])
    stored = records[SUBJECT]
    assert stored is not None
    assert "analytics" in stored.granted
    assert suppressed == set(ERASED)

    snapshot = {k: await redis_client.type(k) for k in await redis_client.keys("rt:*")}
    assert await asyncio.to_thread(_migrate, redis_server, monkeypatch) == 0
    assert "renamed 0 keys, 0 erased subjects" in capsys.readouterr().out
    assert {k: await redis_client.type(k) for k in await redis_client.keys("rt:*")} == snapshot


async def test_a_key_under_both_names_is_left_alone_and_reported(
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A new-version router already wrote the new queue: nothing is merged, exit 1, named."""
    await redis_client.xadd("rt:q:ops-hook", {"d": b"{}"})
    await redis_client.xadd(queue_key("ops-hook"), {"d": b"{}"})
    await redis_client.xadd("rt:dlq:ops-hook", {"d": b"{}"})
    assert await asyncio.to_thread(_migrate, redis_server, monkeypatch) == 1
    captured = capsys.readouterr()
    assert "renamed 1 keys" in captured.out
    assert "left alone: rt:q:ops-hook (and rt:q:{ops-hook} exists)" in captured.err
    assert await redis_client.xlen("rt:q:ops-hook") == 1
    assert await redis_client.xlen(queue_key("ops-hook")) == 1
    assert await redis_client.xlen(dlq_key("ops-hook")) == 1


def test_migrate_refuses_a_cluster_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old keys live on the single server: migrating a cluster is a clear exit 1."""
    monkeypatch.setenv("ROUTER_REDIS_URL", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert main(["migrate"]) == 1
    assert "single server" in capsys.readouterr().err
