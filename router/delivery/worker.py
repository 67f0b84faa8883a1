"""Delivery workers: read a destination's stream, re-check, encode, send, ack or dead-letter.

One consumer group per destination; any number of workers in any process. A worker:

1. reads a batch (its own pending entries first, then entries other consumers left idle for
   longer than ``reclaim_idle_ms``, claimed with XAUTOCLAIM, then new entries);
2. re-checks each entry just before sending (suppression, then the optional consent re-check):
   a withdrawal or erasure that happened while the event waited wins;
3. encodes with the connector and sends (or writes to the outbox for ``dry_run``);
4. acks what succeeded, dead-letters permanent failures with the reason, and retries the rest
   with capped exponential backoff and full jitter, honouring ``Retry-After``.

Before reading, a worker asks the ``HoldGate`` (cached a second) whether its destination is
held after an anomaly: a held destination's events stay queued until an operator releases it.
Each batch is a ``deliver`` span linked to the ingest spans whose ``traceparent`` travelled in
the entries, each request a ``send`` client span; webhooks (or any destination with
``forward_traceparent: true``) receive that span's ``traceparent``. Delivered events feed the
latency histogram and the data map (in memory; both flush on their own).

The loop reads as four named stages: ``_read`` -> ``_recheck`` (``router.delivery.recheck``)
-> ``_attempt`` (encode, send; ``router.delivery.retry`` decides what each outcome means and how
long to back off) -> ``_settle`` (ack, dead-letter). Only this package sleeps and retries.
Entries are acked only once finished, so a crashed worker's entries are reclaimed by another
one; on shutdown, unfinished entries are simply left pending. ``WorkerPool``
(``router.delivery.pool``) runs the workers of a process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from opentelemetry import trace
from redis.exceptions import RedisError

from destinations.base import Encoded, HttpRequest, Outcome
from destinations.errors import TransportError
from destinations.transport import Transport
from router.compliance.datamap import DataMapRecorder, declared_kinds
from router.core.outcomes import Failure, SkipReason
from router.core.paths import field_paths
from router.core.sealing import Sealer, Undecryptable
from router.delivery.recheck import Recheck, recheck_batch
from router.delivery.retry import Action, Group, backoff, bisect, exhausted, next_action
from router.observability.metrics import Stats
from router.observability.setup import Telemetry
from router.observability.tracing import (
    inject_traceparent,
    set_span_attributes,
    start_client_span,
    start_delivery_span,
)
from router.queue.enqueuer import MAX_ITEMS_PER_ENTRY
from router.queue.items import (
    DLQ_ROLE,
    OUTBOX_ROLE,
    PLAINTEXT,
    QueuedItem,
    QueueItem,
    decode_queued,
    decoded,
    entry_fields,
    entry_items,
    sealed_for,
)
from router.queue.keys import DLQ_MAXLEN, GROUP, OUTBOX_MAXLEN, dlq_key, outbox_key, queue_key
from router.queue.streams import HoldGate, ensure_group
from router.routing import CompiledDestination

log = logging.getLogger("router.worker")
_NO_TRACER: Final = trace.NoOpTracer()


@dataclass(slots=True)
class WorkerOptions:
    """Tunables shared by the workers of a process."""

    consumer: str
    block_ms: int = 1000
    reclaim_idle_ms: int = 30_000
    reclaim_every_s: float = 5.0
    release_every_s: float = 1.0
    """How often an aggregate destination's releaser looks for windows to release."""


@dataclass(slots=True)
class _Entry:
    entry_id: bytes
    item: QueuedItem | None
    """The delivery, its payload still raw JSON (``None``: not a queue item)."""
    raw: bytes
    result: Failure | None = None
    finished: bool = False
    still_sealed: str = ""
    """The entry's field (``d`` or ``b``) when it did not open: ``raw`` is its envelope, kept
    as it is (sealed for the queue) in the dead letter."""


@dataclass(slots=True)
class DestinationWorker:
    """The delivery loop of one destination (run ``concurrency`` of them per process)."""

    client: aioredis.Redis
    transport: Transport
    destination: CompiledDestination
    options: WorkerOptions
    stats: Stats
    stopping: asyncio.Event
    recheck: Recheck | None = None
    index: int = 0
    partition: int = 0
    """Which of the destination's ``delivery.partitions`` streams this worker reads."""
    telemetry: Telemetry | None = None
    datamap: DataMapRecorder | None = None
    gate: HoldGate | None = None
    sealer: Sealer = PLAINTEXT
    _last_reclaim: float = field(default=0.0)
    _own_pending_done: bool = field(default=False)
    _items_per_entry: float = field(default=float(MAX_ITEMS_PER_ENTRY))
    """Deliveries per stream entry lately (an entry holds one request's deliveries or several
    requests'): reads ask for about ``batch_size`` deliveries, not entries. It starts at the
    largest size an entry can have, so the first read is bounded too."""

    @property
    def tracer(self) -> trace.Tracer:
        """The process's tracer, or a no-op one."""
        return self.telemetry.tracer if self.telemetry is not None else _NO_TRACER

    @property
    def forward_traceparent(self) -> bool:
        """The destination's ``forward_traceparent``, else its connector's default."""
        configured = self.destination.config.forward_traceparent
        return self.destination.connector.forward_traceparent if configured is None else configured

    @property
    def consumer(self) -> str:
        """This worker's consumer name in the group."""
        return f"{self.options.consumer}-{self.index}"

    @property
    def stream(self) -> str:
        """The partition of the destination's queue this worker reads."""
        return queue_key(self.destination.id, self.partition)

    async def run(self) -> None:
        """Loop until ``stopping`` is set; Redis outages are waited out, never fatal.

        The consumer group is created at the start and again after any Redis error (a Redis
        restarted without its data, or a stream deleted by hand, answers ``NOGROUP``), not
        before every read: ``XGROUP CREATE`` on an existing group is an error reply, and each
        one cost a round trip and left an exception with its traceback (a reference cycle)
        for the garbage collector: ~140 a second under single-event load with in-process
        workers, the process's RSS growing until a collection ran."""
        stream = self.stream
        grouped = False
        while not self.stopping.is_set():
            try:
                if self.gate is not None and await self.gate.held(self.destination.id):
                    await self._sleep(1.0)
                    continue
                if not grouped:
                    await ensure_group(self.client, stream)
                    grouped = True
                entries = await self._read(stream)
                if entries:
                    await self.process(entries)
            except (RedisError, OSError) as exc:
                grouped = False
                log.warning(
                    "redis unavailable in worker",
                    extra={"destination": self.destination.id, "error": type(exc).__name__},
                )
                await self._sleep(1.0)

    async def _read(self, stream: str) -> list[Any]:
        # About batch_size deliveries per read: with entries of up to MAX_ITEMS_PER_ENTRY,
        # batch_size entries could hold a hundred times that, all in memory until settled.
        batch_size = self.destination.config.delivery.batch_size
        size = max(1, math.ceil(batch_size / self._items_per_entry))
        if not self._own_pending_done:
            own = await self.client.xreadgroup(GROUP, self.consumer, {stream: "0"}, count=size)
            entries = own[0][1] if own else []
            if entries:
                return list(entries)
            self._own_pending_done = True
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_reclaim >= self.options.reclaim_every_s:
            self._last_reclaim = loop.time()
            claimed = await self.client.xautoclaim(
                stream, GROUP, self.consumer, self.options.reclaim_idle_ms, "0-0", count=size
            )
            if claimed and claimed[1]:
                self.stats.add("router_entries_reclaimed_total", destination=self.destination.id)
                return list(claimed[1])
        block = None if self.stopping.is_set() else self.options.block_ms
        fresh = await self.client.xreadgroup(
            GROUP, self.consumer, {stream: ">"}, count=size, block=block
        )
        return list(fresh[0][1]) if fresh else []

    async def process(self, raw_entries: Sequence[Any]) -> None:
        """Re-check, deliver and settle one batch of stream entries."""
        entries = [entry for raw in raw_entries for entry in self._decode(raw)]
        if raw_entries:
            self._items_per_entry = (self._items_per_entry + len(entries) / len(raw_entries)) / 2
        traces = (e.item.trace for e in entries if e.item is not None)
        with start_delivery_span(self.tracer, self.destination.id, traces):
            live: list[int] = []
            for entry in entries:
                if entry.item is None and entry.result is None:
                    entry.result, entry.finished = Failure("corrupt_entry"), True
            decoded = [(p, e.item) for p, e in enumerate(entries) if e.item is not None]
            reasons = await self._recheck([item for _, item in decoded])
            for (position, _), reason in zip(decoded, reasons, strict=True):
                entry = entries[position]
                if reason is not None:
                    entry.finished = True
                    self.stats.add(
                        "router_events_skipped_total",
                        destination=self.destination.id,
                        reason=reason,
                        stage="delivery",
                    )
                    continue
                live.append(position)
            if live:
                await self._deliver(entries, live)
            await self._settle(entries)

    def _decode(self, raw: Any) -> list[_Entry]:
        """One ``_Entry`` per delivery of a stream entry (an entry may hold a batch); one
        ``undecryptable`` entry for a sealed entry that does not open (never dropped)."""
        fields = entry_fields(raw)
        try:
            items = entry_items(fields, self.sealer, self.destination.id)
        except Undecryptable as exc:
            name = "d" if "d" in fields else "b"
            failure = Failure("undecryptable", exc.reason)
            log.warning(
                "queue entry does not decrypt: dead-lettered as it is",
                extra={"destination": self.destination.id, "reason": exc.reason},
            )
            return [_Entry(raw[0], None, fields[name], failure, True, still_sealed=name)]
        found: list[_Entry] = []
        for data in items or [b""]:
            found.append(_Entry(entry_id=raw[0], item=decode_queued(data), raw=data))
        return found

    async def _recheck(self, items: Sequence[QueuedItem]) -> list[SkipReason | None]:
        return await recheck_batch(self.client, items, self.recheck)

    async def _deliver(self, entries: list[_Entry], live: list[int]) -> None:
        delivery = self.destination.config.delivery
        size = delivery.batch_size
        todo = [Group(positions=live[i : i + size]) for i in range(0, len(live), size)]
        todo.reverse()
        while todo and not self.stopping.is_set():
            retry: list[Group] = []
            while todo:
                group = todo.pop()
                await self._attempt(entries, group, todo, retry)
            if not retry:
                return
            waiting, spent = exhausted(retry, delivery.max_attempts)
            for group in spent:
                self.stats.add("router_deliveries_exhausted_total", destination=self.destination.id)
                for position in group.positions:
                    entries[position].result = Failure("max_attempts", group.reason)
                    entries[position].finished = True
            if not waiting:
                return
            delay = max(backoff(delivery, g.attempt, g.retry_after_s) for g in waiting)
            self.stats.add(
                "router_delivery_retries_total",
                destination=self.destination.id,
                reason=waiting[0].reason,
                amount=sum(len(g.positions) for g in waiting),
            )
            await self._keep_claim(entries, waiting)
            await self._sleep(delay)
            await self._keep_claim(entries, waiting)
            for group in waiting:
                group.attempt += 1
            todo = waiting

    async def _attempt(
        self, entries: list[_Entry], group: Group, todo: list[Group], retry: list[Group]
    ) -> None:
        connector = self.destination.connector
        # Payloads are decoded here, for this group only: they are garbage once it is sent.
        sendable: list[int] = []
        items: dict[int, QueueItem] = {}
        for position in group.positions:
            entry = entries[position]
            assert entry.item is not None
            try:
                items[position] = decoded(entry.item)
            except msgspec.DecodeError:
                entry.result, entry.finished = Failure("corrupt_entry"), True
                continue
            sendable.append(position)
        if not sendable:
            return
        encoded = connector.encode([items[p].delivery for p in sendable], datetime.now(UTC))
        for drop in encoded.dropped:
            entry = entries[sendable[drop.index]]
            entry.result, entry.finished = Failure("dropped", drop.reason), True
        match = match_tallies(encoded, sendable)
        for omission in encoded.omitted:
            self.stats.add(
                "router_fields_omitted_total",
                destination=self.destination.id,
                field=omission.field,
                reason=omission.reason,
            )
        for request in encoded.requests:
            positions = [sendable[i] for i in request.indices]
            outcome = await self._send(request)
            for failed_at, reason in outcome.failed.items():
                entry = entries[positions[failed_at]]
                entry.result, entry.finished = Failure(reason or "rejected"), True
            rest = [p for k, p in enumerate(positions) if k not in outcome.failed]
            if not rest:
                continue
            action = next_action(
                outcome, len(rest), split_on_rejection=connector.split_on_rejection
            )
            if action is Action.DELIVERED:
                for position in rest:
                    entries[position].finished = True
                self.stats.add(
                    "router_events_delivered_total",
                    destination=self.destination.id,
                    amount=len(rest),
                )
                self._delivered(entries, rest, [items[p] for p in rest], match)
            elif action is Action.SPLIT:
                todo.extend(bisect(rest, group.attempt))
            elif action is Action.DEAD_LETTER:
                for position in rest:
                    entries[position].result = Failure(outcome.reason or "rejected")
                    entries[position].finished = True
            else:
                retry.append(Group(rest, group.attempt, outcome.reason, outcome.retry_after_s))

    async def _send(self, request: HttpRequest) -> Outcome:
        config = self.destination.config
        if config.dry_run:
            record = {"at": datetime.now(UTC).isoformat(), "request": request.redacted()}
            where = sealed_for(OUTBOX_ROLE, self.destination.id, "r")
            await self.client.xadd(
                outbox_key(self.destination.id),
                {"r": self.sealer.seal(msgspec.json.encode(record), where)},
                maxlen=OUTBOX_MAXLEN,
                approximate=True,
            )
            return Outcome(kind="ok")
        destination = self.destination.id
        with start_client_span(self.tracer, destination, request.method) as span:
            if self.forward_traceparent:
                header = inject_traceparent(span.get_span_context())
                if header is not None:
                    request = msgspec.structs.replace(
                        request, headers={**request.headers, "traceparent": header}
                    )
            started = time.perf_counter()
            try:
                response = await self.transport.send(request, config.delivery.timeout_ms / 1000)
            except TransportError as exc:
                self._record_request(time.perf_counter() - started, exc.reason)
                set_span_attributes(span, reason=exc.reason)
                return Outcome(kind="retry", reason=exc.reason)
            self._record_request(time.perf_counter() - started, str(response.status))
            outcome = self.destination.connector.interpret(response, request)
            set_span_attributes(span, status=response.status, reason=outcome.reason or None)
            return outcome

    def _record_request(self, seconds: float, status: str) -> None:
        if self.telemetry is not None:
            self.telemetry.metrics.record_request(self.destination.id, seconds, status=status)

    def _delivered(
        self,
        entries: list[_Entry],
        positions: list[int],
        items: Sequence[QueueItem],
        match: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """Latency and data map of delivered entries (memory only; a dry run sends nothing,
        so it stays out of the data map).

        Both are fed once per batch: the latency histogram gets one value per event
        (``record_delivery_latencies``), the data map the union of the batch's field paths and
        kinds with its event and byte totals, which is what per-event records added up to
        (``declared_kinds`` maps path by path, so the kinds of the union are the union of
        the kinds). The batch is recorded on the day it was delivered.
        """
        telemetry = self.telemetry
        datamap = None if self.destination.config.dry_run else self.datamap
        if telemetry is None and datamap is None:
            return
        destination = self.destination.id
        if telemetry is not None:
            now = datetime.now(UTC)
            ages = [
                (now - item.accepted_at).total_seconds()
                for item in items
                if item.accepted_at is not None
            ]
            telemetry.metrics.record_delivery_latencies(destination, ages, status="delivered")
        if datamap is not None:
            shapes: set[frozenset[str]] = set()  # alike events: equal path sets
            kinds: set[str] = set()
            size = 0
            for position, item in zip(positions, items, strict=True):
                shapes.add(field_paths(item.delivery.payload))
                if item.pii:
                    kinds.update(item.pii)
                size += len(entries[position].raw)
            paths = frozenset().union(*shapes)
            declared = self.destination.identifiers
            if declared:
                kinds |= declared_kinds(paths, declared)
            tally: Counter[str] = Counter()
            for position in positions:
                tally.update((match or {}).get(position, ()))
            datamap.record(
                destination, {}, kinds, size, events=len(positions), paths=paths, match=tally
            )

    async def _keep_claim(self, entries: list[_Entry], groups: list[Group]) -> None:
        """Reset the entries' idle time so no other worker reclaims them while we back off."""
        ids: list[int | bytes | str | memoryview[int]] = list(
            dict.fromkeys(entries[p].entry_id for g in groups for p in g.positions)
        )
        if ids:
            await self.client.xclaim(self.stream, GROUP, self.consumer, 0, ids, justid=True)

    async def _settle(self, entries: list[_Entry]) -> None:
        done = [e for e in entries if e.finished]
        if not done:
            return
        stream = self.stream
        pipe = self.client.pipeline(transaction=True)
        moment = datetime.now(UTC)
        now = moment.isoformat()
        where = sealed_for(DLQ_ROLE, self.destination.id, "d")
        for entry in done:
            if entry.result is not None:
                letter: dict[str, bytes | str] = {"reason": entry.result.text, "at": now}
                if entry.still_sealed:  # kept as it was: it opens (if ever) in the queue
                    letter[f"q{entry.still_sealed}"] = entry.raw
                else:
                    letter["d"] = self.sealer.seal(entry.raw, where)
                pipe.xadd(
                    dlq_key(self.destination.id, self.partition),
                    letter,  # type: ignore[arg-type]
                    maxlen=DLQ_MAXLEN,
                    approximate=True,
                )
                self.stats.add(
                    "router_events_dead_lettered_total",
                    destination=self.destination.id,
                    reason=entry.result.reason,
                )
        # An entry is acknowledged once every delivery it holds is finished.
        unfinished = {e.entry_id for e in entries if not e.finished}
        ids = list(dict.fromkeys(e.entry_id for e in done if e.entry_id not in unfinished))
        if ids:
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
        await pipe.execute()
        if self.telemetry is not None:
            ages = [
                (moment - entry.item.accepted_at).total_seconds()
                for entry in done
                if entry.result is not None
                and entry.item is not None
                and entry.item.accepted_at is not None
            ]
            self.telemetry.metrics.record_delivery_latencies(
                self.destination.id, ages, status="dead_lettered"
            )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the process is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return


def match_tallies(encoded: Encoded, positions: Sequence[int]) -> dict[int, list[str]]:
    """Per entry position: the match keys its event carries (``email``...) and the identifiers
    left out (``omitted:phone:no_country_code``), for the data map's daily match counts."""
    tallies: dict[int, list[str]] = {}
    for index, keys in encoded.matched.items():
        tallies.setdefault(positions[index], []).extend(keys)
    for omission in encoded.omitted:
        tallies.setdefault(positions[omission.index], []).append(
            f"omitted:{omission.field}:{omission.reason}"
        )
    return tallies
