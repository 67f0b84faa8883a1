"""A separate process appending to the audit trail, for the multi-process tests.

    python -m tests.integration.audit_appender REDIS_URL TAG WRITERS RECORDS

Opens WRITERS ``AuditLog``s, each on its own connection, and appends RECORDS records with each
of them concurrently (``{"tag", "writer", "n"}``), each record its own append. Exit 0 when every
append succeeded.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis

from router.compliance.audit_log import AuditLog
from router.core.audit_records import AuditKind


async def _main(url: str, tag: str, writers: int, records: int) -> int:
    clients = [aioredis.Redis.from_url(url) for _ in range(writers)]
    try:
        logs = [AuditLog(c) for c in clients]

        async def fill(writer: int, log: AuditLog) -> None:
            for n in range(records):
                await log.append(AuditKind.ADMIN_CALL, {"tag": tag, "writer": writer, "n": n})

        await asyncio.gather(*(fill(i, log) for i, log in enumerate(logs)))
    finally:
        for client in clients:
            await client.aclose()
    return 0


if __name__ == "__main__":
    url, tag, writers, records = sys.argv[1:5]
    sys.exit(asyncio.run(_main(url, tag, int(writers), int(records))))
