"""The aiohttp application: ``create_app(settings, routing)``.

Routes: ``POST /v1/{type}`` (and ``/v1/batch``, the one-letter aliases), RudderStack's
``POST /beacon/v1/batch``, ``POST /v1/consent``, analytics.js's usage counters ``POST /v1/m``,
the operator API ``/admin/*`` (``router.admin``, erasure included), CORS (``/v1``, ``/beacon``),
``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (counters, histograms, queue lag).

Redis, the consent store (and its cache invalidations), the group-commit enqueuer, the
delivery workers, and the background flushers of the audit trail, the anomaly monitor and the
data map are started and stopped together in one ``cleanup_ctx``; OpenTelemetry providers come
from the ``OTEL_*`` variables (``router.observability.setup``) and are flushed on the way out.
SIGHUP reloads the routing file (a reload that fails keeps the running configuration); each load is
recorded in the audit trail with the file's SHA-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from consent.store import ConsentStore
from destinations.transport import AiohttpTransport
from router.admin import add_admin_routes, refresh_queue_lag, tokens_of
from router.anomaly import AnomalyMonitor, HoldGate, MonitorSettings
from router.audit import AuditLog, AuditWriter
from router.config import Routing, load_routing
from router.core.audit_records import AuditKind
from router.datamap import DataMapRecorder
from router.errors import ConfigError
from router.http import (
    CORS_PATH_PREFIXES,
    READ_TIMEOUT,
    HttpError,
    cors_headers,
    error_response,
    json_response,
    preflight_headers,
)
from router.ingest import STATE, AppState, ingest
from router.observability.metrics import COUNTER_NAMES, Stats, render_prometheus
from router.observability.setup import Telemetry, setup_telemetry
from router.privacy import get_consent_status, post_consent
from router.queue import SUPPRESSED, Enqueuer, connect
from router.sdk_metrics import post_sdk_metrics
from router.settings import Settings
from router.stored_consent import consent_recheck
from router.worker import WorkerOptions, WorkerPool

log = logging.getLogger("router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WORKERS = web.AppKey("workers", WorkerPool)
DATAMAP = web.AppKey("datamap", DataMapRecorder)
LAG_SAMPLE_EVERY_S = 5.0
BACKLOG_SAMPLE_EVERY_S = 1.0
"""How often Redis' memory is compared with ``limits.backlog_memory_ratio``."""
"""How often the queue lag gauge is sampled for OTLP export (``/metrics`` samples on scrape)."""
AUDIT_TRIM_EVERY_S = 60.0
"""How often the audit stream is trimmed to its retention: decision records arrive at event
rate, so an hourly trim would let the stream overshoot its cap by an hour of traffic."""


def default_consumer(settings: Settings) -> str:
    """This process's consumer name: configured, else host name and pid."""
    return settings.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in the one JSON shape; no traceback ever reaches a client."""
    try:
        return await handler(request)
    except HttpError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(HttpError(exc.status, code, exc.reason))
    except Exception as exc:
        log.exception("unhandled error", extra={"error": type(exc).__name__})
        return error_response(HttpError(500, "internal_error", "unexpected error"))


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the origins configured on the sources (browser SDKs), on the paths browsers
    post to (``/v1/...``, ``/beacon/...``) and nowhere else.

    It sits outside ``errors``, so error answers (400, 401, 404, 413, 429, 503) carry the
    headers too: a browser SDK can only read a status and ``Retry-After`` (to tell "drop" from
    "retry") when the answer is readable for its origin.
    """
    if not request.path.startswith(CORS_PATH_PREFIXES):
        return await handler(request)
    allowed = (o for s in request.app[STATE].routing.file.sources for o in s.cors_origins)
    headers = cors_headers(request.headers.get("Origin"), allowed)
    if request.method == "OPTIONS":
        if headers:
            requested = request.headers.get("Access-Control-Request-Headers")
            headers = {**headers, **preflight_headers(requested)}
        return web.Response(status=204, headers=headers)
    response = await handler(request)
    response.headers.update(headers)
    return response


async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    del request
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Redis reachable and a configuration loaded."""
    state = request.app[STATE]
    try:
        await state.redis.ping()  # type: ignore[misc]  # bounded by the client's socket timeout
    except (RedisError, OSError) as exc:
        raise HttpError(
            503,
            "redis_unavailable",
            "Redis is not reachable",
            retry_after=state.settings.retry_after_s,
        ) from exc
    return json_response({"status": "ready", "destinations": len(state.routing.destinations)})


async def metrics(request: web.Request) -> web.Response:
    """Counters, latency histograms and queue lag in the Prometheus text format (bounded labels
    only). The lag is sampled now, in one pipeline; when Redis is down the last sample stays."""
    state = request.app[STATE]
    reader = None
    if state.telemetry is not None:
        try:
            await refresh_queue_lag(
                state.redis, [d.id for d in state.routing.destinations], state.telemetry.metrics
            )
        except (RedisError, OSError) as exc:
            log.warning("queue lag not sampled", extra={"error": type(exc).__name__})
        reader = state.telemetry.prometheus_reader
    text = render_prometheus(state.stats, reader)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def monitor_settings(routing: Routing) -> MonitorSettings:
    """The anomaly monitor's settings from the routing file's ``monitoring`` block."""
    return MonitorSettings(**routing.file.monitoring.model_dump())


def configure_monitor(monitor: AnomalyMonitor, routing: Routing) -> None:
    """Point the monitor at a (re)loaded routing file: thresholds, holds, expected PII."""
    monitor.settings = monitor_settings(routing)
    monitor.hold_destinations = frozenset(
        d.id for d in routing.destinations if d.config.hold_on_anomaly
    )
    monitor.expected_pii = {d.id: frozenset(d.identifiers.values()) for d in routing.destinations}


def _config_record(routing: Routing) -> dict[str, object]:
    return {
        "digest": routing.digest,
        "sources": [s.id for s in routing.file.sources],
        "destinations": [d.id for d in routing.destinations],
    }


def _worker_pool(app: web.Application, state: AppState, options: WorkerOptions) -> WorkerPool:
    recheck = consent_recheck(state.consent) if state.consent is not None else None
    return WorkerPool(
        state.redis,
        state.routing.destinations,
        options,
        state.stats,
        recheck,
        transport=state.transport,
        telemetry=state.telemetry,
        datamap=app[DATAMAP],
        gate=HoldGate(state.redis),
    )


async def backlog_of(client: aioredis.Redis, ratio: float) -> bool:
    """Whether Redis' ``used_memory`` is above ``ratio`` of its ``maxmemory`` (False without
    a ``maxmemory``: then only the 503 of a refused write protects it)."""
    info = await client.info("memory")
    limit = int(info.get("maxmemory", 0))
    return limit > 0 and int(info.get("used_memory", 0)) > ratio * limit


async def _watch_backlog(state: AppState) -> None:
    """Keep ``state.backlogged`` fresh (the ingest answers 429 while it holds). Logs changes
    only, not every second of an outage."""
    failing = False
    while True:
        try:
            ratio = state.routing.file.limits.backlog_memory_ratio
            backlogged = await backlog_of(state.redis, ratio)
            if backlogged != state.backlogged:
                log.warning("backlog" if backlogged else "backlog cleared")
            state.backlogged = backlogged
            failing = False
        except (RedisError, OSError) as exc:  # Redis down: writes fail and answer 503
            if not failing:
                log.warning("backlog not sampled", extra={"error": type(exc).__name__})
            failing = True
        await asyncio.sleep(BACKLOG_SAMPLE_EVERY_S)


async def _sample_lag(state: AppState, telemetry: Telemetry) -> None:
    """Keep the queue lag gauge fresh for OTLP export."""
    while True:
        await asyncio.sleep(LAG_SAMPLE_EVERY_S)
        try:
            ids = [d.id for d in state.routing.destinations]
            await refresh_queue_lag(state.redis, ids, telemetry.metrics)
        except (RedisError, OSError) as exc:
            log.warning("queue lag not sampled", extra={"error": type(exc).__name__})


def create_app(
    settings: Settings,
    routing: Routing,
    *,
    workers: bool = True,
    worker_options: WorkerOptions | None = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The application; Redis and workers start with it and stop with it.

    ``telemetry``: providers to use (tests pass in-memory exporters); by default they are set
    up from the ``OTEL_*`` variables and shut down with the application. ``ValueError`` when
    ``ROUTER_ADMIN_TOKENS`` is invalid.
    """
    # auto_decompress off: bodies are inflated by router.http.inflate, bounded, with our codes.
    # cors outside errors: error answers carry the CORS headers too.
    # keepalive_timeout: aiohttp's one timer for a connection without a request in progress
    # (before the first, between two, or with headers still incomplete).
    app = web.Application(
        middlewares=[cors, errors],
        handler_args={
            "auto_decompress": False,
            "keepalive_timeout": settings.http_idle_timeout_s,
        },
    )
    app[READ_TIMEOUT] = settings.http_read_timeout_s
    tokens = tokens_of(settings)
    client = connect(settings.redis_url, settings.redis_timeout_ms)
    store = ConsentStore(client, suppressed_key=SUPPRESSED)
    owned_telemetry = telemetry is None
    telemetry = setup_telemetry() if telemetry is None else telemetry
    audit_key = settings.audit_key.get_secret_value().encode() if settings.audit_key else b""
    audit_log = AuditLog(client, key=audit_key)
    stats = Stats()
    transport = AiohttpTransport()
    monitor = AnomalyMonitor(client, stats=stats, audit=audit_log, transport=transport)
    configure_monitor(monitor, routing)
    state = AppState(
        settings=settings,
        routing=routing,
        redis=client,
        enqueuer=Enqueuer(client),
        stats=stats,
        transport=transport,
        consent=store,
        telemetry=telemetry,
        audit=AuditWriter(
            audit_log,
            trim_every_s=AUDIT_TRIM_EVERY_S,
            retention_records=settings.audit_max_records,
            retention_days=settings.audit_retention_days,
        ),
        monitor=monitor,
        audit_key=audit_key,
    )
    app[STATE] = state
    app[DATAMAP] = DataMapRecorder(client)
    telemetry.metrics.bridge_counters(COUNTER_NAMES, stats.series)
    options = worker_options or WorkerOptions(consumer=default_consumer(settings))

    async def resources(app: web.Application) -> AsyncIterator[None]:
        assert state.audit is not None
        if not audit_key:
            log.warning("ROUTER_AUDIT_KEY is not set: audit subject tokens use an empty key")
        state.enqueuer.start()
        await store.start()
        state.audit.start()
        monitor.start()
        app[DATAMAP].start()
        state.audit.record(AuditKind.CONFIG_LOADED, _config_record(state.routing))
        watcher = asyncio.create_task(_watch_backlog(state), name="backlog")
        sampler = None
        if "metrics" in telemetry.exporting:
            sampler = asyncio.create_task(_sample_lag(state, telemetry), name="queue-lag")
        if workers:
            pool = _worker_pool(app, state, options)
            await pool.start()
            app[WORKERS] = pool
        _install_reload(app, settings, options, workers=workers)
        yield
        if WORKERS in app:
            await app[WORKERS].stop(settings.shutdown_timeout_s)
        for task in (watcher, sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await state.enqueuer.close()
        await app[DATAMAP].close()
        await monitor.close()
        await transport.aclose()
        await state.audit.close()
        await store.aclose()
        await client.aclose()
        if owned_telemetry:
            telemetry.shutdown()

    app.cleanup_ctx.append(resources)
    # /v1/consent and /v1/m before /v1/{kind}, which would match them; preflights (OPTIONS)
    # are answered by the cors middleware.
    app.router.add_post("/v1/consent", post_consent)
    app.router.add_get("/v1/consent/status", get_consent_status)
    app.router.add_post("/v1/m", post_sdk_metrics)  # analytics.js's usage counters
    app.router.add_post("/v1/{kind}", ingest)
    # RudderStack JS's beacon transport (sendBeacon on page unload), write key in the query
    app.router.add_post("/beacon/v1/{kind:batch}", ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_admin_routes(app, tokens=tokens, audit_key=audit_key)
    return app


async def reload_routing(
    app: web.Application, settings: Settings, options: WorkerOptions, *, workers: bool
) -> bool:
    """Load the routing file again; on any problem keep the running configuration."""
    state = app[STATE]
    secret = settings.tokenize_secret.get_secret_value() if settings.tokenize_secret else ""
    try:
        routing = load_routing(Path(settings.config), tokenize_secret=secret)
    except ConfigError as exc:
        log.error(
            "reload failed; keeping the running configuration",
            extra={"count": len(exc.problems), "config": str(settings.config)},
        )
        for problem in exc.problems:
            log.error("config problem: %s", problem)
        return False
    state.routing = routing
    if state.monitor is not None:
        configure_monitor(state.monitor, routing)
    if state.audit is not None:
        state.audit.record(AuditKind.CONFIG_CHANGED, _config_record(routing))
    if workers:
        old = app[WORKERS]
        pool = _worker_pool(app, state, options)
        await old.stop(settings.shutdown_timeout_s)
        await pool.start()
        app[WORKERS] = pool
    log.info("configuration reloaded", extra={"count": len(routing.destinations)})
    return True


def _install_reload(
    app: web.Application, settings: Settings, options: WorkerOptions, *, workers: bool
) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload_routing(app, settings, options, workers=workers))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):
        return
