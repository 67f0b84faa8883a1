"""Shared fixtures: a real Redis per test, a signature-checking webhook, the router app."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from router.delivery.worker import WorkerOptions
from router.edge.app import create_app
from router.edge.http import RouterRunner
from router.observability.setup import Telemetry, setup_telemetry
from router.queue.backend import connect
from router.queue.keys import SUPPRESSED
from router.routing import Routing, parse_routing
from router.runtime import build_runtime
from router.settings import Settings
from tests.fakes.webhook import WebhookReceiver
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WRITE_KEY = "test-write-key"

TEST_CONFIG = Path(__file__).resolve().parent.parent / "config" / "test.yaml"

# No time limit per generated example: property tests check answers, not speed (bench/ does),
# and a loaded CI machine made an example overrun Hypothesis' default 200 ms deadline.
settings.register_profile("router", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("router")


def process_env(
    redis_url: str, hook_url: str, *, log_level: str = "WARNING", **extra: str
) -> dict[str, str]:
    """The environment of a router process a test starts: its Redis, the test webhook (the
    ``HOOK_*`` variables of config/test.yaml), a log level, and ``extra`` variables."""
    return {
        **os.environ,
        "ROUTER_REDIS_URL": redis_url,
        "HOOK_URL": hook_url,
        "HOOK_SECRET": HOOK_SECRET,
        "ROUTER_LOG_LEVEL": log_level,
        **extra,
    }


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port; the test may kill and restart it."""
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


BACKENDS = ["single", "cluster"]
"""``@pytest.mark.parametrize("redis_backend", BACKENDS)`` runs a test on one server and on a
3-master cluster; without it a test gets the single server."""


@pytest.fixture
def redis_backend() -> str:
    """Which Redis the test runs on: ``single`` (default) or ``cluster`` (when parametrized)."""
    return "single"


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One 3-master + 3-replica cluster for the session's ``cluster`` cases (emptied before
    each); a test that kills nodes starts its own (``tests.redis_cluster``)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_backend: str) -> str:
    """The URL of the test's Redis: its own server, or the shared cluster emptied."""
    if redis_backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("shared_cluster")
        for node in cluster.masters():
            node.cli("flushall")
        return cluster.url
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's Redis (a cluster client on the cluster)."""
    client = connect(redis_url, 2000)
    yield client
    await client.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    """A webhook endpoint on a free port: (its state, its URL)."""
    state = WebhookReceiver(secret=HOOK_SECRET)
    server = TestServer(state.app())
    await server.start_server()
    yield state, str(server.make_url("/hook"))
    await server.close()


def routing_from(
    yaml_text: str | None = None, hook_url: str = "http://127.0.0.1:9/hook"
) -> Routing:
    """Parse a routing file (default: config/test.yaml) with the test hook's URL and secret."""
    text = TEST_CONFIG.read_text() if yaml_text is None else yaml_text
    return parse_routing(text, env={"HOOK_URL": hook_url, "HOOK_SECRET": HOOK_SECRET})


class RouterTestServer(TestServer):
    """aiohttp's test server with the production runner (JSON answers to framing errors)."""

    async def _make_runner(self, **kwargs: Any) -> RouterRunner:
        return RouterRunner(self.app, **kwargs)


AppFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_router(
    redis_url: str,
) -> AsyncIterator[AppFactory]:
    """Start router apps on the test's Redis: ``await make_router(routing, workers=True)``."""
    clients: list[TestClient[web.Request, web.Application]] = []
    providers: list[Telemetry] = []

    async def factory(
        routing: Routing,
        *,
        workers: bool = True,
        consumer: str = "test",
        telemetry: Telemetry | None = None,
        release_every_s: float = 1.0,
        **settings: Any,
    ) -> TestClient[web.Request, web.Application]:
        settings.setdefault("redis_url", redis_url)
        config = Settings(redis_timeout_ms=500, **settings)
        options = WorkerOptions(
            consumer=consumer,
            block_ms=50,
            reclaim_idle_ms=300,
            reclaim_every_s=0.1,
            release_every_s=release_every_s,
        )
        if telemetry is None:  # no OTEL_* of the developer's shell: nothing exported
            telemetry = setup_telemetry({})
            providers.append(telemetry)
        runtime = build_runtime(
            config,
            routing,
            serve=True,
            workers=workers,
            worker_options=options,
            telemetry=telemetry,
        )
        app = create_app(runtime)
        client = TestClient(RouterTestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    # A shutdown that hangs (seen rarely on a loaded machine) prints every task's stack before
    # pytest-timeout ends the test, so the report shows where it waits.
    watchdog = asyncio.get_running_loop().call_later(SHUTDOWN_DUMP_AFTER_S, _dump_tasks)
    try:
        for client in clients:
            await client.close()
    finally:
        watchdog.cancel()
    for telemetry in providers:
        telemetry.shutdown()


SHUTDOWN_DUMP_AFTER_S = 30.0


def _dump_tasks() -> None:
    print(f"router shutdown still running after {SHUTDOWN_DUMP_AFTER_S} s:", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll until ``condition()`` holds; fail the test after ``within_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def suppressed_hashes(client: aioredis.Redis) -> set[str]:
    """The hashed subjects marked as erased (``rt:suppressed:{<sha256>}``)."""
    keys = await client.keys(f"{SUPPRESSED}:*")
    return {(k.decode() if isinstance(k, bytes) else k).split("{", 1)[1][:-1] for k in keys}
