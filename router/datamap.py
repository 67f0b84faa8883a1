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

Entry point (the delivery worker, after a destination accepted a batch; or the ingest, if the
map should say "queued for" rather than "sent to")::

    recorder.record(destination.id, delivery.payload, pii_kinds, size_bytes)   # sync, cheap

``DataMapRecorder`` aggregates in memory and writes once per ``flush_every_s`` in one pipeline.
``read_datamap`` and ``render_table`` serve ``GET /admin/datamap`` and ``router datamap``.

Field paths are computed from the payload's structure by ``field_paths``: a key that does not
look like a field name (an email or a phone number used as a key, anything with spaces or long
digit runs) becomes ``*``, so no value-like key reaches the map, the anomaly store or the audit.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.periodic import Periodic

log = logging.getLogger("router.datamap")

MAX_PATHS: Final = 256
MAX_DEPTH: Final = 16
_SEGMENT: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]{0,63}")
_DIGIT_RUN: Final = re.compile(r"[0-9]{5}")
WILDCARD: Final = "*"


_FIELD_NAMES: Final[set[str]] = set()
"""Keys already found to look like field names (the same few recur in every event), bounded;
value-like keys are never kept here."""
_MAX_FIELD_NAMES: Final = 8192


def safe_segment(name: object) -> str:
    """A key as it may appear in a field path: itself if it looks like a field name, else ``*``."""
    if not isinstance(name, str):
        return WILDCARD
    if name in _FIELD_NAMES:
        return name
    if _SEGMENT.fullmatch(name) and not _DIGIT_RUN.search(name):
        if len(_FIELD_NAMES) < _MAX_FIELD_NAMES:
            _FIELD_NAMES.add(name)
        return name
    return WILDCARD


def field_paths(
    value: Any, *, max_paths: int = MAX_PATHS, max_depth: int = MAX_DEPTH
) -> frozenset[str]:
    """Leaf paths of a JSON-like value in allowlist syntax (``a.b[].c``), keys normalized.

    At most ``max_paths`` paths, at most ``max_depth`` levels (deeper values count as a leaf).
    """
    found: set[str] = set()
    if type(value) is dict:
        _dict_paths(value, "", 0, found, max_paths, max_depth)
    elif type(value) is list:
        _list_paths(value, "[]", 0, found, max_paths, max_depth)
    return frozenset(found)


# The two walkers below run for every event (audit, data map, schema drift): they recurse
# (depth is capped by ``max_depth``) and test exact types, which is several times faster than
# an explicit stack of (value, path, depth) tuples.


def _dict_paths(  # noqa: PLR0917 - positional: the hottest recursion of the ingest
    node: dict[Any, Any], prefix: str, depth: int, found: set[str], max_paths: int, max_depth: int
) -> None:
    depth += 1
    names = _FIELD_NAMES
    for name, child in node.items():
        if len(found) >= max_paths:
            return
        path = prefix + (name if name in names else safe_segment(name))
        kind = type(child)
        if kind is dict and child and depth < max_depth:
            _dict_paths(child, path + ".", depth, found, max_paths, max_depth)
        elif kind is list and child and depth < max_depth:
            _list_paths(child, path + "[]", depth, found, max_paths, max_depth)
        else:
            found.add(path)


def _list_paths(  # noqa: PLR0917 - positional: the hottest recursion of the ingest
    items: list[Any], path: str, depth: int, found: set[str], max_paths: int, max_depth: int
) -> None:
    depth += 1
    for child in items:
        if len(found) >= max_paths:
            return
        kind = type(child)
        if kind is dict and child and depth < max_depth:
            _dict_paths(child, path + ".", depth, found, max_paths, max_depth)
        elif kind is list and child and depth < max_depth:
            _list_paths(child, path + "[]", depth, found, max_paths, max_depth)
        else:
            found.add(path)


@functools.lru_cache(maxsize=4096)
def safe_path(path: str) -> str:
    """A configured or computed path re-checked segment by segment (for paths from elsewhere)."""
    parts = []
    for part in path.split(".")[:MAX_DEPTH]:
        name, brackets, _ = part.partition("[]")
        parts.append(safe_segment(name) + ("[]" * part.count("[]") if brackets else ""))
    return ".".join(parts)


def declared_kinds(paths: Iterable[str], declarations: Mapping[str, str]) -> frozenset[str]:
    """The personal-data kinds declared (``destinations[].pii``) for the paths sent."""
    return frozenset(declarations[p] for p in paths if p in declarations)


def day_of(moment: datetime) -> str:
    """The data map's day of a moment: ``YYYY-MM-DD`` in UTC."""
    return moment.astimezone(UTC).date().isoformat()


def _key(day: str, destination: str, part: str) -> str:
    return f"rt:dm:{day}:{destination}:{part}"


def _index(day: str) -> str:
    return f"rt:dm:{day}:destinations"


@dataclass(slots=True)
class _Tally:
    fields: set[str] = field(default_factory=set)
    pii: set[str] = field(default_factory=set)
    events: int = 0
    bytes: int = 0
    match: Counter[str] = field(default_factory=Counter)


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
        tally = self._pending.setdefault((day_of(self.clock()), destination), _Tally())
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
            pipe.sadd(_index(day), destination)
            pipe.expire(_index(day), ttl)
            if tally.fields:
                pipe.sadd(_key(day, destination, "fields"), *sorted(tally.fields))
            if tally.pii:
                pipe.sadd(_key(day, destination, "pii"), *sorted(tally.pii))
            counts = _key(day, destination, "counts")
            pipe.hincrby(counts, "events", tally.events)
            pipe.hincrby(counts, "bytes", tally.bytes)
            for name, amount in sorted(tally.match.items()):
                pipe.hincrby(_key(day, destination, "match"), name, amount)
            for part in ("fields", "pii", "counts", "match"):
                pipe.expire(_key(day, destination, part), ttl)
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
    day = day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat()
    members = await client.smembers(_index(day))  # type: ignore[misc]
    destinations = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
    pipe = client.pipeline(transaction=False)
    for destination in destinations:
        pipe.smembers(_key(day, destination, "fields"))
        pipe.smembers(_key(day, destination, "pii"))
        pipe.hgetall(_key(day, destination, "counts"))
        pipe.hgetall(_key(day, destination, "match"))
    results = await pipe.execute()
    out: dict[str, Any] = {}
    for index, destination in enumerate(destinations):
        fields, pii, counts, match = results[4 * index : 4 * index + 4]
        out[destination] = {
            "fields": sorted(_text(f) for f in fields),
            "pii": sorted(_text(k) for k in pii),
            "events": int(counts.get(b"events", 0)),
            "bytes": int(counts.get(b"bytes", 0)),
        }
        if match:  # only destinations that match people report it
            out[destination]["match"] = {_text(k): int(v) for k, v in sorted(match.items())}
    return {"day": day, "destinations": out}


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
