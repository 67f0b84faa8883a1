"""Encryption at rest on a real Redis: no personal value rests in clear (every key scanned),
undecryptable entries are dead-lettered, plaintext from before still flows, and
``router keys rotate`` re-seals everything with the newest key."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from router.cli import main
from router.core.sealing import KeyRing, Sealer, key_id_of
from router.queue.items import DLQ_ROLE, OUTBOX_ROLE, entry_for, sealed_for
from router.queue.keys import QUARANTINE, dlq_key, outbox_key, queue_key
from router.queue.rotation import rotate
from tests.conftest import HOOK_SECRET, WRITE_KEY, AppFactory, routing_from, wait_for
from tests.fakes.webhook import WebhookReceiver
from tests.integration.test_corrupt_entries import _item
from tests.redis_server import RedisServer

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
TOKEN = "operator-token-for-encryption-tests"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
K1 = "k1:" + base64.b64encode(b"\x01" * 32).decode()
K2 = "k2:" + base64.b64encode(b"\x02" * 32).decode()
SUBJECT_KEY = "subject-key-for-tests"
EMAIL = "canary.jane@example.org"
USER = "canary-user-7781"
ANON = "canary-anon-5512"
NOTE = "canary-note-QZX"
CANARIES = (EMAIL, USER, ANON, NOTE)

ROUTING = """
sources:
  - id: web
    write_key: test-write-key
    consent_writes: grant
consent:
  mappings:
    ids: {C0002: analytics}
destinations:
  - id: queued-hook
    type: webhook
    purpose: Rests in its queue while no worker runs
    requires: []
    fields: [messageId, event, userId, anonymousId, properties.email, properties.note]
    identifiers: {properties.email: email}
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    enabled: %(queued)s
  - id: refused-hook
    type: webhook
    purpose: Answers 400, so its events are dead letters
    requires: []
    fields: [messageId, event, userId, anonymousId, properties.email, properties.note]
    identifiers: {properties.email: email}
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    delivery: {batch_size: 10, max_attempts: 1}
    enabled: %(workers)s
  - id: preview-hook
    type: webhook
    purpose: Dry run, so its requests rest in the outbox
    requires: []
    dry_run: true
    fields: [messageId, event, userId, anonymousId, properties.email, properties.note]
    identifiers: {properties.email: email}
    settings: {url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
    enabled: %(workers)s
"""


def _routing(url: str, *, queued: bool, workers: bool) -> Any:
    text = ROUTING % {"queued": str(queued).lower(), "workers": str(workers).lower()}
    return routing_from(text, hook_url=url)


def _event(message_id: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": USER,
        "anonymousId": ANON,
        "properties": {"email": EMAIL, "note": NOTE},
        "context": {"traits": {"email": EMAIL}},
    }


async def _everything(client: aioredis.Redis) -> tuple[bytes, set[str]]:
    """Every key's name and every value in Redis, whatever its type, and the key types seen."""
    dump = io.BytesIO()
    types: set[str] = set()
    async for key in client.scan_iter(count=1000):
        kind = (await client.type(key)).decode()
        types.add(kind)
        dump.write(key + b"\n")
        if kind == "string":
            dump.write(await client.get(key) or b"")
        elif kind == "hash":
            for name, value in (await client.hgetall(key)).items():  # type: ignore[misc]
                dump.write(name + b"=" + value + b"\n")
        elif kind == "list":
            dump.write(b"\n".join(await client.lrange(key, 0, -1)))  # type: ignore[misc]
        elif kind == "set":
            dump.write(b"\n".join(await client.smembers(key)))  # type: ignore[misc]
        elif kind == "zset":
            dump.write(b"\n".join(await client.zrange(key, 0, -1)))
        elif kind == "stream":
            for _, fields in await client.xrange(key):
                for name, value in fields.items():
                    dump.write(name + b"=" + value + b"\n")
        else:
            raise AssertionError(f"a key of type {kind} is not read by this test")
        dump.write(b"\n")
    return dump.getvalue(), types


def _assert_no_canary(dump: bytes) -> None:
    lowered = dump.lower()
    for canary in CANARIES:
        assert canary.encode() not in lowered, canary
        # keyed hashes only: the unkeyed SHA-256 of an id would be reversible by dictionary
        assert hashlib.sha256(canary.encode()).hexdigest().encode() not in lowered, canary
    assert base64.b64encode(EMAIL.encode()) not in dump


async def test_no_personal_value_rests_in_redis_in_clear(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """With keys set: events with canary values through the queue, dead letters, the outbox,
    the quarantine, stored consent and the audit trail; then every key and value is read: no
    canary, no unkeyed hash of one. The operator views still open what they show."""
    state, url = receiver
    state.script = [400] * 20
    settings = {
        "encryption_keys": K1,
        "subject_key": SUBJECT_KEY,
        "audit_key": "audit-key-for-tests",
        "operator_token": TOKEN,
    }
    # 1. no worker: the events rest in a queue
    edge = await make_router(_routing(url, queued=True, workers=False), workers=False, **settings)
    batch = {"batch": [_event("m-1"), _event("m-2"), {**_event("m-bad"), "timestamp": "nope"}]}
    response = await edge.post("/v1/batch", json=batch, headers=AUTH)
    assert response.status == 200
    consent = {"userId": USER, "anonymousId": ANON, "categories": {"C0002": True}}
    assert (await edge.post("/v1/consent", json=consent, headers=AUTH)).status == 200
    erase = {"email": EMAIL}
    assert (await edge.post("/admin/erase", json=erase, headers=OPERATOR)).status == 200
    assert await redis_client.xlen(queue_key("queued-hook")) == 1
    assert await redis_client.xlen(QUARANTINE) == 1
    await edge.close()

    # 2. workers: dead letters and the outbox
    router = await make_router(_routing(url, queued=False, workers=True), **settings)
    assert (await router.post("/v1/batch", json=batch, headers=AUTH)).status == 200

    async def settled() -> bool:
        return (
            await redis_client.xlen(dlq_key("refused-hook")) == 2
            and await redis_client.xlen(outbox_key("preview-hook")) > 0
        )

    for _ in range(500):
        if await settled():
            break
        await wait_for(lambda: True)
    assert await settled()
    await router.close()  # the audit trail and the data map are flushed

    dump, types = await _everything(redis_client)
    assert {"stream", "set", "string"} <= types
    _assert_no_canary(dump)
    router = await make_router(
        _routing(url, queued=False, workers=False), workers=False, **settings
    )

    letters = await (await router.get("/admin/dlq/refused-hook", headers=OPERATOR)).json()
    assert sorted(r["message_id"] for r in letters["dead_letters"]) == ["m-1", "m-2"]
    quarantined = await (await router.get("/admin/quarantine", headers=OPERATOR)).json()
    assert quarantined["quarantine"][0]["code"] == "invalid_timestamp"
    assert quarantined["quarantine"][0]["shape"]["properties.note"] == "string"
    replay = await router.post("/admin/dlq/refused-hook/replay", headers=OPERATOR)
    assert (await replay.json())["replayed"] == 2
    requeued = await redis_client.xrange(queue_key("refused-hook"))
    assert [key_id_of(fields[b"d"]) for _, fields in requeued] == ["k1", "k1"]


async def _letters(client: aioredis.Redis, destination: str, count: int) -> list[Any]:
    for _ in range(500):
        found = list(await client.xrange(dlq_key(destination)))
        if len(found) >= count:
            return found
        await wait_for(lambda: True)
    raise AssertionError("no dead letters")


async def test_undecryptable_entries_are_dead_lettered_and_the_rest_delivered(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """An entry sealed with an unknown key, one sealed for another destination (moved) and a
    tampered one are dead-lettered as ``undecryptable``, kept sealed as they were; a plaintext
    entry from before encryption and a good one are delivered."""
    state, url = receiver
    old = Sealer(KeyRing.parse(K2))
    ring = Sealer(KeyRing.parse(K1))
    stream = queue_key("queued-hook")
    good = entry_for([_item("good")], ring, "queued-hook")
    tampered = dict(entry_for([_item("tampered")], ring, "queued-hook"))
    sealed = tampered["d"]
    assert isinstance(sealed, bytes)
    tampered["d"] = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for entry in (
        entry_for([_item("unknown-key"), _item("unknown-key-2")], old, "queued-hook"),
        entry_for([_item("moved")], ring, "preview-hook"),
        tampered,
        entry_for([_item("legacy-plaintext")]),
        good,
    ):
        await redis_client.xadd(stream, entry)  # type: ignore[arg-type]
    router = await make_router(
        _routing(url, queued=True, workers=False), encryption_keys=K1, operator_token=TOKEN
    )
    await wait_for(lambda: len(state.events()) == 2)
    assert sorted(e["messageId"] for e in state.events()) == ["good", "legacy-plaintext"]
    letters = await _letters(redis_client, "queued-hook", 3)
    reasons = sorted(fields[b"reason"].decode() for _, fields in letters)
    assert reasons == [
        "undecryptable:authentication_failed",
        "undecryptable:authentication_failed",
        "undecryptable:unknown_key",
    ]
    assert {key_id_of(f.get(b"qd", f.get(b"qb", b""))) for _, f in letters} == {"k1", "k2"}
    listed = await (await router.get("/admin/dlq/queued-hook", headers=OPERATOR)).json()
    assert [r.get("undecryptable") for r in listed["dead_letters"]] == [True] * 3
    await wait_for(lambda: True)
    assert await redis_client.xlen(stream) == 0


async def test_replay_after_adding_the_missing_key_delivers(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """A dead letter of an unknown key goes back to the queue sealed as it was: once the key
    is in the ring again, the replayed entry is delivered."""
    state, url = receiver
    entry = entry_for([_item("late-key")], Sealer(KeyRing.parse(K2)), "queued-hook")
    await redis_client.xadd(queue_key("queued-hook"), entry)  # type: ignore[arg-type]
    first = await make_router(
        _routing(url, queued=True, workers=False), encryption_keys=K1, operator_token=TOKEN
    )
    await _letters(redis_client, "queued-hook", 1)
    await first.close()
    router = await make_router(
        _routing(url, queued=True, workers=False),
        encryption_keys=f"{K1},{K2}",
        operator_token=TOKEN,
    )
    answer = await (await router.post("/admin/dlq/queued-hook/replay", headers=OPERATOR)).json()
    assert answer["replayed"] == 1
    await wait_for(lambda: [e["messageId"] for e in state.events()] == ["late-key"])


async def test_keys_rotate_reseals_every_entry_and_is_idempotent(
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    """Queue entries (one pending in a worker's hands, left for it), dead letters, outbox
    records and quarantine entries under k1 or in plaintext are re-sealed under k2; a second
    run rewrites nothing; everything still opens to what it held."""
    k1 = Sealer(KeyRing.parse(K1))
    queue = queue_key("queued-hook")
    for index in range(30):
        sealer = k1 if index % 3 else Sealer()
        await redis_client.xadd(queue, entry_for([_item(f"q{index}")], sealer, "queued-hook"))  # type: ignore[arg-type]
    await redis_client.xgroup_create(queue, "delivery", id="0")
    pending = await redis_client.xreadgroup("delivery", "w", {queue: ">"}, count=1)
    pending_id = pending[0][1][0][0]
    where = sealed_for(DLQ_ROLE, "refused-hook", "d")
    for index in range(12):
        letter = {"d": k1.seal(_item(f"d{index}"), where), "reason": "http_400", "at": "x"}
        await redis_client.xadd(dlq_key("refused-hook"), letter)  # type: ignore[arg-type]
    record = msgspec.json.encode({"request": {"body": USER}})
    out = sealed_for(OUTBOX_ROLE, "preview-hook", "r")
    await redis_client.xadd(outbox_key("preview-hook"), {"r": k1.seal(record, out)})
    await redis_client.xadd(outbox_key("preview-hook"), {"r": record})
    plain = {"code": "invalid_json", "path": "", "shape": "{}", "subjects": "abc"}
    await redis_client.xadd(QUARANTINE, plain)  # type: ignore[arg-type]

    config = tmp_path / "router.yaml"
    config.write_text(ROUTING % {"queued": "true", "workers": "true"})
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    monkeypatch.setenv("ROUTER_CONFIG", str(config))
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("ROUTER_ENCRYPTION_KEYS", f"{K2},{K1}")
    assert await asyncio.to_thread(main, ["keys", "rotate"]) == 0
    first = capsys.readouterr()
    assert "resealed 44" in first.out
    assert "1 pending" in first.out
    assert "re-encrypting" in first.err  # plain progress lines: stderr is no TTY here

    ring = Sealer(KeyRing.parse(f"{K2},{K1}"))
    for key in (queue, dlq_key("refused-hook"), outbox_key("preview-hook")):
        for entry_id, fields in await redis_client.xrange(key):
            for name in (b"d", b"r"):
                if name in fields:
                    expected = None if entry_id == pending_id else "k2"  # q0: plaintext
                    assert key_id_of(fields[name]) == expected, (key, entry_id)
    survivors = {
        msgspec.json.decode(ring.open(f[b"d"], sealed_for("queue", "queued-hook", "d")))[
            "delivery"
        ]["message_id"]
        for _, f in await redis_client.xrange(queue)
    }
    assert survivors == {f"q{i}" for i in range(30)}
    assert await redis_client.xlen(dlq_key("refused-hook")) == 12
    [(_, quarantined)] = await redis_client.xrange(QUARANTINE)
    assert (key_id_of(quarantined[b"e"]), quarantined[b"subjects"]) == ("k2", b"abc")

    assert await asyncio.to_thread(main, ["keys", "rotate"]) == 0
    assert "resealed 0" in capsys.readouterr().out

    assert await asyncio.to_thread(main, ["dlq", "list", "refused-hook", "--limit", "1"]) == 0
    [letter] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert letter["d"]["delivery"]["message_id"] == "d11"
    assert await asyncio.to_thread(main, ["outbox", "preview-hook"]) == 0
    assert [json.loads(line)["request"] for line in capsys.readouterr().out.splitlines()] == [
        {"body": USER}
    ] * 2


async def test_a_malformed_key_ring_stops_the_worker_with_its_position(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ring is checked before anything connects; the message names the entry, not the key."""
    monkeypatch.setenv("ROUTER_ENCRYPTION_KEYS", f"{K1},k2:dG9vIHNob3J0")
    monkeypatch.setenv("HOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    assert await asyncio.to_thread(main, ["worker", "--config", "config/test.yaml"]) == 1
    err = capsys.readouterr().err
    assert "ROUTER_ENCRYPTION_KEYS entry 2: a key must be 32 bytes" in err
    assert K1.split(":")[1] not in err


async def test_rotate_refuses_without_keys(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ring: nothing to rotate to; exit 1 with the reason, Redis untouched."""
    monkeypatch.setenv("ROUTER_REDIS_URL", redis_server.url)
    monkeypatch.delenv("ROUTER_ENCRYPTION_KEYS", raising=False)
    assert await asyncio.to_thread(main, ["keys", "rotate", "--config", "config/test.yaml"]) == 1
    assert "ROUTER_ENCRYPTION_KEYS" in capsys.readouterr().err


async def test_rotate_direct_api_counts_what_it_cannot_open(redis_client: aioredis.Redis) -> None:
    """An entry no key of the ring opens is counted and left as it is (the worker
    dead-letters it), never dropped."""
    foreign = Sealer(KeyRing.parse("k9:" + base64.b64encode(b"\x09" * 32).decode()))
    entry = entry_for([_item("x")], foreign, "queued-hook")
    await redis_client.xadd(queue_key("queued-hook"), entry)  # type: ignore[arg-type]
    report = await rotate(redis_client, Sealer(KeyRing.parse(K1)), ["queued-hook"])
    assert (report.resealed, report.undecryptable) == (0, 1)
    assert await redis_client.xlen(queue_key("queued-hook")) == 1


async def test_replay_leaves_dead_letters_no_key_opens(
    make_router: AppFactory, receiver: tuple[WebhookReceiver, str], redis_client: aioredis.Redis
) -> None:
    """A dead letter sealed with a key the ring lacks is not replayed: it stays in the dead
    letters, counted in the answer, and nothing reaches the queue."""
    _, url = receiver
    foreign = Sealer(KeyRing.parse("k9:" + base64.b64encode(b"\x09" * 32).decode()))
    sealed = foreign.seal(_item("lost"), sealed_for(DLQ_ROLE, "queued-hook", "d"))
    await redis_client.xadd(dlq_key("queued-hook"), {"d": sealed, "reason": "http_400", "at": "x"})
    router = await make_router(
        _routing(url, queued=True, workers=False),
        workers=False,
        encryption_keys=K1,
        operator_token=TOKEN,
    )
    answer = await (await router.post("/admin/dlq/queued-hook/replay", headers=OPERATOR)).json()
    assert (answer["replayed"], answer["undecryptable"]) == (0, 1)
    assert await redis_client.xlen(dlq_key("queued-hook")) == 1
    assert await redis_client.xlen(queue_key("queued-hook")) == 0
