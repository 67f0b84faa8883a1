"""The audit trail's index by subject: which audit records name a person, without a scan.

A subject access report, ``router audit query`` and ``GET /v1/consent/status`` must find one
person's records among millions. The audit trail names subjects only by keyed token
(``subject_token``: HMAC-SHA256 under ``ROUTER_AUDIT_KEY``), so the index is keyed by token
too and holds nothing else: no raw identifier, no plain hash.

Keys (``<stream>`` is ``rt:audit``; named in ``router.queue.keys``):

- ``<stream>:subject:<token>``  sorted set: the stream ids of every record naming the subject
                                (score: the id's milliseconds)
- ``<stream>:optout:<token>``   sorted set: the records where an opt-out signal of the subject
                                was honoured (a destination skipped for ``gpc_opt_out`` or
                                ``us_opt_out``)

Both are written by the audit append script in the same atomic step as the records
(``router.compliance.audit_log``), and follow the audit's retention: a trim removes the
trimmed records' ids
from the sets of the subjects they name, and a lookup that meets an id no longer in the
stream (a trim interrupted half-way) removes it. A set emptied this way disappears.

Cost: one sorted-set member (about 30 bytes) per record and subject; a ``decisions`` record
of 500 events with two subjects each adds 1,000 members. A lookup costs one ``ZRANGE`` per
token and one ``XRANGE`` per record found (pipelined), so it grows with the person's records,
never with the size of the trail.

A trail written before the index existed is indexed by ``reindex`` (``router audit
reindex``), which is idempotent. Which tokens a record names is
``router.compliance.subject_tokens`` (pure); this module reads and writes Redis.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from router.compliance.subject_tokens import index_tokens
from router.queue.keys import optout_index_key, subject_index_key

FETCH_CHUNK: Final = 500
"""Records fetched per pipelined round trip."""


def id_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def indexed_ids(
    client: aioredis.Redis,
    keys: Sequence[str],
    *,
    after_ms: int | None = None,
    newest: int | None = None,
) -> list[str]:
    """The record ids in the sorted sets ``keys``, oldest first, without duplicates: those at
    or after ``after_ms``, or only the ``newest`` few of each set."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        if newest is not None:
            pipe.zrange(key, 0, newest - 1, desc=True)
        else:
            low = "-inf" if after_ms is None else after_ms
            pipe.zrangebyscore(key, low, "+inf")
    replies = await pipe.execute()
    ids = {_text(member) for reply in replies for member in reply}
    return sorted(ids, key=id_order)


async def fetch_records(
    client: aioredis.Redis, stream: str, ids: Sequence[str], keys: Iterable[str] = ()
) -> tuple[list[tuple[str, Mapping[bytes, bytes]]], list[str]]:
    """The stream entries of ``ids`` (pipelined, ``FETCH_CHUNK`` per round trip) and the ids
    no longer in the stream; those are removed from the index sets ``keys``."""
    found: list[tuple[str, Mapping[bytes, bytes]]] = []
    missing: list[str] = []
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[start : start + FETCH_CHUNK]
        pipe = client.pipeline(transaction=False)
        for entry_id in chunk:
            pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
        for entry_id, reply in zip(chunk, await pipe.execute(), strict=True):
            if reply:
                found.append((entry_id, reply[0][1]))
            else:
                missing.append(entry_id)
    keys = list(keys)
    if missing and keys:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, *missing)
        await pipe.execute()
    return found, missing


async def unindex(
    client: aioredis.Redis,
    stream: str,
    entries: Iterable[tuple[str, str, Mapping[str, Any]]],
) -> int:
    """Remove trimmed records ``(id, kind, data)`` from the sets of the subjects they name;
    how many members were removed."""
    members: dict[str, list[str]] = {}
    for entry_id, kind, data in entries:
        subjects, honoured = index_tokens(kind, data)
        for token in subjects:
            members.setdefault(subject_index_key(stream, token), []).append(entry_id)
        for token in honoured:
            members.setdefault(optout_index_key(stream, token), []).append(entry_id)
    if not members:
        return 0
    pipe = client.pipeline(transaction=False)
    for key, ids in members.items():
        pipe.zrem(key, *ids)
    return sum(int(n) for n in await pipe.execute())


async def reindex(client: aioredis.Redis, stream: str, page: int = 1000) -> tuple[int, int]:
    """Index every record still in the stream (a trail written before the index existed);
    idempotent. How many records were read and how many index members were added."""
    records = added = 0
    start = "-"
    while True:
        entries = await client.xrange(stream, min=start, count=page)
        pipe = client.pipeline(transaction=False)
        queued = 0
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            start = "(" + entry_id
            records += 1
            try:
                data = json.loads(fields[b"data"])
            except (KeyError, ValueError):
                continue  # unreadable: ``router audit verify`` names it
            if not isinstance(data, dict):
                continue
            subjects, honoured = index_tokens(_text(fields.get(b"kind", b"")), data)
            score = id_order(entry_id)[0]
            for token in subjects:
                pipe.zadd(subject_index_key(stream, token), {entry_id: score})
            for token in honoured:
                pipe.zadd(optout_index_key(stream, token), {entry_id: score})
            queued += len(subjects) + len(honoured)
        if queued:
            added += sum(int(n) for n in await pipe.execute())
        if len(entries) < page:
            return records, added
