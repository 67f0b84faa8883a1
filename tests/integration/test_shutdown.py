"""Shutdown ends even when a Redis call swallows the cancellation meant for its loop.

redis-py has had bugs where a ``CancelledError`` raised inside a command was caught and lost
(redis/redis-py#2028, #2551): a background loop stopped only by ``task.cancel()`` then runs on
and the shutdown that awaits it never ends. The edge's samplers and the consent listener stop
on an event as well; these tests make the library call swallow the cancellation on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from consent.store import ConsentStore
from router.edge import app as app_module
from tests.conftest import AppFactory, routing_from


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
