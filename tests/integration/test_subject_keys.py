"""Keyed subject hashes (``ROUTER_SUBJECT_KEY``) on a real Redis, and ``router
migrate-subjects`` from the unkeyed hashes of earlier versions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest
import redis.asyncio as aioredis

from consent.ids import keyed, subject_key
from consent.store import history_key, record_key
from router.cli import main
from router.compliance.subject_migration import MARKER, MOVED, migrate_subjects
from router.queue.keys import QUARANTINE, SUPPRESSED
from tests.conftest import WRITE_KEY, AppFactory, routing_from
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
SECRET = "subject-key-for-migration-tests"


def test_keyed_subject_keys_need_the_secret() -> None:
    """With a secret, the key is no SHA-256 of the id (a dictionary cannot find it), differs
    per secret, and is the keyed form of the unkeyed hash (so it can be migrated)."""
    plain = subject_key("jane@example.com")
    assert plain == hashlib.sha256(b"jane@example.com").hexdigest()
    one, two = subject_key("jane@example.com", b"a"), subject_key("jane@example.com", b"b")
    assert len({plain, one, two}) == 3
    assert one == keyed(plain, b"a")
    assert subject_key(" jane@example.com\x00", b"a") == one  # normalized first, as before


async def test_consent_written_with_a_subject_key_is_stored_keyed(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """``POST /v1/consent`` stores under the keyed hash, and the router records the secret's
    fingerprint so migrate-subjects never re-keys what it wrote."""
    router = await make_router(routing_from(), workers=False, subject_key=SECRET)
    body = {"userId": "user-1", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=body, headers=AUTH)).status == 200
    assert await redis_client.exists(record_key(subject_key("user-1", SECRET.encode()))) == 1
    assert await redis_client.exists(record_key(subject_key("user-1"))) == 0
    assert await redis_client.get(MARKER) is not None


async def test_erasure_finds_what_was_stored_under_keyed_hashes(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """Consent and a quarantined event of a person, stored keyed; ``POST /admin/erase`` with
    the raw ids removes both and suppresses the keyed hash (the unkeyed one is never stored)."""
    token = "operator-token-for-subject-keys"
    router = await make_router(
        routing_from(), workers=False, subject_key=SECRET, operator_token=token
    )
    body = {"userId": "user-9", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=body, headers=AUTH)).status == 200
    bad = {"type": "track", "event": "x", "userId": "user-9", "timestamp": "not a time"}
    assert (await router.post("/v1/track", json=bad, headers=AUTH)).status == 400
    assert await redis_client.xlen(QUARANTINE) == 1
    erase = await router.post(
        "/admin/erase", json={"userId": "user-9"}, headers={"Authorization": f"Bearer {token}"}
    )
    receipt = (await erase.json())["receipt"]
    keyed_hash = subject_key("user-9", SECRET.encode())
    assert receipt["subjects"] == [keyed_hash]
    removed = receipt["removed"]
    assert (removed["consent_records"], removed["history_entries"], removed["quarantined"]) == (
        1,
        1,
        1,
    )
    assert await redis_client.sismember(SUPPRESSED, keyed_hash)  # type: ignore[misc]
    assert not await redis_client.sismember(SUPPRESSED, subject_key("user-9"))  # type: ignore[misc]


async def test_consent_status_and_subject_report_read_keyed_hashes(
    make_router: AppFactory, redis_client: aioredis.Redis
) -> None:
    """``GET /v1/consent/status`` and ``POST /admin/subject-report`` hash the ids they are
    asked about with the subject key, so they find what was stored under it."""
    token = "admin-token-for-subject-keys"
    tokens = json.dumps({hashlib.sha256(token.encode()).hexdigest(): "admin"})
    router = await make_router(
        routing_from(), workers=False, subject_key=SECRET, admin_tokens=tokens
    )
    body = {"userId": "user-5", "categories": {"C0002": True}}
    assert (await router.post("/v1/consent", json=body, headers=AUTH)).status == 200
    status = await router.get("/v1/consent/status", params={"userId": "user-5"}, headers=AUTH)
    answer = await status.json()
    assert "analytics" in answer["consent"]["granted"]
    report = await router.post(
        "/admin/subject-report",
        json={"userId": "user-5"},
        headers={"Authorization": f"Bearer {token}"},
    )
    consent = (await report.json())["consent"]
    assert "analytics" in consent["current"]["granted"]
    assert consent["ids"][0]["history"]


async def _seed_unkeyed(client: aioredis.Redis) -> None:
    for user in ("u1", "u2"):
        await client.set(record_key(subject_key(user)), b'{"granted": ["analytics"]}', ex=3600)
        await client.xadd(history_key(subject_key(user)), {"r": b"{}"})
    await client.sadd(SUPPRESSED, subject_key("erased-1"), subject_key("erased-2"))  # type: ignore[misc]


async def test_migrate_subjects_rekeys_consent_and_suppression_once(
    redis_client: aioredis.Redis,
) -> None:
    """Unkeyed records, histories and suppressed hashes move to their keyed names (expiry
    kept); a keyed record written meanwhile wins over the unkeyed one; a second run does
    nothing; another secret is refused."""
    secret = SECRET.encode()
    await _seed_unkeyed(redis_client)
    newer = record_key(subject_key("u2", secret))
    await redis_client.set(newer, b'{"granted": []}')
    report = await migrate_subjects(redis_client, secret, SUPPRESSED)
    assert (report.subjects, report.conflicts, report.suppressed) == (2, 1, 2)
    assert await redis_client.get(record_key(subject_key("u1", secret))) is not None
    assert await redis_client.ttl(record_key(subject_key("u1", secret))) > 0
    assert await redis_client.xlen(history_key(subject_key("u2", secret))) == 1
    assert await redis_client.get(newer) == b'{"granted": []}'
    assert await redis_client.exists(record_key(subject_key("u1"))) == 0
    members = {m.decode() for m in await redis_client.smembers(SUPPRESSED)}  # type: ignore[misc]
    assert members == {subject_key("erased-1", secret), subject_key("erased-2", secret)}
    assert await redis_client.exists(MOVED) == 0

    again = await migrate_subjects(redis_client, secret, SUPPRESSED)
    assert again.already_done
    assert {m.decode() for m in await redis_client.smembers(SUPPRESSED)} == members  # type: ignore[misc]
    with pytest.raises(Exception, match="another ROUTER_SUBJECT_KEY"):
        await migrate_subjects(redis_client, b"other", SUPPRESSED)


async def test_an_interrupted_migration_resumes_without_double_keying(
    redis_client: aioredis.Redis,
) -> None:
    """A run stopped after moving some subjects (no marker yet) finishes the rest on the next
    run and leaves the moved ones as they are."""
    secret = SECRET.encode()
    await _seed_unkeyed(redis_client)
    moved = subject_key("u1", secret)
    await redis_client.rename(record_key(subject_key("u1")), record_key(moved))
    await redis_client.rename(history_key(subject_key("u1")), history_key(moved))
    await redis_client.sadd(MOVED, moved)  # type: ignore[misc]
    report = await migrate_subjects(redis_client, secret, SUPPRESSED)
    assert report.subjects == 1
    assert await redis_client.exists(record_key(moved)) == 1
    assert await redis_client.exists(record_key(keyed(moved, secret))) == 0
    assert await redis_client.exists(record_key(subject_key("u2", secret))) == 1


async def test_migrate_subjects_command(
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI re-keys and says so; without ROUTER_SUBJECT_KEY it refuses (exit 1)."""
    await _seed_unkeyed(redis_client)
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    monkeypatch.delenv("ROUTER_SUBJECT_KEY", raising=False)
    assert await asyncio.to_thread(main, ["migrate-subjects"]) == 1
    assert "ROUTER_SUBJECT_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("ROUTER_SUBJECT_KEY", SECRET)
    assert await asyncio.to_thread(main, ["migrate-subjects"]) == 0
    assert "re-keyed 2 subject(s)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["migrate-subjects"]) == 0
    assert "nothing to do" in capsys.readouterr().out
