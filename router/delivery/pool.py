"""Every destination's workers in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field

import redis.asyncio as aioredis

from destinations.aggregate import AggregateConnector
from destinations.transport import Transport
from router.compliance.audit_log import AuditLog
from router.compliance.datamap import DataMapRecorder
from router.core.sealing import Sealer
from router.delivery.aggregate import AggregateCounter, releaser_for
from router.delivery.recheck import Recheck
from router.delivery.worker import DestinationWorker, WorkerOptions
from router.observability.metrics import Stats
from router.observability.setup import Telemetry
from router.queue.items import PLAINTEXT
from router.queue.streams import HoldGate
from router.routing import CompiledDestination

__all__ = ["WorkerOptions", "WorkerPool"]


@dataclass(slots=True)
class WorkerPool:
    """Every destination's workers in this process, sending through the process's transport
    (its owner opens and closes it)."""

    client: aioredis.Redis
    destinations: Sequence[CompiledDestination]
    options: WorkerOptions
    stats: Stats
    recheck: Recheck | None = None
    _: KW_ONLY
    transport: Transport
    telemetry: Telemetry | None = None
    datamap: DataMapRecorder | None = None
    gate: HoldGate | None = None
    sealer: Sealer = PLAINTEXT
    """Encryption at rest of the entries the workers read and dead-letter."""
    audit: AuditLog | None = None
    """Where aggregate releases are recorded (none: they wait, unreleased)."""
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        """Start ``delivery.concurrency`` workers per destination; an ``aggregate``
        destination's workers count instead of sending, and it gets one releaser."""
        for destination in self.destinations:
            aggregate = destination.type == AggregateConnector.type_name
            if aggregate:
                releaser = releaser_for(
                    destination, self.client, self.transport, self.audit, self.stats
                )
                self._tasks.append(
                    asyncio.create_task(
                        releaser.run(self._stopping, self.options.release_every_s),
                        name=f"releaser:{destination.id}",
                    )
                )
            kind = AggregateCounter if aggregate else DestinationWorker
            for index in range(destination.config.delivery.concurrency):
                worker = kind(
                    self.client,
                    self.transport,
                    destination,
                    self.options,
                    self.stats,
                    self._stopping,
                    self.recheck,
                    index,
                    self.telemetry,
                    self.datamap,
                    self.gate,
                    self.sealer,
                )
                self._tasks.append(
                    asyncio.create_task(worker.run(), name=f"worker:{destination.id}:{index}")
                )

    async def stop(self, timeout_s: float) -> None:
        """Let in-flight batches finish (up to ``timeout_s``); unfinished entries stay pending."""
        self._stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
