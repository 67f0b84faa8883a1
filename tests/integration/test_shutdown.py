"""Shutdown ends even when a Redis call swallows the cancellation meant for its loop.

redis-py has had bugs where a ``CancelledError`` raised inside a command was caught and lost
(redis/redis-py#2028, #2551): a background loop stopped only by ``task.cancel()`` then runs on
and the shutdown that awaits it never ends. The edge's samplers and the consent listener stop
on an event as well; these tests make the library call swallow the cancellation on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from consent.store import ConsentStore
from router.compliance.audit_log import AuditKind, AuditLog
from router.edge import app as app_module
from tests.conftest import TEST_CONFIG, WRITE_KEY, AppFactory, process_env, routing_from
from tests.fakes.webhook import WebhookReceiver
from tests.redis_server import RedisServer, free_port

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


async def _swallowing(seconds: float) -> None:
    """A wait that loses a cancellation, as the library bugs did."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(seconds)


async def test_the_backlog_sampler_stops_although_its_redis_call_swallows_a_cancel(
    make_router: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app closes within seconds while each backlog sample loses its cancellation."""
    samples = 0
    sampling = asyncio.Event()

    async def stubborn(client: aioredis.Redis, ratio: float) -> bool:
        del client, ratio
        nonlocal samples
        samples += 1
        sampling.set()
        await _swallowing(0.5)
        sampling.clear()
        return False

    monkeypatch.setattr(app_module, "backlog_of", stubborn)
    router = await make_router(routing_from(), workers=False)
    await asyncio.wait_for(sampling.wait(), 0.5)  # sampled at start, not one period later
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(router.close(), 10)  # while a sample is under way
    # (wait_for alone proves nothing: on Python 3.11 it returns normally when the awaited
    # call swallows the timeout's own cancellation, as this one would)
    assert asyncio.get_running_loop().time() - began < 3
    taken = samples
    await asyncio.sleep(1.5)  # more than one period: the sampler is gone
    assert samples == taken


async def test_the_consent_listener_stops_although_get_message_swallows_a_cancel(
    redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aclose`` of the consent store returns while its pub/sub read loses cancellations."""
    store = ConsentStore(redis_client, ping_interval_s=0.5)
    await store.start()
    assert await store.wait_live(10)
    reads = 0
    original = PubSub.get_message

    async def stubborn(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        await _swallowing(0.2)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "get_message", stubborn)
    for _ in range(100):  # close while a read is under way
        if reads:
            break
        await asyncio.sleep(0.01)
    assert reads >= 1
    began = asyncio.get_running_loop().time()
    await asyncio.wait_for(store.aclose(), 10)
    assert asyncio.get_running_loop().time() - began < 3
    assert not store.live


async def test_sigterm_stops_serve_cleanly_with_every_audit_decision_written(
    redis_server: RedisServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    """``kill -TERM`` of ``router serve``: exit 0, no error at shutdown, and the decision records
    of every accepted event in the audit trail (its writer buffers them in memory: the last
    flush must happen before the process ends)."""
    _, url = receiver
    port = free_port()
    env = process_env(redis_server.url, url, ROUTER_AUDIT_KEY="shutdown-test-audit-key")
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", "serve", "--config", str(TEST_CONFIG),
        "--host", "127.0.0.1", "--port", str(port), "--no-workers",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
            batch = [
                {"type": "track", "event": "Order Completed", "anonymousId": f"a{i}"}
                for i in range(20)
            ]
            async with session.post(
                f"http://127.0.0.1:{port}/v1/batch", json={"batch": batch}, headers=AUTH
            ) as response:
                assert response.status == 200
        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), timeout=30) == 0
        assert serve.stderr is not None
        errors = (await serve.stderr.read()).decode()
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        events = [
            event
            async for record in AuditLog(client).records()
            if record.kind == AuditKind.DECISIONS
            for event in record.data["events"]
        ]
    finally:
        await client.aclose()
    assert len({e["event"] for e in events}) == 20
    assert "Error" not in errors, errors
    assert "unhandled" not in errors, errors
