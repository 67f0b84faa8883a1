"""``router migrate-subjects``: re-key the subject hashes stored before ``ROUTER_SUBJECT_KEY``.

Before 0.2 a subject was stored under the plain SHA-256 hex of its id, which anyone holding a
list of emails or ids can recompute. A keyed subject key is HMAC-SHA256 under the secret of that
same hex (``consent.ids.keyed``), so the stored hashes can be re-keyed without the ids:

- ``rt:consent:{<sha256>}`` and ``rt:consent-log:{<sha256>}`` are renamed to the keyed hash (the
  record keeps its expiry). When the keyed key already exists (written by a router that had the
  secret before this ran), the keyed one is newer and wins: the unkeyed one is deleted and
  counted as a conflict.
- the erasure marks ``rt:suppressed:{<sha256>}`` are replaced by their keyed hashes.

It runs on a single server, after ``router migrate`` (which gives 0.1's keys these names).

Idempotent and resumable: each subject moved is remembered in ``rt:subject-key:moved`` until the
run ends, then ``rt:subject-key`` records a fingerprint of the secret; a later run with the
same secret does nothing, one with another secret is refused (keyed hashes cannot be re-keyed
without the ids). A router started with a secret records its fingerprint too
(``mark_subject_key``), so hashes it wrote are never taken for unkeyed ones: run this BEFORE
starting the routers with the secret.

Not re-keyed: quarantine entries (they age out within ``ROUTER_QUARANTINE_RETENTION_DAYS``) and
the hashes inside queued deliveries (let the queues drain first). The audit trail's subject
tokens were always keyed (``ROUTER_AUDIT_KEY``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consent.cache import record_key
from consent.cache import suppressed_key as mark_key
from consent.ids import keyed
from consent.store import history_key

log = logging.getLogger("router.subjects")
MARKER: Final = "rt:subject-key"
MOVED: Final = "rt:subject-key:moved"
_HASH = re.compile(rb"^rt:consent(?:-log)?:\{([0-9a-f]{64})\}$")
PAGE: Final = 500

_MOVE: Final = """
if redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then return 0 end
if redis.call('SISMEMBER', KEYS[5], ARGV[2]) == 1 then return 0 end
local conflicts = 0
for i = 1, 2 do
  local old, new = KEYS[i], KEYS[i + 2]
  if redis.call('EXISTS', old) == 1 then
    if redis.call('EXISTS', new) == 1 then
      redis.call('DEL', old)
      conflicts = conflicts + 1
    else
      redis.call('RENAME', old, new)
    end
  end
end
redis.call('SADD', KEYS[5], ARGV[2])
return 1 + conflicts
"""
"""KEYS: old record, old history, new record, new history, the moved set; ARGV: the unkeyed
hash, the keyed one. 0: moved before (or itself the result of a move); 1 + the number of
conflicts: moved now."""


class SubjectKeyMismatchError(Exception):
    """The stored hashes are keyed with another secret."""


@dataclass(slots=True)
class SubjectMigration:
    """What a run did."""

    subjects: int = 0
    conflicts: int = 0
    suppressed: int = 0
    already_done: bool = False

    def line(self) -> str:
        """The summary printed by the CLI."""
        if self.already_done:
            return "subject hashes are already keyed with this ROUTER_SUBJECT_KEY: nothing to do"
        return (
            f"re-keyed {self.subjects} subject(s) with stored consent "
            f"({self.conflicts} unkeyed key(s) dropped for a newer keyed one) and "
            f"{self.suppressed} suppressed subject(s)"
        )


def fingerprint(secret: bytes) -> str:
    """What ``rt:subject-key`` holds: identifies the secret without revealing it."""
    return keyed("rt:subject-key fingerprint", secret)[:16]


async def mark_subject_key(client: aioredis.Redis, secret: bytes) -> bool:
    """Record that subject hashes are keyed with ``secret`` from now on (kept when set);
    ``False`` when they are keyed with another secret (then no stored consent or suppression
    matches: a changed ``ROUTER_SUBJECT_KEY`` is an outage of consent, never a rotation)."""
    if not secret:
        return True
    mark = fingerprint(secret)
    if await client.set(MARKER, mark, nx=True):
        return True
    found = await client.get(MARKER)
    return found is None or found.decode() == mark


async def check_subject_key(client: aioredis.Redis, secret: bytes) -> None:
    """At start-up: warn when subject hashes are unkeyed; log an error when ``secret`` differs
    from the one the stored hashes are keyed with (Redis down: checked at the next start)."""
    if not secret:
        log.warning("ROUTER_SUBJECT_KEY is not set: subject hashes in Redis are unkeyed SHA-256")
        return
    try:
        matches = await mark_subject_key(client, secret)
    except (RedisError, OSError):
        return
    if not matches:
        log.error(
            "ROUTER_SUBJECT_KEY differs from the key of the stored subject hashes: "
            "stored consent and erasures will not match"
        )


async def migrate_subjects(
    client: aioredis.Redis,
    secret: bytes,
    suppressed_key: str,
    progress: Callable[[int, int], None] | None = None,
) -> SubjectMigration:
    """Re-key every stored unkeyed subject hash under ``secret``."""
    report = SubjectMigration()
    mark = fingerprint(secret)
    found = await client.get(MARKER)
    if found is not None:
        if found.decode() == mark:
            report.already_done = True
            return report
        raise SubjectKeyMismatchError(
            "the stored subject hashes are keyed with another ROUTER_SUBJECT_KEY"
        )
    subjects: set[str] = set()
    async for key in client.scan_iter(match="rt:consent*", count=PAGE):
        matched = _HASH.match(key)
        if matched is not None:
            subjects.add(matched.group(1).decode())
    members: list[str] = []
    async for raw in client.scan_iter(match=f"{suppressed_key}:{{*}}", count=PAGE):
        members.append((raw.decode() if isinstance(raw, bytes) else str(raw)).split("{", 1)[1][:-1])
    moved = {m.decode() for m in await client.smembers(MOVED)}  # type: ignore[misc]
    unkeyed_members = [m for m in members if m not in moved]
    total = len(subjects) + len(unkeyed_members)
    move = client.register_script(_MOVE)
    done = 0
    for subject in sorted(subjects):
        new = keyed(subject, secret)
        keys = [record_key(subject), history_key(subject), record_key(new), history_key(new)]
        result = int(await move(keys=[*keys, MOVED], args=[subject, new]))
        if result:
            report.subjects += 1
            report.conflicts += result - 1
        done += 1
        if progress is not None and (done % PAGE == 0 or done == total):
            progress(done, total)
    for start in range(0, len(unkeyed_members), PAGE):
        page = unkeyed_members[start : start + PAGE]
        fresh = [keyed(m, secret) for m in page]
        pipe = client.pipeline(transaction=True)
        for old, new in zip(page, fresh, strict=True):
            pipe.set(mark_key(suppressed_key, new), "1")
            pipe.delete(mark_key(suppressed_key, old))
        pipe.sadd(MOVED, *fresh)
        await pipe.execute()
        report.suppressed += len(page)
        done += len(page)
        if progress is not None:
            progress(done, total)
    pipe = client.pipeline(transaction=True)
    pipe.set(MARKER, mark)
    pipe.delete(MOVED)
    await pipe.execute()
    if progress is not None and total == 0:
        progress(0, 0)
    return report
