"""The aiohttp application: ``create_app(settings, routing)``.

Routes: ``POST /v1/{type}`` (and ``/v1/batch``, the one-letter aliases), ``POST /v1/consent``,
``POST /admin/erase``, CORS preflight, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``.
Redis, the consent store (and its cache invalidations), the group-commit enqueuer and the
delivery workers are started and stopped together in one ``cleanup_ctx``; SIGHUP reloads the
routing file (a reload that fails keeps the running configuration).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from redis.exceptions import RedisError

from consent.store import ConsentStore
from router.config import Routing, load_routing
from router.errors import ConfigError
from router.http import PREFLIGHT_HEADERS, HttpError, cors_headers, error_response, json_response
from router.ingest import STATE, AppState, ingest
from router.privacy import post_consent, post_erase
from router.queue import SUPPRESSED, Enqueuer, connect
from router.settings import Settings
from router.stored_consent import consent_recheck
from router.telemetry import Stats
from router.worker import WorkerOptions, WorkerPool

log = logging.getLogger("router.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WORKERS = web.AppKey("workers", WorkerPool)


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
    """CORS for the origins configured on the sources (browser SDKs)."""
    origin = request.headers.get("Origin")
    allowed = (o for s in request.app[STATE].routing.file.sources for o in s.cors_origins)
    headers = cors_headers(origin, allowed)
    if request.method == "OPTIONS" and request.path.startswith("/v1/"):
        return web.Response(status=204, headers={**headers, **PREFLIGHT_HEADERS} if headers else {})
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
    """Counters in the Prometheus text format (bounded labels only)."""
    text = request.app[STATE].stats.render()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def create_app(
    settings: Settings,
    routing: Routing,
    *,
    workers: bool = True,
    worker_options: WorkerOptions | None = None,
) -> web.Application:
    """The application; Redis and workers start with it and stop with it."""
    # auto_decompress off: bodies are inflated by router.http.inflate, bounded, with our codes.
    app = web.Application(middlewares=[errors, cors], handler_args={"auto_decompress": False})
    client = connect(settings.redis_url, settings.redis_timeout_ms)
    store = ConsentStore(client, suppressed_key=SUPPRESSED)
    state = AppState(
        settings=settings,
        routing=routing,
        redis=client,
        enqueuer=Enqueuer(client),
        stats=Stats(),
        consent=store,
    )
    app[STATE] = state
    options = worker_options or WorkerOptions(consumer=default_consumer(settings))

    async def resources(app: web.Application) -> AsyncIterator[None]:
        state.enqueuer.start()
        await store.start()
        pool: WorkerPool | None = None
        if workers:
            pool = WorkerPool(
                client, state.routing.destinations, options, state.stats, consent_recheck(store)
            )
            await pool.start()
            app[WORKERS] = pool
        _install_reload(app, settings, options, workers=workers)
        yield
        if WORKERS in app:
            await app[WORKERS].stop(settings.shutdown_timeout_s)
        await state.enqueuer.close()
        await store.aclose()
        await client.aclose()

    app.cleanup_ctx.append(resources)
    app.router.add_post("/v1/consent", post_consent)  # before /v1/{kind}, which would match
    app.router.add_post("/v1/{kind}", ingest)
    app.router.add_post("/admin/erase", post_erase)
    app.router.add_route("OPTIONS", "/v1/{kind}", healthz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
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
    if workers:
        old = app[WORKERS]
        recheck = consent_recheck(state.consent) if state.consent is not None else None
        pool = WorkerPool(state.redis, routing.destinations, options, state.stats, recheck)
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
