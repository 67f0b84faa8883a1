"""Stored consent in Redis: one record per subject, a bounded history, a coherent local cache.

Keys (hashed subject ids only, never the ids themselves: ``consent.ids.subject_key``):

- ``rt:consent:{<sha256>}``      the subject's current record (JSON), expiring ``max_age_days``
  after the consent's own timestamp
- ``rt:consent-log:{<sha256>}``  the subject's history: a stream capped at the last
  ``history_max`` applied changes, kept as proof of what was recorded and when
- ``rt:suppressed:{<sha256>}``   present when the subject was erased (``suppressed_key``)
- channel ``rt:consent:changed`` carries the hashed subject of every write and erasure

The braces are a Redis Cluster hash tag: a subject's three keys live in one slot, so the write
script and the erasure touch one slot per subject, on one server as on a cluster.

A write is one Lua script per subject (atomic per subject): a record older than the stored one
is ignored (newest wins), an erased subject gets no record back, a write whose source may not
grant only adds withdrawals (``consent.records.narrow``), and every applied change is appended
to the history and published. Each process keeps an LRU cache of records, negative lookups
included, and evicts a subject when its hash is published; while the subscription is down the
cache is bypassed and cleared, so a withdrawal is seen by every process as soon as Redis
delivers the message (milliseconds), and a hot subject costs no round trip. On a cluster the
subscription is a plain connection to one node (PUBLISH reaches every node of a cluster), moved
to another node when that one fails.

Group lookup (like the enqueuer's group commit): the cache misses of concurrent requests share
one round trip. The first miss opens a group and schedules its read for the next turn of the
event loop; requests that miss meanwhile join it; while one read is in flight, the next group
gathers. Each request gets exactly what its own MGET would have returned, and its cache
bookkeeping (a subject invalidated while its read was in flight is not cached) is its own.

This is the I/O edge of the consent package: the rules stay in ``consent.resolve`` and
``consent.policy``, the record and the merge of a person's records in ``consent.records``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.exceptions import RedisError

from consent.cache import (
    begin_reads,
    end_reads,
    evict,
    read_keys,
    record_key,
    remember,
    split_replies,
    suppressed_key,
    take_cached,
)
from consent.ids import normalize_id, subject_key
from consent.model import StoredConsent
from consent.records import ConsentRecord, UnreadableRecordError, merge_records, millis

log = logging.getLogger("consent.store")

CHANNEL = "rt:consent:changed"
HISTORY_MAX = 100
CACHE_SIZE = 50_000


def history_key(subject: str) -> str:
    """The change history of a hashed subject."""
    return f"rt:consent-log:{{{subject}}}"


async def read_many(client: aioredis.Redis, keys: Sequence[str]) -> list[bytes | None]:
    """GET of many keys in one round trip: MGET on one server; on a cluster (where MGET must
    stay in one slot) one GET per key in a pipeline, sent to each node at once."""
    if not keys:
        return []
    if not isinstance(client, RedisCluster):
        return list(await client.mget(list(keys)))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(await pipe.execute())


def _decode(raw: bytes, now: datetime) -> ConsentRecord:
    """The stored record; a corrupt one is logged and grants nothing (fail closed)."""
    try:
        return ConsentRecord.decode(raw)
    except UnreadableRecordError:
        log.warning("unreadable consent record; it grants nothing")
        return ConsentRecord.unreadable(now)


class WriteOutcome(StrEnum):
    """What a write did to one subject's record."""

    WRITTEN = "written"
    STALE = "stale"
    """A newer record is stored: the write was ignored."""
    SUPPRESSED = "suppressed"
    """The subject was erased: nothing is stored for it any more."""
    EXPIRED = "expired"
    """The consent is older than ``max_age_days``: nothing to store."""
    UNCHANGED = "unchanged"
    """A write that may not grant added no withdrawal to the stored record: nothing stored."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did: per hashed subject, and the grants it was not allowed to make."""

    outcomes: dict[str, WriteOutcome]
    refused: frozenset[str] = frozenset()
    """Categories the write granted that its source may not grant and that were not already
    granted (for some subject): not stored. Its withdrawals were stored all the same."""


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed (counts only)."""

    consent_records: int
    history_entries: int
    newly_suppressed: int


# KEYS: the subject's record and history keys, then its suppression key when ARGV[1] is "1" (one
# subject per call: its keys share a hash slot).
# ARGV: guard flag, record JSON, updated_at ms, expires_at ms, history cap, channel, granted,
# denied, source, received_at ms, narrow flag, then the hashed subject.
#
# Narrow ("1": the source may not grant): the write only withdraws. Per subject, the stored
# record becomes the current one (if any) with the write's denials added and those categories
# no longer granted; a grant the current record does not already hold is refused (returned,
# not stored); a write that adds no denial stores nothing ("unchanged"). The same rule as
# ``consent.records.narrow``, applied atomically here. Categories and sources are identifiers
# (no character needs escaping), so the record is written as JSON by concatenation.
_WRITE = """
local n = #ARGV - 11
local guard = ARGV[1] == '1'
local narrow = ARGV[11] == '1'
local function set_of(csv)
  local t = {}
  for c in string.gmatch(csv, '[^,]+') do t[c] = true end
  return t
end
local function sorted(t)
  local l = {}
  for c in pairs(t) do l[#l + 1] = c end
  table.sort(l)
  return l
end
local function json_list(l)
  if #l == 0 then return '[]' end
  return '["' .. table.concat(l, '","') .. '"]'
end
local want_granted, want_denied = set_of(ARGV[7]), set_of(ARGV[8])
local out = {}
for i = 1, n do
  local subject = ARGV[11 + i]
  local record, history = KEYS[2 * i - 1], KEYS[2 * i]
  local outcome = 'written'
  local stored = nil
  local refused = {}
  local value, granted, denied = ARGV[2], ARGV[7], ARGV[8]
  if guard and redis.call('EXISTS', KEYS[2 * n + i]) == 1 then
    outcome = 'suppressed'
  else
    local current = redis.call('GET', record)
    if current then
      local ok, decoded = pcall(cjson.decode, current)
      if ok and type(decoded) == 'table' then
        stored = decoded
        local at = tonumber(stored['updated_at_ms'])
        if at and at > tonumber(ARGV[3]) then outcome = 'stale' end
      end
    end
  end
  if outcome == 'written' and narrow then
    local g, d = {}, {}
    if stored then
      if type(stored['granted']) == 'table' then
        for _, c in ipairs(stored['granted']) do g[c] = true end
      end
      if type(stored['denied']) == 'table' then
        for _, c in ipairs(stored['denied']) do d[c] = true end
      end
    end
    for c in pairs(d) do g[c] = nil end
    for c in pairs(want_granted) do
      if not g[c] then refused[#refused + 1] = c end
    end
    local changed = false
    for c in pairs(want_denied) do
      if not d[c] then changed = true end
      d[c] = true
      g[c] = nil
    end
    if changed then
      local gl, dl = sorted(g), sorted(d)
      granted, denied = table.concat(gl, ','), table.concat(dl, ',')
      value = '{"granted":' .. json_list(gl) .. ',"denied":' .. json_list(dl)
        .. ',"source":"' .. ARGV[9] .. '","updated_at_ms":' .. ARGV[3]
        .. ',"received_at_ms":' .. ARGV[10] .. ',"expires_at_ms":' .. ARGV[4] .. '}'
    else
      outcome = 'unchanged'
    end
  end
  if outcome == 'written' then
    redis.call('SET', record, value, 'PXAT', ARGV[4])
    redis.call('XADD', history, 'MAXLEN', ARGV[5], '*', 'granted', granted, 'denied', denied,
      'source', ARGV[9], 'updated_at_ms', ARGV[3], 'received_at_ms', ARGV[10])
    redis.call('PEXPIREAT', history, ARGV[4])
    redis.call('PUBLISH', ARGV[6], subject)
  end
  table.sort(refused)
  out[i] = {outcome, table.concat(refused, ',')}
end
return out
"""


# KEYS: a subject's record, history and (optional) suppression key. ARGV: channel, subject.
# Returns {records deleted, history entries deleted, newly suppressed}.
_ERASE = """
local marked = 0
if KEYS[3] then marked = redis.call('SET', KEYS[3], '1', 'NX') and 1 or 0 end
local entries = redis.call('XLEN', KEYS[2])
local records = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return {records, entries, marked}
"""


@dataclass(slots=True)
class _Group:
    """Concurrent requests' cache misses, read in one round trip."""

    done: asyncio.Future[dict[str, tuple[bytes | None, int]]]
    subjects: dict[str, None] = field(default_factory=dict)


class ConsentStore:
    """Stored consent with a process-local cache kept coherent by pub/sub invalidation.

    ``suppressed_key`` is the prefix of the erasure marks (``suppressed_key(prefix, subject)``):
    writes for a marked subject are refused atomically, and ``erase`` sets the marks. Call
    ``start`` before use and ``aclose`` at the end.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        suppressed_key: str | None = None,
        cache_size: int = CACHE_SIZE,
        history_max: int = HISTORY_MAX,
        channel: str = CHANNEL,
        ping_interval_s: float = 5.0,
        group_lookups: bool = True,
        subject_secret: bytes = b"",
    ) -> None:
        self._client = client
        self.subject_secret = subject_secret
        """Key of the subject hashes (``consent.ids.subject_key``): the caller's secret."""
        self._group_lookups = group_lookups
        self._open: _Group | None = None
        """The group concurrent misses join (its read is not sent yet)."""
        self._flight: asyncio.Task[None] | None = None
        """The group read in flight, if any."""
        self._suppressed_key = suppressed_key
        self._cache_size = cache_size
        self._history_max = history_max
        self._channel = channel
        self._ping_interval_s = ping_interval_s
        self._cache: OrderedDict[str, tuple[ConsentRecord | None, bool]] = OrderedDict()
        """Hashed subject -> (its record or None, whether it is suppressed)."""
        self._live = asyncio.Event()
        self._generation = 0
        self._reading: dict[str, int] = {}
        """Hashed subject -> how many reads of it are in flight (a plain dict: Counter's
        methods are Python, and a batch of new people brings hundreds of misses)."""
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        """Set by ``aclose``: the listener also checks it, in case a cancellation was
        swallowed inside the client library (redis-py has had such bugs)."""
        self._listening_on: str | None = None

    # -- lifecycle and coherence -------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to invalidations (in the background: Redis may be down at start-up)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._listen(), name="consent-invalidations")

    async def aclose(self) -> None:
        """Stop listening and drop the cache."""
        if self._task is not None:
            self._stopping.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._go_dark()

    @property
    def listening_on(self) -> str | None:
        """``host:port`` of the cluster node the invalidations are heard from (None on one
        server, where the client's own connection listens)."""
        return self._listening_on

    @property
    def live(self) -> bool:
        """Whether the cache is in use (the invalidation subscription is confirmed)."""
        return self._live.is_set()

    async def wait_live(self, timeout_s: float = 5.0) -> bool:
        """Wait until the cache is in use; ``False`` after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._live.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def cached(self) -> int:
        """How many subjects (records or known absences) the cache holds."""
        return len(self._cache)

    def invalidate(self, subject: str) -> None:
        """Forget a subject here (a read in flight for it will not be cached)."""
        self._cache.pop(subject, None)
        if subject in self._reading:
            self._dirty.add(subject)

    def _go_live(self) -> None:
        self._cache.clear()
        self._generation += 1
        self._live.set()

    def _go_dark(self) -> None:
        self._live.clear()
        self._generation += 1
        self._cache.clear()

    async def _listen(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            pubsub: Any = None
            node: aioredis.Redis | None = None
            try:
                pubsub, node = await self._subscriber(attempt)
                await pubsub.subscribe(self._channel)
                await self._receive(pubsub)
            except (RedisError, OSError) as exc:
                if self.live:
                    log.warning("consent invalidations lost", extra={"error": type(exc).__name__})
                self._go_dark()
                attempt += 1
                await asyncio.sleep(0.25)
            finally:
                self._go_dark()
                with contextlib.suppress(RedisError, OSError):
                    if pubsub is not None:
                        await pubsub.aclose()
                    if node is not None:
                        await node.aclose()

    async def _subscriber(self, attempt: int) -> tuple[Any, aioredis.Redis | None]:
        """A pub/sub of the client, or on a cluster (whose client has none) of a plain
        connection to one node: PUBLISH on a cluster reaches every node. Each new attempt takes
        the next node (replicas included: they hear every message too), so a dead node is
        left behind."""
        client = self._client
        if not isinstance(client, RedisCluster):
            return client.pubsub(), None
        if not client.get_nodes():
            await client.initialize()
        nodes = sorted(client.get_nodes(), key=lambda n: n.name)
        chosen = nodes[attempt % len(nodes)]
        self._listening_on = chosen.name
        options = client.get_connection_kwargs()
        node = aioredis.Redis(
            host=chosen.host,
            port=chosen.port,
            username=options.get("username"),
            password=options.get("password"),
            socket_timeout=options.get("socket_timeout"),
            socket_connect_timeout=options.get("socket_connect_timeout"),
            ssl=options.get("connection_class") is SSLConnection,
        )
        return node.pubsub(), node

    async def _receive(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while not self._stopping.is_set():
            message = await pubsub.get_message(timeout=self._ping_interval_s)
            if message is None:
                if loop.time() - heard < self._ping_interval_s:
                    continue
                if pinged:
                    raise ConnectionError("no answer to the invalidation channel's ping")
                await pubsub.ping()
                pinged = True
                continue
            heard, pinged = loop.time(), False
            kind = message.get("type")
            if kind == "subscribe":
                self._go_live()
            elif kind == "message":
                data = message.get("data")
                self.invalidate(data.decode() if isinstance(data, bytes) else str(data))

    # -- reads -------------------------------------------------------------------------------

    async def lookup(self, subjects: Iterable[str]) -> dict[str, ConsentRecord | None]:
        """Records of hashed subjects: cached ones free, the rest in one round trip (MGET)."""
        records, _ = await self.lookup_all(subjects)
        return records

    async def lookup_all(
        self, subjects: Iterable[str]
    ) -> tuple[dict[str, ConsentRecord | None], set[str]]:
        """Records and the suppressed subjects among them: cached ones cost no round trip,
        the rest one round trip (``read_many`` of their records and erasure marks).

        Suppression is cached with the record: erasure publishes the erased hashes on the
        invalidation channel like any write, so a cached "not suppressed" never outlives it.
        """
        now = datetime.now(UTC)
        found: dict[str, ConsentRecord | None] = {}
        suppressed: set[str] = set()
        if self.live:
            misses = take_cached(self._cache, subjects, now, found, suppressed)
        else:
            misses = list(dict.fromkeys(subjects))
        if not misses:
            return found, suppressed
        generation = self._generation
        begin_reads(self._reading, misses)
        try:
            if self._group_lookups:
                read = await self._read_grouped(misses)
            else:
                read = await self._read(misses)
        finally:
            fresh = end_reads(self._reading, self._dirty, misses)
        keep = fresh if self.live and generation == self._generation else set()
        remember(
            self._cache,
            misses,
            read,
            now,
            decode=_decode,
            found=found,
            suppressed=suppressed,
            keep=keep,
        )
        evict(self._cache, self._cache_size)
        return found, suppressed

    async def _read(self, subjects: Sequence[str]) -> dict[str, tuple[bytes | None, int]]:
        """Raw records and suppression flags of ``subjects``: one round trip."""
        marks = self._suppressed_key
        replies = await read_many(self._client, read_keys(subjects, marks))
        return split_replies(subjects, replies, marks is not None)

    async def _read_grouped(self, subjects: Sequence[str]) -> dict[str, tuple[bytes | None, int]]:
        """``_read``, shared with the concurrent requests that miss too (group lookup)."""
        group = self._open
        if group is None:
            group = self._open = _Group(asyncio.get_running_loop().create_future())
            # Sent from a task of its own: a caller that goes away (cancelled) cannot strand
            # the others waiting for the same read.
            asyncio.get_running_loop().create_task(self._send(group), name="consent-lookup")
        group.subjects.update(dict.fromkeys(subjects))
        return await asyncio.shield(group.done)

    async def _send(self, group: _Group) -> None:
        """Read ``group`` after the one in flight (requests keep joining until then)."""
        previous = self._flight
        if previous is not None:
            await asyncio.wait([previous])
        else:
            await asyncio.sleep(0)  # one turn of the loop: requests arriving now join
        if self._open is group:
            self._open = None
        self._flight = asyncio.current_task()
        try:
            group.done.set_result(await self._read(list(group.subjects)))
        except Exception as exc:  # each caller gets the failure its own read would have had
            group.done.set_exception(exc)
            group.done.exception()  # retrieved: nobody may be left waiting for it
        except asyncio.CancelledError:
            group.done.cancel()
            raise
        finally:
            if self._flight is asyncio.current_task():
                self._flight = None

    async def get_hashed(self, subjects: Iterable[str]) -> StoredConsent | None:
        """The merged stored consent of a person's hashed subject ids."""
        return merge_records((await self.lookup(subjects)).values())

    async def get(self, subject_ids: Iterable[str]) -> StoredConsent | None:
        """The merged stored consent of a person's raw ids (user id, anonymous id...)."""
        secret = self.subject_secret
        return await self.get_hashed(subject_key(i, secret) for i in subject_ids if normalize_id(i))

    async def history(self, subject: str, count: int = HISTORY_MAX) -> list[dict[str, str]]:
        """A hashed subject's recorded changes, newest first (proof)."""
        entries = await self._client.xrevrange(history_key(subject), count=count)
        return [
            {"id": entry_id.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
            for entry_id, fields in entries
        ]

    # -- writes ------------------------------------------------------------------------------

    async def write(
        self, subjects: Sequence[str], record: ConsentRecord, *, may_grant: bool = True
    ) -> WriteResult:
        """Store ``record`` for each hashed subject unless a newer one is there (one command).

        ``may_grant=False`` (a source without grant permission): the write can only withdraw;
        see ``consent.records.narrow``."""
        [result] = await self.write_many([(subjects, record)], may_grant=may_grant)
        return result

    async def write_many(
        self, writes: Sequence[tuple[Sequence[str], ConsentRecord]], *, may_grant: bool = True
    ) -> list[WriteResult]:
        """Several writes in one round trip (atomic per subject), in order."""
        results: list[WriteResult] = []
        pipe = self._client.pipeline(transaction=False)
        sent: list[tuple[int, list[str]]] = []
        calls = 0
        now = datetime.now(UTC)
        for subjects, record in writes:
            unique = list(dict.fromkeys(subjects))
            if record.expires_at <= now:
                results.append(WriteResult(dict.fromkeys(unique, WriteOutcome.EXPIRED)))
                continue
            results.append(WriteResult({}))
            for subject in unique:
                keys, args = self._script_arguments(subject, record, narrow=not may_grant)
                pipe.eval(_WRITE, len(keys), *keys, *args)
                calls += 1
            if unique:
                sent.append((len(results) - 1, unique))
        if not calls:
            return results
        replies = iter(await pipe.execute())
        for index, subjects in sent:
            outcomes: dict[str, WriteOutcome] = {}
            refused: set[str] = set()
            for subject in subjects:
                [(outcome, denied)] = next(replies)
                outcomes[subject] = WriteOutcome(_text(outcome))
                refused.update(c for c in _text(denied).split(",") if c)
                if outcomes[subject] is WriteOutcome.WRITTEN:
                    self.invalidate(subject)
            results[index] = WriteResult(outcomes, frozenset(refused))
        return results

    def _script_arguments(
        self, subject: str, record: ConsentRecord, *, narrow: bool
    ) -> tuple[list[str], list[str | int]]:
        keys = [record_key(subject), history_key(subject)]
        if self._suppressed_key is not None:
            keys.append(suppressed_key(self._suppressed_key, subject))
        args: list[str | int] = [
            "1" if self._suppressed_key is not None else "0",
            record.encode(),
            millis(record.updated_at),
            millis(record.expires_at),
            self._history_max,
            self._channel,
            ",".join(sorted(record.granted)),
            ",".join(sorted(record.denied)),
            record.source,
            millis(record.received_at),
            "1" if narrow else "0",
            subject,
        ]
        return keys, args

    async def erase(self, subjects: Sequence[str]) -> Erased:
        """Suppress the subjects, delete their records and histories, tell every process.

        One script per subject (its keys share a slot): the mark is set before the record goes,
        and a write checks the mark in its own script, so no record can come back."""
        subjects = list(dict.fromkeys(subjects))
        if not subjects:
            return Erased(0, 0, 0)
        pipe = self._client.pipeline(transaction=False)
        for subject in subjects:
            keys = [record_key(subject), history_key(subject)]
            if self._suppressed_key is not None:
                keys.append(suppressed_key(self._suppressed_key, subject))
            pipe.eval(_ERASE, len(keys), *keys, self._channel, subject)
        results = await pipe.execute()
        for subject in subjects:
            self.invalidate(subject)
        return Erased(
            consent_records=sum(int(r[0]) for r in results),
            history_entries=sum(int(r[1]) for r in results),
            newly_suppressed=sum(int(r[2]) for r in results),
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
