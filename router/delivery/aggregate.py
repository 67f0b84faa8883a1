"""The two loops of an ``aggregate`` destination: the counter and the releaser.

``AggregateCounter`` is a delivery worker whose "send" counts: it reads the destination's
queue like any worker (own pending entries, reclaim, hold gate), re-checks suppression and
consent like any worker (an erasure or a withdrawal after ingest keeps the event out of the
count), then counts each event into its window (by acceptance time) with the per-person bound,
and acknowledges. Nothing is sent per event.

``AggregateReleaser`` runs once per process and destination; under the destination's lock,
every ``tick`` releases each window whose end is ``release_delay_s`` past (empty windows too),
in order: noise from the ``NoisePlan``, then one atomic step charges the UTC day's budget and
stores the release, or refuses it when the budget would be exceeded. Each record, release or
refusal, goes to the audit trail before anything is delivered; a release is then POSTed to the
partner, signed, and retried on later ticks until it is accepted (the stored release is sent
again: never new noise, never a second charge).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from redis.exceptions import RedisError

from destinations.aggregate import (
    AggregateConnector,
    AggregateSettings,
    Layout,
    clipped,
    release_of,
)
from destinations.base import HttpRequest, classify_status
from destinations.errors import TransportError
from destinations.transport import Transport
from router.compliance.aggregates import (
    MECHANISM,
    AggregateStore,
    Contribution,
    NoisePlan,
    noise_plan,
    window_of,
)
from router.compliance.audit_log import AuditLog
from router.compliance.datamap import mark_delivered
from router.core.audit_records import AuditKind
from router.core.outcomes import Failure
from router.delivery.worker import DestinationWorker, _Entry
from router.errors import AuditConflictError
from router.observability.metrics import Stats
from router.queue.items import decoded
from router.queue.keys import OUTBOX_MAXLEN, outbox_key
from router.routing import CompiledDestination

log = logging.getLogger("router.aggregate")

MAX_CATCH_UP: Final = 1000
"""Windows released in one tick at most (after a long outage the rest follow next tick)."""


def aggregate_parts(
    destination: CompiledDestination,
) -> tuple[AggregateConnector, AggregateSettings, Layout]:
    """The connector, settings and cell layout of an aggregate destination."""
    connector = destination.connector
    assert isinstance(connector, AggregateConnector)
    settings = connector.settings
    return connector, settings, Layout(destination.config.events or (), settings.dimensions)


@dataclass(slots=True)
class AggregateCounter(DestinationWorker):
    """A worker that counts instead of sending (see the module)."""

    _store: AggregateStore | None = field(default=None)
    _layout: Layout | None = field(default=None)

    def _parts(self) -> tuple[AggregateStore, Layout]:
        if self._store is None or self._layout is None:
            _, settings, self._layout = aggregate_parts(self.destination)
            self._store = AggregateStore(self.client, self.destination.id, settings)
        return self._store, self._layout

    async def _deliver(self, entries: list[_Entry], live: list[int]) -> None:
        store, layout = self._parts()
        settings = store.settings
        windows: dict[int, dict[str, list[Contribution]]] = {}
        ignored = 0
        for position in live:
            entry = entries[position]
            assert entry.item is not None
            try:
                item = decoded(entry.item)
            except msgspec.DecodeError:
                entry.result, entry.finished = Failure("corrupt_entry"), True
                continue
            entry.finished = True
            cell = layout.cell_of(item.delivery)
            accepted = item.accepted_at or item.delivery.timestamp
            window = window_of(accepted.timestamp(), settings.window_s)
            contributions = windows.setdefault(window, {}).setdefault(entry.entry_id.decode(), [])
            if cell is None:
                ignored += 1
                continue
            value = clipped(item.delivery.payload, settings.sum) if settings.sum else 0
            contributions.append(Contribution(layout.keys[cell], value, item.subjects))
        for window, by_entry in sorted(windows.items()):
            result = await store.count(window, list(by_entry.items()))
            for status, amount in (
                ("counted", result.counted),
                ("over_bound", result.over_bound),
                ("late", result.late),
            ):
                if amount:
                    self.stats.add(
                        "router_aggregate_contributions_total",
                        amount=amount,
                        destination=self.destination.id,
                        status=status,
                    )
        if ignored:
            self.stats.add(
                "router_aggregate_contributions_total",
                amount=ignored,
                destination=self.destination.id,
                status="not_listed",
            )


@dataclass(slots=True)
class AggregateReleaser:
    """Releases, audits and delivers one aggregate destination's windows (see the module)."""

    destination: CompiledDestination
    store: AggregateStore
    transport: Transport
    audit: AuditLog | None
    stats: Stats
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    _plan: NoisePlan | None = None
    _retry_at: dict[int, datetime] = field(default_factory=dict)
    _failures: dict[int, int] = field(default_factory=dict)
    _connector: AggregateConnector = field(init=False)
    _layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        self._connector, _, self._layout = aggregate_parts(self.destination)

    @property
    def plan(self) -> NoisePlan:
        """The destination's noise (built once: OpenDP's search is not free)."""
        if self._plan is None:
            self._plan = noise_plan(self.store.settings)
        return self._plan

    async def tick(self) -> None:
        """Release what is due, then audit and deliver what is pending (under the lock)."""
        if not await self.store.lock(self.owner, ttl_ms=60_000):
            return
        try:
            await self._release_due()
            await self._audit_pending()
            await self._deliver_pending()
        finally:
            await self.store.unlock(self.owner)

    async def _release_due(self) -> None:
        settings = self.store.settings
        now = self.clock()
        window = await self.store.next_window(now.timestamp())
        oldest = window_of(now.timestamp(), settings.window_s) - 86_400
        window = max(window, oldest)  # after an outage over a day the older raw counts expired
        for _ in range(MAX_CATCH_UP):
            if window + settings.window_s + settings.release_delay_s > now.timestamp():
                return
            await self._release(window)
            window += settings.window_s

    async def _release(self, window: int) -> None:
        settings = self.store.settings
        layout = self._layout
        plan = self.plan
        counts, sums = await self.store.raw(window, layout)
        noisy_counts, noisy_sums = plan.noisy(counts, sums)
        start = datetime.fromtimestamp(window, UTC)
        end = start + timedelta(seconds=settings.window_s)
        release = release_of(
            layout,
            self.destination.id,
            (start, end),
            noisy_counts,
            noisy_sums,
            settings=settings,
            epsilon=plan.epsilon,
            scales=(plan.count_scale, plan.sum_scale),
            mechanism=MECHANISM,
        )
        body = msgspec.json.encode(release)
        common = {
            "destination": self.destination.id,
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "day": start.date().isoformat(),
            "epsilon": plan.epsilon,
            "daily_epsilon": settings.daily_epsilon,
            "mechanism": MECHANISM,
            "count_scale": plan.count_scale,
            "sum_scale": plan.sum_scale,
            "max_contributions": settings.max_contributions,
            "cells": len(layout),
        }
        released = {
            **common,
            "status": "released",
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body": body.decode(),
        }
        refused = {**common, "status": "refused", "epsilon_charged": 0}
        outcome, _ = await self.store.close(
            window,
            start.date().isoformat(),
            plan.epsilon,
            json.dumps(released).encode(),
            json.dumps(refused).encode(),
        )
        if outcome is None:
            return
        status = "released" if outcome else "refused"
        self.stats.add(
            "router_aggregate_releases_total", destination=self.destination.id, status=status
        )
        if not outcome:
            log.warning(
                "aggregate release refused: daily privacy budget exhausted",
                extra={"destination": self.destination.id, "reason": "budget_exhausted"},
            )

    async def _audit_pending(self) -> None:
        waiting = await self.store.unaudited()
        if not waiting:
            return
        if self.audit is None:
            log.warning(
                "aggregate releases wait: no audit trail in this process",
                extra={"destination": self.destination.id},
            )
            return
        pending = await self.store.pending()
        for window in sorted(waiting):
            raw = pending.get(window)
            if raw is None:
                await self.store.audited(window)
                continue
            record = json.loads(raw)
            data = {k: v for k, v in record.items() if k != "body"}
            kind = (
                AuditKind.AGGREGATE_RELEASE
                if record["status"] == "released"
                else AuditKind.AGGREGATE_REFUSED
            )
            await self.audit.append(kind, data)
            await self.store.audited(window)
            if record["status"] != "released":
                await self.store.done(window)

    async def _deliver_pending(self) -> None:
        waiting = await self.store.unaudited()
        now = self.clock()
        for window, raw in sorted((await self.store.pending()).items()):
            if window in waiting or now < self._retry_at.get(window, now):
                continue
            record = json.loads(raw)
            if record["status"] != "released":
                continue
            request = self._connector.release_request(record["body"].encode(), now)
            status = await self._send(request)
            self.stats.add(
                "router_aggregate_releases_total", destination=self.destination.id, status=status
            )
            if status == "delivered":
                await mark_delivered(self.store.client, self.destination.id, now)
                await self.store.done(window)
                self._retry_at.pop(window, None)
                self._failures.pop(window, None)
            else:
                failures = self._failures[window] = self._failures.get(window, 0) + 1
                self._retry_at[window] = now + timedelta(seconds=min(300, 2**failures))

    async def _send(self, request: HttpRequest) -> str:
        """POST a release (``dry_run``: to the outbox, like any destination's requests)."""
        if self.destination.config.dry_run:
            record = {"at": self.clock().isoformat(), "request": request.redacted()}
            await self.store.client.xadd(
                outbox_key(self.destination.id),
                {"r": msgspec.json.encode(record)},
                maxlen=OUTBOX_MAXLEN,
                approximate=True,
            )
            return "delivered"
        timeout_s = self.store.settings.timeout_ms / 1000
        try:
            response = await self.transport.send(request, timeout_s)
        except TransportError:
            return "delivery_failed"
        return "delivered" if classify_status(response.status) == "ok" else "delivery_failed"

    async def run(self, stopping: asyncio.Event, every_s: float = 1.0) -> None:
        """Tick until ``stopping`` is set; Redis and audit outages are waited out."""
        while not stopping.is_set():
            try:
                await self.tick()
            except (RedisError, OSError, AuditConflictError) as exc:
                log.warning(
                    "aggregate release failed; retrying",
                    extra={"destination": self.destination.id, "error": type(exc).__name__},
                )
            except Exception as exc:  # a bug must not end the loop silently: log it, go on
                log.exception(
                    "aggregate release failed unexpectedly",
                    extra={"destination": self.destination.id, "error": type(exc).__name__},
                )
            try:
                await asyncio.wait_for(stopping.wait(), timeout=every_s)
            except TimeoutError:
                continue


def releaser_for(
    destination: CompiledDestination,
    client: Any,
    transport: Transport,
    audit: AuditLog | None,
    stats: Stats,
    *,
    clock: Callable[[], datetime] | None = None,
) -> AggregateReleaser:
    """The releaser of an aggregate destination (``clock``: tests drive the windows)."""
    _, settings, _ = aggregate_parts(destination)
    store = AggregateStore(client, destination.id, settings)
    releaser = AggregateReleaser(destination, store, transport, audit, stats)
    if clock is not None:
        releaser.clock = clock
    _ = releaser.plan  # OpenDP's scale search now: a problem shows when the workers start
    return releaser
