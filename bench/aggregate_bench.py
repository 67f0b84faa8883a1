"""Differentially private aggregates and the record of processing: what they cost.

    .venv/bin/python -m bench.aggregate_bench [--events 20000] [--batch 100] [--cells 1000]

On a real redis-server started in a temporary directory:
- counting: ``AggregateStore.count`` (one Lua call per batch: per-person bound over every
  hashed id, each stream entry once) side by side with the baseline of the same run, a
  pipeline of bare ``HINCRBY`` per event (counting with no bound and no idempotence);
- a release: OpenDP's noise over ``--cells`` counts and sums, and the whole close step
  (noise, budget, stored release);
- ``read_inventory`` for 20 destinations over 30 days of data map.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from bench.private_redis import private_redis
from destinations.aggregate import AggregateSettings
from router.compliance.aggregates import AggregateStore, Contribution, noise_plan
from router.compliance.datamap import DataMapRecorder
from router.compliance.inventory import read_inventory
from router.routing import parse_routing

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _settings() -> AggregateSettings:
    return AggregateSettings.model_validate(
        {
            "url": "https://partner.example.com/agg",
            "secret": SECRET,
            "epsilon": 1.0,
            "daily_epsilon": 100.0,
            "max_contributions": 3,
            "sum": {"field": "properties.revenue", "upper": 500},
        }
    )


async def _counting(client: aioredis.Redis, events: int, batch: int) -> tuple[float, float]:
    store = AggregateStore(client, "bench", _settings())
    people = [f"{n:064x}" for n in range(events // 2)]
    start = time.perf_counter()
    for first in range(0, events, batch):
        contributions = [
            Contribution(f'["Order Completed","c{n % 50}"]', n % 500, (people[n // 2],))
            for n in range(first, min(events, first + batch))
        ]
        await store.count(0, [(f"{first}-0", contributions)])
    counted = events / (time.perf_counter() - start)
    start = time.perf_counter()
    for first in range(0, events, batch):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(events, first + batch)):
            pipe.hincrby("bench:baseline", f'["Order Completed","c{n % 50}"]', 1)
        await pipe.execute()
    baseline = events / (time.perf_counter() - start)
    return counted, baseline


async def _release(client: aioredis.Redis, cells: int) -> tuple[float, float]:
    settings = _settings()
    plan = noise_plan(settings)
    start = time.perf_counter()
    plan.noisy([5] * cells, [100] * cells)
    noise_s = time.perf_counter() - start
    store = AggregateStore(client, "bench-release", settings)
    start = time.perf_counter()
    counts, sums = plan.noisy([5] * cells, [100] * cells)
    body = json.dumps({"status": "released", "counts": counts, "sums": sums}).encode()
    await store.close(3600, "1970-01-01", plan.epsilon, body, body)
    return noise_s, time.perf_counter() - start


async def _inventory(client: aioredis.Redis) -> float:
    hooks = "\n".join(
        f"""  - id: hook-{n}
    type: webhook
    requires: []
    fields: [messageId, event, properties.p{n}, properties.q{n}]
    settings: {{url: "https://h{n}.example.com/in", secret: {SECRET}}}"""
        for n in range(20)
    )
    routing = parse_routing(f"sources: [{{id: web, write_key: k}}]\ndestinations:\n{hooks}\n")
    now = datetime.now(UTC)
    for day in range(30):
        moment = now - timedelta(days=day)
        recorder = DataMapRecorder(client, clock=lambda m=moment: m)  # type: ignore[misc]
        for n in range(20):
            payload = {"messageId": "m", "event": "e", "properties": {f"p{n}": 1}}
            recorder.record(f"hook-{n}", payload, (), 100, events=10)
        await recorder.flush()
    start = time.perf_counter()
    await read_inventory(client, routing, now)
    return time.perf_counter() - start


async def _main(args: argparse.Namespace, url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        counted, baseline = await _counting(client, args.events, args.batch)
        print(
            f"counting  events={args.events} batch={args.batch}  "
            f"aggregate count (bound + once) events/s={counted:9.0f}  "
            f"baseline HINCRBY pipeline events/s={baseline:9.0f}  ratio={baseline / counted:.2f}"
        )
        noise_s, close_s = await _release(client, args.cells)
        print(
            f"release   cells={args.cells}  OpenDP noise (counts+sums) ms={noise_s * 1000:7.2f}"
            f"  noise + budget + store ms={close_s * 1000:7.2f}"
        )
        inventory_s = await _inventory(client)
        print(f"inventory 20 destinations x 30 days  read_inventory ms={inventory_s * 1000:7.2f}")
    finally:
        await client.aclose()


def main() -> int:
    """Run each measurement once and print a line each."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--cells", type=int, default=1000)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(_main(args, url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
