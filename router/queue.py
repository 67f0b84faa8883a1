"""Redis streams: one queue per destination, group commit, dead letters, quarantine, outbox.

Keys (all under ``rt:``):

- ``rt:q:{destination}``     the destination's queue (consumer group ``delivery``)
- ``rt:dlq:{destination}``   dead letters, with the reason
- ``rt:outbox:{destination}`` encoded requests of a ``dry_run`` destination (bounded)
- ``rt:quarantine``          rejected input events, redacted: code, path, field types, hashed
                             subjects (bounded in count and age; ``router.quarantine``)
- ``rt:suppressed``          hashed identifiers of erased subjects
- ``rt:consent:*``           stored consent, by hashed subject (``consent.store``)

What rests in a destination's queue is only what that destination may receive (the minimized
payload), plus hashed subject ids for the re-checks at delivery.

At rest (``router.core.sealing``, on when ``ROUTER_ENCRYPTION_KEYS`` is set): a queue entry's
``d``/``b`` value, a dead letter's ``d``, an outbox record's ``r`` and a quarantine entry's ``e``
are AES-256-GCM envelopes whose associated data names the role, the destination and the field
(``sealed_for``). Plaintext values from before encryption still read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from consent.ids import subject_key
from destinations.base import ConsentFacts, Delivery
from router.core.sealing import Sealer, Undecryptable, context
from router.errors import QueueUnavailableError

GROUP = "delivery"
QUARANTINE = "rt:quarantine"
SUPPRESSED = "rt:suppressed"
QUARANTINE_MAXLEN = 100_000
OUTBOX_MAXLEN = 1_000
DLQ_MAXLEN = 1_000_000


def queue_key(destination_id: str) -> str:
    """The destination's delivery stream."""
    return f"rt:q:{destination_id}"


def dlq_key(destination_id: str) -> str:
    """The destination's dead-letter stream."""
    return f"rt:dlq:{destination_id}"


def outbox_key(destination_id: str) -> str:
    """The dry-run outbox of a destination."""
    return f"rt:outbox:{destination_id}"


QUEUE_ROLE: Final = "queue"
DLQ_ROLE: Final = "dlq"
OUTBOX_ROLE: Final = "outbox"
QUARANTINE_ROLE: Final = "quarantine"
PLAINTEXT: Final = Sealer()
"""Seals nothing, opens only plaintext: the default where no key ring is configured."""


def sealed_for(role: str, destination: str, field: str) -> bytes:
    """The associated data of a sealed field: ``role`` is ``QUEUE_ROLE``..., ``field`` the
    stream entry's field name (``d``, ``b``, ``r``, ``e``)."""
    return context(role, destination, field)


def subject_hash(identifier: str, secret: bytes = b"") -> str:
    """How a subject id is stored in Redis: HMAC-SHA256 hex of the normalized id under
    ``ROUTER_SUBJECT_KEY`` (``consent.ids.subject_key``)."""
    return subject_key(identifier, secret)


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


def entry_for(
    encoded_items: Sequence[bytes], sealer: Sealer = PLAINTEXT, destination: str = ""
) -> dict[str, bytes | str]:
    """The stream entry holding deliveries to one destination (one request's, or several
    requests' packed by the enqueuer), sealed as a whole when ``sealer`` is on (one envelope
    for up to ``MAX_ITEMS_PER_ENTRY`` deliveries).

    One delivery: ``{"d": item}``; several: ``{"b": [item, ...]}``, so a batch of 100 events
    costs one XADD per destination instead of 100. Dead letters always hold one item (``d``).
    """
    if len(encoded_items) == 1:
        name, value = "d", encoded_items[0]
    else:
        name, value = "b", b"[" + b",".join(encoded_items) + b"]"
    return {name: sealer.seal(value, sealed_for(QUEUE_ROLE, destination, name))}


def entry_items(
    fields: dict[str, bytes], sealer: Sealer = PLAINTEXT, destination: str = ""
) -> list[bytes]:
    """The raw JSON of each delivery in a stream entry (``[]`` when it is unreadable);
    ``router.core.sealing.Undecryptable`` when it is sealed and does not open here."""
    if "d" in fields:
        return [sealer.open(fields["d"], sealed_for(QUEUE_ROLE, destination, "d"))]
    try:
        batch = sealer.open(fields.get("b", b""), sealed_for(QUEUE_ROLE, destination, "b"))
        return [bytes(raw) for raw in _RAW_LIST.decode(batch)]
    except msgspec.DecodeError:
        return []


def replay_entry(
    sealer: Sealer, destination: str, fields: dict[bytes, bytes]
) -> dict[str, bytes] | None:
    """The queue entry that replays a dead letter: its item opened as a dead letter and sealed
    for the queue; an undecryptable one (``qd``/``qb``) goes back as it came, sealed for the
    queue, where a key added since may open it. ``None`` when it opens nowhere (kept)."""
    for name in ("d", "b"):
        kept = fields.get(f"q{name}".encode())
        if kept is not None:
            return {name: kept}
    try:
        item = sealer.open(fields.get(b"d", b""), sealed_for(DLQ_ROLE, destination, "d"))
    except Undecryptable:
        return None
    return {"d": sealer.seal(item, sealed_for(QUEUE_ROLE, destination, "d"))}


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
    destination: str = ""
    """Whose queue ``stream`` is: part of the sealed entries' associated data."""


MAX_ITEMS_PER_ENTRY: Final = 100
"""Deliveries of several requests share an entry up to this many (a request's own batch is
never split): fewer XADDs and acks, while a worker's read of ``batch_size`` entries stays
bounded."""


def connect(url: str, timeout_ms: int) -> aioredis.Redis:
    """A Redis client that fails fast (one reconnect, no long backoff): the edge answers 503."""
    timeout = timeout_ms / 1000
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


class Enqueuer:
    """Group commit: concurrent requests' writes are coalesced into one pipeline.

    ``submit`` returns once the writes are in Redis (or raises ``QueueUnavailableError``).
    While one pipeline is in flight, new submissions gather for the next one, so batching costs
    no added latency under low load and saves round trips under high load.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        max_writes_per_flush: int = 5000,
        sealer: Sealer = PLAINTEXT,
    ) -> None:
        self._client = client
        self._sealer = sealer
        self._max = max_writes_per_flush
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
        packed: dict[tuple[str, str], list[list[bytes]]] = {}
        for writes, _ in batch:
            for write in writes:
                if isinstance(write, Deliveries):
                    entries = packed.setdefault((write.stream, write.destination), [[]])
                    if entries[-1] and len(entries[-1]) + len(write.items) > MAX_ITEMS_PER_ENTRY:
                        entries.append([])
                    entries[-1].extend(write.items)
                else:
                    add_to(pipe, write)
        for (stream, destination), entries in packed.items():
            for items in entries:
                add_to(pipe, Write(stream, entry_for(items, self._sealer, destination)))
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            error = QueueUnavailableError(type(exc).__name__)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)


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
    if not hashes:
        return set()
    found = await client.smismember(SUPPRESSED, list(hashes))  # type: ignore[misc]
    return {h for h, hit in zip(hashes, found, strict=True) if hit}


def entry_fields(entry: Any) -> dict[str, bytes]:
    """The field map of a stream entry as returned by redis-py (bytes keys)."""
    fields: dict[Any, Any] = entry[1]
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in fields.items()}
