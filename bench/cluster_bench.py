"""Queue throughput on one Redis against a 3-master (+3 replica) Redis Cluster, same run.

    .venv/bin/python -m bench.cluster_bench [--seconds 3] [--destinations 8] [--submitters 64]

Both backends are real servers started here (append-only, fsync always, as the tests run
them), on this machine. Per backend:

- ``enqueue``: ``submitters`` concurrent callers of the router's ``Enqueuer`` (group commit),
  each submitting one delivery of about 300 bytes to one of ``destinations`` queues, for
  ``seconds``; deliveries/s acknowledged (what ingest waits for before its 200);
- ``enqueue, min replicas 1`` (cluster only): the same with ``ROUTER_REDIS_MIN_REPLICAS=1``
  (WAIT for a replica in every group commit): the cost of not losing acknowledged events;
- ``through the queue``: the same enqueue while one consumer per queue reads with
  XREADGROUP, then acknowledges and deletes what it read (the worker's read and settle, no
  HTTP): deliveries/s read and settled.

Every node shares the same cores, so the cluster here shows its overhead, not its scale-out
(on separate machines each master adds its own core). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from router.queue.backend import connect
from router.queue.enqueuer import Deliveries, Enqueuer
from router.queue.keys import GROUP, queue_key
from router.queue.streams import ensure_group
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

ITEM = b'{"delivery":{"message_id":"m","type":"track","timestamp":"2026-01-01T00:00:00Z",' + (
    b'"payload":{"event":"Order Completed","properties":{"order_id":"o-1","revenue":42.5,'
    b'"products":[{"product_id":"p1","name":"Mat","price":9}]}}},"subjects":["' + b"a" * 64 + b'"]}'
)


async def _enqueue(
    client: aioredis.Redis, seconds: float, destinations: int, submitters: int, replicas: int
) -> float:
    enqueuer = Enqueuer(client, min_replicas=replicas, wait_timeout_ms=1000)
    enqueuer.start()
    done = 0
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def submit(index: int) -> None:
        nonlocal done
        stream = queue_key(f"bench-{index % destinations}")
        while loop.time() < stop:
            await enqueuer.submit([Deliveries(stream, [ITEM])])
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(submit(i) for i in range(submitters)))
    elapsed = time.perf_counter() - started
    await enqueuer.close()
    return done / elapsed


async def _through(
    client: aioredis.Redis, seconds: float, destinations: int, submitters: int
) -> float:
    streams = [queue_key(f"bench-{i}") for i in range(destinations)]
    for stream in streams:
        await ensure_group(client, stream)
    settled = 0
    stopping = asyncio.Event()

    async def consume(stream: str) -> None:
        nonlocal settled
        while not stopping.is_set():
            read = await client.xreadgroup(GROUP, "bench", {stream: ">"}, count=100, block=50)
            if not read:
                continue
            ids = [entry_id for entry_id, _ in read[0][1]]
            pipe = client.pipeline(transaction=True)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
            settled += len(ids)

    consumers = [asyncio.create_task(consume(s)) for s in streams]
    started = time.perf_counter()
    await _enqueue(client, seconds, destinations, submitters, 0)
    elapsed = time.perf_counter() - started
    stopping.set()
    await asyncio.gather(*consumers)
    return settled / elapsed


async def _measure(
    url: str, seconds: float, destinations: int, submitters: int, *, cluster: bool
) -> dict[str, float]:
    client = connect(url, 5000)
    try:
        out = {"enqueue": await _enqueue(client, seconds, destinations, submitters, 0)}
        if cluster:
            out["enqueue, min replicas 1"] = await _enqueue(
                client, seconds, destinations, submitters, 1
            )
        out["through the queue"] = await _through(client, seconds, destinations, submitters)
        return out
    finally:
        await client.aclose()


def main() -> int:
    """Run both backends and print deliveries/s side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--destinations", type=int, default=8)
    parser.add_argument("--submitters", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "single")
        server.directory.mkdir()
        cluster = RedisCluster(Path(tmp) / "cluster")
        try:
            server.start()
            cluster.start()
            single = asyncio.run(
                _measure(
                    server.url, args.seconds, args.destinations, args.submitters, cluster=False
                )
            )
            sharded = asyncio.run(
                _measure(
                    cluster.url, args.seconds, args.destinations, args.submitters, cluster=True
                )
            )
        finally:
            with contextlib.suppress(Exception):
                server.stop()
            cluster.stop()
    print(f"{'deliveries/s':<26}{'1 Redis':>12}{'3 masters':>12}")
    for name, value in sharded.items():
        base = single.get(name)
        shown = f"{base:>12,.0f}" if base is not None else f"{'-':>12}"
        print(f"{name:<26}{shown}{value:>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
