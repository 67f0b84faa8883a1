"""The data map: per destination and day, which field paths left, which kinds of personal data
among them, how many events and bytes.

Redis keys (``<day>`` is ``YYYY-MM-DD`` in UTC; every key expires after ``retention_days``):

- ``rt:dm:<day>:destinations``       the destinations that received anything that day (set)
- ``rt:dm:<day>:<destination>:fields`` field paths sent (set; keys normalized by ``field_paths``)
- ``rt:dm:<day>:<destination>:pii``    personal-data kinds sent (set)
- ``rt:dm:<day>:<destination>:counts`` ``events`` and ``bytes`` (hash counters)
- ``rt:dm:<day>:<destination>:match``  match readiness (hash counters): events delivered with
  each kind of match key (``email``, ``phone``, ``external_id``, ``click_id``...) and
  identifiers left out, ``omitted:<field>:<reason>`` (``omitted:phone:no_country_code``), so a
  falling match rate can be traced to its cause

``rt:dm:last`` (``DATAMAP_LAST``) holds when each destination last accepted a delivery (sorted
set, Unix seconds; only moves forward; no expiry: destination ids and times only).

Entry point (the delivery worker, after a destination accepted a batch; or the ingest, if the
map should say "queued for" rather than "sent to")::

    recorder.record(destination.id, delivery.payload, pii_kinds, size_bytes)   # sync, cheap

``DataMapRecorder`` aggregates in memory and writes once per ``flush_every_s`` in one pipeline.
``read_datamap`` and ``render_table`` serve ``GET /admin/datamap`` and ``router datamap``.

Field paths are computed from the payload's structure by ``router.core.paths.field_paths``
(value-like keys become ``*``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.core.paths import field_paths
from router.periodic import Periodic
from router.queue.keys import DATAMAP_LAST, datamap_day_key, datamap_key

log = logging.getLogger("router.datamap")


def declared_kinds(paths: Iterable[str], declarations: Mapping[str, str]) -> frozenset[str]:
    """The personal-data kinds declared (``destinations[].pii``) for the paths sent."""
    return frozenset(declarations[p] for p in paths if p in declarations)


def day_of(moment: datetime) -> str:
    """The data map's day of a moment: ``YYYY-MM-DD`` in UTC."""
    return moment.astimezone(UTC).date().isoformat()


@dataclass(slots=True)
class _Tally:
    fields: set[str] = field(default_factory=set)
    pii: set[str] = field(default_factory=set)
    events: int = 0
    bytes: int = 0
    match: Counter[str] = field(default_factory=Counter)
    last: float = 0.0
    """Unix seconds of the newest delivery counted."""


@dataclass(slots=True)
class DataMapRecorder:
    """Buffers what was sent and writes it to Redis once per ``flush_every_s``."""

    client: aioredis.Redis
    flush_every_s: float = 1.0
    retention_days: int = 400
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _pending: dict[tuple[str, str], _Tally] = field(default_factory=dict)
    _flusher: Periodic = field(init=False)

    def __post_init__(self) -> None:
        self._flusher = Periodic(
            "datamap",
            self.flush,
            self.flush_every_s,
            (RedisError, OSError),
            log,
            "data map flush failed",
        )

    def record(
        self,
        destination: str,
        payload: Mapping[str, Any],
        pii_kinds: Iterable[str] = (),
        size_bytes: int = 0,
        *,
        events: int = 1,
        paths: frozenset[str] | None = None,
        match: Mapping[str, int] | None = None,
    ) -> None:
        """Count one sent payload (or ``events`` alike); no I/O. ``paths``:
        ``field_paths(payload)`` when the caller computed it already; ``match``: match-key
        counts (bounded names from the connectors)."""
        moment = self.clock()
        tally = self._pending.setdefault((day_of(moment), destination), _Tally())
        tally.last = max(tally.last, moment.timestamp())
        tally.fields |= field_paths(payload) if paths is None else paths
        tally.pii.update(pii_kinds)
        tally.events += events
        tally.bytes += size_bytes
        if match:
            tally.match.update(match)

    async def flush(self) -> None:
        """Write the buffered counts (they are kept for the next flush when Redis fails)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        ttl = self.retention_days * 86_400
        pipe = self.client.pipeline(transaction=False)
        for (day, destination), tally in pending.items():
            pipe.sadd(datamap_day_key(day), destination)
            pipe.expire(datamap_day_key(day), ttl)
            if tally.fields:
                pipe.sadd(datamap_key(day, destination, "fields"), *sorted(tally.fields))
            if tally.pii:
                pipe.sadd(datamap_key(day, destination, "pii"), *sorted(tally.pii))
            counts = datamap_key(day, destination, "counts")
            pipe.hincrby(counts, "events", tally.events)
            pipe.hincrby(counts, "bytes", tally.bytes)
            for name, amount in sorted(tally.match.items()):
                pipe.hincrby(datamap_key(day, destination, "match"), name, amount)
            for part in ("fields", "pii", "counts", "match"):
                pipe.expire(datamap_key(day, destination, part), ttl)
            pipe.zadd(DATAMAP_LAST, {destination: tally.last}, gt=True)
        try:
            await pipe.execute()
        except (RedisError, OSError):
            for key, tally in pending.items():
                merged = self._pending.setdefault(key, _Tally())
                merged.fields |= tally.fields
                merged.pii |= tally.pii
                merged.events += tally.events
                merged.bytes += tally.bytes
                merged.match.update(tally.match)
                merged.last = max(merged.last, tally.last)
            raise

    def start(self) -> None:
        """Start the periodic flush."""
        self._flusher.start()

    async def close(self) -> None:
        """Stop and flush what is left."""
        await self._flusher.close()


async def read_datamap(client: aioredis.Redis, day: str | date) -> dict[str, Any]:
    """``{"day", "destinations": {id: {"fields", "pii", "events", "bytes", "match"}}}`` for
    one day."""
    day = day if isinstance(day, date) else date.fromisoformat(day)
    return (await read_datamaps(client, [day]))[0]


async def mark_delivered(client: aioredis.Redis, destination: str, moment: datetime) -> None:
    """Record a delivery that is not an event (an aggregate release) as the destination's last
    one, if it is the newest."""
    await client.zadd(DATAMAP_LAST, {destination: moment.timestamp()}, gt=True)


async def read_datamaps(client: aioredis.Redis, days: Iterable[date]) -> list[dict[str, Any]]:
    """``read_datamap`` for several days, oldest first, in two round trips."""
    names = [d.isoformat() for d in sorted(days)]
    pipe = client.pipeline(transaction=False)
    for day in names:
        pipe.smembers(datamap_day_key(day))
    indexes = await pipe.execute()
    rows = [
        (day, destination)
        for day, members in zip(names, indexes, strict=True)
        for destination in sorted(_text(m) for m in members)
    ]
    pipe = client.pipeline(transaction=False)
    for day, destination in rows:
        pipe.smembers(datamap_key(day, destination, "fields"))
        pipe.smembers(datamap_key(day, destination, "pii"))
        pipe.hgetall(datamap_key(day, destination, "counts"))
        pipe.hgetall(datamap_key(day, destination, "match"))
    results = await pipe.execute()
    out: dict[str, dict[str, Any]] = {day: {} for day in names}
    for index, (day, destination) in enumerate(rows):
        fields, pii, counts, match = results[4 * index : 4 * index + 4]
        row: dict[str, Any] = {
            "fields": sorted(_text(f) for f in fields),
            "pii": sorted(_text(k) for k in pii),
            "events": int(counts.get(b"events", 0)),
            "bytes": int(counts.get(b"bytes", 0)),
        }
        if match:  # only destinations that match people report it
            row["match"] = {_text(k): int(v) for k, v in sorted(match.items())}
        out[day][destination] = row
    return [{"day": day, "destinations": out[day]} for day in names]


async def read_last_deliveries(client: aioredis.Redis) -> dict[str, datetime]:
    """When each destination last accepted a delivery (UTC), as far as the data map knows."""
    rows = await client.zrange(DATAMAP_LAST, 0, -1, withscores=True)
    return {_text(member): datetime.fromtimestamp(score, UTC) for member, score in rows}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def render_table(datamap: Mapping[str, Any]) -> str:
    """A plain-text table of one day's data map (for ``router datamap``)."""
    lines = [f"data map for {datamap['day']}"]
    destinations: Mapping[str, Any] = datamap["destinations"]
    if not destinations:
        lines.append("(nothing sent)")
        return "\n".join(lines) + "\n"
    lines.append(f"{'destination':<24} {'events':>10} {'bytes':>12}  personal data")
    for destination, row in destinations.items():
        kinds = ", ".join(row["pii"]) or "-"
        lines.append(f"{destination:<24} {row['events']:>10} {row['bytes']:>12}  {kinds}")
        if match := row.get("match"):
            keys = [f"{k} {n}" for k, n in match.items() if not k.startswith("omitted:")]
            gone = [f"{k[8:]} {n}" for k, n in match.items() if k.startswith("omitted:")]
            lines.append("    match keys: " + (", ".join(keys) or "-"))
            if gone:
                lines.append("    omitted: " + ", ".join(gone))
        for path in row["fields"]:
            lines.append(f"    {path}")
    return "\n".join(lines) + "\n"
