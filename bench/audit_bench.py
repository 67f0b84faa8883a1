"""Audit-trail append throughput and failures at 1 and N concurrent appenders.

    .venv/bin/python -m bench.audit_bench [--records 2000] [--appenders 1 32 64]

Two scenarios per concurrency level N, one record per append call, on a real redis-server
started in a temporary directory (append-only file, fsync always, as the tests run it):
- ``writers``: N ``AuditLog``s, each on its own Redis connection (N router processes);
- ``callers``: N concurrent callers of one ``AuditLog`` (one process's admin calls).
Prints records/s, failed appends and whether the trail verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis.asyncio as aioredis

from bench.private_redis import private_redis
from router.compliance.audit_log import AuditLog
from router.core.audit_records import AuditKind


async def _run(
    url: str, appenders: int, records: int, *, shared: bool
) -> tuple[float, int, bool, int]:
    clients = [aioredis.Redis.from_url(url) for _ in range(1 if shared else appenders)]
    try:
        await clients[0].flushdb()
        logs = [AuditLog(clients[0])] * appenders if shared else [AuditLog(c) for c in clients]
        failed = 0

        async def fill(log: AuditLog, count: int) -> None:
            nonlocal failed
            for index in range(count):
                try:
                    await log.append(AuditKind.ADMIN_CALL, {"endpoint": "/admin/x", "n": index})
                except Exception:  # counted: this is a benchmark
                    failed += 1

        per = records // appenders
        start = time.perf_counter()
        await asyncio.gather(*(fill(log, per) for log in logs))
        elapsed = time.perf_counter() - start
        result = await logs[0].verify()
        return per * appenders / elapsed, failed, result.ok, result.checked
    finally:
        for client in clients:
            await client.aclose()


def main() -> int:
    """Run each concurrency level once and print a line per level."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--appenders", type=int, nargs="+", default=[1, 32, 64])
    args = parser.parse_args()
    with private_redis() as url:
        for shared in (False, True):
            for appenders in args.appenders:
                rate, failed, ok, checked = asyncio.run(
                    _run(url, appenders, args.records, shared=shared)
                )
                print(
                    f"{'callers' if shared else 'writers'}={appenders:3d} "
                    f"records/s={rate:8.0f} failed={failed:5d} verified={ok} checked={checked}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
