"""The audit trail: append-only, hash-chained lanes in the Redis stream ``rt:{audit}``.

Every writer (an ``AuditLog``: one per router process, worker or CLI command) appends to its
own *lane*, a hash chain nobody else writes to, so appends never race: a writer's appends are
serialized in its process (and the concurrent ones grouped into one round trip), and different
writers touch different chains. All lanes share the one stream, so its order is the global
order of the records.

Each record holds ``lane`` (1, 2, 3...), ``seq`` (1, 2, 3... within its lane), ``at`` (ISO 8601,
UTC), ``kind`` (``AuditKind``), ``data`` (JSON without personal data: subject ids are keyed-HMAC
tokens, field paths have their keys normalized), ``prev_hash`` (the lane's previous record) and,
on the first record of each append, ``witness``: the lane, seq and hash of the newest record of
another lane the writer saw, a cross-link that ties the lanes together (cutting another lane's
tail, or rewriting a record another lane witnessed, is noticed). ``hash`` is the SHA-256 of the
canonical JSON of all those fields. Changing, removing or inserting a record breaks its lane,
and ``verify`` names the first bad record by lane and seq.

Lane 0 is the single chain written before lanes existed (records without a ``lane`` field,
hashed without one, head and anchor in ``rt:{audit}:head`` / ``rt:{audit}:anchor``): it stays
verifiable as it is and nothing new is appended to it.

Keys:

- ``rt:{audit}``          the records (stream entries: lane, seq, at, kind, data, prev, hash,
                          witness?)
- ``rt:{audit}:lanes``    the last lane number handed out (lanes are numbered 1, 2, 3...)
- ``rt:{audit}:heads``    lane -> "seq hash" of its last record (so a removed tail is noticed)
- ``rt:{audit}:anchors``  lane -> "seq hash" of its last *trimmed* record (verification of what
                          is left starts from it)
- ``rt:{audit}:last``     lane, seq and hash of the newest record of any lane (the next witness)
- ``rt:{audit}:head``, ``rt:{audit}:anchor``  lane 0's head and anchor (before lanes)

Why lanes: SHA-256 cannot run inside Redis (its Lua has SHA-1 only), so one shared chain means
a client must read the head, hash, and append only if the head did not move: with 32 writers
at once most attempts lose and a writer can lose forever. A lane has one writer, so its append
script only checks that the head is the one the writer holds (a safety net that fails only
when two writers share a lane by mistake; the writer then re-chains once).

Entry points::

    log = AuditLog(client, key=secret)                      # key: for subject tokens
    await log.append(AuditKind.RELEASE, {"destination": "ga4"})
    writer = AuditWriter(log); writer.start()               # buffered, for the hot path:
    writer.record_decisions(decision_notes(event, consent, decisions, key=secret))  # sync
    result = await verify(client)                           # `router audit verify`
    async for line in export(client): ...                   # JSON lines

The pure core (``chain_hash``, ``seal``, ``verify_records``) does no I/O; the records about
requests (``AuditKind``, ``decision_notes``, ``subject_token``) are built in
``router.core.audit_records``.
Tamper evidence covers edits by anyone who cannot also rewrite every later record of the lane,
its head and the other lanes' witnesses; for more, keep ``verify``'s heads (or an export's
last hashes) somewhere else now and then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.compliance.audit_chain import (
    GENESIS,
    GENESIS_ANCHOR,
    LEGACY_LANE,
    Anchor,
    AuditRecord,
    TrailVerifier,
    VerifyResult,
    canonical,
    record_name,
    sealed_hash,
)
from router.compliance.audit_groups import (
    Buffered,
    DecisionGroup,
    Prepared,
    flush_records,
    group_decisions,
    now_text,
)
from router.compliance.subject_index import unindex
from router.compliance.subject_tokens import (
    IndexGroups,
    group_for_index,
    index_arguments,
)
from router.core.audit_records import AuditKind, DecisionNote, SharedDecision, subject_token
from router.errors import AuditConflictError
from router.observability.metrics import Stats
from router.periodic import Periodic
from router.queue.backend import run_script
from router.queue.keys import AUDIT, AuditPart, audit_key

log = logging.getLogger("router.audit")

STREAM: Final = AUDIT
PAGE: Final = 500


# --- Redis ---------------------------------------------------------------------------------------

_OPEN = """
local lane = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], lane, '0 ' .. ARGV[1])
local last = redis.call('HMGET', KEYS[3], 'lane', 'seq', 'hash')
if last[1] then return {lane, last[1], last[2], last[3]} end
local legacy = redis.call('HMGET', KEYS[4], 'seq', 'hash')
if legacy[1] then return {lane, '0', legacy[1], legacy[2]} end
return {lane}
"""
"""Open a lane: its number, registered with an empty head; and the newest record of any lane
(or lane 0's head), the first witness."""

_APPEND = """
local lane = ARGV[1]
local head = redis.call('HGET', KEYS[2], lane)
if head ~= ARGV[2] then return {0, head or ''} end
local before = redis.call('HMGET', KEYS[3], 'lane', 'seq', 'hash')
local ids, scores = {}, {}
local i = 4
for r = 1, tonumber(ARGV[3]) do
  local id
  if ARGV[i + 6] == '' then
    id = redis.call('XADD', KEYS[1], '*', 'lane', lane, 'seq', ARGV[i], 'at', ARGV[i + 1],
      'kind', ARGV[i + 2], 'data', ARGV[i + 3], 'prev', ARGV[i + 4], 'hash', ARGV[i + 5])
  else
    id = redis.call('XADD', KEYS[1], '*', 'lane', lane, 'seq', ARGV[i], 'at', ARGV[i + 1],
      'kind', ARGV[i + 2], 'data', ARGV[i + 3], 'prev', ARGV[i + 4], 'hash', ARGV[i + 5],
      'witness', ARGV[i + 6])
  end
  ids[r] = id
  scores[r] = string.match(id, '^(%d+)')
  i = i + 7
end
local last = i - 7
local k = 4
while i < #ARGV do
  local members, m = {}, 0
  for r in string.gmatch(ARGV[i], '%d+') do
    r = tonumber(r)
    members[m + 1] = scores[r]
    members[m + 2] = ids[r]
    m = m + 2
  end
  for _ = 1, tonumber(ARGV[i + 1]) do
    for c = 1, m, 1000 do
      redis.call('ZADD', KEYS[k], unpack(members, c, math.min(c + 999, m)))
    end
    k = k + 1
  end
  i = i + 2
end
redis.call('HSET', KEYS[2], lane, ARGV[last] .. ' ' .. ARGV[last + 5])
redis.call('HSET', KEYS[3], 'lane', lane, 'seq', ARGV[last], 'hash', ARGV[last + 5])
return {1, before[1] or '', before[2] or '', before[3] or ''}
"""
"""Append a lane's records if its head is the one the writer holds (it always is, unless two
writers share the lane); returns the newest record of any lane before them (the next witness).

Arguments: lane, head, the number of records, seven per record (seq, at, kind, data, prev,
hash, witness), then two per group of records naming the same subjects
(``router.compliance.subject_tokens.index_arguments``): the records' ordinals (1-based,
space-separated) and how many subject index sets (``router.compliance.subject_index``) of
``KEYS`` from the 4th on, in order, are the group's. Each set gets one ``ZADD`` of the group's
records (in chunks of 500), in the same atomic step; the members are built once per group (the
destinations' records of a request name the same people: under distinct users' load a set per
record and subject, each parsing its own ordinals, was a third of the script's time)."""

_STATE = """
return {redis.call('GET', KEYS[1]) or '', redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5])}
"""
"""The lane count, lane heads and anchors, and lane 0's head and anchor, read at one instant
(a script, not MULTI/EXEC: redis-py 7.4's cluster transactions pass routing arguments to the
reply parsers of HGETALL and fail)."""

_TRIM = """
local found = redis.call('XRANGE', KEYS[1], '-', ARGV[1])
if #found == 0 then return 0 end
local last = {}
for _, entry in ipairs(found) do
  local fields = entry[2]
  local lane, seq, hash = '0', nil, nil
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'lane' then lane = fields[i + 1]
    elseif name == 'seq' then seq = fields[i + 1]
    elseif name == 'hash' then hash = fields[i + 1] end
  end
  if seq and hash and tonumber(seq) then last[lane] = {seq, hash} end
end
for lane, anchor in pairs(last) do
  if lane == '0' then
    local current = redis.call('HGET', KEYS[2], 'seq')
    if not current or tonumber(current) < tonumber(anchor[1]) then
      redis.call('HSET', KEYS[2], 'seq', anchor[1], 'hash', anchor[2])
    end
  else
    local current = redis.call('HGET', KEYS[3], lane)
    if not current or tonumber(string.match(current, '^(%d+)')) < tonumber(anchor[1]) then
      redis.call('HSET', KEYS[3], lane, anchor[1] .. ' ' .. anchor[2])
    end
  end
end
local ms, s = string.match(ARGV[1], '^(%d+)-(%d+)$')
return redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(s) + 1))
"""
"""Drop the records up to an entry id; each lane's last dropped record becomes its anchor."""

MAX_RECORDS_PER_APPEND: Final = 1000
YIELD_AFTER_S: Final = 0.004
"""CPU time an append spends encoding or hashing records before it yields to the event loop
once, until its ``yield_until``. The audit writer's flush holds a second's worth of decisions
(21,000 under single-event load: encoding and hashing them in one go held the loop for 10 ms,
the ingest's p99), and yields until half its interval has passed.
Under a saturating load each yield waits for a whole turn of the loop (10-20 ms of other
requests' work): a flush that kept yielding (or that took several round trips) fell behind
and the writer dropped decisions past ``max_buffer``; past the deadline it finishes in one
go."""

PART_EVENTS: Final = 1000
"""An append script holds records of about this many decisions at most (a ``decisions``
record weighs its events, any other record one; a heavier record goes alone); a bigger append
is several scripts sent in one pipeline, one round trip. Redis runs a script in one go but
reads a pipeline's big arguments a read at a time, serving its other clients in between, so
the ingest's lookups and enqueues wait for one part at most. Under distinct users' load one
script of a flush's decisions held Redis for 100-440 ms, every request of the router waited
on a lookup or an enqueue behind it, and the router stood idle 12 % of its time."""

ROW_EVENTS: Final = 4 * PART_EVENTS
"""A part goes on past ``PART_EVENTS``, up to this, while its records name the same people
(the flush puts the destinations' records of the same events next to each other): the index
then gets one ``ZADD`` per person naming all of them, not one per record (under distinct users'
load, 4.5 one-member ``ZADD`` per event became 2, each of three members)."""


class _Pacer:
    """When a long encoding or hashing loop yields to the event loop: after every
    ``YIELD_AFTER_S`` of work, until ``until`` (a ``time.monotonic()``; 0: never)."""

    __slots__ = ("started", "until")

    def __init__(self, until: float) -> None:
        self.until = until
        self.started = time.perf_counter()

    def due(self) -> bool:
        """Whether to yield now (the next slice of work starts either way)."""
        if not self.until or time.perf_counter() - self.started < YIELD_AFTER_S:
            return False
        self.started = time.perf_counter()
        return time.monotonic() < self.until


_Entry = tuple[str, str, dict[str, Any], bytes, list[str] | None]
"""A record waiting for its append: at, kind, data, data JSON, subject tokens (None: to be
found in the data)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def record_of(fields: Mapping[bytes, bytes]) -> AuditRecord:
    """A record from its stream entry's fields (unreadable parts marked ``_invalid``)."""
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
    try:
        lane = int(fields.get(b"lane", b"0"))
    except ValueError:
        lane = -1
    witness: Mapping[str, Any] | None = None
    if b"witness" in fields:
        try:
            witness = json.loads(fields[b"witness"])
        except ValueError:
            witness = {"_invalid": True}
        if not isinstance(witness, dict):
            witness = {"_invalid": True}
    return AuditRecord(
        seq=seq,
        at=_text(fields.get(b"at", b"")),
        kind=_text(fields.get(b"kind", b"")),
        data=data,
        prev_hash=_text(fields.get(b"prev", b"")),
        hash=_text(fields.get(b"hash", b"")),
        lane=lane,
        witness=witness,
    )


def _anchor_of(fields: Mapping[bytes, bytes]) -> Anchor | None:
    if b"seq" not in fields or b"hash" not in fields:
        return None
    return Anchor(int(fields[b"seq"]), fields[b"hash"].decode())


def _lane_anchor(value: bytes | str) -> Anchor:
    """``"seq hash"`` as kept in ``rt:{audit}:heads`` and ``rt:{audit}:anchors``."""
    seq, _, digest = _text(value).partition(" ")
    return Anchor(int(seq), digest)


def _lane_anchors(fields: Mapping[bytes, bytes]) -> dict[int, Anchor]:
    out: dict[int, Anchor] = {}
    for lane, value in fields.items():
        try:
            out[int(lane)] = _lane_anchor(value)
        except ValueError:
            continue  # not a lane: verification reports the lane as missing, if it is one
    return out


def _weight(data: Mapping[str, Any]) -> int:
    """A record's weight in an append's part (``PART_EVENTS``): 1, plus its events."""
    events = data.get("events")
    return 1 + (len(events) if isinstance(events, list) else 0)


@dataclass(slots=True)
class _Part:
    """One append script of an append: its records, and its keys and arguments (``_APPEND``:
    the index's come last, added by ``close``)."""

    lane: int
    seq: int
    """The seq and hash of the head the part follows."""
    prev: str
    records: list[AuditRecord] = field(default_factory=list)
    args: list[str | bytes | int] = field(default_factory=list)
    groups: IndexGroups = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    weight: int = 0

    def close(self, stream: str) -> _Part:
        """The part with its header and index arguments in place."""
        index_keys, index_args = index_arguments(stream, self.groups)
        self.keys = [stream, audit_key(stream, "heads"), audit_key(stream, "last"), *index_keys]
        self.args = [str(self.lane), f"{self.seq} {self.prev}", len(self.records), *self.args]
        self.args += index_args
        return self


@dataclass(slots=True)
class _Pending:
    """Records waiting for the next append of the lane (``_Entry``)."""

    entries: list[_Entry]
    done: asyncio.Future[list[AuditRecord]]
    yield_until: float = 0.0
    """``append_many``'s (a ``time.monotonic()``; 0: never): the append may yield until then."""


@dataclass(slots=True)
class AuditLog:
    """One writer of the audit stream: its own lane, opened at the first append.

    Appends are serialized in the process and the ones that arrive while an append is in
    flight are written together in the next round trip (group commit), so 32 concurrent
    callers cost a few round trips and none can be starved. Share one ``AuditLog`` per process
    (each instance opens its own lane); reading (``verify``, ``export``) needs no lane.
    """

    client: aioredis.Redis
    key: bytes = b""
    """Key of the subject tokens (``ROUTER_AUDIT_KEY``); set one in production."""
    stream: str = STREAM
    clock: Callable[[], datetime] = _utc_now
    max_attempts: int = 3
    _lane: int | None = field(default=None, init=False, repr=False)
    _head: Anchor = field(default=GENESIS_ANCHOR, init=False, repr=False)
    _witness: str | None = field(default=None, init=False, repr=False)
    _pending: list[_Pending] = field(default_factory=list, init=False, repr=False)
    _drain: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    @property
    def lane(self) -> int | None:
        """This writer's lane (None before its first append)."""
        return self._lane

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
        yield_until: float = 0.0,
        prepared: Sequence[Prepared | None] = (),
    ) -> list[AuditRecord]:
        """Append records in order onto this writer's lane: atomically up to ``PART_EVENTS``
        decisions, in atomic parts beyond. Raises ``RedisError`` or ``OSError`` when Redis
        cannot be reached: then none, all, or the first parts were written, and appending the
        same records again writes only the rest (``_append_group``).

        ``yield_until`` (a ``time.monotonic()``; 0, the default: never): until then, encoding
        and hashing the records yields to the event loop every ``YIELD_AFTER_S`` of CPU (the
        audit writer's flush, whose deadline is half its interval: past it, the rest is done
        in one go). ``prepared``: per record (by position; none past its end), its
        ``Prepared`` JSON and subject tokens when the caller has them (the audit writer's
        ``decisions`` records)."""
        if not items:
            return []
        if isinstance(at, Sequence):
            texts: dict[datetime, str] = {}  # records of one request share their time
            times = [texts[t] if t in texts else texts.setdefault(t, now_text(t)) for t in at]
        else:
            times = [now_text(at or self.clock())] * len(items)
        # Each record's data is encoded once; a big append lets requests run between slices.
        entries: list[_Entry] = []
        pacer = _Pacer(yield_until)
        known = len(prepared)
        for i, (t, (kind, data)) in enumerate(zip(times, items, strict=True)):
            ready = prepared[i] if i < known else None
            if ready is None:
                entries.append((t, str(kind), dict(data), canonical(data), None))
            else:
                entries.append((t, str(kind), dict(data), ready[0], ready[1]))
            if pacer.due():
                await asyncio.sleep(0)
        pending = _Pending(entries, asyncio.get_running_loop().create_future(), yield_until)
        self._pending.append(pending)
        if self._drain is None or self._drain.done():
            # A task of its own: a caller that is cancelled does not stop the others' appends.
            self._drain = asyncio.ensure_future(self._write_pending())
        return await asyncio.shield(pending.done)

    async def _write_pending(self) -> None:
        """Write what is pending, a group of callers per round trip, until nothing is left."""
        while self._pending:
            group: list[_Pending] = []
            size = 0
            while self._pending and (
                not group or size + len(self._pending[0].entries) <= (MAX_RECORDS_PER_APPEND)
            ):
                size += len(self._pending[0].entries)
                group.append(self._pending.pop(0))
            try:
                records = await self._append_group(
                    [e for p in group for e in p.entries],
                    yield_until=min(p.yield_until for p in group),  # 0 if a caller has none
                )
            except asyncio.CancelledError:
                for pending in group + self._pending:
                    pending.done.cancel()
                self._pending.clear()
                raise
            except Exception as exc:  # handed to every caller of the group
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
                        pending.done.exception()  # retrieved: a cancelled caller never will
                continue
            start = 0
            for pending in group:
                end = start + len(pending.entries)
                if not pending.done.done():
                    pending.done.set_result(records[start:end])
                start = end

    async def _open(self) -> None:
        result = await run_script(
            self.client,
            _OPEN,
            keys=[
                audit_key(self.stream, "lanes"),
                audit_key(self.stream, "heads"),
                audit_key(self.stream, "last"),
                audit_key(self.stream, "head"),
            ],
            args=[GENESIS],
        )
        self._lane = int(result[0])
        self._head = GENESIS_ANCHOR
        self._witness = None
        if len(result) == 4:
            self._witness = self._witness_of(result[1], result[2], result[3])

    def _witness_of(self, lane: Any, seq: Any, digest: Any) -> str | None:
        """The canonical JSON of a witness, unless it is empty or of this writer's lane."""
        if not _text(lane) or not _text(seq) or int(_text(lane)) == self._lane:
            return None
        return _text(
            canonical({"lane": int(_text(lane)), "seq": int(_text(seq)), "hash": _text(digest)})
        )

    async def _append_group(
        self,
        entries: Sequence[_Entry],
        *,
        yield_until: float = 0.0,
    ) -> list[AuditRecord]:
        """Append ``entries`` in parts (``PART_EVENTS``), one script each, in one round trip.

        Each part is atomic, and checks that the lane's head is the one it follows: after a
        part fails, so do the parts after it. A part that landed although its reply was lost
        (the connection broke) is found at the next append of the same entries (the flush
        puts them back first): the lane's head is then one of their records, same seq and
        hash, and the append goes on after it instead of writing them twice."""
        written: list[AuditRecord] = []
        for _ in range(self.max_attempts):
            if self._lane is None:
                await self._open()
            assert self._lane is not None
            parts = await self._parts(self._lane, entries[len(written) :], yield_until)
            results = await self._run(parts)
            failed = len(parts)
            for number, (part, result) in enumerate(zip(parts, results, strict=True)):
                if int(result[0]) != 1:
                    failed = number
                    break
                written += part.records
                self._head = Anchor(part.records[-1].seq, part.records[-1].hash)
                # The newest record of another lane before the part (the next witness).
                seen = self._witness_of(result[1], result[2], result[3])
                if seen is not None or number == 0:
                    self._witness = seen
            if failed == len(parts):
                return written
            current = _text(results[failed][1])
            rest = [r for part in parts[failed:] for r in part.records]
            heads = [f"{r.seq} {r.hash}" for r in rest]
            if current in heads:
                # An earlier append of these entries landed up to there, its reply lost.
                written += rest[: heads.index(current) + 1]
                self._head = _lane_anchor(current)
                self._witness = None
                continue
            if current:
                # Another writer holds this lane (a copied AuditLog): chain onto its head.
                self._head = _lane_anchor(current)
            else:
                self._lane = None  # the lane is gone from the registry: open a new one
            log.warning("audit lane head moved; appending again", extra={"lane": self._lane})
        raise AuditConflictError("could not append to the audit lane")

    async def _parts(self, lane: int, entries: Sequence[_Entry], yield_until: float) -> list[_Part]:
        """The append scripts' records, keys and arguments for ``entries`` (``_APPEND``),
        chained onto this writer's head; the witness goes on the first record."""
        parts: list[_Part] = []
        seq, prev, witness = self._head.seq, self._head.hash, self._witness
        pacer = _Pacer(yield_until)
        part = _Part(lane, seq, prev)
        named: list[str] | None = None
        for moment, kind, data, data_json, subjects in entries:
            if pacer.due():
                await asyncio.sleep(0)  # only this task appends to the lane: nothing moves
            weight = _weight(data)
            same = subjects is not None and subjects == named  # the people of the last record
            if part.records and part.weight + weight > (ROW_EVENTS if same else PART_EVENTS):
                parts.append(part.close(self.stream))
                part = _Part(lane, seq, prev)
            named = subjects
            seq += 1
            digest = sealed_hash(
                seq, moment, kind, data_json, prev, lane=lane, witness_json=witness
            )
            parsed = json.loads(witness) if witness is not None else None
            part.records.append(AuditRecord(seq, moment, kind, data, prev, digest, lane, parsed))
            part.args += [str(seq), moment, kind, data_json, prev, digest, witness or ""]
            group_for_index(kind, data, part.groups, str(len(part.records)), subjects)
            part.weight += weight
            prev = digest
            witness = None
        if part.records:
            parts.append(part.close(self.stream))
        return parts

    async def _run(self, parts: Sequence[_Part]) -> list[Any]:
        """Each part's script reply: one script, or a pipeline of them (one round trip)."""
        if len(parts) == 1:
            return [await run_script(self.client, _APPEND, keys=parts[0].keys, args=parts[0].args)]
        pipe = self.client.pipeline(transaction=False)
        for part in parts:
            pipe.eval(_APPEND, len(part.keys), *part.keys, *part.args)
        return list(await pipe.execute())

    async def head(self) -> Anchor:
        """This writer's last record's seq and hash (genesis before its first append)."""
        if self._lane is None:
            return GENESIS_ANCHOR
        value = await self.client.hget(audit_key(self.stream, "heads"), str(self._lane))  # type: ignore[misc]
        return GENESIS_ANCHOR if value is None else _lane_anchor(value)

    async def anchor(self) -> Anchor:
        """Where verification of this writer's lane starts: its last trimmed record, or
        genesis."""
        if self._lane is None:
            return GENESIS_ANCHOR
        value = await self.client.hget(audit_key(self.stream, "anchors"), str(self._lane))  # type: ignore[misc]
        return GENESIS_ANCHOR if value is None else _lane_anchor(value)

    async def records(self) -> AsyncIterator[AuditRecord]:
        """Every record still in the stream, oldest first (every lane)."""
        start = "-"
        while True:
            page = await self.client.xrange(self.stream, min=start, count=PAGE)
            for entry_id, fields in page:
                yield record_of(fields)
                start = "(" + _text(entry_id)
            if len(page) < PAGE:
                return

    async def verify(self) -> VerifyResult:
        """Check every lane from its anchor to its head, and the witnesses between lanes
        (records appended meanwhile are left for the next run; a trim that moved an anchor
        meanwhile causes one retry)."""
        result = await self._verify_once()
        if not result.ok:
            again = await self._verify_once()
            if again.ok:
                return again
        return result

    async def _verify_once(self) -> VerifyResult:
        parts: tuple[AuditPart, ...] = ("lanes", "heads", "anchors", "head", "anchor")
        lanes, *maps = await run_script(
            self.client, _STATE, keys=[audit_key(self.stream, part) for part in parts], args=[]
        )
        heads_raw, anchors_raw, legacy_head, legacy_anchor = (
            dict(zip(flat[::2], flat[1::2], strict=True)) for flat in maps
        )
        heads: dict[int, Anchor | None] = dict(_lane_anchors(heads_raw))
        heads[LEGACY_LANE] = _anchor_of(legacy_head)
        anchors = _lane_anchors(anchors_raw)
        anchors[LEGACY_LANE] = _anchor_of(legacy_anchor) or GENESIS_ANCHOR
        verifier = TrailVerifier(anchors, heads=heads, lanes=int(lanes or 0))
        async for record in self.records():
            failed = verifier.feed(record)
            if failed is not None:
                return failed
        if verifier.later:
            handed_out = int(await self.client.get(audit_key(self.stream, "lanes")) or 0)
            for lane, record in sorted(verifier.later.items()):
                if lane > handed_out:
                    return verifier.refuse(
                        record, f"{record_name(lane, record.seq)}: its lane is unknown"
                    )
        return verifier.finish()

    async def export(self) -> AsyncIterator[str]:
        """Every record as one JSON line (ending in a newline), oldest first."""
        async for record in self.records():
            yield canonical(record.to_json()).decode() + "\n"

    async def trim(
        self, *, max_records: int | None = None, older_than: datetime | None = None
    ) -> int:
        """Drop the oldest records (beyond ``max_records``, or older than ``older_than``).

        Each lane's last dropped record becomes its anchor, so the rest still verifies.
        """
        dropped = 0
        while True:
            candidates = await self._trim_point(max_records, older_than)
            if not candidates:
                return dropped
            last_id = _text(candidates[-1][0])
            removed = int(
                await run_script(
                    self.client,
                    _TRIM,
                    keys=[
                        self.stream,
                        audit_key(self.stream, "anchor"),
                        audit_key(self.stream, "anchors"),
                    ],
                    args=[last_id],
                )
            )
            # The subject index follows: the trimmed records leave their subjects' sets (a
            # lookup drops what an interrupted trim left behind).
            trimmed = [(_text(i), record_of(fields)) for i, fields in candidates]
            await unindex(self.client, self.stream, ((i, r.kind, r.data) for i, r in trimmed))
            if removed == 0:
                return dropped
            dropped += removed

    async def _trim_point(self, max_records: int | None, older_than: datetime | None) -> list[Any]:
        """The oldest records to trim (at most 10,000 at a time), as stream entries."""
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
        return candidates


async def verify(client: aioredis.Redis, stream: str = STREAM) -> VerifyResult:
    """Verify the audit trail stored in ``client`` (``router audit verify``)."""
    return await AuditLog(client, stream=stream).verify()


async def export(client: aioredis.Redis, stream: str = STREAM) -> AsyncIterator[str]:
    """The audit trail as JSON lines (``GET /admin/audit/export``)."""
    async for line in AuditLog(client, stream=stream).export():
        yield line


@dataclass(slots=True)
class AuditWriter:
    """Buffers records from the hot path and appends them once per ``flush_every_s``.

    ``record`` never awaits. Records wait in memory for at most one interval; when Redis is
    down they are kept (up to ``max_buffer``, then the oldest are dropped and counted) and
    retried. ``retention_records`` trims the stream every ``trim_every_s``.

    ``record_decisions`` takes ``decision_notes``' output and, at each flush, writes one
    ``decisions`` record per group of decisions that differ only in their event (their
    ``SharedDecision``: destination, deliver or skip, reason, sent, removed and transformed
    paths, consent sources): the shared part once, then ``events``, each ``{"event",
    "subjects", "consent_at"}`` (keyed tokens and a time), with ``from``/``to`` (the interval)
    and ``count``. The same facts as one record per decision, at a fraction of the hashing,
    encoding and Redis memory: decisions arrive at event rate, most events of a source have
    the same shape.
    """

    log: AuditLog
    flush_every_s: float = 1.0
    max_buffer: int = 100_000
    retention_records: int | None = 10_000_000
    retention_days: float | None = None
    trim_every_s: float = 3600.0
    dropped: int = 0
    """Records and decisions dropped past ``max_buffer`` (also counted as
    ``router_audit_dropped_total`` when ``stats`` is given)."""
    stats: Stats | None = None
    _unreported: int = 0
    """Dropped since the last flush logged it (one warning per flush, not per request)."""
    _buffer: list[Buffered] = field(default_factory=list)
    _groups: dict[SharedDecision, DecisionGroup] = field(default_factory=dict)
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
        self._buffer.append((str(kind), data, self.log.clock(), None))
        self._bound()

    def record_many(self, entries: Iterable[tuple[AuditKind | str, Mapping[str, Any]]]) -> None:
        """Queue several records (``decision_entries``' output), all with the same time."""
        moment = self.log.clock()
        self._buffer.extend((str(kind), data, moment, None) for kind, data in entries)
        self._bound()

    def record_decisions(self, notes: Iterable[DecisionNote]) -> None:
        """Queue ``decision_notes``' decisions, grouped by their shared part (see the class)."""
        added, dropped = group_decisions(
            self._groups, notes, self.log.clock(), self.max_buffer - self._grouped
        )
        self._grouped += added
        if dropped:
            self._dropped(dropped)

    def _bound(self) -> None:
        if len(self._buffer) > self.max_buffer:
            excess = len(self._buffer) - self.max_buffer
            del self._buffer[:excess]
            self._dropped(excess)

    def _dropped(self, count: int) -> None:
        """Count what the bounded buffer could not keep: the audit trail misses it."""
        self.dropped += count
        self._unreported += count
        if self.stats is not None:
            self.stats.add("router_audit_dropped_total", amount=count)

    async def flush(self) -> int:
        """Append what is buffered; the count of records appended."""
        if self._unreported:
            log.warning(
                "audit records dropped: the buffer was full", extra={"count": self._unreported}
            )
            self._unreported = 0
        if self._groups:
            groups, self._groups, self._grouped = self._groups, {}, 0
            self._buffer += flush_records(groups)
            self._bound()
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        done = 0
        # Until half the interval has passed, requests run between slices of the encoding and
        # hashing; then the rest is done in one go, so that a flush keeps up with a saturating
        # load. The log sends a big append in parts (``PART_EVENTS``), in one round trip.
        deadline = time.monotonic() + self.flush_every_s / 2
        try:
            while done < len(batch):
                part = batch[done : done + MAX_RECORDS_PER_APPEND]
                await self.log.append_many(
                    [(kind, data) for kind, data, _, _ in part],
                    at=[t for _, _, t, _ in part],
                    yield_until=deadline,
                    prepared=[ready for _, _, _, ready in part],
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
