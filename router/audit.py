"""The audit trail: an append-only, hash-chained log in the Redis stream ``rt:audit``.

Each record holds ``seq`` (1, 2, 3...), ``at`` (ISO 8601, UTC), ``kind`` (``AuditKind``),
``data`` (JSON without personal data: subject ids are keyed-HMAC tokens, field paths have their
keys normalized) and ``prev_hash``; ``hash`` is the SHA-256 of the canonical JSON of those five.
Changing, removing or inserting a record breaks the chain, and ``verify`` names the first bad
record.

Keys:

- ``rt:audit``         the records (stream entries: seq, at, kind, data, prev, hash)
- ``rt:audit:head``    seq and hash of the last record (so a removed tail is noticed)
- ``rt:audit:anchor``  seq and hash of the last *trimmed* record: verification of what is left
                       starts from it

Appending is safe across processes: the client reads the head, chains its records onto it, and
a Lua script appends them only if the head is still the one read (Redis' Lua has no SHA-256, so
the hashing cannot move into the script); on a conflict the client chains again onto the new head.

Entry points::

    log = AuditLog(client, key=secret)                      # key: for subject tokens
    await log.append(AuditKind.RELEASE, {"destination": "ga4"})
    writer = AuditWriter(log); writer.start()               # buffered, for the hot path:
    writer.record_decisions(decision_entries(event, consent, decisions, key=secret))  # sync
    result = await verify(client)                           # `router audit verify`
    async for line in export(client): ...                   # JSON lines

The pure core (``chain_hash``, ``seal``, ``verify_records``, ``decision_entries``) does no I/O.
Tamper evidence covers edits by anyone who cannot also rewrite every later record and the head;
for more, keep ``head()`` (or an export's last hash) somewhere else now and then.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consent.model import ConsentState
from router.datamap import field_paths, safe_path
from router.periodic import Periodic
from router.plan import Decision, Deliver
from router.sanitize import Event

log = logging.getLogger("router.audit")

STREAM: Final = "rt:audit"
GENESIS: Final = "0" * 64
PAGE: Final = 500
MAX_PATHS: Final = 100


class AuditKind(StrEnum):
    """What a record is about (bounded)."""

    CONFIG_LOADED = "config_loaded"
    CONFIG_CHANGED = "config_changed"
    CONSENT_WRITTEN = "consent_written"
    ERASURE = "erasure"
    HOLD = "hold"
    RELEASE = "release"
    DISCARD = "discard"
    DLQ_REPLAY = "dlq_replay"
    DECISION = "decision"
    DECISIONS = "decisions"
    ADMIN_CALL = "admin_call"
    ANOMALY = "anomaly"


# --- pure core -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the chain."""

    seq: int
    at: str
    kind: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as exported."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a chain starts: the seq and hash of the record before the first one checked."""

    seq: int
    hash: str


GENESIS_ANCHOR: Final = Anchor(0, GENESIS)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``ok``, or the first bad record's seq and why."""

    ok: bool
    first_bad_seq: int | None = None
    reason: str = ""
    checked: int = 0


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, ASCII only, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def chain_hash(record: AuditRecord) -> str:
    """SHA-256 hex over the canonical JSON of (seq, at, kind, data, prev_hash)."""
    body = {
        "seq": record.seq,
        "at": record.at,
        "kind": record.kind,
        "data": record.data,
        "prev_hash": record.prev_hash,
    }
    return hashlib.sha256(canonical(body)).hexdigest()


def _sealed_hash(seq: int, at: str, kind: str, data_json: str, prev_hash: str) -> str:
    """``chain_hash`` with the record's data already in canonical JSON (``canonical(data)``):
    the same bytes, written out in the keys' sorted order, so the data is encoded only once."""
    body = (
        f'{{"at":{json.dumps(at)},"data":{data_json},"kind":{json.dumps(kind)},'
        f'"prev_hash":{json.dumps(prev_hash)},"seq":{int(seq)}}}'
    )
    return hashlib.sha256(body.encode()).hexdigest()


def seal(seq: int, at: str, kind: str, data: Mapping[str, Any], prev_hash: str) -> AuditRecord:
    """A record with its hash."""
    unsealed = AuditRecord(seq, at, str(kind), data, prev_hash)
    return AuditRecord(seq, at, str(kind), data, prev_hash, chain_hash(unsealed))


def chain(head: Anchor, entries: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[AuditRecord]:
    """Seal ``(at, kind, data)`` entries one after the other onto ``head``."""
    records: list[AuditRecord] = []
    seq, prev = head.seq, head.hash
    for at, kind, data in entries:
        seq += 1
        record = seal(seq, at, kind, data, prev)
        records.append(record)
        prev = record.hash
    return records


class ChainVerifier:
    """Checks records one at a time (so a long stream is verified page by page)."""

    def __init__(self, anchor: Anchor | None = GENESIS_ANCHOR) -> None:
        self._last = anchor
        self.checked = 0
        self.result: VerifyResult | None = None

    def feed(self, record: AuditRecord) -> VerifyResult | None:
        """Check the next record; the failure (also kept in ``result``) or None."""
        if self.result is not None:
            return self.result
        last = self._last
        if record.hash != chain_hash(record):
            return self._fail(
                record.seq, f"record {record.seq}: its content does not match its hash"
            )
        if last is not None:
            if record.seq != last.seq + 1:
                return self._fail(
                    last.seq + 1,
                    f"record {last.seq + 1} is missing (found {record.seq} after {last.seq})",
                )
            if record.prev_hash != last.hash:
                if last.seq == 0:
                    return self._fail(record.seq, f"record {record.seq}: broken link to the anchor")
                # The record is sealed correctly, so the one before it was changed and resealed.
                return self._fail(
                    last.seq,
                    f"record {last.seq} was changed: its hash is not record {record.seq}'s "
                    "prev_hash",
                )
        self._last = Anchor(record.seq, record.hash)
        self.checked += 1
        return None

    def finish(self, head: Anchor | None = None) -> VerifyResult:
        """The verdict once every record up to ``head`` (the stored last one) was fed."""
        if self.result is not None:
            return self.result
        last = self._last
        if head is not None and head.seq > 0:
            if last is None or last.seq < head.seq:
                expected = (last.seq if last is not None else 0) + 1
                return self._fail(
                    expected, f"records {expected} to {head.seq} are missing (head: {head.seq})"
                )
            if last.seq == head.seq and last.hash != head.hash:
                return self._fail(
                    last.seq, f"record {last.seq} was changed: it does not match the head"
                )
        return VerifyResult(ok=True, checked=self.checked)

    def _fail(self, seq: int, reason: str) -> VerifyResult:
        self.result = VerifyResult(ok=False, first_bad_seq=seq, reason=reason, checked=self.checked)
        return self.result


def verify_records(
    records: Iterable[AuditRecord],
    anchor: Anchor | None = GENESIS_ANCHOR,
    *,
    head: Anchor | None = None,
) -> VerifyResult:
    """Verify a chain. ``anchor``: genesis by default; None trusts the first record's link
    (for a partial export); ``head``: the expected last record."""
    verifier = ChainVerifier(anchor)
    for record in records:
        failed = verifier.feed(record)
        if failed is not None:
            return failed
    return verifier.finish(head)


def parse_record(line: str | bytes) -> AuditRecord:
    """A record from one exported JSON line."""
    value = json.loads(line)
    return AuditRecord(
        seq=int(value["seq"]),
        at=str(value["at"]),
        kind=str(value["kind"]),
        data=value["data"],
        prev_hash=str(value["prev_hash"]),
        hash=str(value["hash"]),
    )


@functools.lru_cache(maxsize=16)
def _token_base(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def subject_token(identifier: str, key: bytes) -> str:
    """How a subject id appears in the audit trail: HMAC-SHA256 under the audit key."""
    state = _token_base(key).copy()  # the keyed state is prepared once per key
    state.update(identifier.strip().encode())
    return state.hexdigest()[:32]


@functools.lru_cache(maxsize=8192)
def _subject_tokens(identifiers: tuple[str, ...], key: bytes) -> list[str]:
    """Sorted tokens of an event's subjects: the same few subjects recur event after event.
    The list is shared between records: nobody may change it."""
    return sorted(subject_token(i, key) for i in identifiers)


@functools.lru_cache(maxsize=256)
def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _paths(paths: Iterable[str]) -> list[str]:
    return sorted({safe_path(p) for p in paths})[:MAX_PATHS]


@functools.lru_cache(maxsize=1024)
def _configured_paths(paths: frozenset[str]) -> tuple[str, ...]:
    """``_paths`` of a destination's configured paths (the same few sets, every event)."""
    return tuple(_paths(paths))


@functools.lru_cache(maxsize=4096)
def _removed(all_paths: frozenset[str], sent: frozenset[str]) -> list[str]:
    """What minimization removed, sorted and capped: events of one shape give the same sets.
    ``field_paths``' output is normalized already: no second check. Shared: never change it."""
    return sorted(all_paths - sent)[:MAX_PATHS]


def decision_entries(
    event: Event,
    consent: ConsentState,
    decisions: Sequence[Decision],
    *,
    key: bytes,
    stage: str = "ingest",
    event_paths: frozenset[str] | None = None,
) -> list[tuple[AuditKind, dict[str, Any]]]:
    """One ``decision`` record per destination, with no personal data.

    Records the destination, deliver or skip, the reason, the removed and transformed field
    paths (keys normalized), the consent snapshot's sources and time; the event and its
    subjects appear as keyed tokens only. ``event_paths``: ``field_paths(event.data)`` when
    the caller computed it already.
    """
    event_data = event.data
    event_token = subject_token(event.message_id, key)
    subjects = _subject_tokens(event.subject_ids, key)
    sources = sorted({s.value for s in consent.signals})
    consent_at = consent.collected_at
    snapshot_at = _iso(consent_at) if consent_at else None
    all_paths = event_paths
    entries: list[tuple[AuditKind, dict[str, Any]]] = []
    for decision in decisions:
        destination = decision.destination
        data: dict[str, Any] = {
            "stage": stage,
            "destination": destination.id,
            "event": event_token,
            "subjects": subjects,
            "consent": {"sources": sources, "at": snapshot_at},
        }
        if isinstance(decision, Deliver):
            if all_paths is None:
                all_paths = field_paths(event_data)
            data.update(
                decision="deliver",
                reason="consent_granted" if destination.requires else "no_consent_required",
                removed=_removed(all_paths, field_paths(decision.delivery.payload)),
                transformed=list(_configured_paths(destination.allowlist.transformed_paths)),
            )
        else:
            data.update(decision="skip", reason=decision.reason.value, removed=[], transformed=[])
        entries.append((AuditKind.DECISION, data))
    return entries


# --- Redis ---------------------------------------------------------------------------------------

_APPEND = """
local head = redis.call('HMGET', KEYS[2], 'seq', 'hash')
local seq = head[1] or '0'
local hash = head[2] or ARGV[1]
if seq ~= ARGV[2] or hash ~= ARGV[3] then
  return {0, seq, hash}
end
local n = #ARGV
for i = 4, n, 6 do
  redis.call('XADD', KEYS[1], '*', 'seq', ARGV[i], 'at', ARGV[i + 1], 'kind', ARGV[i + 2],
    'data', ARGV[i + 3], 'prev', ARGV[i + 4], 'hash', ARGV[i + 5])
end
redis.call('HSET', KEYS[2], 'seq', ARGV[n - 5], 'hash', ARGV[n])
return {1, ARGV[n - 5], ARGV[n]}
"""

_TRIM = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local seq, hash
for i = 1, #fields, 2 do
  if fields[i] == 'seq' then seq = fields[i + 1] end
  if fields[i] == 'hash' then hash = fields[i + 1] end
end
local current = redis.call('HGET', KEYS[2], 'seq')
if current and tonumber(current) >= tonumber(seq) then return 0 end
redis.call('HSET', KEYS[2], 'seq', seq, 'hash', hash)
local ms, s = string.match(ARGV[1], '^(%d+)-(%d+)$')
return redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(s) + 1))
"""


class AuditConflictError(RuntimeError):
    """The head kept moving under us (only with extreme contention)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _now_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _record_of(fields: Mapping[bytes, bytes]) -> AuditRecord:
    try:
        data = json.loads(fields[b"data"])
        if not isinstance(data, dict):
            data = {"_invalid": True}
    except (KeyError, ValueError):
        data = {"_invalid": True}
    try:
        seq = int(fields.get(b"seq", b"-1"))
    except ValueError:
        seq = -1
    return AuditRecord(
        seq=seq,
        at=fields.get(b"at", b"").decode("utf-8", "replace"),
        kind=fields.get(b"kind", b"").decode("utf-8", "replace"),
        data=data,
        prev_hash=fields.get(b"prev", b"").decode("utf-8", "replace"),
        hash=fields.get(b"hash", b"").decode("utf-8", "replace"),
    )


def _anchor_of(fields: Mapping[bytes, bytes]) -> Anchor | None:
    if b"seq" not in fields or b"hash" not in fields:
        return None
    return Anchor(int(fields[b"seq"]), fields[b"hash"].decode())


@dataclass(slots=True)
class AuditLog:
    """The audit stream of one Redis."""

    client: aioredis.Redis
    key: bytes = b""
    """Key of the subject tokens (``ROUTER_AUDIT_KEY``); set one in production."""
    stream: str = STREAM
    clock: Callable[[], datetime] = _utc_now
    max_attempts: int = 100

    @property
    def head_key(self) -> str:
        """Where the last seq and hash are kept."""
        return f"{self.stream}:head"

    @property
    def anchor_key(self) -> str:
        """Where the last trimmed record's seq and hash are kept."""
        return f"{self.stream}:anchor"

    def token(self, identifier: str) -> str:
        """A subject id as the audit trail shows it."""
        return subject_token(identifier, self.key)

    async def append(
        self, kind: AuditKind | str, data: Mapping[str, Any], *, at: datetime | None = None
    ) -> AuditRecord:
        """Append one record."""
        records = await self.append_many([(kind, data)], at=at)
        return records[0]

    async def append_many(
        self,
        items: Sequence[tuple[AuditKind | str, Mapping[str, Any]]],
        *,
        at: datetime | Sequence[datetime] | None = None,
    ) -> list[AuditRecord]:
        """Append records in order, atomically, chained onto whatever the head is."""
        if not items:
            return []
        if isinstance(at, Sequence):
            texts: dict[datetime, str] = {}  # records of one request share their time
            times = [texts[t] if t in texts else texts.setdefault(t, _now_text(t)) for t in at]
        else:
            times = [_now_text(at or self.clock())] * len(items)
        # Each record's data is encoded once; on a conflict only the links are hashed again.
        entries = [
            (t, str(kind), dict(data), canonical(data).decode())
            for t, (kind, data) in zip(times, items, strict=True)
        ]
        script = self.client.register_script(_APPEND)
        head = await self.head()
        for _ in range(self.max_attempts):
            records: list[AuditRecord] = []
            args: list[str | int] = [GENESIS, str(head.seq), head.hash]
            seq, prev = head.seq, head.hash
            for moment, kind, data, data_json in entries:
                seq += 1
                digest = _sealed_hash(seq, moment, kind, data_json, prev)
                records.append(AuditRecord(seq, moment, kind, data, prev, digest))
                args += [str(seq), moment, kind, data_json, prev, digest]
                prev = digest
            applied, seq, last = await script(keys=[self.stream, self.head_key], args=args)
            if int(applied) == 1:
                return records
            head = Anchor(int(seq), last.decode() if isinstance(last, bytes) else str(last))
            await asyncio.sleep(0)
        raise AuditConflictError("could not append to the audit chain")

    async def head(self) -> Anchor:
        """The last record's seq and hash (genesis when empty)."""
        fields = await self.client.hgetall(self.head_key)  # type: ignore[misc]
        return _anchor_of(fields) or GENESIS_ANCHOR

    async def anchor(self) -> Anchor:
        """Where verification starts: the last trimmed record, or genesis."""
        fields = await self.client.hgetall(self.anchor_key)  # type: ignore[misc]
        return _anchor_of(fields) or GENESIS_ANCHOR

    async def records(self) -> AsyncIterator[AuditRecord]:
        """Every record still in the stream, oldest first."""
        start = "-"
        while True:
            page = await self.client.xrange(self.stream, min=start, count=PAGE)
            for entry_id, fields in page:
                yield _record_of(fields)
                start = "(" + (entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
            if len(page) < PAGE:
                return

    async def verify(self) -> VerifyResult:
        """Check the stored chain from the anchor to the head (records appended meanwhile are
        left for the next run; a trim that moved the anchor meanwhile causes one retry)."""
        result = await self._verify_once()
        if not result.ok:
            again = await self._verify_once()
            if again.ok:
                return again
        return result

    async def _verify_once(self) -> VerifyResult:
        head = await self.head()
        verifier = ChainVerifier(await self.anchor())
        async for record in self.records():
            if record.seq > head.seq > 0:
                break
            failed = verifier.feed(record)
            if failed is not None:
                return failed
        return verifier.finish(head)

    async def export(self) -> AsyncIterator[str]:
        """Every record as one JSON line (ending in a newline), oldest first."""
        async for record in self.records():
            yield canonical(record.to_json()).decode() + "\n"

    async def trim(
        self, *, max_records: int | None = None, older_than: datetime | None = None
    ) -> int:
        """Drop the oldest records (beyond ``max_records``, or older than ``older_than``).

        The last dropped record's seq and hash become the anchor, so the rest still verifies.
        """
        script = self.client.register_script(_TRIM)
        dropped = 0
        while True:
            last_id = await self._trim_point(max_records, older_than)
            if last_id is None:
                return dropped
            removed = int(await script(keys=[self.stream, self.anchor_key], args=[last_id]))
            if removed == 0:
                return dropped
            dropped += removed

    async def _trim_point(self, max_records: int | None, older_than: datetime | None) -> str | None:
        candidates: list[Any] = []
        if max_records is not None:
            excess = int(await self.client.xlen(self.stream)) - max_records
            if excess > 0:
                candidates = await self.client.xrange(self.stream, count=min(excess, 10_000))
        if older_than is not None:
            boundary = f"({int(older_than.timestamp() * 1000)}-0"
            older = await self.client.xrange(self.stream, max=boundary, count=10_000)
            if len(older) > len(candidates):
                candidates = older
        if not candidates:
            return None
        entry_id = candidates[-1][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def verify(client: aioredis.Redis, stream: str = STREAM) -> VerifyResult:
    """Verify the audit chain stored in ``client`` (``router audit verify``)."""
    return await AuditLog(client, stream=stream).verify()


async def export(client: aioredis.Redis, stream: str = STREAM) -> AsyncIterator[str]:
    """The audit trail as JSON lines (``GET /admin/audit/export``)."""
    async for line in AuditLog(client, stream=stream).export():
        yield line


MAX_EVENTS_PER_RECORD: Final = 500


def decision_group_key(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """What the decision records of one ``decisions`` record share (everything but the event,
    its subjects and its consent time)."""
    return (
        data["stage"],
        data["destination"],
        data["decision"],
        data["reason"],
        tuple(data["removed"]),
        tuple(data["transformed"]),
        tuple(data["consent"]["sources"]),
    )


@dataclass(slots=True)
class _DecisionGroup:
    shared: dict[str, Any]
    first: datetime
    last: datetime
    events: list[dict[str, Any]] = field(default_factory=list)

    def records(self) -> list[tuple[str, dict[str, Any], datetime]]:
        """``decisions`` records of at most ``MAX_EVENTS_PER_RECORD`` events each."""
        out: list[tuple[str, dict[str, Any], datetime]] = []
        window = {"from": _now_text(self.first), "to": _now_text(self.last)}
        for start in range(0, len(self.events), MAX_EVENTS_PER_RECORD):
            events = self.events[start : start + MAX_EVENTS_PER_RECORD]
            data = {**self.shared, **window, "count": len(events), "events": events}
            out.append((AuditKind.DECISIONS.value, data, self.last))
        return out


@dataclass(slots=True)
class AuditWriter:
    """Buffers records from the hot path and appends them once per ``flush_every_s``.

    ``record`` never awaits. Records wait in memory for at most one interval; when Redis is
    down they are kept (up to ``max_buffer``, then the oldest are dropped and counted) and
    retried. ``retention_records`` trims the stream every ``trim_every_s``.

    ``record_decisions`` takes ``decision_entries``' output and, at each flush, writes one
    ``decisions`` record per group of decisions that differ only in their event (destination,
    deliver or skip, reason, removed and transformed paths, consent sources): the shared part
    once, then ``events``, each ``{"event", "subjects", "consent_at"}`` (keyed tokens and a
    time), with ``from``/``to`` (the interval) and ``count``. The same facts as one record per
    decision, at a fraction of the hashing, encoding and Redis memory: decisions arrive at
    event rate, most events of a source have the same shape.
    """

    log: AuditLog
    flush_every_s: float = 1.0
    max_buffer: int = 100_000
    retention_records: int | None = 10_000_000
    retention_days: float | None = None
    trim_every_s: float = 3600.0
    dropped: int = 0
    _buffer: list[tuple[str, Mapping[str, Any], datetime]] = field(default_factory=list)
    _groups: dict[tuple[Any, ...], _DecisionGroup] = field(default_factory=dict)
    _grouped: int = 0
    _last_trim: float | None = None
    _flusher: Periodic = field(init=False)

    def __post_init__(self) -> None:
        self._flusher = Periodic(
            "audit-writer",
            self._tick,
            self.flush_every_s,
            (RedisError, OSError, AuditConflictError),
            log,
            "audit flush failed",
            final=self.flush,
        )

    def record(self, kind: AuditKind | str, data: Mapping[str, Any]) -> None:
        """Queue one record for the next flush."""
        self._buffer.append((str(kind), data, self.log.clock()))
        self._bound()

    def record_many(self, entries: Iterable[tuple[AuditKind | str, Mapping[str, Any]]]) -> None:
        """Queue several records (``decision_entries``' output), all with the same time."""
        moment = self.log.clock()
        self._buffer.extend((str(kind), data, moment) for kind, data in entries)
        self._bound()

    def record_decisions(
        self, entries: Iterable[tuple[AuditKind | str, Mapping[str, Any]]]
    ) -> None:
        """Queue ``decision_entries``' records, grouped at the flush (see the class)."""
        moment = self.log.clock()
        for _, data in entries:
            if self._grouped >= self.max_buffer:
                self.dropped += 1
                continue
            key = decision_group_key(data)
            group = self._groups.get(key)
            if group is None:
                shared = {k: v for k, v in data.items() if k not in ("event", "subjects")}
                shared["consent"] = {"sources": data["consent"]["sources"]}
                group = self._groups[key] = _DecisionGroup(shared, moment, moment)
            group.last = moment
            group.events.append(
                {
                    "event": data["event"],
                    "subjects": data["subjects"],
                    "consent_at": data["consent"]["at"],
                }
            )
            self._grouped += 1

    def _bound(self) -> None:
        if len(self._buffer) > self.max_buffer:
            excess = len(self._buffer) - self.max_buffer
            del self._buffer[:excess]
            self.dropped += excess

    async def flush(self) -> int:
        """Append what is buffered; the count of records appended."""
        if self._groups:
            groups, self._groups, self._grouped = self._groups, {}, 0
            for group in sorted(groups.values(), key=lambda g: g.first):
                self._buffer += group.records()
            self._bound()
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        done = 0
        try:
            while done < len(batch):
                part = batch[done : done + 1000]
                await self.log.append_many(
                    [(kind, data) for kind, data, _ in part], at=[t for _, _, t in part]
                )
                done += len(part)
        except (RedisError, OSError, AuditConflictError):
            self._buffer[:0] = batch[done:]
            raise
        return done

    def start(self) -> None:
        """Start the periodic flush (and trim)."""
        self._flusher.start()

    async def close(self) -> None:
        """Stop and flush what is left."""
        await self._flusher.close()

    async def trim(self) -> int:
        """Apply the retention (records beyond the count, records older than the age)."""
        older_than = None
        if self.retention_days is not None:
            older_than = self.log.clock() - timedelta(days=self.retention_days)
        return await self.log.trim(max_records=self.retention_records, older_than=older_than)

    async def _tick(self) -> None:
        """Flush; trim to the retention every ``trim_every_s``."""
        await self.flush()
        now = asyncio.get_running_loop().time()
        if self._last_trim is None:
            self._last_trim = now
        retains = self.retention_records or self.retention_days
        if retains and now - self._last_trim >= self.trim_every_s:
            self._last_trim = now
            await self.trim()
