"""Shared fixtures: a real Redis per test, a signature-checking webhook, the router app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router.delivery.worker import WorkerOptions
from router.edge.app import create_app
from router.edge.http import RouterRunner
from router.observability.setup import Telemetry, setup_telemetry
from router.routing import Routing, parse_routing
from router.runtime import build_runtime
from router.settings import Settings
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer

HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WRITE_KEY = "test-write-key"

TEST_CONFIG = Path(__file__).resolve().parent.parent / "config" / "test.yaml"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port; the test may kill and restart it."""
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's Redis."""
    client = aioredis.Redis.from_url(redis_server.url)
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
    redis_server: RedisServer,
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
        config = Settings(redis_url=redis_server.url, redis_timeout_ms=500, **settings)
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
    for client in clients:
        await client.close()
    for telemetry in providers:
        telemetry.shutdown()


async def wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll until ``condition()`` holds; fail the test after ``within_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
