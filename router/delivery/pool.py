"""Every destination's workers in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis

from destinations.transport import Transport
from router.compliance.datamap import DataMapRecorder
from router.delivery.recheck import Recheck
from router.delivery.worker import DestinationWorker, WorkerOptions
from router.observability.metrics import Stats
from router.observability.setup import Telemetry
from router.queue.streams import HoldGate
from router.routing import CompiledDestination

__all__ = ["WorkerOptions", "WorkerPool"]


class WorkerPool:
    """Every destination's workers in this process, sending through the process's transport
    (its owner opens and closes it)."""

    def __init__(
        self,
        client: aioredis.Redis,
        destinations: Sequence[CompiledDestination],
        options: WorkerOptions,
        stats: Stats,
        recheck: Recheck | None = None,
        *,
        transport: Transport,
        telemetry: Telemetry | None = None,
        datamap: DataMapRecorder | None = None,
        gate: HoldGate | None = None,
    ) -> None:
        self._client = client
        self._transport = transport
        self._destinations = destinations
        self._options = options
        self._stats = stats
        self._recheck = recheck
        self._telemetry = telemetry
        self._datamap = datamap
        self._gate = gate
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start ``delivery.concurrency`` workers per destination."""
        for destination in self._destinations:
            for index in range(destination.config.delivery.concurrency):
                worker = DestinationWorker(
                    client=self._client,
                    transport=self._transport,
                    destination=destination,
                    options=self._options,
                    stats=self._stats,
                    stopping=self._stopping,
                    recheck=self._recheck,
                    index=index,
                    telemetry=self._telemetry,
                    datamap=self._datamap,
                    gate=self._gate,
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
