"""``router keys rotate``: re-seal what rests in Redis with the ring's newest key, online.

Streams walked: each destination's queue, dead letters and outbox, and the quarantine. An entry
is rewritten when a sealed field is plaintext (written before encryption was on) or sealed with
an older key. A stream entry cannot change in place, so a rewrite is one script that checks the
entry is still there unchanged (a digest of its fields) and, for a queue, not in a worker's
hands (pending in the consumer group), then adds the re-sealed entry at the end of the stream
and deletes the old one. Workers keep running: an entry they hold is left for them (counted as
``pending``; run again later), and one they have not read yet is read once, in its new form.

Idempotent: a second run finds every entry current and rewrites nothing. An entry no key of the
ring opens is counted and left as it is (a worker dead-letters it as ``undecryptable``).
A rewritten entry gets a new id (so a dead letter's id changes; its ``at`` field keeps the time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from router.core.sealing import Sealer, Undecryptable
from router.queue.items import DLQ_ROLE, OUTBOX_ROLE, QUARANTINE_ROLE, QUEUE_ROLE, sealed_for
from router.queue.keys import GROUP, QUARANTINE, dlq_key, outbox_key, queue_key

PAGE: Final = 200

_SWAP: Final = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local parts = {}
for _, value in ipairs(found[1][2]) do parts[#parts + 1] = #value .. ':' .. value end
if redis.sha1hex(table.concat(parts)) ~= ARGV[3] then return 0 end
if ARGV[2] ~= '' then
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1)
  if ok and #pending > 0 then return -1 end
end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""
"""KEYS[1] stream; ARGV: entry id, consumer group ('' none), digest of its fields, new fields.
1: swapped; 0: gone or changed meanwhile; -1: pending in a consumer's hands."""


@dataclass(slots=True)
class RotationReport:
    """What a run did, by entry."""

    total: int = 0
    resealed: int = 0
    current: int = 0
    pending: int = 0
    changed: int = 0
    undecryptable: int = 0

    def line(self) -> str:
        """The summary printed by the CLI."""
        return (
            f"resealed {self.resealed}, already current {self.current}, "
            f"{self.pending} pending in a worker (left for it; run again), "
            f"{self.changed} changed meanwhile, {self.undecryptable} undecryptable"
        )


@dataclass(frozen=True, slots=True)
class _Stream:
    key: str
    role: str
    destination: str
    fields: tuple[str, ...]
    group: str = ""


def _streams(destinations: Sequence[str]) -> list[_Stream]:
    found: list[_Stream] = []
    for destination in destinations:
        found.append(_Stream(queue_key(destination), QUEUE_ROLE, destination, ("d", "b"), GROUP))
        found.append(_Stream(dlq_key(destination), DLQ_ROLE, destination, ("d",)))
        found.append(_Stream(outbox_key(destination), OUTBOX_ROLE, destination, ("r",)))
    found.append(_Stream(QUARANTINE, QUARANTINE_ROLE, "", ("e",)))
    return found


def _digest(fields: dict[bytes, bytes]) -> str:
    flat = [v for pair in fields.items() for v in pair]
    return hashlib.sha1(  # noqa: S324 - a change check, compared with redis.sha1hex in Lua
        b"".join(str(len(v)).encode() + b":" + v for v in flat)
    ).hexdigest()


def _resealed(
    stream: _Stream, sealer: Sealer, fields: dict[bytes, bytes]
) -> dict[bytes, bytes] | None:
    """The entry's fields sealed with the current key; ``None`` when already current."""
    if stream.role == QUARANTINE_ROLE and b"e" not in fields:  # plaintext quarantine entry
        plain = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        subjects = plain.pop("subjects", "")
        sealed = sealer.seal(json.dumps(plain).encode(), sealed_for(QUARANTINE_ROLE, "", "e"))
        return {b"e": sealed, b"subjects": subjects.encode()}
    out = dict(fields)
    changed = False
    for name in stream.fields:
        value = fields.get(name.encode())
        if value is None or sealer.is_current(value):
            continue
        where = sealed_for(stream.role, stream.destination, name)
        out[name.encode()] = sealer.reseal(value, where)
        changed = True
    return out if changed else None


async def rotate(
    client: aioredis.Redis,
    sealer: Sealer,
    destinations: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
) -> RotationReport:
    """Re-seal every entry of these destinations' streams and of the quarantine with the
    current key; ``progress(done, total)`` after each page."""
    streams = _streams(destinations)
    report = RotationReport()
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream.key)
    report.total = sum(int(n) for n in await pipe.execute())
    swap = client.register_script(_SWAP)
    done = 0
    for stream in streams:
        last = await client.xrevrange(stream.key, count=1)
        if not last:
            continue
        start, end = "-", last[0][0]  # what is added from now on, rewrites too, is current
        while True:
            entries: list[Any] = await client.xrange(stream.key, min=start, max=end, count=PAGE)
            pipe = client.pipeline(transaction=False)  # one round trip per page
            for entry_id, fields in entries:
                try:
                    fresh = _resealed(stream, sealer, fields)
                except Undecryptable:
                    report.undecryptable += 1
                    continue
                if fresh is None:
                    report.current += 1
                    continue
                args = [entry_id, stream.group, _digest(fields)]
                args += [v for pair in fresh.items() for v in pair]
                await swap(keys=[stream.key], args=args, client=pipe)
            for result in await pipe.execute() if len(pipe) else []:
                if int(result) == 1:
                    report.resealed += 1
                elif int(result) == -1:
                    report.pending += 1
                else:
                    report.changed += 1
            done += len(entries)
            if progress is not None:
                progress(min(done, report.total), report.total)
            if len(entries) < PAGE:
                break
            start = "(" + entries[-1][0].decode()
    return report
