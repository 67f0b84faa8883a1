"""Subject access lookups through the audit trail's subject index, at two trail sizes.

    .venv/bin/python -m bench.subject_bench [--sizes 50000 200000] [--person-events 1000]
                                            [--events-per-record 4] [--repeat 5]

On a private redis-server (temporary directory, append-only file with ``appendfsync
everysec`` as ``config/redis.conf``), the trail is filled with
``decisions`` records of ``--events-per-record`` events each, every event naming two subjects
(a user id and an anonymous id, as keyed tokens) of a pool of 100,000 people. One person's
``--person-events`` events are spread over the first size's records, three decisions each
(three destinations), so that person is named by ``3 x person-events`` records. The trail is
then grown to each size in turn and, at each, the bench times (median of ``--repeat``):

- ``index``: the person's report (``subject_report``: the index lookup, fetching and reading
  the person's records, stored consent): what ``router subject-report`` and
  ``POST /admin/subject-report`` do;
- ``scan``: the baseline of the same run (timed once): reading the whole trail (``XRANGE``
  pages) and keeping the person's records, what a report would cost without the index.

It also prints the append rate of the same records with and without subjects (the index's
cost on the audit writer) and Redis' memory per index member. Figures are printed, never
asserted. 10 million records (the default retention) cannot be written on this machine in a
benchmark's time; the claim "the lookup does not depend on the trail's size" rests on the two
sizes measured side by side, and on the lookup's shape (one ZRANGE per id, one XRANGE per
record of the person).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from bench.private_redis import private_redis
from consent.store import ConsentStore
from router.compliance.audit_log import PAGE, AuditLog, record_of
from router.compliance.erasure import Identifiers
from router.compliance.subject_report import subject_report
from router.core.audit_records import subject_token
from router.queue.keys import SUPPRESSED

KEY = b"bench-audit-key"
PEOPLE = 100_000
DESTINATIONS = ("ga4", "amplitude", "ads-hook")
APPEND_BATCH = 1000


def _record(events: list[tuple[str, str]], destination: str) -> dict[str, Any]:
    return {
        "stage": "ingest",
        "destination": destination,
        "decision": "deliver",
        "reason": "consent_granted",
        "sent": ["anonymousId", "event", "messageId", "properties.revenue"],
        "removed": ["context.ip", "properties.email"],
        "transformed": ["userId"],
        "consent": {"sources": ["segment"]},
        "from": "2026-12-06T10:00:00.000+00:00",
        "to": "2026-12-06T10:00:01.000+00:00",
        "count": len(events),
        "events": [
            {
                "event": subject_token(message, KEY),
                "subjects": sorted([subject_token(user, KEY), subject_token(f"a-{user}", KEY)]),
                "consent_at": "2026-12-06T09:59:00.000+00:00",
            }
            for message, user in events
        ],
    }


class Trail:
    """Fills the audit trail with background records and the person's."""

    def __init__(self, log: AuditLog, per_record: int, seed: int = 7) -> None:
        self.log = log
        self.per_record = per_record
        self.random = random.Random(seed)
        self.written = 0
        self.serial = 0

    def _background(self) -> tuple[str, str]:
        self.serial += 1
        return f"m-{self.serial}", f"user-{self.random.randrange(PEOPLE)}"

    async def grow(self, total: int, person: list[tuple[str, str]] | None = None) -> None:
        """Append records up to ``total``, the person's events spread evenly among them (a
        record holding one of them is written for each destination, like a real decision)."""
        count = total - self.written
        every = max(1, count // len(person)) if person else 0
        pending: list[tuple[str, dict[str, Any]]] = []
        for index in range(count):
            events = [self._background() for _ in range(self.per_record)]
            destinations: tuple[str, ...] = (DESTINATIONS[index % len(DESTINATIONS)],)
            if person and index % every == 0 and index // every < len(person):
                events[0] = person[index // every]
                destinations = DESTINATIONS
            pending += [("decisions", _record(events, d)) for d in destinations]
            if len(pending) >= APPEND_BATCH:
                await self.log.append_many(pending)
                self.written += len(pending)
                pending = []
        if pending:
            await self.log.append_many(pending)
            self.written += len(pending)


async def _scan(client: aioredis.Redis, tokens: set[str]) -> int:
    """The baseline: read every record, keep the person's (what a report costs unindexed)."""
    found = 0
    start = "-"
    while True:
        page = await client.xrange("rt:audit", min=start, count=PAGE)
        for entry_id, fields in page:
            record = record_of(fields)
            for event in record.data.get("events", ()):
                if tokens.intersection(event["subjects"]):
                    found += 1
                    break
            start = "(" + entry_id.decode()
        if len(page) < PAGE:
            return found


async def _time(work: Any, repeat: int) -> tuple[float, Any]:
    timings: list[float] = []
    result = None
    for _ in range(repeat):
        begin = time.perf_counter()
        result = await work()
        timings.append(time.perf_counter() - begin)
    return statistics.median(timings), result


async def _append_rate(
    client: aioredis.Redis, per_record: int, *, with_subjects: bool
) -> tuple[float, float]:
    """Records/s of 5,000 appends of the bench's records (with subjects or none) on a fresh
    stream, and the Redis time of the append script per record (µs, from ``INFO
    commandstats``: what every other Redis client waits for)."""
    log = AuditLog(client, key=KEY, stream="rt:bench-append")
    rng = random.Random(1)
    records = []
    for index in range(5000):
        events = [(f"x-{index}-{e}", f"user-{rng.randrange(PEOPLE)}") for e in range(per_record)]
        data = _record(events, "ga4")
        if not with_subjects:
            for event in data["events"]:
                event["subjects"] = []
        records.append(("decisions", data))
    await client.config_resetstat()
    begin = time.perf_counter()
    for start in range(0, len(records), APPEND_BATCH):
        await log.append_many(records[start : start + APPEND_BATCH])
    rate = len(records) / (time.perf_counter() - begin)
    stats = await client.info("commandstats")
    script = stats.get("cmdstat_evalsha", {}).get("usec", 0) + stats.get("cmdstat_eval", {}).get(
        "usec", 0
    )
    keys = [k async for k in client.scan_iter(match="rt:bench-append*")]
    await client.delete(*keys)
    return rate, script / len(records)


async def run(args: argparse.Namespace, url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.config_set("appendfsync", "everysec")  # as config/redis.conf runs it
        log = AuditLog(client, key=KEY)
        trail = Trail(log, args.events_per_record)
        person = [(f"p-{i}", "the-person") for i in range(args.person_events)]
        identifiers = Identifiers.of(["the-person"], ["a-the-person"])
        tokens = set(identifiers.tokens(KEY))
        store = ConsentStore(client, suppressed_key=SUPPRESSED)
        without, without_us = await _append_rate(
            client, args.events_per_record, with_subjects=False
        )
        indexed, indexed_us = await _append_rate(client, args.events_per_record, with_subjects=True)
        members = args.events_per_record * 2
        print(
            f"append, {args.events_per_record} events x 2 subjects per record: with the index "
            f"{indexed:,.0f} records/s, {indexed_us:.0f} µs of Redis per record; without "
            f"{without:,.0f} records/s, {without_us:.0f} µs (same run): the index costs "
            f"{(indexed_us - without_us) / members:.1f} µs of Redis per member added"
        )
        print(
            f"{'records':>10} {'person':>7} {'index ms':>9} {'scan ms':>9} {'scan/index':>10} "
            f"{'index members':>14} {'bytes/member':>12}"
        )
        for number, size in enumerate(sorted(args.sizes)):
            begin = time.perf_counter()
            await trail.grow(size, person if number == 0 else None)
            fill_s = time.perf_counter() - begin

            async def report() -> dict[str, Any]:
                return await subject_report(
                    client, store, identifiers, audit_key=KEY, now=datetime.now(UTC)
                )

            index_s, answer = await _time(report, args.repeat)
            scan_s, scanned = await _time(lambda: _scan(client, tokens), 1)
            events = sum(s["received"] for s in answer["summary"].values())
            info = await client.info("memory")
            members = 0
            async for key in client.scan_iter(match="rt:audit:subject:*", count=10_000):
                members += await client.zcard(key)
            stream_bytes = await client.memory_usage("rt:audit") or 0
            index_bytes = max(0, int(info["used_memory"]) - stream_bytes)
            print(
                f"{trail.written:>10,} {answer['audit']['records']:>7,} {index_s * 1000:>9.1f} "
                f"{scan_s * 1000:>9.1f} {scan_s / index_s:>10.1f} {members:>14,} "
                f"{index_bytes / max(1, members):>12.0f}"
                f"   (filled in {fill_s:.0f} s; {events} deliveries reported, scan found "
                f"{scanned} records)"
            )
    finally:
        await client.aclose()


def main() -> int:
    """Fill, measure at each size, print one line per size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--person-events", type=int, default=1000)
    parser.add_argument("--events-per-record", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(run(args, url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
