"""Redis streams: one queue per destination, group commit, dead letters, quarantine, outbox.

Keys (all under ``rt:``; ``{...}`` is a Redis Cluster hash tag, written literally):

- ``rt:q:{<destination>}``      the destination's queue (consumer group ``delivery``); with
                               ``delivery.partitions: N``, also ``rt:q:{<destination>/1}``
                               ... ``rt:q:{<destination>/N-1}``
- ``rt:dlq:{<destination>}``    dead letters, with the reason (one per partition, same tag)
- ``rt:outbox:{<destination>}`` encoded requests of a ``dry_run`` destination (bounded)
- ``rt:quarantine``            rejected input events, redacted: code, path, field types, hashed
                               subjects (bounded in count and age; ``router.quarantine``)
- ``rt:suppressed:{<sha256>}``  present when the subject was erased (``consent.store``)
- ``rt:consent:{<sha256>}``     stored consent, by hashed subject (``consent.store``)

A destination's queue, dead letters and outbox share its tag, so the worker's settle (ack and
dead-letter in one MULTI/EXEC) and a DLQ replay stay in one slot on a cluster.

What rests in a destination's queue is only what that destination may receive (the minimized
payload), plus hashed subject ids for the re-checks at delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consent.ids import subject_key
from consent.store import read_many, suppressed_key
from destinations.base import ConsentFacts, Delivery
from router.backend import add_replica_waits
from router.errors import QueueUnavailableError

GROUP = "delivery"
QUARANTINE = "rt:quarantine"
SUPPRESSED = "rt:suppressed"
"""Prefix of the per-subject erasure marks (``consent.store.suppressed_key``)."""
QUARANTINE_MAXLEN = 100_000
OUTBOX_MAXLEN = 1_000
DLQ_MAXLEN = 1_000_000


def _tag(destination_id: str, partition: int) -> str:
    # Partition 0 keeps the destination's own tag (its keys from before partitions); ``/``
    # cannot occur in a destination id.
    return destination_id if partition == 0 else f"{destination_id}/{partition}"


def queue_key(destination_id: str, partition: int = 0) -> str:
    """The destination's delivery stream (one of its ``delivery.partitions``)."""
    return f"rt:q:{{{_tag(destination_id, partition)}}}"


def dlq_key(destination_id: str, partition: int = 0) -> str:
    """The dead letters of a partition of the destination's queue (same hash tag, so the
    worker's settle stays in one slot)."""
    return f"rt:dlq:{{{_tag(destination_id, partition)}}}"


def dead_letter_id(partition: int, entry_id: str) -> str:
    """A dead letter's id as the operator API shows it: the stream id in partition 0 (as
    before partitions), ``<partition>/<stream id>`` in the others."""
    return entry_id if partition == 0 else f"{partition}/{entry_id}"


def parse_dead_letter_id(value: str, partitions: int) -> tuple[int, str] | None:
    """``(partition, stream id)`` of an id from ``dead_letter_id``; None when malformed."""
    head, sep, tail = value.partition("/")
    if not sep:
        head, tail = "0", value
    if not head.isdigit() or int(head) >= partitions or not _STREAM_ID.fullmatch(tail):
        return None
    return int(head), tail


_STREAM_ID = re.compile(r"\d+-\d+")


def _stream_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


async def read_dead_letters(
    client: aioredis.Redis, destination_id: str, partitions: int, count: int, *, newest: bool
) -> list[tuple[int, bytes, dict[bytes, bytes]]]:
    """The newest (or oldest) ``count`` dead letters over every partition, in that order:
    ``(partition, stream id, fields)`` (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for partition in range(partitions):
        key = dlq_key(destination_id, partition)
        if newest:
            pipe.xrevrange(key, count=count)
        else:
            pipe.xrange(key, count=count)
    pages = await pipe.execute()
    found = [(p, entry_id, fields) for p, page in enumerate(pages) for entry_id, fields in page]
    found.sort(key=lambda row: _stream_order(row[1]), reverse=newest)
    return found[:count]


def outbox_key(destination_id: str) -> str:
    """The dry-run outbox of a destination."""
    return f"rt:outbox:{{{destination_id}}}"


def subject_hash(identifier: str) -> str:
    """How a subject id is stored in Redis: SHA-256 hex of the normalized id
    (``consent.ids.subject_key``)."""
    return subject_key(identifier)


class QueueItem(msgspec.Struct, frozen=True, gc=False):
    """One delivery as stored in a destination's stream."""

    delivery: Delivery
    subjects: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    accepted_at: datetime | None = None
    trace: str | None = None
    """The ``traceparent`` of the ingest span: the delivery span links to it."""
    pii: tuple[str, ...] = ()
    """Kinds of personal data the PII safety net found and let through (declared fields)."""


ITEM_ENCODER = msgspec.json.Encoder()
ITEM_DECODER = msgspec.json.Decoder(QueueItem)


class QueuedDelivery(msgspec.Struct, frozen=True, gc=False):
    """``Delivery`` as a worker first reads it: every field but the payload, left as raw JSON."""

    message_id: str
    type: str
    timestamp: datetime
    payload: msgspec.Raw
    event: str | None = None
    consent: ConsentFacts = ConsentFacts()


class QueuedItem(msgspec.Struct, frozen=True, gc=False):
    """``QueueItem`` with its payload not decoded yet (the same fields; a test keeps them so).

    A worker reads hundreds of entries at once (tens of thousands of deliveries when they come
    from ``/v1/batch``) and keeps them until they are settled; the re-checks read only ids and
    times. Decoded payloads held that long were most of what the garbage collector walked, so
    the payload is decoded by ``item()`` just before its group is encoded, and dropped after.
    """

    delivery: QueuedDelivery
    subjects: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    accepted_at: datetime | None = None
    trace: str | None = None
    pii: tuple[str, ...] = ()

    def item(self) -> QueueItem:
        """The whole item; ``msgspec.DecodeError`` when the payload is not valid UTF-8 (the only
        thing ``decode_queued`` lets through that ``ITEM_DECODER`` refuses)."""
        head = self.delivery
        try:
            payload = _PAYLOAD_DECODER.decode(head.payload)
        except UnicodeDecodeError as exc:  # msgspec's own error type for invalid UTF-8
            raise msgspec.DecodeError("the payload is not valid UTF-8") from exc
        delivery = Delivery(
            message_id=head.message_id,
            type=head.type,
            timestamp=head.timestamp,
            payload=payload,
            event=head.event,
            consent=head.consent,
        )
        return QueueItem(
            delivery=delivery,
            subjects=self.subjects,
            requires=self.requires,
            accepted_at=self.accepted_at,
            trace=self.trace,
            pii=self.pii,
        )


_QUEUED_DECODER = msgspec.json.Decoder(QueuedItem)
_PAYLOAD_DECODER = msgspec.json.Decoder(dict[str, Any])
_OPEN_BRACE = ord("{")


def decode_queued(data: bytes) -> QueuedItem | None:
    """A stream entry's delivery with its payload undecoded; ``None`` when it is not a queue
    item (what ``ITEM_DECODER`` refuses: malformed JSON or UTF-8, a missing or mistyped field, a
    payload that is not an object)."""
    try:
        queued = _QUEUED_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8 raises the latter
        return None
    if memoryview(queued.delivery.payload)[0] != _OPEN_BRACE:  # a JSON value: never empty
        return None
    return queued


_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])


def entry_for(encoded_items: Sequence[bytes]) -> dict[str, bytes | str]:
    """The stream entry holding deliveries to one destination (one request's, or several
    requests' packed by the enqueuer).

    One delivery: ``{"d": item}``; several: ``{"b": [item, ...]}``, so a batch of 100 events
    costs one XADD per destination instead of 100. Dead letters always hold one item (``d``).
    """
    if len(encoded_items) == 1:
        return {"d": encoded_items[0]}
    return {"b": b"[" + b",".join(encoded_items) + b"]"}


def entry_items(fields: dict[str, bytes]) -> list[bytes]:
    """The raw JSON of each delivery in a stream entry (``[]`` when it is unreadable)."""
    if "d" in fields:
        return [fields["d"]]
    try:
        return [bytes(raw) for raw in _RAW_LIST.decode(fields.get("b", b""))]
    except msgspec.DecodeError:
        return []


@dataclass(frozen=True, slots=True)
class Write:
    """One XADD to make, bounded by ``maxlen`` when set; entries older than ``minid`` (a
    stream id) are trimmed in the same pipeline when that is set (the quarantine's age)."""

    stream: str
    fields: dict[str, bytes | str]
    maxlen: int | None = None
    minid: str | None = None


@dataclass(frozen=True, slots=True)
class Deliveries:
    """Encoded deliveries (``QueueItem``) for one destination's stream. The enqueuer packs those
    of concurrent requests into shared entries of at most ``MAX_ITEMS_PER_ENTRY`` items."""

    stream: str
    items: Sequence[bytes]


MAX_ITEMS_PER_ENTRY: Final = 100
"""Deliveries of several requests share an entry up to this many (a request's own batch is
never split): fewer XADDs and acks, while a worker's read of ``batch_size`` entries stays
bounded."""


class Enqueuer:
    """Group commit: concurrent requests' writes are coalesced into one pipeline.

    ``submit`` returns once the writes are in Redis (or raises ``QueueUnavailableError``).
    While one pipeline is in flight, new submissions gather for the next one, so batching costs
    no added latency under low load and saves round trips under high load.

    With ``min_replicas``, the pipeline ends with a WAIT on every server it wrote to (in the
    same connection, after the writes): ``submit`` returns only once that many replicas have
    the writes, and raises ``QueueUnavailableError`` when they do not within
    ``wait_timeout_ms`` (the writes may still be there: the client retries, at-least-once).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        max_writes_per_flush: int = 5000,
        *,
        min_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self._client = client
        self._max = max_writes_per_flush
        self._min_replicas = min_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._pending: list[tuple[Sequence[Write | Deliveries], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def backlog(self) -> int:
        """Submissions waiting for the next flush."""
        return len(self._pending)

    def start(self) -> None:
        """Start the flusher task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="enqueuer")

    async def close(self) -> None:
        """Flush what is pending, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def submit(self, writes: Sequence[Write | Deliveries]) -> None:
        """Write durably, together with whatever other requests are writing now."""
        if not writes:
            return
        if self._task is None or self._closing:
            raise QueueUnavailableError("the enqueuer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((writes, future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take()
                await self._flush(batch)
            if self._closing:
                return

    def _take(self) -> list[tuple[Sequence[Write | Deliveries], asyncio.Future[None]]]:
        taken: list[tuple[Sequence[Write | Deliveries], asyncio.Future[None]]] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max):
            item = self._pending.pop(0)
            taken.append(item)
            count += len(item[0])
        return taken

    async def _flush(
        self, batch: list[tuple[Sequence[Write | Deliveries], asyncio.Future[None]]]
    ) -> None:
        pipe = self._client.pipeline(transaction=False)
        packed: dict[str, list[list[bytes]]] = {}
        for writes, _ in batch:
            for write in writes:
                if isinstance(write, Deliveries):
                    entries = packed.setdefault(write.stream, [[]])
                    if entries[-1] and len(entries[-1]) + len(write.items) > MAX_ITEMS_PER_ENTRY:
                        entries.append([])
                    entries[-1].extend(write.items)
                else:
                    add_to(pipe, write)
        for stream, entries in packed.items():
            for items in entries:
                add_to(pipe, Write(stream, entry_for(items)))
        waits = 0
        try:
            if self._min_replicas:
                streams = [
                    *packed,
                    *(w.stream for ws, _ in batch for w in ws if isinstance(w, Write)),
                ]
                waits = await add_replica_waits(
                    pipe, self._client, streams, self._min_replicas, self._wait_timeout_ms
                )
            results = await pipe.execute()
        except (RedisError, OSError) as exc:
            _fail(batch, QueueUnavailableError(type(exc).__name__))
            return
        if waits and min(int(r) for r in results[-waits:]) < self._min_replicas:
            _fail(batch, QueueUnavailableError("fewer replicas acknowledged than required"))
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


def _fail(
    batch: list[tuple[Sequence[Write | Deliveries], asyncio.Future[None]]],
    error: QueueUnavailableError,
) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


def add_to(pipe: Any, write: Write) -> None:
    """Queue one XADD on a pipeline."""
    if write.maxlen is None:
        pipe.xadd(write.stream, write.fields)
    else:
        pipe.xadd(write.stream, write.fields, maxlen=write.maxlen, approximate=True)
    if write.minid is not None:
        pipe.xtrim(write.stream, minid=write.minid, approximate=False)


async def ensure_group(client: aioredis.Redis, stream: str) -> None:
    """Create the consumer group (and the stream) if missing."""
    with contextlib.suppress(aioredis.ResponseError):
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def suppressed_among(client: aioredis.Redis, hashes: Sequence[str]) -> set[str]:
    """Which of these hashed ids were erased (one round trip)."""
    found = await read_many(client, [suppressed_key(SUPPRESSED, h) for h in hashes])
    return {h for h, hit in zip(hashes, found, strict=True) if hit is not None}


async def suppress(client: aioredis.Redis, hashes: Sequence[str]) -> None:
    """Mark hashed ids as erased (what ``ConsentStore.erase`` does, without the rest)."""
    pipe = client.pipeline(transaction=False)
    for h in hashes:
        pipe.set(suppressed_key(SUPPRESSED, h), "1")
    await pipe.execute()


def entry_fields(entry: Any) -> dict[str, bytes]:
    """The field map of a stream entry as returned by redis-py (bytes keys)."""
    fields: dict[Any, Any] = entry[1]
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in fields.items()}
