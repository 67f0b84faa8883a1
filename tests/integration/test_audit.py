"""The audit trail on a real Redis: atomic appends, tamper evidence, trimming, export."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from router.compliance import audit_log
from router.compliance.audit_chain import (
    GENESIS_ANCHOR,
    AuditRecord,
    canonical,
    chain,
    chain_hash,
    parse_record,
    seal,
    verify_records,
)
from router.compliance.audit_groups import MAX_EVENTS_PER_RECORD
from router.compliance.audit_log import (
    PART_EVENTS,
    STREAM,
    AuditKind,
    AuditLog,
    AuditWriter,
    export,
    verify,
)
from router.core.audit_records import SharedDecision
from router.queue.keys import subject_index_key
from tests.conftest import BACKENDS
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


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_appends_chain_and_verify(redis_client: aioredis.Redis) -> None:
    """Appended records get consecutive seqs, each linked to the previous hash."""
    log = AuditLog(redis_client)
    first = await log.append(AuditKind.CONFIG_LOADED, {"destinations": 2})
    second, third = await log.append_many(
        [(AuditKind.HOLD, {"destination": "ga4"}), (AuditKind.RELEASE, {"destination": "ga4"})]
    )
    assert [first.seq, second.seq, third.seq] == [1, 2, 3]
    assert first.lane == second.lane == third.lane == log.lane == 1
    assert second.prev_hash == first.hash
    assert third.prev_hash == second.hash
    assert (await log.head()).hash == third.hash
    result = await verify(redis_client)
    assert result.ok
    assert result.checked == 3


async def _records_by_tag(client: aioredis.Redis) -> dict[str, set[tuple[int, int]]]:
    """The (writer, n) pairs of every appended test record, per tag."""
    found: dict[str, set[tuple[int, int]]] = {}
    async for record in AuditLog(client).records():
        data = record.data
        if "tag" in data:
            found.setdefault(data["tag"], set()).add((data["writer"], data["n"]))
    return found


async def test_forty_appenders_on_separate_connections_all_land_and_verify(
    redis_server: RedisServer,
) -> None:
    """Forty writers (as forty processes would) appending at once: every append succeeds, every
    record is stored once, and the trail verifies."""
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(40)]
    try:
        logs = [AuditLog(c) for c in clients]

        async def fill(writer: int, log: AuditLog) -> None:
            for n in range(25):
                await log.append(AuditKind.ADMIN_CALL, {"tag": "t", "writer": writer, "n": n})

        await asyncio.gather(*(fill(i, log) for i, log in enumerate(logs)))
        result = await logs[0].verify()
        assert result.ok, result.reason
        assert result.checked == 1000
        assert await _records_by_tag(clients[0]) == {
            "t": {(w, n) for w in range(40) for n in range(25)}
        }
        assert await clients[0].xlen(STREAM) == 1000
    finally:
        for client in clients:
            await client.aclose()


async def _script_calls(client: aioredis.Redis) -> int:
    """How many scripts (EVALSHA, EVAL) the server ran so far."""
    stats = await client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_concurrent_callers_of_one_writer_share_round_trips(
    redis_client: aioredis.Redis,
) -> None:
    """64 concurrent appends on one writer (one process's admin calls) all land, in one lane,
    in far fewer round trips than appends (group commit)."""
    log = AuditLog(redis_client)
    await log.append(AuditKind.ADMIN_CALL, {"first": True})  # opens the lane, loads the script
    before = await _script_calls(redis_client)
    records = await asyncio.gather(
        *(log.append(AuditKind.ADMIN_CALL, {"tag": "t", "writer": 0, "n": n}) for n in range(64))
    )
    assert await _script_calls(redis_client) - before < 16
    assert sorted(r.seq for r in records) == list(range(2, 66))
    assert {r.lane for r in records} == {log.lane}
    result = await log.verify()
    assert result.ok, result.reason
    assert result.checked == 65


async def test_writer_processes_and_in_process_writers_at_once_all_verify(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    """Four processes of eight writers each, plus sixteen writers here, append at once (48
    appenders): every record is present and the trail verifies, also while being written."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.audit_appender",
            redis_server.url,
            f"p{i}",
            "8",
            "15",
        )
        for i in range(4)
    ]
    logs = [AuditLog(aioredis.Redis.from_url(redis_server.url)) for _ in range(16)]
    try:

        async def fill(writer: int, log: AuditLog) -> None:
            for n in range(15):
                await log.append(AuditKind.ADMIN_CALL, {"tag": "here", "writer": writer, "n": n})

        async def verify_meanwhile() -> None:
            for _ in range(5):
                result = await AuditLog(redis_client).verify()
                assert result.ok, result.reason
                await asyncio.sleep(0.05)

        await asyncio.gather(*(fill(i, log) for i, log in enumerate(logs)), verify_meanwhile())
        codes = [await p.wait() for p in processes]
        assert codes == [0, 0, 0, 0]
        result = await AuditLog(redis_client).verify()
        assert result.ok, result.reason
        assert result.checked == 48 * 15
        every = {(w, n) for w in range(8) for n in range(15)}
        found = await _records_by_tag(redis_client)
        assert found == {
            "here": {(w, n) for w in range(16) for n in range(15)},
            **{f"p{i}": every for i in range(4)},
        }
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for log in logs:
            await log.client.aclose()


@pytest.mark.parametrize("redis_backend", BACKENDS)
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


@pytest.mark.parametrize("redis_backend", BACKENDS)
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
                lane=int(fields[b"lane"]),
            )
            fields[b"data"] = canonical(record.data)
            fields[b"hash"] = record.hash.encode()
        return fields

    await _rewrite(redis_client, reseal)
    result = await verify(redis_client)
    assert not result.ok
    assert result.first_bad_seq == 2


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_deleted_record_is_reported(redis_client: aioredis.Redis) -> None:
    """Deleting a record leaves a gap that verify reports by seq."""
    log = AuditLog(redis_client)
    await _fill(log, 5)
    await _rewrite(redis_client, lambda f: None if f[b"seq"] == b"3" else f)
    result = await verify(redis_client)
    assert not result.ok
    assert result.first_bad_seq == 3


@pytest.mark.parametrize("redis_backend", BACKENDS)
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


@pytest.mark.parametrize("redis_backend", BACKENDS)
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
@pytest.mark.parametrize("redis_backend", BACKENDS)
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


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_writer_retention_by_count(redis_client: aioredis.Redis) -> None:
    """The oldest records beyond the count go; the rest still verifies."""
    log = AuditLog(redis_client)
    await _fill(log, 1005)
    await AuditWriter(log, retention_records=1000).trim()
    assert await redis_client.xlen(STREAM) == 1000
    assert (await log.verify()).ok


@pytest.mark.parametrize("redis_backend", BACKENDS)
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


@pytest.mark.parametrize("redis_backend", BACKENDS)
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


def _big_flush_entries() -> list[tuple[AuditKind, dict[str, Any]]]:
    """Twelve ``decisions`` records of ``MAX_EVENTS_PER_RECORD`` events (subjects s0, s1...),
    each followed by a ``release`` record."""
    events = [{"event": f"e{i}", "subjects": [f"s{i}"]} for i in range(MAX_EVENTS_PER_RECORD)]
    entries: list[tuple[AuditKind, dict[str, Any]]] = []
    for index in range(12):
        entries.append((AuditKind.DECISIONS, {"destination": f"d{index}", "events": events}))
        entries.append((AuditKind.RELEASE, {"destination": f"r{index}"}))
    return entries


async def test_a_big_flush_goes_in_parts_in_one_round_trip_and_slices_until_late(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush holding many decisions is one append, sent as scripts of about
    ``PART_EVENTS`` decisions each in one round trip (Redis serves its other clients between
    them), and other tasks run while it encodes and hashes (here after every record:
    ``YIELD_AFTER_S`` 0); every record lands, in order, indexed, and the chain verifies. Past
    half its interval (here at once: ``flush_every_s`` 0) a flush does not yield, so that it
    keeps up under a saturating load."""
    log = AuditLog(redis_client)
    writer = AuditWriter(log)
    entries = _big_flush_entries()
    writer.record_many(entries)
    ticks = 0
    encoded: list[int] = []
    hashed: list[int] = []
    trips: list[list[int]] = []
    real_canonical, real_hash, real_run = audit_log.canonical, audit_log.sealed_hash, AuditLog._run

    def canonical(value: Any) -> bytes:
        encoded.append(ticks)
        return real_canonical(value)

    def sealed_hash(*args: Any, **kwargs: Any) -> str:
        hashed.append(ticks)
        return real_hash(*args, **kwargs)

    async def run(self: AuditLog, parts: Any) -> list[Any]:
        trips.append([sum(1 + len(r.data.get("events", ())) for r in p.records) for p in parts])
        return await real_run(self, parts)

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(audit_log, "YIELD_AFTER_S", 0.0)
    monkeypatch.setattr(audit_log, "canonical", canonical)
    monkeypatch.setattr(audit_log, "sealed_hash", sealed_hash)
    monkeypatch.setattr(AuditLog, "_run", run)
    stop = asyncio.Event()
    task = asyncio.create_task(ticker(stop))
    before = (await redis_client.info("commandstats")).get("cmdstat_eval", {}).get("calls", 0)
    assert await writer.flush() == len(entries)
    stop.set()
    await task
    total = 12 * (MAX_EVENTS_PER_RECORD + 2)
    assert len(trips) == 1  # one round trip
    assert sum(trips[0]) == total
    assert len(trips[0]) > 1
    assert all(weight <= PART_EVENTS for weight in trips[0])
    evals = (await redis_client.info("commandstats"))["cmdstat_eval"]["calls"] - before
    assert evals == 1 + len(trips[0])  # the lane's opening, then one script per part
    # a yield after each record, while encoding and while hashing
    assert len(set(encoded)) == len(set(hashed)) == len(entries)
    assert encoded == sorted(encoded)
    assert hashed == sorted(hashed)
    records = [parse_record(line) async for line in log.export()]
    assert [r.data["destination"] for r in records] == [d["destination"] for _, d in entries]
    assert (await log.verify()).ok
    for subject in ("s0", f"s{MAX_EVENTS_PER_RECORD - 1}"):  # each part indexed its records
        assert await redis_client.zcard(subject_index_key(STREAM, subject)) == 12
    # Late: no yield while encoding or hashing.
    late = AuditWriter(log, flush_every_s=0.0)
    late.record_many(entries)
    trips.clear()
    encoded.clear()
    hashed.clear()
    task = asyncio.create_task(ticker(stop := asyncio.Event()))
    assert await late.flush() == len(entries)
    assert len(trips) == 1
    # The same for an append past its deadline, or without one.
    await log.append_many(entries, yield_until=time.monotonic() - 1)
    await log.append_many(entries)
    stop.set()
    await task
    assert len(encoded) == len(hashed) == 3 * len(entries)
    assert len(set(encoded)) <= 3  # one tick per append: no yield while encoding
    assert len(set(hashed)) <= 3
    assert (await log.verify()).ok


async def test_a_flush_puts_the_destinations_records_of_the_same_events_side_by_side(
    redis_client: aioredis.Redis,
) -> None:
    """Three destinations decide on the same 1,200 events: the flush writes their records
    column by column (each destination's first 500 events, then the next 500...), a part holds
    a column even past ``PART_EVENTS``, and the subject index gets one ``ZADD`` per person and
    part, naming the three records, not one per record."""
    log = AuditLog(redis_client)
    writer = AuditWriter(log)
    shared = [
        SharedDecision(
            ("d", name),
            {"stage": "ingest", "destination": name, "consent": {"sources": []},
             "decision": "deliver", "reason": "consent_granted", "sent": ["event"],
             "removed": [], "transformed": []},
        )
        for name in ("ga4", "amplitude", "hook")
    ]  # fmt: skip
    events = [
        {"event": f"e{i}", "subjects": [f"u{i}", f"a{i}"], "consent_at": None} for i in range(1200)
    ]
    writer.record_decisions((decision, event) for event in events for decision in shared)
    await redis_client.config_resetstat()
    assert await writer.flush() == 9
    records = [parse_record(line) async for line in log.export()]
    assert [(r.data["destination"], r.data["count"]) for r in records] == [
        ("ga4", 500), ("amplitude", 500), ("hook", 500),
        ("ga4", 500), ("amplitude", 500), ("hook", 500),
        ("ga4", 200), ("amplitude", 200), ("hook", 200),
    ]  # fmt: skip
    assert (await log.verify()).ok
    zadd = (await redis_client.info("commandstats"))["cmdstat_zadd"]["calls"]
    assert zadd == 2 * len(events)  # a user id and an anonymous id per event
    for subject in ("u0", "a699", "u1199"):
        assert await redis_client.zcard(subject_index_key(STREAM, subject)) == 3


@pytest.mark.parametrize("landed", [0, 3, "all"])
@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_parts_that_landed_when_their_reply_was_lost_are_not_written_twice(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, landed: int | str
) -> None:
    """The connection breaks after some parts of a flush's append ran (none, three, all): the
    flush fails and keeps its records; the next flush finds the lane's head among them and
    appends only the rest, once each, and the chain verifies."""
    log = AuditLog(redis_client)
    await log.append(AuditKind.RELEASE, {"destination": "first"})
    writer = AuditWriter(log)
    entries = _big_flush_entries()
    writer.record_many(entries)
    real_run = AuditLog._run
    broken = [True]

    async def run(self: AuditLog, parts: Any) -> list[Any]:
        if not broken[0]:
            return await real_run(self, parts)
        broken[0] = False
        count = len(parts) if landed == "all" else int(landed)
        if count:
            await real_run(self, parts[:count])
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(AuditLog, "_run", run)
    with pytest.raises(RedisConnectionError):
        await writer.flush()
    assert await writer.flush() == len(entries)
    records = [parse_record(line) async for line in log.export()]
    assert [r.data["destination"] for r in records] == ["first"] + [
        d["destination"] for _, d in entries
    ]
    assert [r.seq for r in records] == list(range(1, len(entries) + 2))
    assert (await log.verify()).ok
    following = await log.append(AuditKind.RELEASE, {"destination": "next"})
    assert following.seq == len(entries) + 2
    assert (await log.verify()).ok


async def _legacy_chain(client: aioredis.Redis, count: int) -> list[AuditRecord]:
    """Records as the single-chain version wrote them: no lane field, head in rt:audit:head."""
    records = chain(
        GENESIS_ANCHOR,
        [("2026-01-01T00:00:00.000+00:00", "release", {"destination": f"old{i}"}) for i in
         range(count)],
    )  # fmt: skip
    for record in records:
        await client.xadd(
            STREAM,
            {
                "seq": record.seq,
                "at": record.at,
                "kind": record.kind,
                "data": canonical(record.data),
                "prev": record.prev_hash,
                "hash": record.hash,
            },
        )
    await client.hset(f"{STREAM}:head", mapping={"seq": count, "hash": records[-1].hash})  # type: ignore[misc]
    return records


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_records_from_before_lanes_still_verify_and_are_witnessed(
    redis_client: aioredis.Redis,
) -> None:
    """The single chain written before lanes (lane 0) verifies next to new lanes; the first
    lane witnesses its head; an edit in it is named as before."""
    old = await _legacy_chain(redis_client, 4)
    log = AuditLog(redis_client)
    first = await log.append(AuditKind.RELEASE, {"destination": "new"})
    assert first.witness == {"lane": 0, "seq": 4, "hash": old[-1].hash}
    result = await log.verify()
    assert result.ok, result.reason
    assert (result.checked, result.lanes) == (5, 2)
    exported = [parse_record(line) async for line in log.export()]
    assert verify_records(exported).ok

    def edit(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if b"lane" not in fields and fields[b"seq"] == b"2":
            fields[b"data"] = b'{"destination":"evil"}'
        return fields

    await _rewrite(redis_client, edit)
    failed = await log.verify()
    assert (failed.ok, failed.lane, failed.first_bad_seq) == (False, 0, 2)
    assert failed.reason.startswith("record 2: ")


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_a_cut_lane_tail_is_caught_by_another_lanes_witness(
    redis_client: aioredis.Redis,
) -> None:
    """Removing a lane's newest records and rewinding its head (invisible to the lane itself)
    is caught by the other lane that witnessed one of them."""
    one, two = AuditLog(redis_client), AuditLog(redis_client)
    await _fill(one, 3)
    await _fill(two, 1)  # opened after one's third record: witnesses it
    await _fill(two, 1)
    records = [r async for r in one.records()]
    assert records[3].witness == {"lane": 1, "seq": 3, "hash": records[2].hash}
    assert (await one.verify()).ok
    await _rewrite(redis_client, lambda f: None if (f[b"lane"], f[b"seq"]) == (b"1", b"3") else f)
    await redis_client.hset(f"{STREAM}:heads", "1", f"2 {records[1].hash}")  # type: ignore[misc]
    failed = await one.verify()
    assert not failed.ok
    assert (failed.lane, failed.first_bad_seq) == (2, 1)
    assert "witnessed lane 1 record 3, which is missing" in failed.reason


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_a_rewritten_witnessed_record_is_caught_even_when_its_lane_is_resealed(
    redis_client: aioredis.Redis,
) -> None:
    """Editing a witnessed record and resealing the rest of its lane and its head passes the
    lane's own check, not the witness."""
    one, two = AuditLog(redis_client), AuditLog(redis_client)
    await _fill(one, 2)
    await _fill(two, 1)
    entries = await redis_client.xrange(STREAM)
    fields = dict(entries[1][1])
    forged = seal(
        2, fields[b"at"].decode(), "release", {"destination": "evil"}, fields[b"prev"].decode(),
        lane=1,
    )  # fmt: skip

    def reseal(f: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if (f[b"lane"], f[b"seq"]) == (b"1", b"2"):
            f[b"data"], f[b"hash"] = canonical(forged.data), forged.hash.encode()
        return f

    await _rewrite(redis_client, reseal)
    await redis_client.hset(f"{STREAM}:heads", "1", f"2 {forged.hash}")  # type: ignore[misc]
    failed = await one.verify()
    assert not failed.ok
    assert "lane 2 record 1 witnessed lane 1 record 2 with another hash" in failed.reason


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_a_removed_lane_or_an_unknown_lane_is_reported(redis_client: aioredis.Redis) -> None:
    """Lanes are numbered from 1: a whole lane removed with its head is missing; records of a
    lane never handed out are refused."""
    logs = [AuditLog(redis_client) for _ in range(3)]
    for log in logs:
        await _fill(log, 2)
    entries = await redis_client.xrange(STREAM)
    await _rewrite(redis_client, lambda f: None if f[b"lane"] == b"3" else f)
    await redis_client.hdel(f"{STREAM}:heads", "3")  # type: ignore[misc]
    failed = await logs[0].verify()
    assert (failed.ok, failed.lane) == (False, 3)
    assert "lane 3 is missing (lanes 1 to 3 exist)" in failed.reason

    for entry_id, fields in entries[4:]:  # put lane 3 back, as a lane 9 nobody opened
        await redis_client.xadd(STREAM, {**fields, b"lane": b"9"}, id=entry_id)
    await redis_client.hset(f"{STREAM}:heads", "3", f"0 {GENESIS_ANCHOR.hash}")  # type: ignore[misc]
    failed = await logs[0].verify()
    assert (failed.ok, failed.lane, failed.first_bad_seq) == (False, 9, 1)
    assert "lane 9 record 1: its lane is unknown" in failed.reason


@pytest.mark.parametrize("redis_backend", BACKENDS)
async def test_trimming_several_lanes_anchors_each(redis_client: aioredis.Redis) -> None:
    """Trimming interleaved lanes leaves an anchor per lane; the rest verifies, and an edit
    past the trim point is still named."""
    one, two = AuditLog(redis_client), AuditLog(redis_client)
    for _ in range(10):
        await _fill(one, 2)
        await _fill(two, 1)
    assert await one.trim(max_records=12) == 18
    assert (await one.anchor()).seq == 12
    assert (await two.anchor()).seq == 6
    result = await one.verify()
    assert result.ok, result.reason
    assert result.checked == 12
    await _fill(two, 1)
    assert (await one.verify()).ok

    def edit(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if (fields[b"lane"], fields[b"seq"]) == (b"2", b"8"):
            fields[b"kind"] = b"hold"
        return fields

    await _rewrite(redis_client, edit)
    failed = await one.verify()
    assert (failed.lane, failed.first_bad_seq) == (2, 8)
