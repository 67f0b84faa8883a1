"""Group commit: concurrent requests' writes coalesced into one Redis pipeline."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from router.core.sealing import Sealer
from router.errors import QueueUnavailableError
from router.queue.backend import add_replica_waits
from router.queue.items import PLAINTEXT, entry_for


@dataclass(slots=True, init=False)
class Write:
    """One XADD to make, bounded by ``maxlen`` when set; entries older than ``minid`` (a
    stream id) are trimmed in the same pipeline when that is set (the quarantine's age).

    Its ``__init__`` is written out, as is ``Deliveries``': the one ``dataclass`` makes runs
    as interpreted Python even in the compiled build (both are made for every request)."""

    stream: str
    fields: dict[str, bytes | str]
    maxlen: int | None
    minid: str | None

    def __init__(
        self,
        stream: str,
        fields: dict[str, bytes | str],
        maxlen: int | None = None,
        minid: str | None = None,
    ) -> None:
        self.stream = stream
        self.fields = fields
        self.maxlen = maxlen
        self.minid = minid


@dataclass(slots=True, init=False)
class Deliveries:
    """Encoded deliveries (``QueueItem``) for one destination's stream. The enqueuer packs those
    of concurrent requests into shared entries of at most ``MAX_ITEMS_PER_ENTRY`` items."""

    stream: str
    items: Sequence[bytes]
    destination: str
    """Whose queue ``stream`` is: part of the sealed entries' associated data."""

    def __init__(self, stream: str, items: Sequence[bytes], destination: str = "") -> None:
        self.stream = stream
        self.items = items
        self.destination = destination


MAX_ITEMS_PER_ENTRY: Final = 100
"""Deliveries of several requests share an entry up to this many (a request's own batch is
never split): fewer XADDs and acks, while a worker's read of ``batch_size`` entries stays
bounded."""


_Submission: TypeAlias = tuple[Sequence["Write | Deliveries"], "asyncio.Future[None]"]


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
        sealer: Sealer = PLAINTEXT,
        *,
        min_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self._client = client
        self._sealer = sealer
        self._max = max_writes_per_flush
        self._min_replicas = min_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._pending: deque[_Submission] = deque()
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

    def _take(self) -> list[_Submission]:
        taken: list[_Submission] = []
        count = 0
        while self._pending and (not taken or count + len(self._pending[0][0]) <= self._max):
            item = self._pending.popleft()
            taken.append(item)
            count += len(item[0])
        return taken

    async def _flush(self, batch: list[_Submission]) -> None:
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
        waits = 0
        try:
            if self._min_replicas:
                plain = (w.stream for ws, _ in batch for w in ws if isinstance(w, Write))
                streams = [*(stream for stream, _ in packed), *plain]
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


def _fail(batch: list[_Submission], error: QueueUnavailableError) -> None:
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
