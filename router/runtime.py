"""The composition root: every long-lived resource of a process, built in one place.

``build_runtime`` constructs them (no I/O); each resource is then opened and closed by its own
context (``Runtime.contexts``), in an order where nothing is closed before what uses it:
telemetry, Redis, the consent store, the audit writer, the HTTP transport, the anomaly monitor,
the data map, the enqueuer, the delivery workers (closed in reverse). The HTTP app gives each
context its own ``cleanup_ctx`` (``router.app.create_app``); commands use ``open_runtime``::

    async with open_runtime(settings, routing, workers=True) as runtime:  # `router worker`
        ...
    async with open_runtime(settings, routing) as runtime:                # `router erase`
        await erase(runtime.redis, runtime.consent, ...)

``serve``: the edge's resources run (enqueuer, audit writer, monitor); ``workers``: the data
map and a worker pool run. Objects of the modes not asked for are built but never started.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import redis.asyncio as aioredis

from consent.store import ConsentStore
from destinations.transport import AiohttpTransport, Transport
from router.compliance.anomaly import AnomalyMonitor, configure_monitor
from router.compliance.audit_log import AuditLog, AuditWriter
from router.compliance.datamap import DataMapRecorder
from router.core.sealing import Sealer
from router.delivery.pool import WorkerPool
from router.delivery.recheck import consent_recheck
from router.delivery.worker import WorkerOptions
from router.observability.metrics import COUNTER_NAMES, Stats
from router.observability.setup import Telemetry, setup_telemetry
from router.queue.backend import connect
from router.queue.enqueuer import Enqueuer
from router.queue.items import PLAINTEXT
from router.queue.keys import SUPPRESSED
from router.queue.streams import HoldGate
from router.routing import Routing
from router.settings import Settings

AUDIT_TRIM_EVERY_S = 60.0
"""How often the audit stream is trimmed to its retention: decision records arrive at event
rate, so an hourly trim would let the stream overshoot its cap by an hour of traffic."""

log = logging.getLogger("router.runtime")

Step = Callable[[], Awaitable[Any] | Any]
P = ParamSpec("P")


CLOSE_TIMEOUT_S = 10.0
"""How long one resource may take to close: a shutdown never hangs on one of them (an
orchestrator would kill the process and lose what the later closes would have flushed)."""


@dataclass(frozen=True, slots=True)
class Context:
    """Opens one resource (``start``, sync or async) for the duration of ``async with
    context()`` and closes it (``close``) on the way out, also after an error. A close that
    overruns ``close_timeout_s`` is abandoned with a warning naming the resource, so the
    resources after it still close."""

    name: str
    start: Step | None = None
    close: Step | None = None
    close_timeout_s: float = CLOSE_TIMEOUT_S

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        await _run(self.start)
        try:
            yield
        finally:
            try:
                async with asyncio.timeout(self.close_timeout_s):
                    await _run(self.close)
            except TimeoutError:
                log.warning(
                    "resource did not close in time; abandoned",
                    extra={"resource": self.name, "timeout_s": self.close_timeout_s},
                )


async def _run(step: Step | None) -> None:
    if step is not None:
        result = step()
        if inspect.isawaitable(result):
            await result


def default_consumer(settings: Settings) -> str:
    """This process's consumer name: configured, else host name and pid."""
    return settings.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class Runtime:
    """The resources of one process (see the module docstring for which ones run)."""

    settings: Settings
    routing: Routing
    """The running configuration (replaced on reload)."""
    redis: aioredis.Redis
    consent: ConsentStore
    transport: Transport
    """The process's one HTTP client to the destinations, erasure and anomaly alerts."""
    telemetry: Telemetry
    stats: Stats
    audit_log: AuditLog
    audit: AuditWriter
    enqueuer: Enqueuer
    monitor: AnomalyMonitor
    datamap: DataMapRecorder
    worker_options: WorkerOptions
    serve: bool
    run_workers: bool
    owns_telemetry: bool
    sealer: Sealer = PLAINTEXT
    """Encryption at rest (``ROUTER_ENCRYPTION_KEYS``) of what the queues hold."""
    workers: WorkerPool | None = field(default=None)
    """The running pool (``None`` before start, or without ``workers``)."""

    @property
    def audit_key(self) -> bytes:
        """Key of the audit's subject tokens (``ROUTER_AUDIT_KEY``)."""
        return self.settings.audit_key_bytes

    def worker_pool(self) -> WorkerPool:
        """A pool for the running configuration's destinations (not started)."""
        return WorkerPool(
            self.redis,
            self.routing.destinations,
            self.worker_options,
            self.stats,
            consent_recheck(self.consent),
            transport=self.transport,
            telemetry=self.telemetry,
            datamap=self.datamap,
            gate=HoldGate(self.redis),
            sealer=self.sealer,
            audit=self.audit_log,
        )

    async def replace_workers(self) -> None:
        """Start a pool for the running configuration, then stop the old one (on reload)."""
        if self.workers is None:
            return
        pool = self.worker_pool()
        await self.workers.stop(self.settings.shutdown_timeout_s)
        await pool.start()
        self.workers = pool

    def contexts(self) -> list[Context]:
        """One context per running resource, in opening order."""
        telemetry = self.telemetry.shutdown if self.owns_telemetry else None
        found = [Context("telemetry", close=telemetry), Context("redis", close=self.redis.aclose)]
        if self.serve or self.run_workers:
            found.append(Context("consent store", self.consent.start, self.consent.aclose))
        if self.serve:
            found.append(Context("audit writer", self.audit.start, self.audit.close))
        found.append(Context("transport", close=self.transport.aclose))
        if self.serve:
            found.append(Context("anomaly monitor", self.monitor.start, self.monitor.close))
        if self.run_workers:
            found.append(Context("data map", self.datamap.start, self.datamap.close))
        if self.serve:
            found.append(Context("enqueuer", self.enqueuer.start, self.enqueuer.close))
        if self.run_workers:
            # the pool has its own drain budget; the bound only catches a stuck stop
            budget = self.settings.shutdown_timeout_s + CLOSE_TIMEOUT_S
            found.append(
                Context("workers", self._start_workers, self._stop_workers, close_timeout_s=budget)
            )
        return found

    async def _start_workers(self) -> None:
        self.workers = self.worker_pool()
        await self.workers.start()

    async def _stop_workers(self) -> None:
        if self.workers is not None:
            await self.workers.stop(self.settings.shutdown_timeout_s)
        self.workers = None


def build_runtime(
    settings: Settings,
    routing: Routing,
    *,
    serve: bool = False,
    workers: bool = False,
    worker_options: WorkerOptions | None = None,
    telemetry: Telemetry | None = None,
) -> Runtime:
    """Every resource, constructed but not opened. ``telemetry``: providers to use (tests pass
    in-memory ones, kept open); by default set up from ``OTEL_*`` when serving or delivering
    (and shut down on close), with nothing exported for a one-off command."""
    owns_telemetry = telemetry is None
    if telemetry is None:
        telemetry = setup_telemetry() if serve or workers else setup_telemetry({})
    client = connect(settings.redis_url, settings.redis_timeout_ms)
    stats = Stats()
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    transport = AiohttpTransport()
    audit_log = AuditLog(client, key=settings.audit_key_bytes)
    monitor = AnomalyMonitor(client, stats=stats, audit=audit_log, transport=transport)
    configure_monitor(monitor, routing)
    sealer = settings.sealer()
    return Runtime(
        settings=settings,
        routing=routing,
        redis=client,
        consent=ConsentStore(
            client, suppressed_key=SUPPRESSED, subject_secret=settings.subject_key_bytes
        ),
        transport=transport,
        telemetry=telemetry,
        stats=stats,
        audit_log=audit_log,
        audit=AuditWriter(
            audit_log,
            stats=stats,
            trim_every_s=AUDIT_TRIM_EVERY_S,
            retention_records=settings.audit_max_records,
            retention_days=settings.audit_retention_days,
        ),
        enqueuer=Enqueuer(
            client,
            sealer=sealer,
            min_replicas=settings.redis_min_replicas,
            wait_timeout_ms=max(10, settings.redis_timeout_ms // 2),
        ),
        monitor=monitor,
        datamap=DataMapRecorder(client),
        worker_options=worker_options or WorkerOptions(consumer=default_consumer(settings)),
        serve=serve,
        run_workers=workers,
        owns_telemetry=owns_telemetry,
        sealer=sealer,
    )


def _opened(build: Callable[P, Runtime]) -> Callable[P, AbstractAsyncContextManager[Runtime]]:
    @asynccontextmanager
    async def opened(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Runtime]:
        runtime = build(*args, **kwargs)
        async with AsyncExitStack() as stack:
            for context in runtime.contexts():
                await stack.enter_async_context(context())
            yield runtime

    return opened


open_runtime = _opened(build_runtime)
"""``open_runtime(settings, routing, *, serve=, workers=, worker_options=, telemetry=)``:
``build_runtime``'s runtime, with every running resource opened for the ``async with``."""
