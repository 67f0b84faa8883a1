"""The aiohttp application: ``create_app(runtime)``.

Routes: ``POST /v1/{type}`` (and ``/v1/batch``, the one-letter aliases), RudderStack's
``POST /beacon/v1/batch``, ``POST /v1/consent``, analytics.js's usage counters ``POST /v1/m``,
the operator API ``/admin/*`` (``router.edge.admin``, erasure included), CORS (``/v1``,
``/beacon``), ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (counters, histograms, queue lag).

The resources come from ``router.runtime`` (the one composition root), each opened and closed
by its own ``cleanup_ctx``; the edge adds one for its own tasks (backlog watcher, queue lag
sampler). SIGHUP reloads the routing file (a reload that fails keeps the running
configuration); each load is recorded in the audit trail with the file's SHA-256.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from router.compliance.anomaly import configure_monitor
from router.compliance.subject_migration import check_subject_key
from router.core.audit_records import AuditKind
from router.edge.admin import add_admin_routes, refresh_queue_lag
from router.edge.consent_api import get_consent_status, post_consent
from router.edge.http import (
    CORS_PATH_PREFIXES,
    READ_TIMEOUT,
    HttpError,
    cors_headers,
    error_response,
    json_response,
    preflight_headers,
)
from router.edge.ingest import ingest
from router.edge.sdk_metrics import post_sdk_metrics
from router.edge.state import STATE, AppState
from router.edge.tokens import tokens_of
from router.errors import ConfigError
from router.observability.metrics import render_prometheus
from router.periodic import Periodic
from router.queue.backend import memory_infos, ping_all
from router.routing import Routing, load_routing
from router.runtime import Context, Runtime

log = logging.getLogger("router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RUNTIME = web.AppKey("runtime", Runtime)
LAG_SAMPLE_EVERY_S = 5.0
BACKLOG_SAMPLE_EVERY_S = 1.0
"""How often Redis' memory is compared with ``limits.backlog_memory_ratio``."""
"""How often the queue lag gauge is sampled for OTLP export (``/metrics`` samples on scrape)."""


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


async def _ingest_route(request: web.Request) -> web.Response:
    """The ingest handler as a Python coroutine function: in the compiled build ``ingest`` is
    a mypyc function, which aiohttp would take for a bare (deprecated) function handler."""
    return await ingest(request)


async def healthz(request: web.Request) -> web.Response:
    """The process is up."""
    del request
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Redis reachable and a configuration loaded."""
    state = request.app[STATE]
    try:
        await ping_all(state.redis)  # every master; bounded by the client's socket timeout
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
            await refresh_queue_lag(state.redis, state.routing.partitions, state.telemetry.metrics)
        except (RedisError, OSError) as exc:
            log.warning("queue lag not sampled", extra={"error": type(exc).__name__})
        reader = state.telemetry.prometheus_reader
    text = render_prometheus(state.stats, reader)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def _config_record(routing: Routing) -> dict[str, object]:
    return {
        "digest": routing.digest,
        "sources": [s.id for s in routing.file.sources],
        "destinations": [d.id for d in routing.destinations],
    }


async def backlog_of(client: aioredis.Redis, ratio: float) -> bool:
    """Whether Redis' ``used_memory`` is above ``ratio`` of its ``maxmemory`` (False without
    a ``maxmemory``: then only the 503 of a refused write protects it). On a cluster, any
    master above it: a destination's queue lives on one master, which fills first."""
    for info in await memory_infos(client):
        limit = int(info.get("maxmemory", 0))
        if limit > 0 and int(info.get("used_memory", 0)) > ratio * limit:
            return True
    return False


def _backlog_step(state: AppState) -> Callable[[], Awaitable[None]]:
    """One sample keeping ``state.backlogged`` fresh (the ingest answers 429 while it holds).
    Logs changes only, not every second of an outage."""
    failing = False

    async def step() -> None:
        nonlocal failing
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

    return step


async def _nothing() -> None:
    """No last step at shutdown: a sample taken then would be read by no one."""


def create_app(runtime: Runtime) -> web.Application:
    """The application over a process's resources (``router.runtime.build_runtime``): each
    resource is opened with the application and closed with it, one ``cleanup_ctx`` each."""
    settings = runtime.settings
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
    app[RUNTIME] = runtime
    app[STATE] = AppState(
        settings=settings,
        routing=runtime.routing,
        redis=runtime.redis,
        enqueuer=runtime.enqueuer,
        stats=runtime.stats,
        transport=runtime.transport,
        consent=runtime.consent,
        telemetry=runtime.telemetry,
        audit=runtime.audit,
        monitor=runtime.monitor,
        audit_key=runtime.audit_key,
        sealer=runtime.sealer,
        subject_secret=settings.subject_key_bytes,
    )
    contexts = runtime.contexts()
    # The edge's own tasks start once the resources they use are open, before the workers.
    edge_at = len(contexts) - 1 if runtime.run_workers else len(contexts)
    for context in contexts[:edge_at]:
        app.cleanup_ctx.append(_cleanup(context))
    app.cleanup_ctx.append(_edge_tasks)
    for context in contexts[edge_at:]:
        app.cleanup_ctx.append(_cleanup(context))
    # /v1/consent and /v1/m before /v1/{kind}, which would match them; preflights (OPTIONS)
    # are answered by the cors middleware.
    app.router.add_post("/v1/consent", post_consent)
    app.router.add_get("/v1/consent/status", get_consent_status)
    app.router.add_post("/v1/m", post_sdk_metrics)  # analytics.js's usage counters
    app.router.add_post("/v1/{kind}", _ingest_route)
    # RudderStack JS's beacon transport (sendBeacon on page unload), write key in the query
    app.router.add_post("/beacon/v1/{kind:batch}", _ingest_route)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_admin_routes(app, tokens=tokens_of(settings), audit_key=runtime.audit_key)
    return app


def _cleanup(context: Context) -> Callable[[web.Application], AsyncIterator[None]]:
    """A runtime context as an aiohttp ``cleanup_ctx``."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        del app
        async with context():
            yield

    return run


async def _edge_tasks(app: web.Application) -> AsyncIterator[None]:
    """The edge's background work: the backlog watcher, the queue lag sampler (when metrics
    are exported), SIGHUP reloads; the configuration goes to the audit trail."""
    runtime, state = app[RUNTIME], app[STATE]
    if not runtime.audit_key:
        log.warning("ROUTER_AUDIT_KEY is not set: audit subject tokens use an empty key")
    await check_subject_key(runtime.redis, runtime.settings.subject_key_bytes)
    runtime.audit.record(AuditKind.CONFIG_LOADED, _config_record(runtime.routing))
    # Periodic tasks stop on an event, not by cancellation (see router.periodic).
    samplers = [
        Periodic(
            "backlog",
            _backlog_step(state),
            BACKLOG_SAMPLE_EVERY_S,
            errors=(),
            logger=log,
            failure="backlog not sampled",
            final=_nothing,
            immediately=True,
        )
    ]
    if "metrics" in runtime.telemetry.exporting:
        metrics = runtime.telemetry.metrics
        samplers.append(
            Periodic(
                "queue-lag",
                lambda: refresh_queue_lag(state.redis, state.routing.partitions, metrics),
                LAG_SAMPLE_EVERY_S,
                errors=(RedisError, OSError),
                logger=log,
                failure="queue lag not sampled",
                final=_nothing,
            )
        )
    for sampler in samplers:
        sampler.start()
    _install_reload(app)
    yield
    for sampler in samplers:
        await sampler.close()


async def reload_routing(app: web.Application) -> bool:
    """Load the routing file again; on any problem keep the running configuration."""
    runtime, state = app[RUNTIME], app[STATE]
    settings = runtime.settings
    try:
        routing = load_routing(Path(settings.config), tokenize_secret=settings.tokenize_key)
    except ConfigError as exc:
        log.error(
            "reload failed; keeping the running configuration",
            extra={"count": len(exc.problems), "config": str(settings.config)},
        )
        for problem in exc.problems:
            log.error("config problem: %s", problem)
        return False
    state.routing = runtime.routing = routing
    configure_monitor(runtime.monitor, routing)
    runtime.audit.record(AuditKind.CONFIG_CHANGED, _config_record(routing))
    await runtime.replace_workers()
    log.info("configuration reloaded", extra={"count": len(routing.destinations)})
    return True


def _install_reload(app: web.Application) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload_routing(app))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):
        return
