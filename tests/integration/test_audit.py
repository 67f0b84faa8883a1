"""The audit trail on a real Redis: atomic appends, tamper evidence, trimming, export."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.audit import (
    STREAM,
    AuditKind,
    AuditLog,
    AuditWriter,
    canonical,
    chain_hash,
    export,
    parse_record,
    seal,
    verify,
    verify_records,
)
from tests.redis_server import RedisServer


async def _fill(log: AuditLog, count: int) -> None:
    for index in range(count):
        await log.append(AuditKind.RELEASE, {"destination": f"d{index}"})


async def _rewrite(client: aioredis.Redis, change: Any) -> None:
    """Rewrite the stream in place (same ids), passing each entry's fields through ``change``."""
    entries = await client.xrange(STREAM)
    await client.delete(STREAM)
    for entry_id, fields in entries:
        new = change(dict(fields))
        if new is not None:
            await client.xadd(STREAM, new, id=entry_id)


async def test_appends_chain_and_verify(redis_client: aioredis.Redis) -> None:
    """Appended records get consecutive seqs, each linked to the previous hash."""
    log = AuditLog(redis_client)
    first = await log.append(AuditKind.CONFIG_LOADED, {"destinations": 2})
    second, third = await log.append_many(
        [(AuditKind.HOLD, {"destination": "ga4"}), (AuditKind.RELEASE, {"destination": "ga4"})]
    )
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert (await log.head()).hash == third.hash
    result = await verify(redis_client)
    assert result.ok
    assert result.checked == 3


async def test_concurrent_appenders_on_separate_connections_keep_one_chain(
    redis_server: RedisServer,
) -> None:
    """Five writers (as five processes would) appending at once leave one unbroken chain."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(5)]
    try:
        logs = [AuditLog(c) for c in clients]
        await asyncio.gather(*(_fill(log, 30) for log in logs))
        result = await logs[0].verify()
        assert result.ok, result.reason
        assert result.checked == 150
        seqs = [int(f[b"seq"]) for _, f in await clients[0].xrange(STREAM)]
        assert seqs == list(range(1, 151))
    finally:
        for client in clients:
            await client.aclose()


async def test_edited_record_is_named_by_verify(redis_client: aioredis.Redis) -> None:
    """Changing one stored record's data makes verify fail and name that record."""
    log = AuditLog(redis_client)
    await _fill(log, 6)

    def edit(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if fields[b"seq"] == b"4":
            fields[b"data"] = b'{"destination":"evil"}'
        return fields

    await _rewrite(redis_client, edit)
    result = await verify(redis_client)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert "record 4" in result.reason


async def test_resealed_record_is_still_named(redis_client: aioredis.Redis) -> None:
    """Editing a record and recomputing its hash is caught by the next link, naming it."""
    log = AuditLog(redis_client)
    await _fill(log, 6)

    def reseal(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if fields[b"seq"] == b"2":
            record = seal(
                2,
                fields[b"at"].decode(),
                fields[b"kind"].decode(),
                {"destination": "evil"},
                fields[b"prev"].decode(),
            )
            fields[b"data"] = canonical(record.data)
            fields[b"hash"] = record.hash.encode()
        return fields

    await _rewrite(redis_client, reseal)
    result = await verify(redis_client)
    assert not result.ok
    assert result.first_bad_seq == 2


async def test_deleted_record_is_reported(redis_client: aioredis.Redis) -> None:
    """Deleting a record leaves a gap that verify reports by seq."""
    log = AuditLog(redis_client)
    await _fill(log, 5)
    await _rewrite(redis_client, lambda f: None if f[b"seq"] == b"3" else f)
    result = await verify(redis_client)
    assert not result.ok
    assert result.first_bad_seq == 3


async def test_trimming_keeps_an_anchor_so_the_rest_verifies(redis_client: aioredis.Redis) -> None:
    """After trimming to the newest records the chain still verifies, and tampering is caught."""
    log = AuditLog(redis_client)
    await _fill(log, 50)
    dropped = await log.trim(max_records=20)
    assert dropped == 30
    assert await redis_client.xlen(STREAM) == 20
    anchor = await log.anchor()
    assert anchor.seq == 30
    result = await log.verify()
    assert result.ok
    assert result.checked == 20
    await log.append(AuditKind.RELEASE, {"destination": "after-trim"})
    assert (await log.verify()).ok

    def edit(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if fields[b"seq"] == b"31":
            fields[b"kind"] = b"hold"
        return fields

    await _rewrite(redis_client, edit)
    failed = await log.verify()
    assert failed.first_bad_seq == 31


async def test_trim_by_age(redis_client: aioredis.Redis) -> None:
    """Records older than the cut-off are dropped, newer ones kept, the chain still verifies."""
    log = AuditLog(redis_client)
    await _fill(log, 5)
    assert await log.trim(older_than=datetime.now(UTC) - timedelta(days=1)) == 0
    assert await log.trim(older_than=datetime.now(UTC) + timedelta(seconds=5)) == 5
    assert await redis_client.xlen(STREAM) == 0
    assert (await log.verify()).ok
    await log.append(AuditKind.HOLD, {"destination": "x"})
    result = await log.verify()
    assert result.ok
    assert result.checked == 1


@pytest.mark.parametrize(
    ("days", "records", "kept"), [(3.0, None, 5), (1.0, None, 0), (None, 1000, 5), (3.0, 1000, 5)]
)
async def test_writer_retention_by_age_and_count(
    redis_client: aioredis.Redis, days: float | None, records: int | None, kept: int
) -> None:
    """ROUTER_AUDIT_RETENTION_DAYS and ROUTER_AUDIT_MAX_RECORDS: the writer's trim drops what
    is older than the age (here the clock is two days ahead) or beyond the count."""
    log = AuditLog(redis_client)
    await _fill(log, 5)
    ahead = AuditLog(redis_client, clock=lambda: datetime.now(UTC) + timedelta(days=2))
    writer = AuditWriter(ahead, retention_records=records, retention_days=days)
    await writer.trim()
    assert await redis_client.xlen(STREAM) == kept
    assert (await log.verify()).ok


async def test_writer_retention_by_count(redis_client: aioredis.Redis) -> None:
    """The oldest records beyond the count go; the rest still verifies."""
    log = AuditLog(redis_client)
    await _fill(log, 1005)
    await AuditWriter(log, retention_records=1000).trim()
    assert await redis_client.xlen(STREAM) == 1000
    assert (await log.verify()).ok


async def test_export_is_json_lines_that_verify(redis_client: aioredis.Redis) -> None:
    """The export has one canonical JSON record per line, re-verifiable offline."""
    log = AuditLog(redis_client)
    await _fill(log, 7)
    lines = [line async for line in export(redis_client)]
    assert len(lines) == 7
    assert all(line.endswith("\n") for line in lines)
    records = [parse_record(line) for line in lines]
    assert [r.seq for r in records] == list(range(1, 8))
    assert all(r.hash == chain_hash(r) for r in records)
    assert verify_records(records).ok
    assert json.loads(lines[0])["data"] == {"destination": "d0"}


async def test_buffered_writer_appends_on_flush(redis_client: aioredis.Redis) -> None:
    """``record`` only buffers; ``flush`` appends everything in order."""
    log = AuditLog(redis_client)
    writer = AuditWriter(log, flush_every_s=0.05)
    writer.record_many([(AuditKind.DECISION, {"destination": f"d{i}"}) for i in range(3)])
    assert await redis_client.xlen(STREAM) == 0
    writer.start()
    writer.record(AuditKind.DECISION, {"destination": "d3"})
    await writer.close()
    records = [parse_record(line) async for line in log.export()]
    assert [r.data["destination"] for r in records] == ["d0", "d1", "d2", "d3"]
    assert (await log.verify()).ok
