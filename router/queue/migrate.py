"""``router migrate``: rename a 0.x single-server deployment's keys to the cluster-ready names.

The keys that are used together now share a Redis Cluster hash tag (``{...}``) so that every
multi-key command, script and MULTI/EXEC stays in one slot:

=============================  ==================================
before                         after
=============================  ==================================
``rt:q:<destination>``         ``rt:q:{<destination>}``
``rt:dlq:<destination>``       ``rt:dlq:{<destination>}``
``rt:outbox:<destination>``    ``rt:outbox:{<destination>}``
``rt:consent:<sha256>``        ``rt:consent:{<sha256>}``
``rt:consent-log:<sha256>``    ``rt:consent-log:{<sha256>}``
``rt:suppressed`` (one set)    ``rt:suppressed:{<sha256>}`` (a key per erased subject)
``rt:audit``, ``rt:audit:*``   ``rt:{audit}``, ``rt:{audit}:*`` (indexes included)
=============================  ==================================

Run it once with the routers stopped, on the single server, before starting the new version (or
before ``redis-cli --cluster import`` into a cluster). RENAME keeps values, consumer groups,
pending entries and expiry times. It is idempotent: a key already renamed is not found under
its old name again, so a second run changes nothing. A key present under both names (a router
of the new version already wrote there) is left alone and reported: streams cannot be merged
without reordering them; the operator decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis

from consent.cache import record_key, suppressed_key
from consent.store import history_key
from router.queue.keys import AUDIT as AUDIT_STREAM
from router.queue.keys import SUPPRESSED, dlq_key, outbox_key, queue_key

OLD_AUDIT = "rt:audit"
_PREFIXES = {
    "rt:q:": queue_key,
    "rt:dlq:": dlq_key,
    "rt:outbox:": outbox_key,
    "rt:consent:": record_key,
    "rt:consent-log:": history_key,
}


@dataclass(slots=True)
class MigrationReport:
    """What ``migrate`` did (or would do with ``dry_run``)."""

    renamed: list[tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0
    """Erased subjects moved from the ``rt:suppressed`` set to their own keys."""
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    """Keys present under both names: left as they are."""


def new_name(key: str) -> str | None:
    """The new name of an old-style key, or None when the key keeps its name."""
    if key == OLD_AUDIT or key.startswith(f"{OLD_AUDIT}:"):
        return AUDIT_STREAM + key[len(OLD_AUDIT) :]
    for prefix, naming in _PREFIXES.items():
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if rest and "{" not in rest and ":" not in rest:
                return naming(rest)
    return None


async def migrate(client: aioredis.Redis, *, dry_run: bool = False) -> MigrationReport:
    """Rename every old-style key (see the module docstring) on a single server."""
    report = MigrationReport()
    async for raw in client.scan_iter(match="rt:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        target = new_name(key)
        if target is None:
            continue
        if await client.exists(target):
            report.conflicts.append((key, target))
            continue
        if not dry_run:
            await client.renamenx(key, target)
        report.renamed.append((key, target))
    if await client.type(SUPPRESSED) == b"set":
        members = [m.decode() for m in await client.smembers(SUPPRESSED)]  # type: ignore[misc]
        report.suppressed = len(members)
        if not dry_run and members:
            pipe = client.pipeline(transaction=True)
            for subject in members:
                pipe.set(suppressed_key(SUPPRESSED, subject), "1")
            pipe.delete(SUPPRESSED)
            await pipe.execute()
    return report
