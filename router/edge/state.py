"""What the edge's handlers share, kept in the application under typed keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from aiohttp import web
from opentelemetry import trace

from consent.store import ConsentStore
from destinations.transport import Transport
from router.compliance.anomaly import AnomalyMonitor
from router.compliance.audit_log import AuditWriter
from router.core.sealing import Sealer
from router.observability.metrics import Stats
from router.observability.setup import Telemetry
from router.queue.enqueuer import Enqueuer
from router.queue.items import PLAINTEXT
from router.routing import Routing
from router.settings import Settings

_NO_TRACER: Final = trace.NoOpTracer()


@dataclass(slots=True)
class AppState:
    """Everything the handlers share, kept in the application under ``STATE``."""

    settings: Settings
    routing: Routing
    redis: aioredis.Redis
    enqueuer: Enqueuer
    stats: Stats
    transport: Transport
    """The process's HTTP client to the destinations (erasure, anomaly alerts, workers)."""
    max_inflight: int = 2048
    inflight: int = 0
    backlogged: bool = False
    """Redis is near its ``maxmemory`` (``limits.backlog_memory_ratio``): new events get 429."""
    extra: dict[str, Any] = field(default_factory=dict)
    consent: ConsentStore | None = None
    """Stored consent (``None``: events carry their own consent only)."""
    telemetry: Telemetry | None = None
    """Tracer and histograms (``None``: no spans, as in bare test apps)."""
    audit: AuditWriter | None = None
    """The buffered audit trail: decisions and consent writes (memory only on the hot path)."""
    monitor: AnomalyMonitor | None = None
    """Anomaly detection: volume and field paths per source, PII kinds per destination."""
    audit_key: bytes = b""
    """Key of the subject tokens in audit records (``ROUTER_AUDIT_KEY``)."""
    sealer: Sealer = PLAINTEXT
    """Encryption at rest of queued, dead-lettered, outbox and quarantined entries."""
    subject_secret: bytes = b""
    """Key of the subject hashes stored in Redis (``ROUTER_SUBJECT_KEY``)."""

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer of the process, or a no-op one."""
        return self.telemetry.tracer if self.telemetry is not None else _NO_TRACER


STATE = web.AppKey("state", AppState)
