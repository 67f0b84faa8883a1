"""Redis streams around the queues: the client, consumer groups, suppression, status, holds.

A held destination (``rt:hold:<destination>``, set by the anomaly monitor or an operator) keeps
its events queued: its workers stop reading (``HoldGate``) until ``release`` or ``discard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.core.audit_records import AuditKind
from router.queue.keys import GROUP, SUPPRESSED, dlq_key, hold_key, queue_key


class AuditAppender(Protocol):
    """What holds need of the audit trail (``router.compliance.audit_log.AuditLog``)."""

    async def append(self, kind: AuditKind, data: Mapping[str, Any]) -> Any:
        """Append one record."""
        ...


def connect(url: str, timeout_ms: int) -> aioredis.Redis:
    """A Redis client that fails fast (one reconnect, no long backoff): the edge answers 503."""
    timeout = timeout_ms / 1000
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


async def ensure_group(client: aioredis.Redis, stream: str) -> None:
    """Create the consumer group (and the stream) if missing."""
    with contextlib.suppress(aioredis.ResponseError):
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def suppressed_among(client: aioredis.Redis, hashes: Sequence[str]) -> set[str]:
    """Which of these hashed ids were erased (one round trip)."""
    if not hashes:
        return set()
    found = await client.smismember(SUPPRESSED, list(hashes))  # type: ignore[misc]
    return {h for h, hit in zip(hashes, found, strict=True) if hit}


# --- queue status ---


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One destination's queue: length, pending (read, not acked), dead letters, lag, hold."""

    length: int
    pending: int
    dlq_length: int
    lag_seconds: float
    hold: dict[str, Any] | None


async def queue_status(
    client: aioredis.Redis, destination_ids: list[str], now: datetime | None = None
) -> dict[str, QueueStatus]:
    """Every destination's queue status in one pipeline (also for the queue lag gauge)."""
    moment = (now or datetime.now(UTC)).timestamp()
    pipe = client.pipeline(transaction=False)
    for destination in destination_ids:
        stream = queue_key(destination)
        pipe.xlen(stream)
        pipe.xpending(stream, GROUP)
        pipe.xlen(dlq_key(destination))
        pipe.xrange(stream, count=1)
        pipe.get(hold_key(destination))
    results = await pipe.execute(raise_on_error=False)
    out: dict[str, QueueStatus] = {}
    for index, destination in enumerate(destination_ids):
        length, pending, dlq, first, held = results[5 * index : 5 * index + 5]
        for value in (length, dlq, first, held):
            if isinstance(value, Exception):
                raise value
        lag = 0.0
        if first:
            first_ms = int(first[0][0].split(b"-")[0])
            lag = max(0.0, moment - first_ms / 1000)
        hold = None
        if held is not None:
            try:
                hold = json.loads(held)
            except ValueError:
                hold = {"reason": "unknown"}
        out[destination] = QueueStatus(
            length=int(length),
            pending=0 if isinstance(pending, Exception) else int(pending["pending"]),
            dlq_length=int(dlq),
            lag_seconds=round(lag, 3),
            hold=hold,
        )
    return out


# --- holds ---


async def hold_info(client: aioredis.Redis, destination: str) -> dict[str, Any] | None:
    """The hold record of a destination (why and since when), or None when not held."""
    raw = await client.get(hold_key(destination))
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"reason": "unknown"}
    return value if isinstance(value, dict) else {"reason": "unknown"}


async def is_held(client: aioredis.Redis, destination: str) -> bool:
    """Whether the destination's workers must not read."""
    return bool(await client.exists(hold_key(destination)))


async def hold(
    client: aioredis.Redis,
    destination: str,
    *,
    reason: str,
    at: datetime | None = None,
    audit: AuditAppender | None = None,
    actor: str | None = None,
) -> bool:
    """Hold a destination (True when it was not held yet; an existing hold is kept)."""
    moment = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    record = json.dumps({"reason": reason, "at": moment})
    created = bool(await client.set(hold_key(destination), record, nx=True))
    if created and audit is not None:
        await audit.append(
            AuditKind.HOLD, {"destination": destination, "reason": reason, "actor": actor}
        )
    return created


async def release(
    client: aioredis.Redis,
    destination: str,
    *,
    audit: AuditAppender | None = None,
    actor: str | None = None,
) -> bool:
    """Clear the hold: the queued events flow again. True when it was held."""
    released = bool(await client.delete(hold_key(destination)))
    if audit is not None:
        await audit.append(
            AuditKind.RELEASE,
            {"destination": destination, "was_held": released, "actor": actor},
        )
    return released


async def discard(
    client: aioredis.Redis,
    destination: str,
    *,
    audit: AuditAppender | None = None,
    actor: str | None = None,
    page: int = 500,
) -> int:
    """Drop every entry queued for the destination up to now (ack and delete), then clear the
    hold. Returns the count dropped (also in the audit trail)."""
    stream = queue_key(destination)
    last = await client.xrevrange(stream, count=1)
    dropped = 0
    if last:
        cutoff = last[0][0]
        start: bytes | str = "-"
        while True:
            entries = await client.xrange(stream, min=start, max=cutoff, count=page)
            if not entries:
                break
            ids = [entry_id for entry_id, _ in entries]
            pipe = client.pipeline(transaction=True)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            results = await pipe.execute()
            dropped += int(results[1])
            start = b"(" + ids[-1] if isinstance(ids[-1], bytes) else "(" + str(ids[-1])
            if len(entries) < page:
                break
    await client.delete(hold_key(destination))
    if audit is not None:
        await audit.append(
            AuditKind.DISCARD, {"destination": destination, "count": dropped, "actor": actor}
        )
    return dropped


@dataclass(slots=True)
class HoldGate:
    """For the delivery worker: ``await gate.held(destination_id)``, cached ``ttl_s``."""

    client: aioredis.Redis
    ttl_s: float = 1.0
    _cache: dict[str, tuple[float, bool]] = field(default_factory=dict)

    async def held(self, destination: str) -> bool:
        """Whether the destination is held (a Redis error counts as not held: the worker's
        own read fails just after, and is retried)."""
        now = asyncio.get_running_loop().time()
        cached = self._cache.get(destination)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            value = await is_held(self.client, destination)
        except (RedisError, OSError):
            value = False
        self._cache[destination] = (now, value)
        return value
